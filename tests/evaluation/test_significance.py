"""Paired significance tests: degenerate input, clear effects, CI coverage, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from llm4rec.errors import InputError
from llm4rec.evaluation.significance import PairedResult, paired_test


def test_identical_arrays_show_no_difference():
    a = np.random.default_rng(0).random(50)
    r = paired_test(a, a.copy(), n_boot=500)
    assert r.mean_diff == 0.0
    assert r.t_statistic == 0.0 and r.t_pvalue == 1.0 and r.wilcoxon_pvalue == 1.0
    assert r.ci_low == 0.0 == r.ci_high


def test_constant_nonzero_shift_is_certain():
    a = np.random.default_rng(0).random(20)
    r = paired_test(a + 0.5, a, n_boot=200)
    assert r.t_statistic == np.inf and r.t_pvalue == 0.0
    assert r.wilcoxon_pvalue < 1e-4
    assert r.ci_low == pytest.approx(0.5) and r.ci_high == pytest.approx(0.5)


def test_clear_shift_gives_tiny_p_and_ci_excluding_zero():
    rng = np.random.default_rng(1)
    b = rng.random(300)
    a = b + 0.1 + rng.normal(0, 0.05, 300)
    r = paired_test(a, b, n_boot=2000)
    assert r.mean_diff == pytest.approx(np.mean(a - b))
    assert r.t_pvalue < 1e-30 and r.wilcoxon_pvalue < 1e-30
    assert 0 < r.ci_low < r.mean_diff < r.ci_high
    flipped = paired_test(b, a, n_boot=2000)
    assert flipped.t_statistic == pytest.approx(-r.t_statistic)
    assert flipped.ci_high < 0


def test_matches_scipy_on_binary_metrics():
    """Per-user HR values: many ties and zero differences."""
    rng = np.random.default_rng(2)
    a = (rng.random(400) < 0.35).astype(float)
    b = (rng.random(400) < 0.30).astype(float)
    r = paired_test(a, b, n_boot=1000)
    t = stats.ttest_rel(a, b)
    assert r.t_statistic == pytest.approx(t.statistic) and r.t_pvalue == pytest.approx(t.pvalue)
    assert r.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert (r.mean_a, r.mean_b, r.n) == (pytest.approx(a.mean()), pytest.approx(b.mean()), 400)


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means():
    d = np.array([0.0, 1.0, 3.0, 7.0])
    r = paired_test(d, np.zeros(4), n_boot=4000, alpha=0.1)
    rng = np.random.default_rng(2026)
    means = [d[rng.integers(0, 4, 4)].mean() for _ in range(4000)]
    lo, hi = np.quantile(means, [0.05, 0.95])
    # same distribution, independent draws: agree to Monte Carlo error on a grid of 1/4 steps
    assert abs(r.ci_low - lo) <= 0.25 and abs(r.ci_high - hi) <= 0.25
    assert d.min() <= r.ci_low < r.mean_diff < r.ci_high <= d.max()


def test_ci_coverage_on_normal_data():
    rng = np.random.default_rng(7)
    true_diff, reps = 0.3, 200
    covered = 0
    for _ in range(reps):
        b = rng.normal(0.0, 1.0, 40)
        a = b + true_diff + rng.normal(0.0, 0.5, 40)
        r = paired_test(a, b, n_boot=400, seed=int(rng.integers(1 << 31)))
        covered += r.ci_low <= true_diff <= r.ci_high
    assert 0.88 <= covered / reps <= 0.99


def test_alpha_widens_interval():
    rng = np.random.default_rng(3)
    a, b = rng.random(60), rng.random(60)
    narrow = paired_test(a, b, n_boot=2000, alpha=0.2)
    wide = paired_test(a, b, n_boot=2000, alpha=0.01)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_deterministic_under_seed():
    rng = np.random.default_rng(4)
    a, b = rng.random(100), rng.random(100)
    assert paired_test(a, b, n_boot=300, seed=5) == paired_test(a, b, n_boot=300, seed=5)
    assert paired_test(a, b, n_boot=300, seed=5).ci_low != paired_test(a, b, n_boot=300, seed=6).ci_low


def test_bootstrap_chunks_cover_every_resample(monkeypatch):
    """A budget smaller than one resample per chunk still fills all n_boot means."""
    import llm4rec.evaluation.significance as sig

    rng = np.random.default_rng(8)
    a, b = rng.random(30), rng.random(30)
    monkeypatch.setattr(sig, "_BOOT_BUDGET", 70)  # 2 resamples per chunk, last chunk partial
    r = sig.paired_test(a, b, n_boot=101)
    assert np.isfinite([r.ci_low, r.ci_high]).all() and r.ci_low < r.mean_diff < r.ci_high


def test_to_dict_is_json_ready():
    r = paired_test([0.1, 0.4, 0.3], [0.0, 0.2, 0.35], n_boot=50)
    d = r.to_dict()
    assert set(d) == {f for f in PairedResult.__dataclass_fields__}
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(("a", "b", "match"), [
    ([1.0, 2.0], [1.0], "different lengths"),
    ([], [], "at least 2"),
    ([1.0], [0.0], "at least 2"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
    ([1.0, np.nan], [0.0, 0.0], "NaN"),
])
def test_bad_input(a, b, match):
    with pytest.raises(InputError, match=match):
        paired_test(np.array(a), np.array(b))


@pytest.mark.parametrize("kw", [{"n_boot": 0}, {"alpha": 0.0}, {"alpha": 1.0}])
def test_bad_options(kw):
    with pytest.raises(InputError):
        paired_test([1.0, 2.0], [0.0, 1.5], **kw)
