"""Context-free bandits: known-answer regret, exact and Monte Carlo propensities, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.strategies import Feedback, create_policy, load_policy

MEANS = np.array([0.3, 0.2, 0.75, 0.4, 0.5])  # Bernoulli arms; arm 2 is the best
BEST = 2
BANDITS = {
    "epsilon-greedy": {"epsilon": 0.5, "decay": 0.05},
    "ucb1": {},
    "thompson": {"propensity_samples": 50},
    "gaussian-thompson": {"noise_var": 0.25, "propensity_samples": 50},
    "gaussian-thompson/normal-gamma": {"prior": "normal-gamma", "propensity_samples": 50},
}


def make(key: str, seed: int = 1, n: int = len(MEANS)):
    return create_policy(key.split("/")[0], n, seed=seed, **BANDITS[key])


def play(policy, rounds: int, k: int = 1, seed: int = 7, means: np.ndarray = MEANS) -> tuple[np.ndarray, np.ndarray]:
    """(chosen int64[rounds, k], per-round expected regret float[rounds]) on a Bernoulli bandit."""
    env = np.random.default_rng(seed)
    best = np.sort(means)[::-1][:k].sum()
    chosen, regret = [], []
    for _ in range(rounds):
        slate = policy.select(None, np.arange(len(means)), k)
        chosen.append(slate.items)
        regret.append(best - means[slate.items].sum())
        policy.update(Feedback(None, slate.items, (env.random(k) < means[slate.items]).astype(float)))
    return np.array(chosen), np.array(regret)


@pytest.mark.parametrize("key", list(BANDITS))
def test_regret_grows_sublinearly_and_the_best_arm_wins(key):
    chosen, regret = play(make(key), 2000)
    first, second = regret[:1000].sum(), regret[1000:].sum()
    assert second < 0.5 * first, (first, second)
    assert regret.sum() < 0.25 * 2000 * (MEANS.max() - MEANS.mean())  # far below uniform random's regret
    late = np.bincount(chosen[-500:, 0], minlength=len(MEANS))
    assert late.argmax() == BEST and late[BEST] > 0.8 * 500


@pytest.mark.parametrize("key", ["ucb1", "thompson"])
def test_slates_learn_the_best_two_arms_from_semi_bandit_feedback(key):
    means = np.array([0.1, 0.8, 0.3, 0.65, 0.2])  # the best slate holds arms 1 and 3
    chosen, regret = play(make(key), 1500, k=2, means=means)
    assert regret[750:].sum() < 0.5 * regret[:750].sum()
    assert set(np.bincount(chosen[-300:].ravel(), minlength=5).argsort()[-2:]) == {1, 3}


def trained(key: str):
    policy = make(key, seed=5)
    play(policy, 30, k=2, seed=3)
    return policy


@pytest.mark.parametrize("key", ["epsilon-greedy", "thompson", "gaussian-thompson/normal-gamma"])
def test_propensities_match_the_selection_frequencies(key):
    policy = trained(key)
    cands, k, n = np.array([4, 0, 2, 3]), 2, 3000
    counts, reported = np.zeros((5, k)), np.zeros((5, k))
    for _ in range(n):  # select never changes what the policy learned, only its random stream
        slate = policy.select(None, cands, k)
        assert np.all((slate.propensities > 0) & (slate.propensities <= 1))
        counts[slate.items, np.arange(k)] += 1
        reported[slate.items, np.arange(k)] += slate.propensities
    freq = counts / n
    shown = counts > 0
    mean_reported = reported[shown] / counts[shown]  # average reported P(a at j) over the rounds that showed it
    np.testing.assert_allclose(mean_reported, freq[shown], atol=0.04)
    if key == "epsilon-greedy":  # exact: the same value every time
        np.testing.assert_allclose(reported[shown] / counts[shown], freq[shown], atol=3 * np.sqrt(0.25 / n))


@pytest.mark.parametrize("key", list(BANDITS))
def test_distribution_is_a_broadcast_slate_distribution(key):
    policy = trained(key)
    dist = policy.distribution(None, 4, 3)
    assert dist.shape == (4, 5, 3)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)  # each position holds one action
    assert np.all(dist.sum(axis=2) <= 1 + 1e-9)  # an action takes one position at most
    np.testing.assert_array_equal(dist[0], dist[3])
    if key in ("epsilon-greedy", "thompson"):  # against the empirical frequencies over all actions
        n = 2000
        counts = np.zeros((5, 3))
        for _ in range(n):
            counts[policy.select(None, np.arange(5), 3).items, np.arange(3)] += 1
        np.testing.assert_allclose(counts / n, dist[0], atol=0.05)


def test_ucb1_is_deterministic_and_tries_every_arm_first():
    policy = make("ucb1")
    chosen, _ = play(policy, 5)
    assert sorted(chosen[:, 0].tolist()) == [0, 1, 2, 3, 4]
    slate = policy.select(None, np.arange(5), 3)
    np.testing.assert_array_equal(slate.propensities, 1.0)
    dist = policy.distribution(None, 1, 3)[0]
    np.testing.assert_array_equal(dist[slate.items, np.arange(3)], 1.0)


@pytest.mark.parametrize("key", list(BANDITS))
def test_save_load_continues_identically(tmp_path, key):
    policy = make(key)
    play(policy, 40, k=2)
    loaded = load_policy(policy.save(tmp_path / "p"))
    assert loaded.name == policy.name and loaded.config == policy.config
    a, ra = play(policy, 30, k=2, seed=11)
    b, rb = play(loaded, 30, k=2, seed=11)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)


@pytest.mark.parametrize("key", list(BANDITS))
def test_same_seed_same_run(key):
    a, _ = play(make(key, seed=4), 60, k=2)
    b, _ = play(make(key, seed=4), 60, k=2)
    np.testing.assert_array_equal(a, b)


def test_epsilon_decays():
    policy = create_policy("epsilon-greedy", 3, epsilon=0.4, decay=1.0)
    assert policy.epsilon_now() == 0.4
    policy.update(Feedback(None, np.array([0]), np.array([1.0])))
    assert policy.epsilon_now() == pytest.approx(0.2)


def test_thompson_accepts_fractional_rewards_in_unit_interval():
    policy = create_policy("thompson", 3)
    policy.update(Feedback(None, np.array([1, 2]), np.array([0.25, 1.0])))
    np.testing.assert_allclose(policy.sums_, [0.0, 0.25, 1.0])


@pytest.mark.parametrize("name, settings, match", [
    ("epsilon-greedy", {"epsilon": -0.1}, "'epsilon'"),
    ("epsilon-greedy", {"decay": -1}, "'decay'"),
    ("ucb1", {"exploration": 0}, "'exploration'"),
    ("thompson", {"alpha": 0}, "'alpha'"),
    ("thompson", {"propensity_samples": 0}, "propensity_samples"),
    ("gaussian-thompson", {"prior": "cauchy"}, "'prior'"),
    ("gaussian-thompson", {"noise_var": -1}, "'noise_var'"),
])
def test_bad_settings_are_named(name, settings, match):
    with pytest.raises(InputError, match=match):
        create_policy(name, 3, **settings)


def test_bad_requests_and_feedback():
    policy = create_policy("thompson", 4)
    with pytest.raises(InputError, match="slate size k"):
        policy.select(None, np.array([0, 1]), 3)
    with pytest.raises(InputError, match="out of range"):
        policy.select(None, np.array([0, 4]), 1)
    with pytest.raises(InputError, match="repeated"):
        policy.select(None, np.array([1, 1]), 1)
    with pytest.raises(InputError, match=r"rewards in \[0, 1\]"):
        policy.update(Feedback(None, np.array([0]), np.array([2.0])))
    with pytest.raises(InputError, match="one reward per shown item"):
        policy.update(Feedback(None, np.array([0, 1]), np.array([1.0])))
    with pytest.raises(InputError, match="twice"):
        policy.update(Feedback(None, np.array([1, 1]), np.array([1.0, 0.0])))
    with pytest.raises(InputError, match="slate size k"):
        policy.distribution(None, 2, 5)
    with pytest.raises(InputError, match="unknown policy"):
        create_policy("thompsn", 4)


def test_a_misspelt_setting_is_named():
    with pytest.raises(InputError, match="unknown setting 'epsilon_' for policy 'epsilon-greedy'"):
        create_policy("epsilon-greedy", 3, epsilon_=0.2)
