"""Paired significance tests of two models evaluated on the same users.

Inputs are per-user metric arrays ``a`` and ``b``: float[n_users], aligned
(``a[i]`` and ``b[i]`` belong to the same user), e.g. ``EvalResult.per_user``
of two models on one stage. With ``d = a - b`` (float64[n_users]):

- ``mean_diff``      = mean(d); positive when model A scores higher.
- ``t_statistic``, ``t_pvalue``: the two-sided paired t-test
  (``scipy.stats.ttest_rel(a, b)``), i.e. a one-sample t-test of d against 0.
- ``ci_low``, ``ci_high``: the percentile bootstrap confidence interval of
  mean(d) at level ``1 - alpha``: users are resampled with replacement
  ``n_boot`` times (``np.random.default_rng(seed)``), and the bounds are the
  ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means.
- ``wilcoxon_pvalue``: the two-sided Wilcoxon signed-rank test of d
  (``scipy.stats.wilcoxon``; zero differences are dropped, its default).

Degenerate input, where every difference is the same up to the rounding of
``a - b`` (4 ulp of the largest |value|): all zero gives ``t_statistic = 0``
and both p-values 1 (no evidence of a difference); a constant non-zero
difference gives ``t_statistic = ±inf`` and ``t_pvalue = 0`` (the limit of the
t-test as the spread goes to 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from llm4rec.errors import InputError

__all__ = ["PairedResult", "paired_test"]

#: index-matrix elements drawn at once by the bootstrap (int64: 8 bytes each)
_BOOT_BUDGET = 1 << 22


@dataclass(frozen=True)
class PairedResult:
    """Outcome of :func:`paired_test`; differences are ``a - b``."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_pvalue: float
    alpha: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-ready values."""
        return asdict(self)


def paired_test(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10000, seed: int = 2026,
                alpha: float = 0.05) -> PairedResult:
    """Compare two models' per-user metrics ``a``, ``b`` (float[n], n >= 2, aligned).

    Raises :class:`InputError` when the arrays are not one-dimensional, differ
    in length, hold fewer than 2 users or a non-finite value, or when
    ``n_boot < 1`` or ``alpha`` is outside (0, 1).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise InputError("per-user metrics must be one-dimensional arrays",
                         value=(a.shape, b.shape), expected="two arrays of shape (n_users,)")
    if len(a) != len(b):
        raise InputError("the two per-user metric arrays have different lengths",
                         value=(len(a), len(b)), expected="arrays aligned over the same users")
    if len(a) < 2:
        raise InputError("a paired test needs at least 2 users", value=len(a),
                         expected="per-user metrics of 2 or more users")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("per-user metrics contain NaN or infinity", expected="finite values")
    if n_boot < 1:
        raise InputError("n_boot must be positive", value=n_boot, expected="an integer >= 1")
    if not 0.0 < alpha < 1.0:
        raise InputError("alpha must lie strictly between 0 and 1", value=alpha,
                         expected="e.g. 0.05")
    d = a - b
    mean_diff = float(d.mean())
    tol = 4.0 * np.finfo(np.float64).eps * max(np.abs(a).max(), np.abs(b).max())  # rounding of a - b
    no_diff = bool(np.abs(d).max() <= tol)
    if np.ptp(d) <= tol:  # zero spread: scipy would divide (nearly) 0 by 0
        t_stat = 0.0 if no_diff else float(np.copysign(np.inf, mean_diff))
        t_p = 1.0 if no_diff else 0.0
    else:
        t = stats.ttest_rel(a, b)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
    w_p = 1.0 if no_diff else float(stats.wilcoxon(d).pvalue)
    means = _bootstrap_means(d, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return PairedResult(
        n=len(d), mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=mean_diff,
        ci_low=float(lo), ci_high=float(hi), t_statistic=t_stat, t_pvalue=t_p,
        wilcoxon_pvalue=w_p, alpha=float(alpha), n_boot=int(n_boot), seed=int(seed),
    )


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples of d with replacement: float64[n_boot].

    Resamples are drawn as index matrices of at most ``_BOOT_BUDGET`` elements.
    """
    n = len(d)
    chunk = max(1, _BOOT_BUDGET // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n))  # (rows, n) resampled users
        means[start:start + rows] = np.take(d, idx).mean(axis=1)
    return means
