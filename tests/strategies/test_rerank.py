"""top_k and MMR re-ranking after any model's scores."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.evaluation.beyond import intra_list_diversity
from llm4rec.ranking import topk
from llm4rec.strategies.rerank import mmr, top_k


def clusters() -> tuple[np.ndarray, np.ndarray]:
    """Items 0-5 point one way, 6-11 another; the first cluster scores best for every user."""
    vectors = np.zeros((12, 3))
    vectors[:6, 0], vectors[6:, 1] = 1.0, 1.0
    vectors += 0.05 * np.random.default_rng(0).normal(size=vectors.shape)
    scores = np.array([[0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35],
                       [0.6, 0.7, 0.9, 0.8, 0.75, 0.85, 0.5, 0.3, 0.4, 0.2, 0.1, 0.0]])
    return scores, vectors


def test_top_k_follows_the_tie_rule():
    scores = np.array([0.5, 0.9, 0.5, 0.9, -np.inf])
    np.testing.assert_array_equal(top_k(scores, 4), [1, 3, 0, 2])
    np.testing.assert_array_equal(top_k(scores, 5), [1, 3, 0, 2, -1])
    batch = np.random.default_rng(1).integers(0, 3, size=(4, 9)).astype(float)
    np.testing.assert_array_equal(top_k(batch, 4), topk(batch, 4))
    np.testing.assert_array_equal(top_k(batch[0], 4), topk(batch[:1], 4)[0])


def test_mmr_with_lambda_one_is_top_k():
    scores, vectors = clusters()
    np.testing.assert_array_equal(mmr(scores, vectors, 5, lambda_=1.0), top_k(scores, 5))
    ties = np.random.default_rng(2).integers(0, 3, size=(3, 12)).astype(float)
    np.testing.assert_array_equal(mmr(ties, vectors, 6, lambda_=1.0), top_k(ties, 6))
    np.testing.assert_array_equal(mmr(scores[0], vectors, 5, lambda_=1.0), top_k(scores[0], 5))


def test_mmr_diversifies_a_one_cluster_list():
    scores, vectors = clusters()
    plain = top_k(scores, 4)
    diverse = mmr(scores, vectors, 4, lambda_=0.5)
    assert np.all(plain < 6)  # all from the first cluster
    assert np.all((diverse >= 6).sum(axis=1) >= 1)  # the second cluster gets in
    np.testing.assert_array_equal(diverse[:, 0], plain[:, 0])  # the best item still leads
    assert np.all(intra_list_diversity(diverse, vectors) > intra_list_diversity(plain, vectors) + 0.2)
    # the first pick from the other cluster is its best-scored item
    assert diverse[0][diverse[0] >= 6][0] == 6
    assert diverse[1][diverse[1] >= 6][0] == 6


def test_mmr_lambda_zero_and_excluded_items():
    scores, vectors = clusters()
    pure = mmr(scores, vectors, 2, lambda_=0.0)  # only the first pick follows the scores
    assert np.all((pure[:, 0] < 6) & (pure[:, 1] >= 6))
    masked = scores.copy()
    masked[:, 3:] = -np.inf
    out = mmr(masked, vectors, 5, lambda_=0.3)
    assert np.all(np.sort(out[:, :3], axis=1) == [0, 1, 2]) and np.all(out[:, 3:] == -1)


def test_bad_input():
    scores, vectors = clusters()
    with pytest.raises(InputError, match="k must be between"):
        mmr(scores, vectors, 13)
    with pytest.raises(InputError, match="lambda_"):
        mmr(scores, vectors, 3, lambda_=1.5)
    with pytest.raises(InputError, match="one row per scored item"):
        mmr(scores, vectors[:5], 3)
    with pytest.raises(InputError, match="1 or 2 axes"):
        top_k(np.zeros((2, 2, 2)), 1)
    with pytest.raises(InputError, match="k must be between"):
        top_k(np.zeros(3), 0)
