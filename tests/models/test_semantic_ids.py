"""Semantic IDs: k-means, residual quantisation and its saved quantiser, collision codes, the prefix trie."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from llm4rec.errors import InputError
from llm4rec.models.semantic_ids import (
    CodeTrie,
    ResidualQuantizer,
    kmeans,
    next_collision_codes,
    residual_kmeans,
    resolve_collisions,
    rqvae,
)


@pytest.fixture(scope="module")
def emb():
    """200 items around 8 well-separated directions in 16-d."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16)) * 5
    return (centres[np.arange(200) % 8] + rng.normal(size=(200, 16))).astype(np.float32)


def test_kmeans_finds_planted_clusters_and_is_seeded(emb):
    centers, assign = kmeans(emb, 8, seed=3)
    assert centers.shape == (8, 16)
    truth = np.arange(200) % 8
    # every found cluster is one planted cluster
    assert all(len(np.unique(truth[assign == c])) == 1 for c in np.unique(assign))
    np.testing.assert_array_equal(kmeans(emb, 8, seed=3)[1], assign)
    assert kmeans(emb[:5], 8, seed=0)[0].shape == (5, 16)  # k capped at the number of points


@pytest.mark.parametrize("quantise", [residual_kmeans, rqvae])
def test_codes_are_unique_after_the_collision_code_and_stable_for_a_seed(emb, quantise):
    extra = {"epochs": 5} if quantise is rqvae else {}
    codes, _ = quantise(emb, levels=2, codebook=8, seed=1, **extra)
    assert codes.shape == (200, 2) and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 8
    full = resolve_collisions(codes)
    assert full.shape == (200, 3) and len(np.unique(full, axis=0)) == 200
    np.testing.assert_array_equal(full[:, :2], codes)
    np.testing.assert_array_equal(quantise(emb, levels=2, codebook=8, seed=1, **extra)[0], codes)


@pytest.mark.parametrize("quantise", [residual_kmeans, rqvae])
def test_the_quantiser_codes_the_fitted_items_as_fitted_and_round_trips(emb, quantise):
    extra = {"epochs": 5} if quantise is rqvae else {}
    codes, quantizer = quantise(emb, levels=2, codebook=8, seed=1, **extra)
    np.testing.assert_array_equal(quantizer.codes(emb), codes)  # a new copy of an item gets its codes
    again = ResidualQuantizer.from_arrays(quantizer.arrays())
    np.testing.assert_array_equal(again.codes(emb[:7] * 3.0), codes[:7])  # the norm does not matter
    assert len(again.layers) == (3 if quantise is rqvae else 0)


def test_the_quantiser_takes_the_nearest_centroid_of_each_residual():
    books = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.1, 0.0], [-0.2, 0.2]]], dtype=np.float32)
    q = ResidualQuantizer(books)
    # (0.8, 0.6): nearest (1, 0), residual (-0.2, 0.6) -> nearest (-0.2, 0.2); (0.6, 0.8): (0, 1), (0.6, -0.2)
    np.testing.assert_array_equal(q.codes(np.array([[0.8, 0.6], [0.6, 0.8]])), [[0, 1], [1, 0]])
    with pytest.raises(InputError, match="embeddings of another size"):
        q.codes(np.ones((1, 3)))
    with pytest.raises(ValueError, match="do not fit together"):
        ResidualQuantizer.from_arrays({"books": books, "weight0": np.ones((3, 5)), "bias0": np.ones(3)})


def test_new_collision_codes_are_the_next_unused_under_each_prefix():
    codes = np.array([[0, 0, 0], [0, 0, 2], [1, 0, 0]])
    prefixes = np.array([[0, 0], [2, 2], [0, 0], [1, 0]])
    np.testing.assert_array_equal(next_collision_codes(codes, prefixes), [3, 0, 4, 1])
    assert next_collision_codes(codes, np.zeros((0, 2))).shape == (0,)


def test_first_level_follows_the_planted_clusters(emb):
    codes, _ = residual_kmeans(emb, levels=2, codebook=8, seed=0)
    truth = np.arange(200) % 8
    assert len(np.unique(np.stack([truth, codes[:, 0]], 1), axis=0)) == 8  # a bijection


def test_collision_code_is_the_rank_within_the_prefix():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    np.testing.assert_array_equal(resolve_collisions(codes)[:, -1], [0, 0, 1, 2, 0])


def test_bad_settings_are_clear_errors(emb):
    with pytest.raises(InputError, match="levels >= 1"):
        residual_kmeans(emb, levels=0)
    with pytest.raises(InputError, match="not unique"):
        CodeTrie(np.array([[0, 1], [0, 1]]))


def test_trie_tables_and_dead_prefixes():
    codes = np.array([[0, 0], [0, 1], [1, 0]])
    trie = CodeTrie(codes)
    np.testing.assert_array_equal(trie.child[0], [[0, 1]])  # root -> prefixes (0,) and (1,)
    np.testing.assert_array_equal(trie.child[1], [[0, 1], [2, -1]])  # depth 2 ids are the items
    assert trie.n_prefixes == [1, 2, 3]
    np.testing.assert_array_equal(trie.kid_code[0], [[0, 1], [0, 0]])  # last row: no prefix (padding)
    np.testing.assert_array_equal(trie.kid[0], [[0, 1], [2, 2]])
    np.testing.assert_array_equal(trie.kid_code[1], [[0, 1], [0, 0], [0, 0]])  # prefix (1,) has one child
    np.testing.assert_array_equal(trie.kid[1], [[0, 1], [2, 3], [3, 3]])
    seen = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 2]], dtype=np.float32))
    dead = trie.dead(seen)
    np.testing.assert_array_equal(dead[0], [0 * 3 + 0, 2 * 3 + 1])  # row 0: prefix (0,); row 2: prefix (1,)
    np.testing.assert_array_equal(dead[1], [0 * 4 + 0, 0 * 4 + 1, 2 * 4 + 2])  # the seen items themselves
