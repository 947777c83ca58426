"""Simulation summaries: Student-t intervals over seeds, paired verdicts, policy names."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t

from llm4rec.errors import InputError
from llm4rec.evaluation.simulation import parse_policies, summarize


def raw(clicks: list[list[float]]) -> dict[str, np.ndarray]:
    c = np.array(clicks, dtype=float)  # (seeds, episodes)
    return {"clicks": c, "steps": np.full_like(c, 2.0), "expected": c, "regret": np.ones_like(c)}


def test_summary_means_intervals_and_verdicts():
    rec = summarize({"greedy": raw([[1, 1], [2, 2], [3, 3]]), "slateq": raw([[3, 5], [5, 5], [6, 6]]),
                     "thompson": raw([[1, 3], [2, 2], [3, 3]]), "ucb1": raw([[0, 0], [0, 0], [0, 0]])},
                    seeds=[0, 1, 2], slate_size=2)
    greedy = rec["policies"]["greedy"]
    half = t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # per-seed means 1, 2, 3: sd 1
    assert greedy["reward_per_episode"] == pytest.approx({"mean": 2.0, "ci_low": 2 - half, "ci_high": 2 + half})
    assert greedy["ctr"]["mean"] == pytest.approx(0.5)  # 2 clicks per 2 steps of 2 slots
    assert greedy["curves"]["cumulative_reward"]["mean"] == [2.0, 4.0]
    comp = rec["comparisons"]
    assert comp["best_policy"] == "slateq" and comp["best_bandit"] == "thompson"
    assert comp["slateq_vs_greedy"]["difference"]["mean"] == pytest.approx(3.0)  # per seed 4 - 1, 5 - 2, 6 - 3
    assert comp["slateq_vs_greedy"]["verdict"] == "slateq wins"
    one = summarize({"greedy": raw([[1.0]]), "slateq": raw([[0.0]])}, seeds=[0], slate_size=1)
    assert one["policies"]["greedy"]["reward_per_episode"]["ci_low"] is None
    assert one["comparisons"]["slateq_vs_greedy"]["verdict"] == "one seed: no interval"


def test_policy_names():
    assert parse_policies("greedy, rl,thompson,rl") == ("greedy", "slateq", "thompson")
    with pytest.raises(InputError, match="unknown policy for the simulator"):
        parse_policies("greedy,dqn")
    with pytest.raises(InputError, match="no policy"):
        parse_policies(" , ")
