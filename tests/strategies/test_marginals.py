"""Policy.marginals against the slow reference: the frequency of each candidate at each position over many
``select`` calls, and a policy left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.strategies.policy import Feedback, create_policy

CANDIDATES = np.asarray([7, 3, 11, 0, 5, 9], dtype=np.int64)
K = 3


def trained(name: str, **config):
    policy = create_policy(name, 12, seed=1, **config)
    rng = np.random.default_rng(0)
    for _ in range(40):  # some history, so the learned ones are not uniform
        slate = policy.select(None, CANDIDATES, K)
        policy.update(Feedback(None, slate.items, (rng.random(K) < (slate.items % 3) / 3).astype(float)))
    return policy


@pytest.mark.parametrize("name,config,tol", [
    ("greedy", {}, 0.0), ("uniform", {}, 0.03), ("epsilon-greedy", {"epsilon": 0.3}, 0.03), ("ucb1", {}, 0.0),
    ("thompson", {"propensity_samples": 4000}, 0.05)])
def test_marginals_match_the_frequencies_of_select(name, config, tol):
    policy = trained(name, **config)
    marginals = policy.marginals(CANDIDATES, K)
    assert marginals.shape == (len(CANDIDATES), K)
    np.testing.assert_allclose(marginals.sum(axis=0), 1.0, atol=1e-9)
    state = {key: np.array(v, copy=True) for key, v in policy._state().items()}
    draws = 3000
    counts = np.zeros((len(CANDIDATES), K))
    row = {int(a): r for r, a in enumerate(CANDIDATES)}
    for _ in range(draws):
        slate = policy.select(None, CANDIDATES, K)
        for j, a in enumerate(slate.items):
            counts[row[int(a)], j] += 1
    np.testing.assert_allclose(marginals, counts / draws, atol=tol + 1e-12)
    for key, value in policy._state().items():  # selecting (and computing marginals) learned nothing
        np.testing.assert_array_equal(value, state[key])


def test_marginals_do_not_move_the_serving_random_stream():
    a, b = trained("thompson"), trained("thompson")
    a.marginals(CANDIDATES, K)
    assert a.select(None, CANDIDATES, K).items.tolist() == b.select(None, CANDIDATES, K).items.tolist()
