"""Reports: bootstrap intervals of per-user means, the comparison chart, the simulation chart's bands."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.evaluation import report
from llm4rec.evaluation.report import comparison_figure, mean_interval
from llm4rec.evaluation.simulation import plot_simulation, summarize


def test_mean_interval_known_answers():
    assert mean_interval(np.full(50, 0.25)) == (0.25, 0.25)  # no spread, no width
    hits = np.r_[np.ones(300), np.zeros(700)]  # p = 0.3 over 1000 users: the normal approximation
    low, high = mean_interval(hits, n_boot=4000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 1000)
    assert low == pytest.approx(0.3 - half, abs=0.004) and high == pytest.approx(0.3 + half, abs=0.004)
    assert mean_interval(hits, seed=5) == mean_interval(hits, seed=5)


def test_comparison_figure_has_intervals_a_zero_floor_and_its_title():
    import matplotlib.pyplot as plt

    rows = [{"model": "pop", "metrics": {"HR@10": 0.1, "NDCG@10": 0.05},
             "intervals": {"HR@10": [0.08, 0.12], "NDCG@10": [0.04, 0.06]}},
            {"model": "ease", "label": "ease (chosen)", "metrics": {"HR@10": 0.3, "NDCG@10": 0.2},
             "intervals": {"HR@10": [0.27, 0.33], "NDCG@10": [0.18, 0.22]}}]
    fig = comparison_figure(rows, ["HR@10", "NDCG@10"], title="toy: P-LOO (full ranking), test stage, seed 7")
    ax = fig.axes[0]
    assert ax.get_title() == "toy: P-LOO (full ranking), test stage, seed 7"
    assert ax.get_ylim()[0] == 0 and [t.get_text() for t in ax.get_xticklabels()] == ["HR@10", "NDCG@10"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pop", "ease (chosen)"]
    bars = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert len(bars) == 2
    segments = bars[1].errorbar.lines[2][0].get_segments()  # ease's vertical error lines, one per metric
    assert [tuple(np.round(s[:, 1], 6)) for s in segments] == [(0.27, 0.33), (0.18, 0.22)]
    plt.close(fig)


def test_simulation_bands_never_go_below_zero(monkeypatch, tmp_path):
    """Two seeds far apart give a Student-t interval reaching below zero; the drawn band stops at zero."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=120: figures.append(fig))
    clicks = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])  # (seeds, episodes)
    raw = {name: {"clicks": clicks, "steps": np.full_like(clicks, 2.0), "expected": clicks,
                  "regret": clicks[::-1]} for name in ("greedy", "slateq")}
    record = summarize(raw, seeds=[0, 1], slate_size=2)
    assert min(record["policies"]["greedy"]["curves"]["cumulative_reward"]["ci_low"]) < 0
    plot_simulation(record, tmp_path / "curves.png")
    (fig,) = figures
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0
        for band in ax.collections:
            assert min(p.vertices[:, 1].min() for p in band.get_paths()) >= 0
    assert "95% band" in fig._suptitle.get_text()
