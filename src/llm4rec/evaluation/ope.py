"""Off-policy evaluation: the value of a policy estimated from another policy's logs.

Given :class:`~llm4rec.data.logs.BanditLogs` (action ``a_i`` at position
``j_i``, reward ``r_i``, logging propensity ``p_i``) and the evaluation
policy's action distribution ``pi[i, a, j]`` (float[n, n_actions,
n_positions]), every estimator returns the expected reward per impression,
comparable with a log's mean reward. With ``w_i = pi[i, a_i, j_i] / p_i``:

- ``ips``: mean(w r).
- ``snips``: sum(w r) / sum(w) (self-normalised; = the mean reward when pi is the logger).
- ``dm``: mean over rounds of sum_a pi[i, a, j_i] q(i, a), q the reward model.
- ``dr``: dm + mean(w (r - q(i, a_i))).
- ``switch-dr``: dr whose correction term is dropped for rounds with w > tau (default 10).

Reward model (``dm``, ``dr``, ``switch-dr``): per-(action, position) click
rates shrunk towards the position's rate, with the shrinkage strength fitted
by the beta-binomial method of moments (between-cell variance left after the
binomial noise; none left means every cell gets its position's rate). It is
cross-fitted: rows are split into ``folds`` seeded folds and a row's q comes
from the model fitted on the other folds. It ignores the round context, which
suits context-free evaluation policies; pass ``q_hat`` to use another model.

Intervals: percentile bootstrap over rounds (``n_bootstrap`` resamples, seeded,
the same resamples for every estimator). The rate model is refitted on every
resample, so the dm / dr intervals carry its uncertainty; a given ``q_hat``
is held fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from llm4rec.data.logs import BanditLogs, load_bandit_logs
from llm4rec.errors import InputError

__all__ = ["ESTIMATORS", "estimate_policy_value", "off_policy_evaluation", "parse_estimators", "plot_ope",
           "policy_distribution"]

ESTIMATORS = ("ips", "snips", "dm", "dr", "switch-dr")
POLICY_SPECS = "uniform, empirical:DIR (the logs of the policy to evaluate) or a saved policy directory"
Progress = Callable[[str, int, int], None]


def parse_estimators(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ips,snips"`` -> ``("ips", "snips")``; InputError naming an unknown estimator."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    for name in names:
        if name not in ESTIMATORS:
            raise InputError("unknown estimator", value=name, expected="some of " + ",".join(ESTIMATORS))
    if not names:
        raise InputError("no estimator given", expected="some of " + ",".join(ESTIMATORS))
    return tuple(dict.fromkeys(names))


class _RateModelTerms:
    """Means of the DM, DR and switch-DR terms under the cross-fitted rate model, refitted per row weighting.

    ``self(counts)`` for counts float[b, n] (how often each round is drawn;
    all ones for the logs themselves) refits the rates on the weighted rows
    and returns float[b, 3]: the dm, dr and switch-dr values. Every step is a
    sparse product over rows, so a bootstrap block costs one pass.
    """

    def __init__(self, logs: BanditLogs, pi: np.ndarray, w: np.ndarray, tau: float, folds: int, seed: int) -> None:
        import scipy.sparse as sp

        n, n_actions, n_positions = logs.n_rounds, logs.n_actions, logs.n_positions
        self.n, self.folds = n, max(1, min(folds, n))
        self.shape = (self.folds, n_actions, n_positions)
        fold = np.random.default_rng(seed).permutation(n) % self.folds  # (n,)
        cell = (fold * n_actions + logs.action) * n_positions + logs.position  # (n,) index into shape
        n_cells = int(np.prod(self.shape))
        keep = w <= tau
        rows = np.arange(n)

        def at_cell(values: np.ndarray) -> sp.csr_matrix:  # (n, n_cells), values[i] at cell[i]
            return sp.csr_matrix((values, (rows, cell)), shape=(n, n_cells))

        every = ((fold[:, None] * n_actions + np.arange(n_actions)) * n_positions + logs.position[:, None])  # (n, A)
        spread = sp.csr_matrix((pi.ravel(), (np.repeat(rows, n_actions), every.ravel())), shape=(n, n_cells))
        # columns: clicks, impressions, sum pi (for dm), sum w and sum w 1{w <= tau} (for the corrections)
        self.cells = sp.hstack([at_cell(logs.reward), at_cell(np.ones(n)), spread, at_cell(w), at_cell(w * keep)]
                               ).T.tocsr()  # (5 n_cells, n)
        self.dense = np.stack([logs.reward, w * logs.reward, w * logs.reward * keep], axis=1)  # (n, 3)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        b = counts.shape[0]
        sums = (self.cells @ counts.T).T.reshape(b, 5, *self.shape)  # (b, 5, F, A, K)
        clicks, shown, spread, w, w_kept = (sums[:, i] for i in range(5))
        if self.folds > 1:  # a row's model is fitted on the other folds
            clicks = clicks.sum(1, keepdims=True) - clicks
            shown = shown.sum(1, keepdims=True) - shown
        reward, wr, wr_kept = (counts @ self.dense).T  # (b,) each
        mean = (reward / counts.sum(1))[:, None, None, None]
        rates = _shrunk_rates(clicks, shown, mean)  # (b, F, A, K)
        dm = (rates * spread).sum((1, 2, 3)) / self.n
        dr = dm + (wr - (rates * w).sum((1, 2, 3))) / self.n
        switch = dm + (wr_kept - (rates * w_kept).sum((1, 2, 3))) / self.n
        return np.stack([dm, dr, switch], axis=1)


def _shrunk_rates(clicks: np.ndarray, shown: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(c + m p) / (n + m) per cell of float[..., A, K]; p the position's rate, m by beta-binomial moments."""
    total = shown.sum(axis=-2, keepdims=True)  # (..., 1, K)
    p = np.where(total > 0, clicks.sum(axis=-2, keepdims=True) / np.maximum(total, 1e-12), fallback)
    seen = shown > 0
    raw = np.where(seen, clicks / np.maximum(shown, 1e-12), p)
    spread = (shown * (raw - p) ** 2).sum(axis=-2, keepdims=True)  # sum n (raw - p)^2
    noise = seen.sum(axis=-2, keepdims=True) * p * (1 - p)  # its expectation when the true rates are all p
    tau2 = np.maximum(spread - noise, 0.0) / np.maximum(total, 1e-12)  # between-cell variance of true rates
    p, tau2 = np.broadcast_arrays(p, tau2)
    m = np.divide(p * (1 - p), tau2, out=np.full(tau2.shape, np.inf), where=tau2 > 0) - 1  # prior strength
    m = np.clip(m, 0.0, 1e12)
    return (clicks + m * p) / (shown + m)


def estimate_policy_value(
    logs: BanditLogs,
    action_dist: np.ndarray,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    q_hat: np.ndarray | None = None,
    folds: int = 5,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    switch_tau: float = 10.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, dict[str, float]]:
    """``{estimator: {"value", "ci_low", "ci_high"}}``: the evaluation policy's value per impression.

    Args:
        logs: the logged rounds.
        action_dist: float[n, n_actions, >= n_positions] the evaluation policy's P(a at j) per round.
        estimators: names from :data:`ESTIMATORS`.
        q_hat: float[n, n_actions, >= n_positions] a fixed reward model q(i, a, j) (not refitted in
            the bootstrap); default: the cross-fitted rate model, refitted in every resample.
        folds: cross-fitting folds of the rate model.
        n_bootstrap: bootstrap resamples (0: no interval, ci_low = ci_high = value).
        alpha: 1 - the interval's coverage.
        switch_tau: the weight above which ``switch-dr`` drops its correction term.
        seed: seeds the folds and the resamples.
        progress: called as ``progress(step, done, total)``.
    """
    estimators = parse_estimators(estimators)
    n, rows = logs.n_rounds, np.arange(logs.n_rounds)
    pi = _check_distribution(logs, action_dist)[rows, :, logs.position]  # (n, n_actions) at the logged positions
    w = pi[rows, logs.action] / logs.propensity  # (n,)
    r = logs.reward
    columns = {"ips": w * r, "w": w}
    model = None
    if {"dm", "dr", "switch-dr"} & set(estimators):
        if q_hat is None:
            model = _RateModelTerms(logs, pi, w, switch_tau, folds, seed)
        else:
            if q_hat.ndim != 3 or q_hat.shape[:2] != (n, logs.n_actions) or q_hat.shape[2] < logs.n_positions:
                raise InputError("reward model of the wrong shape", value=q_hat.shape,
                                 expected=f"({n}, {logs.n_actions}, >= {logs.n_positions})")
            q = q_hat[rows, :, logs.position]  # (n, n_actions)
            dm = (pi * q).sum(axis=1)
            correction = w * (r - q[rows, logs.action])
            columns |= {"dm": dm, "dr": dm + correction,
                        "switch-dr": dm + np.where(w <= switch_tau, correction, 0.0)}
    names = list(columns)
    table = np.stack([columns[k] for k in names], axis=1)  # (n, m)

    def means(counts: np.ndarray) -> np.ndarray:  # (b, n) draw counts -> (b, m') values
        out = counts @ table / n
        return out if model is None else np.hstack([out, model(counts)])

    if model is not None:
        names += ["dm", "dr", "switch-dr"]
    boot = _bootstrap(means, n, n_bootstrap, seed, progress)  # (1 + B, m'): the estimate, then resamples
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {k: boot[:, i] for i, k in enumerate(names) if k != "w"}
        values["snips"] = boot[:, names.index("ips")] / boot[:, names.index("w")]
    out = {}
    for name in estimators:
        v = values[name]
        low, high = np.nanquantile(v[1:], [alpha / 2, 1 - alpha / 2]) if len(v) > 1 else (v[0], v[0])
        out[name] = {"value": float(v[0]), "ci_low": float(low), "ci_high": float(high)}
    return out


def _check_distribution(logs: BanditLogs, action_dist: np.ndarray) -> np.ndarray:
    """``action_dist`` if it is float[n, n_actions, >= n_positions] with columns of probabilities summing to 1."""
    dist = np.asarray(action_dist)
    if dist.ndim != 3 or dist.shape[0] != logs.n_rounds:
        raise InputError("evaluation policy distribution of the wrong shape", value=dist.shape,
                         expected=f"({logs.n_rounds}, {logs.n_actions}, {logs.n_positions})")
    if dist.shape[1] != logs.n_actions:
        raise InputError(f"mismatched action sets: the evaluation policy has {dist.shape[1]} actions, the logs "
                         f"{logs.source or logs.name} have {logs.n_actions}",
                         expected="a policy over the logs' actions")
    if dist.shape[2] < logs.n_positions:
        raise InputError(f"the evaluation policy fills {dist.shape[2]} positions, the logs have "
                         f"{logs.n_positions}", expected=f">= {logs.n_positions} positions")
    sums = dist[:, :, : logs.n_positions].sum(axis=1)  # (n, K)
    if (dist < 0).any() or not np.allclose(sums, 1.0, atol=1e-6):
        raise InputError("the evaluation policy's distribution is not a probability distribution per position",
                         value=float(sums.flat[np.argmax(np.abs(sums - 1).ravel())]),
                         expected="non-negative values summing to 1 over actions")
    return dist


def _bootstrap(means: Callable[[np.ndarray], np.ndarray], n: int, n_bootstrap: int, seed: int,
               progress: Progress | None) -> np.ndarray:
    """float64[1 + B, m]: ``means`` of the logs (counts all 1), then of B resamples of the n rounds."""
    rng = np.random.default_rng(seed)
    out = [means(np.ones((1, n)))]
    chunk = max(1, 1_000_000 // n)
    for start in range(0, n_bootstrap, chunk):  # blocks of resamples, not rounds
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        out.append(means(np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)))
        if progress:
            progress("bootstrap", start + b, n_bootstrap)
    return np.concatenate(out)


def policy_distribution(spec: str, logs: BanditLogs) -> tuple[np.ndarray, float | None]:
    """The action distribution float[n, n_actions, n_positions] of policy ``spec`` on ``logs``' rounds.

    ``spec``: ``uniform``; ``empirical:DIR`` (the action frequencies per
    position in the logs at DIR, whose mean reward is returned as the
    on-policy value); or a saved policy directory. The on-policy value is
    None except for ``empirical:DIR``.
    """
    from llm4rec.strategies.logged import EmpiricalPolicy, UniformPolicy
    from llm4rec.strategies.policy import load_policy

    n, k = logs.n_rounds, logs.n_positions
    if spec == "uniform":
        return UniformPolicy(logs.n_actions).distribution(logs.context, n, k), None
    if spec.startswith("empirical:"):
        other = load_bandit_logs(spec.removeprefix("empirical:"))
        _same_actions(other.n_actions, logs, other.source)
        return EmpiricalPolicy.from_logs(other).distribution(logs.context, n, k), other.mean_reward
    if Path(spec).is_dir():
        policy = load_policy(spec)
        _same_actions(policy.n_actions, logs, spec)
        return policy.distribution(logs.context, n, k), None
    raise InputError("unknown policy", value=spec, expected=POLICY_SPECS)


def _same_actions(n_actions: int, logs: BanditLogs, where: str) -> None:
    if n_actions != logs.n_actions:
        raise InputError(f"mismatched action sets: the policy from {where} has {n_actions} actions, the logs "
                         f"{logs.source or logs.name} have {logs.n_actions}",
                         expected="a policy over the same actions as the logs")


def off_policy_evaluation(logs: BanditLogs, policy: str, estimators: Sequence[str] = ESTIMATORS, *,
                          n_bootstrap: int = 1000, seed: int = 0, progress: Progress | None = None) -> dict:
    """The ``llm4rec ope`` record: ``{"logs", "policy", "n_rounds", "estimates", ["on_policy_value"]}``."""
    dist, truth = policy_distribution(policy, logs)
    estimates = estimate_policy_value(logs, dist, estimators, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    record = {"logs": logs.source, "policy": policy, "n_rounds": logs.n_rounds, "estimates": estimates}
    if truth is not None:
        record["on_policy_value"] = truth
    return record


def plot_ope(records: dict[str, dict], path: str | Path, *, title: str = "") -> Path:
    """One panel per ``{label: ope record}``: each estimate with its interval, the on-policy value as a line (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm4rec.evaluation.report import save_figure

    fig, axes = plt.subplots(1, len(records), figsize=(3.2 * len(records), 3.4), squeeze=False)
    for ax, (label, rec) in zip(axes[0], records.items(), strict=True):
        names = list(rec["estimates"])
        est = np.array([[e["value"], e["ci_low"], e["ci_high"]] for e in rec["estimates"].values()])  # (m, 3)
        ax.errorbar(np.arange(len(names)), est[:, 0], yerr=[est[:, 0] - est[:, 1], est[:, 2] - est[:, 0]],
                    fmt="o", capsize=4, label="estimate, 95% CI")
        if "on_policy_value" in rec:
            ax.axhline(rec["on_policy_value"], color="C3", linestyle="--", label="on-policy value")
        ax.set_xticks(np.arange(len(names)), names, rotation=30)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("reward per impression")
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(title)
    return save_figure(fig, path)
