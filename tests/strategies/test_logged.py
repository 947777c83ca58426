"""The fixed policies behind off-policy evaluation: uniform and empirical (replayed logs)."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data.logs import BanditLogs
from llm4rec.errors import InputError
from llm4rec.strategies import create_policy, load_policy
from llm4rec.strategies.logged import EmpiricalPolicy


def logs() -> BanditLogs:
    return BanditLogs(action=np.array([0, 0, 1, 2, 2, 2]), position=np.array([0, 0, 0, 1, 1, 0]),
                      reward=np.zeros(6), propensity=np.full(6, 0.5), n_actions=4, n_positions=2)


def test_uniform_is_exact_and_draws_without_replacement():
    policy = create_policy("uniform", 5, seed=3)
    dist = policy.distribution(None, 7, 3)
    assert dist.shape == (7, 5, 3) and np.all(dist == 0.2)
    slate = policy.select(None, np.array([4, 1, 3]), 3)
    assert sorted(slate.items.tolist()) == [1, 3, 4] and np.all(slate.propensities == 1 / 3)
    with pytest.raises(InputError, match="slate longer than the candidates"):
        policy.select(None, np.array([1]), 2)


def test_empirical_replays_the_frequencies_per_position(tmp_path):
    policy = EmpiricalPolicy.from_logs(logs())
    expected = np.array([[0.5, 0], [0.25, 0], [0.25, 1], [0, 0]])  # 4 rows at position 0, 2 at position 1
    np.testing.assert_allclose(policy.freq_, expected)
    np.testing.assert_allclose(policy.distribution(None, 3, 2), np.broadcast_to(expected, (3, 4, 2)))
    loaded = load_policy(policy.save(tmp_path / "p"))
    assert loaded.name == "empirical"
    np.testing.assert_array_equal(loaded.distribution(None, 3, 2), policy.distribution(None, 3, 2))
    with pytest.raises(InputError, match="more positions"):
        policy.distribution(None, 3, 3)


def test_empirical_select_follows_the_first_position():
    policy = EmpiricalPolicy.from_logs(logs(), seed=0)
    firsts = np.array([policy.select(None, np.arange(4), 2).items for _ in range(2000)])  # (2000, 2)
    assert np.all(firsts[:, 0] != firsts[:, 1])
    shares = np.bincount(firsts[:, 0], minlength=4) / 2000
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.25, 0], atol=0.04)
    slate = policy.select(None, np.array([1, 2]), 1)
    assert slate.propensities[0] == pytest.approx(0.5)  # 0.25 / (0.25 + 0.25) among these candidates
