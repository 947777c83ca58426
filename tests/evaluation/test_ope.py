"""Off-policy estimators on logs from a known environment, and on the Open Bandit Dataset sample."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data.logs import BanditLogs, load_bandit_logs
from llm4rec.errors import InputError
from llm4rec.evaluation.ope import (
    ESTIMATORS,
    estimate_policy_value,
    off_policy_evaluation,
    parse_estimators,
)

N_ACTIONS, N_POSITIONS = 6, 2
#: the environment: click probability of action a at position j
CLICK = np.array([[0.05, 0.03], [0.10, 0.06], [0.20, 0.12], [0.02, 0.01], [0.30, 0.20], [0.08, 0.05]])
#: the logging policy and the evaluation policy: P(a at j), columns sum to 1
BEHAVIOUR = np.array([[0.3, 0.2], [0.3, 0.2], [0.1, 0.2], [0.1, 0.2], [0.1, 0.1], [0.1, 0.1]])
TARGET = np.array([[0.05, 0.1], [0.05, 0.1], [0.3, 0.2], [0.05, 0.1], [0.5, 0.4], [0.05, 0.1]])


def simulate(n: int, seed: int, noise_free: bool = False) -> BanditLogs:
    """n impressions: position uniform, action ~ BEHAVIOUR[:, position], click ~ Bernoulli(CLICK)."""
    rng = np.random.default_rng(seed)
    position = rng.integers(0, N_POSITIONS, n)
    cdf = BEHAVIOUR.cumsum(axis=0)[:, position].T  # (n, A)
    action = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), N_ACTIONS - 1)
    p = CLICK[action, position]
    reward = p if noise_free else (rng.random(n) < p).astype(np.float64)
    return BanditLogs(action=action, position=position, reward=reward, propensity=BEHAVIOUR[action, position],
                      n_actions=N_ACTIONS, n_positions=N_POSITIONS, name="sim")


def dist(policy: np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(policy, (n, N_ACTIONS, N_POSITIONS))


def truth(logs: BanditLogs, policy: np.ndarray = TARGET) -> float:
    """The policy's expected reward per impression at the logged positions."""
    return float((policy * CLICK).sum(axis=0)[logs.position].mean())


def test_the_logging_policy_is_its_own_mean_reward():
    logs = simulate(3000, seed=1)
    est = estimate_policy_value(logs, dist(BEHAVIOUR, 3000), ("ips", "snips"), n_bootstrap=50)
    assert est["ips"]["value"] == pytest.approx(logs.mean_reward, rel=1e-12)  # every weight is 1
    assert est["snips"]["value"] == pytest.approx(logs.mean_reward, rel=1e-12)
    assert est["ips"]["ci_low"] < logs.mean_reward < est["ips"]["ci_high"]


def test_snips_of_the_logger_is_the_mean_reward_even_with_per_round_propensities():
    logs = simulate(2000, seed=2)
    scale = np.random.default_rng(0).uniform(0.5, 1.0, 2000)
    logged = BanditLogs(action=logs.action, position=logs.position, reward=logs.reward,
                        propensity=logs.propensity * scale, n_actions=N_ACTIONS, n_positions=N_POSITIONS)
    d = np.array(dist(BEHAVIOUR, 2000))
    d[np.arange(2000), logs.action, logs.position] *= scale  # the logger's own probability per round
    d[np.arange(2000), (logs.action + 1) % N_ACTIONS, logs.position] += (1 - scale) * logs.propensity
    est = estimate_policy_value(logged, d, ("snips",), n_bootstrap=0)["snips"]
    assert est["value"] == pytest.approx(logs.mean_reward, rel=1e-12) == est["ci_low"] == est["ci_high"]


def test_dm_and_dr_are_exact_with_a_perfect_model_and_dr_survives_a_wrong_one():
    logs = simulate(4000, seed=3, noise_free=True)  # rewards = expected rewards: the model's residuals are 0
    perfect = np.broadcast_to(CLICK, (4000, N_ACTIONS, N_POSITIONS))
    est = estimate_policy_value(logs, dist(TARGET, 4000), ("dm", "dr", "switch-dr"), q_hat=perfect, n_bootstrap=0)
    for name in ("dm", "dr", "switch-dr"):
        assert est[name]["value"] == pytest.approx(truth(logs), rel=1e-12)
    wrong = np.full((4000, N_ACTIONS, N_POSITIONS), 0.5)
    values = {"dm": [], "dr": []}
    for seed in range(10):  # the importance-weighted correction removes the wrong model's bias
        logs = simulate(4000, seed=10 + seed)
        est = estimate_policy_value(logs, dist(TARGET, 4000), ("dm", "dr"), q_hat=wrong, n_bootstrap=0)
        for name in values:
            values[name].append(est[name]["value"] - truth(logs))
    assert abs(np.mean(values["dm"])) > 0.3 and abs(np.mean(values["dr"])) < 0.01


def test_every_interval_covers_the_truth_for_most_seeds():
    """Nominal 19 of 20 (19 each at these seeds); dm carries a small shrinkage bias, so not at n = 3000."""
    inside = dict.fromkeys(ESTIMATORS, 0)
    for seed in range(20):
        logs = simulate(10000, seed=100 + seed)
        est = estimate_policy_value(logs, dist(TARGET, 10000), n_bootstrap=300, seed=seed)
        for name, e in est.items():
            inside[name] += e["ci_low"] <= truth(logs) <= e["ci_high"]
            assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert all(count >= 16 for count in inside.values()), inside


def test_seeded_and_deterministic():
    logs = simulate(1000, seed=4)
    a, b = (estimate_policy_value(logs, dist(TARGET, 1000), n_bootstrap=100, seed=7) for _ in range(2))
    c = estimate_policy_value(logs, dist(TARGET, 1000), n_bootstrap=100, seed=8)
    assert a == b and a["ips"]["ci_low"] != c["ips"]["ci_low"]


def test_bad_distributions_and_estimators_are_named():
    logs = simulate(100, seed=5)
    with pytest.raises(InputError, match="mismatched action sets: the evaluation policy has 5 actions"):
        estimate_policy_value(logs, np.full((100, 5, 2), 0.2))
    with pytest.raises(InputError, match="not a probability distribution"):
        estimate_policy_value(logs, np.full((100, N_ACTIONS, 2), 0.5))
    with pytest.raises(InputError, match=r"unknown estimator \(got 'ipw'"):
        parse_estimators("ips,ipw")
    with pytest.raises(InputError, match=r"unknown policy \(got 'bts'"):
        off_policy_evaluation(logs, "bts")


@pytest.mark.realdata
@pytest.mark.parametrize("campaign", ["all", "men", "women"])
def test_obd_bts_from_random_logs(shared_data, campaign):
    """The issue's target: on-policy BTS click rate inside the SNIPS and DR 95% intervals, error <= 35%."""
    obd = shared_data / "obd"
    record = off_policy_evaluation(load_bandit_logs(obd / "random" / campaign), f"empirical:{obd / 'bts' / campaign}")
    true = record["on_policy_value"]
    for name in ("snips", "dr"):
        est = record["estimates"][name]
        assert est["ci_low"] <= true <= est["ci_high"], (name, est, true)
        assert abs(est["value"] - true) / true <= 0.35, (name, est, true)
