"""Linear bandits (disjoint and shared) and neural-linear: known answers, exact updates, propensities, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.strategies import Feedback, create_policy, load_policy

N_ARMS, DIM = 6, 4
_rng = np.random.default_rng(0)
THETA = _rng.normal(size=(N_ARMS, DIM))  # disjoint truth: reward of arm a in context c is THETA[a] . c
PROTOS = np.eye(DIM)[:3] * 1.5 + 0.2  # three typical contexts, each with its own best arm
ITEMS = _rng.normal(size=(20, DIM))  # shared truth: reward of item a is ITEMS[a] . W
W = np.array([1.0, -0.5, 0.8, 0.3])


def play_disjoint(policy, rounds: int, seed: int = 3) -> np.ndarray:
    """Per-round regret of ``policy`` (None: uniform random) on contexts near PROTOS, Gaussian noise."""
    env = np.random.default_rng(seed)
    regret = np.empty(rounds)
    for t in range(rounds):
        c = PROTOS[env.integers(3)] + 0.1 * env.normal(size=DIM)
        means = THETA @ c
        arm = env.integers(N_ARMS) if policy is None else policy.select(c, np.arange(N_ARMS), 1).items[0]
        regret[t] = means.max() - means[arm]
        if policy is not None:
            policy.update(Feedback(c, np.array([arm]), np.array([means[arm] + 0.5 * env.normal()])))
    return regret


@pytest.mark.parametrize("name", ["linucb", "lin-thompson"])
def test_disjoint_beats_random_and_finds_the_best_arm_per_context(name):
    policy = create_policy(name, N_ARMS, seed=1, context_dim=DIM, **({"propensity_samples": 20}
                                                                    if name == "lin-thompson" else {}))
    regret = play_disjoint(policy, 1200)
    random = play_disjoint(None, 1200)
    assert regret.sum() < 0.2 * random.sum()
    assert regret[600:].sum() < 0.5 * regret[:600].sum()
    greedy = create_policy("linucb", N_ARMS, context_dim=DIM, alpha=0.0)  # the learned means, no bonus
    greedy._set_state(policy._state())
    for c in PROTOS:
        assert greedy.select(c, np.arange(N_ARMS), 1).items[0] == np.argmax(THETA @ c)


def shared(name: str, features: str = "item", **settings):
    dim = {"item": 0, "concat": DIM, "product": DIM, "outer": 2}[features]
    feats = ITEMS[:, :2] if features == "outer" else ITEMS
    return create_policy(name, len(ITEMS), seed=2, model="shared", features=features, context_dim=dim,
                         item_features=feats, **settings)


@pytest.mark.parametrize("name", ["linucb", "lin-thompson", "neural-linear"])
def test_shared_model_explores_new_items_through_their_features(name):
    policy = shared(name)
    env = np.random.default_rng(5)
    old, new = np.arange(10), np.arange(10, 20)
    for _ in range(300):  # learn on the first ten items only
        slate = policy.select(None, old, 2)
        policy.update(Feedback(None, slate.items, ITEMS[slate.items] @ W + 0.3 * env.normal(size=2)))
    truth = ITEMS @ W
    assert policy.select(None, old, 1).items[0] == old[np.argmax(truth[old])]
    # items never shown: their features already say which one is best, and exploration stays among the good ones
    mean, _ = policy._moments(None, new)
    assert new[np.argmax(mean[0])] == new[np.argmax(truth[new])]
    picks = [policy.select(None, new, 1).items[0] for _ in range(20)]
    assert set(picks) <= set(new[np.argsort(truth[new])[-3:]])


@pytest.mark.parametrize("features", ["item", "concat", "product", "outer"])
def test_updates_keep_the_inverse_and_variances_exact(features):
    policy = shared("linucb", features)
    env = np.random.default_rng(1)
    dc = policy.config["context_dim"]
    for _ in range(25):
        c = env.normal(size=dc) if dc else None
        slate = policy.select(c, np.arange(20), 3)
        policy.update(Feedback(c, slate.items, env.normal(size=3)))
    np.testing.assert_allclose(policy.A_inv_, np.linalg.inv(policy.A_), atol=1e-10)
    np.testing.assert_allclose(policy.theta_, np.linalg.solve(policy.A_, policy.b_), atol=1e-10)
    c = env.normal(size=dc) if dc else None
    cands = np.array([3, 17, 0, 9])
    mean, var = policy._moments(policy._contexts(c), cands)
    x = policy._features(policy._contexts(c), cands)[0]
    np.testing.assert_allclose(mean[0], x @ policy.theta_, atol=1e-10)
    np.testing.assert_allclose(var[0], np.einsum("cd,de,ce->c", x, np.linalg.inv(policy.A_), x), atol=1e-10)


def test_disjoint_update_is_ridge_regression_per_arm():
    policy = create_policy("linucb", 3, context_dim=2, ridge=0.5)
    env = np.random.default_rng(2)
    xs = []
    for _ in range(10):
        c = env.normal(size=2)
        policy.update(Feedback(c, np.array([1, 2]), np.array([1.0, -1.0])))
        xs.append(c)
    x = np.array(xs)
    a = 0.5 * np.eye(2) + x.T @ x
    np.testing.assert_allclose(policy.A_inv_[1], np.linalg.inv(a), atol=1e-12)
    np.testing.assert_allclose(policy.theta_[2], np.linalg.solve(a, -x.sum(0)), atol=1e-12)
    np.testing.assert_array_equal(policy.theta_[0], 0.0)


def trained(name: str, model: str):
    settings = {"propensity_samples": 2000} if name == "lin-thompson" else {}
    policy = (create_policy(name, N_ARMS, seed=4, context_dim=DIM, **settings) if model == "disjoint"
              else shared(name, "product", **settings))
    env = np.random.default_rng(6)
    n = policy.n_actions
    for _ in range(8):
        c = env.normal(size=DIM)
        slate = policy.select(c, np.arange(n), 2)
        policy.update(Feedback(c, slate.items, env.normal(size=2)))
    return policy


@pytest.mark.parametrize("model", ["disjoint", "shared"])
def test_thompson_propensities_match_the_selection_frequencies(model):
    policy = trained("lin-thompson", model)
    c = np.array([0.5, -1.0, 0.3, 0.8])
    cands, k, n = np.arange(5), 2, 2000
    counts, reported = np.zeros((policy.n_actions, k)), np.zeros((policy.n_actions, k))
    for _ in range(n):
        slate = policy.select(c, cands, k)
        assert np.all((slate.propensities > 0) & (slate.propensities <= 1))
        counts[slate.items, np.arange(k)] += 1
        reported[slate.items, np.arange(k)] += slate.propensities
    shown = counts > 0
    np.testing.assert_allclose(reported[shown] / counts[shown], (counts / n)[shown], atol=0.04)
    dist = policy.distribution(np.tile(c, (2, 1)), 2, k)
    assert dist.shape == (2, policy.n_actions, k)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    # over all actions as candidates, against the empirical frequencies
    counts = np.zeros((policy.n_actions, k))
    for _ in range(n):
        counts[policy.select(c, np.arange(policy.n_actions), k).items, np.arange(k)] += 1
    np.testing.assert_allclose(counts / n, dist[0], atol=0.05)


@pytest.mark.parametrize("model", ["disjoint", "shared"])
def test_linucb_distribution_is_the_selection(model):
    policy = trained("linucb", model)
    contexts = np.random.default_rng(8).normal(size=(5, DIM))
    dist = policy.distribution(contexts, 5, 3)
    for r, c in enumerate(contexts):
        slate = policy.select(c, np.arange(policy.n_actions), 3)
        np.testing.assert_array_equal(slate.propensities, 1.0)
        np.testing.assert_array_equal(dist[r][slate.items, np.arange(3)], 1.0)
    assert dist.sum() == 15


@pytest.mark.parametrize("name", ["linucb", "lin-thompson"])
@pytest.mark.parametrize("model", ["disjoint", "shared"])
def test_save_load_continues_identically(tmp_path, name, model):
    policy = trained(name, model)
    loaded = load_policy(policy.save(tmp_path / "p"))
    env = np.random.default_rng(9)
    for _ in range(10):
        c = env.normal(size=DIM)
        a, b = policy.select(c, np.arange(policy.n_actions), 2), loaded.select(c, np.arange(policy.n_actions), 2)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.propensities, b.propensities)
        rewards = env.normal(size=2)
        policy.update(Feedback(c, a.items, rewards))
        loaded.update(Feedback(c, b.items, rewards))


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        policy = create_policy("lin-thompson", N_ARMS, seed=11, context_dim=DIM, propensity_samples=10)
        runs.append(play_disjoint(policy, 50))
    np.testing.assert_array_equal(*runs)


def test_neural_linear_on_a_fitted_model_learns_the_liked_parity():
    from llm4rec.models import create_model
    from llm4rec.strategies.neural_linear import NeuralLinear, item_vectors
    from llm4rec.testing.checkerboard import checkerboard

    model = create_model("als", {"factors": 8, "regularization": 0.1, "iterations": 10}).fit(checkerboard())
    policy = NeuralLinear.from_model(model, seed=3, propensity_samples=10)
    assert policy.item_features_.shape == (30, 8)
    np.testing.assert_allclose(policy.item_features_, item_vectors(model))
    env = np.random.default_rng(0)
    liked = (np.arange(30) % 2 == 0).astype(float)  # this user clicks even items (70%), odd ones rarely (10%)
    shown = []
    for _ in range(150):
        slate = policy.select(None, np.arange(30), 3)
        policy.update(Feedback(None, slate.items, (env.random(3) < 0.1 + 0.6 * liked[slate.items]).astype(float)))
        shown.append(slate.items)
    late = np.concatenate(shown[-50:])
    assert liked[late].mean() > 0.9
    with pytest.raises(InputError, match="no item representations"):
        NeuralLinear.from_model(create_model("pop").fit(checkerboard()))
    custom = NeuralLinear.from_model(model, vectors=lambda m: np.ones((30, 2)), algorithm="ucb")
    assert custom.item_features_.shape == (30, 2) and custom.select(None, np.arange(30), 2).items.shape == (2,)


def test_neural_linear_reads_the_two_tower_item_vectors():
    from llm4rec.models import create_model
    from llm4rec.strategies.neural_linear import NeuralLinear, item_vectors
    from llm4rec.testing.checkerboard import checkerboard

    model = create_model("llm-two-tower", {"dim": 16, "hidden": 0, "negatives": 10, "batch_size": 32, "epochs": 2,
                                           "valid": "none", "history": "others"}).fit(checkerboard())
    policy = NeuralLinear.from_model(model, seed=3, propensity_samples=10)
    assert policy.item_features_.shape == (30, 16) and item_vectors(model).dtype == np.float64
    np.testing.assert_array_equal(policy.item_features_, model.item_vectors().astype(np.float64))
    scores = model.score_indices([0])[0]  # the vectors are the model's own: a user's score is u . v_i
    user = np.linalg.lstsq(model.item_vectors(), scores, rcond=None)[0]
    np.testing.assert_allclose(model.item_vectors() @ user, scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("settings, match", [
    ({"model": "joint", "context_dim": 2}, "'model'"),
    ({"model": "disjoint"}, "context_dim >= 1"),
    ({"context_dim": 2, "ridge": 0}, "'ridge'"),
    ({"context_dim": 2, "alpha": -1}, "'alpha'"),
    ({"context_dim": -1}, "'context_dim'"),
    ({"model": "shared", "features": "cross", "item_features": np.ones((3, 2))}, "'features'"),
    ({"model": "shared", "features": "product", "context_dim": 3, "item_features": np.ones((3, 2))},
     "context_dim = 2"),
    ({"model": "shared", "features": "concat", "item_features": np.ones((3, 2))}, "context_dim >= 1"),
    ({"model": "shared", "item_features": np.ones((4, 2))}, r"float\[3, d\]"),
    ({"context_dim": 2, "item_features": np.ones((3, 2))}, "shared model only"),
])
def test_bad_settings_are_named(settings, match):
    with pytest.raises(InputError, match=match):
        create_policy("linucb", 3, **settings)


def test_bad_contexts_and_requests():
    policy = create_policy("lin-thompson", 3, context_dim=2)
    with pytest.raises(InputError, match="wrong shape"):
        policy.select(np.ones(3), np.arange(3), 1)
    with pytest.raises(InputError, match="needs a context"):
        policy.select(None, np.arange(3), 1)
    with pytest.raises(InputError, match="slate size k"):
        policy.select(np.ones(2), np.arange(3), 4)
    with pytest.raises(InputError, match="wrong shape"):
        policy.update(Feedback(np.ones(5), np.array([0]), np.array([1.0])))
    with pytest.raises(InputError, match="non-finite"):
        policy.select(np.array([np.nan, 1.0]), np.arange(3), 1)
    with pytest.raises(InputError, match="wrong shape"):
        policy.distribution(np.ones((4, 2)), 3, 1)
    with pytest.raises(InputError, match="no item features"):
        create_policy("linucb", 3, model="shared").select(None, np.arange(3), 1)
    with pytest.raises(InputError, match="'algorithm'"):
        create_policy("neural-linear", 3, algorithm="greedy", item_features=np.ones((3, 2)))
