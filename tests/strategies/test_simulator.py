"""The simulator: Gymnasium contract, seeded determinism, position bias, fatigue and leaving with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from llm4rec.data import make_synthetic
from llm4rec.errors import InputError
from llm4rec.strategies.simulator import RecSimEnv, SimConfig, fit_response_model

SMALL = {"n_candidates": 10, "slate_size": 3, "session_length": 5}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=60, n_items=40, seed=0, interactions_per_user=(5, 15))


@pytest.fixture(scope="module")
def response(dataset):
    return fit_response_model(dataset, "pop", seed=0)


def orthogonal(response):
    """The response with one-hot item vectors: no two items alike."""
    n = response.n_items
    return dataclasses.replace(response, item_vectors=np.eye(n),
                               user_vectors=np.ones((len(response.user_vectors), n)) / n ** 0.5)


def test_env_passes_the_gymnasium_checker(response):
    check_env(RecSimEnv(response, SMALL), skip_render_check=True)


def test_calibration_is_a_rising_link_that_ranks_held_out_items_higher(response):
    diag = response.diagnostics
    assert diag["slope"] > 0 and diag["auc"] > 0.6
    assert diag["pairs"] == diag["positives"] * (1 + diag["negatives"])
    probs = response.click_probabilities(np.array([0, 1]))  # (2, n_items)
    scores = response.model.score_indices([0, 1])
    assert probs.shape == (2, response.n_items) and ((probs > 0) & (probs < 1)).all()
    order = np.argsort(scores[0])
    assert (np.diff(probs[0][order]) >= 0).all()  # monotone in the score


def run(env, actions, seed=3, user=None):
    """(observations, rewards, infos) of one episode playing ``actions(step)``."""
    obs, info = env.reset(seed=seed, options=None if user is None else {"user": user})
    out = [(obs, 0.0, info)]
    for t in range(env.config.session_length):
        obs, reward, terminated, truncated, info = env.step(actions(t))
        out.append((obs, reward, info))
        if terminated or truncated:
            break
    return out


def test_same_seed_same_episode_other_seed_other_users(response):
    env = RecSimEnv(response, SMALL)
    rng = np.random.default_rng(0)
    acts = [rng.permutation(10)[:3] for _ in range(5)]
    a, b = run(env, lambda t: acts[t]), run(RecSimEnv(response, SMALL), lambda t: acts[t])
    assert len(a) == len(b)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb and np.array_equal(ia["candidates"], ib["candidates"])
    users = {env.reset(seed=s)[1]["user"] for s in range(10)}
    assert len(users) > 1
    # the sequence of users does not depend on what the policy shows or how long sessions last
    sequences = []
    for steps in (1, 4):
        users = []
        for e in range(6):
            users.append(env.reset(seed=5 if e == 0 else None)[1]["user"])
            for _ in range(steps):
                env.step(np.arange(3))
        sequences.append(users)
    assert sequences[0] == sequences[1]


def test_position_bias_lowers_the_click_rate_of_lower_slots(response):
    env = RecSimEnv(response, {**SMALL, "fatigue": 0.0, "leave_base": 0.0, "leave_boredom": 0.0,
                               "session_length": 400})
    user = int(env.users[0])
    top = run(env, lambda t: np.array([0, 1, 2]), user=user)
    bottom = run(env, lambda t: np.array([1, 2, 0]), user=user)  # candidate 0 at the last slot
    rate_top = np.mean([info["clicks"][0] for _, _, info in top[1:]])
    rate_bottom = np.mean([info["clicks"][2] for _, _, info in bottom[1:]])
    assert rate_bottom < rate_top
    ratio = env.examination[2] / env.examination[0]  # 1 / log2(4) = 0.5
    assert ratio == pytest.approx(0.5)
    assert top[1][2]["expected"] == pytest.approx(env.attractiveness()[:3] @ env.examination)
    assert rate_bottom / rate_top == pytest.approx(ratio, abs=0.2)
    flat = RecSimEnv(response, {**SMALL, "position_bias": 0.0})
    np.testing.assert_array_equal(flat.examination, 1.0)


def test_fatigue_lowers_a_repeated_item_and_its_twin_by_exp_minus_fatigue_only(response):
    resp = orthogonal(response)
    twin_vecs = resp.item_vectors.copy()
    env = RecSimEnv(resp, {**SMALL, "fatigue": 0.7, "recovery": 0.5, "leave_base": 0.0, "leave_boredom": 0.0})
    _, info = env.reset(seed=1)
    cands = info["candidates"]
    twin_vecs[cands[5]] = twin_vecs[cands[0]]  # candidate 5 is exactly like candidate 0
    env = RecSimEnv(dataclasses.replace(resp, item_vectors=twin_vecs), env.config)
    env.reset(seed=1)
    fresh = env.attractiveness().copy()
    _, _, _, _, info = env.step(np.array([0, 1, 2]))
    after = env.attractiveness()
    np.testing.assert_allclose(after[[0, 1, 2, 5]] / fresh[[0, 1, 2, 5]], np.exp(-0.7))  # shown, and the twin
    np.testing.assert_allclose(after[[3, 4, 6, 7, 8, 9]], fresh[[3, 4, 6, 7, 8, 9]])  # unlike items: untouched
    env.step(np.array([0, 1, 2]))  # F = 0.5 * 1 + 1 = 1.5 for a twice-shown item
    np.testing.assert_allclose(env.attractiveness()[0] / fresh[0], np.exp(-0.7 * 1.5))
    # the expected reward falls at every repeat of the same slate
    expected = [info["expected"] for _, _, info in run(env, lambda t: np.array([0, 1, 2]), seed=2)[1:]]
    assert len(expected) == 5 and (np.diff(expected) < 0).all()


def test_bored_users_leave_early_fresh_ones_stay(response):
    cfg = {**SMALL, "session_length": 20, "leave_base": 0.0, "leave_boredom": 1.0, "fatigue": 3.0}
    lengths = [len(run(RecSimEnv(response, cfg), lambda t: np.array([0, 1, 2]), seed=s)) - 1 for s in range(5)]
    assert max(lengths) < 20
    never = {**cfg, "fatigue": 0.0}
    out = run(RecSimEnv(response, never), lambda t: np.array([0, 1, 2]), seed=0)
    assert len(out) - 1 == 20


def test_repeated_positions_are_empty_slots_and_the_oracle_is_myopically_best(response):
    env = RecSimEnv(response, {**SMALL, "fatigue": 0.0})
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([4, 4, 4]))
    assert info["items"][1:].tolist() == [-1, -1] and info["clicks"][1:].sum() == 0
    env.reset(seed=0)
    best = env.oracle_action()
    _, _, _, _, info = env.step(best)
    assert info["expected"] == pytest.approx(info["best_expected"])
    assert info["best_expected"] >= info["expected"]


def test_bad_settings_and_actions_are_clear_errors(dataset, response):
    with pytest.raises(InputError, match="unknown simulator setting 'fatigeu'"):
        SimConfig.parse({"fatigeu": 1})
    with pytest.raises(InputError, match="slate is longer"):
        SimConfig.parse({"slate_size": 9, "n_candidates": 5})
    with pytest.raises(InputError, match="recovery"):
        SimConfig.parse({"recovery": 1.0})
    env = RecSimEnv(response, SMALL)
    with pytest.raises(InputError, match="before reset"):
        env.step(np.arange(3))
    env.reset(seed=0)
    for bad in (np.arange(2), np.array([0, 1, 10]), np.array([0.0, 1.0, 2.0])):
        with pytest.raises(InputError, match="candidate positions"):
            env.step(bad)
    with pytest.raises(InputError, match="cannot start a session"):
        env.reset(options={"user": -5})
    with pytest.raises(InputError, match="unknown item vectors"):
        fit_response_model(dataset, vectors="pixels")


@pytest.mark.realdata
@pytest.mark.slow
def test_ml100k_simulator_calibrates_and_greedy_trails_the_oracle(ml100k):
    env = RecSimEnv.from_dataset(ml100k, "ease", settings={"l2": 400}, seed=0)
    assert env.response.diagnostics["auc"] > 0.85 and len(env.users) > 800
    totals = {}
    for name, act in (("greedy", lambda: np.arange(5)), ("oracle", env.oracle_action)):
        env.reset(seed=0)
        clicks = 0.0
        for e in range(30):
            env.reset()
            done = False
            while not done:
                _, r, term, trunc, _ = env.step(act())
                clicks, done = clicks + r, term or trunc
        totals[name] = clicks
    assert totals["oracle"] > 1.3 * totals["greedy"]
