"""``topk`` and ``rank_of`` against brute force, with many ties forced.

Scores are small integers (plus -inf, the mask, and +inf) so that rows are
full of ties; the reference orders columns by ``(-score, index)``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llm4rec.ranking import rank_of, topk

INF = float("inf")
VALUES = st.sampled_from([-INF, -INF, -2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 3.0, INF])


def score_matrices(min_rows: int = 0, min_cols: int = 0):
    shapes = st.tuples(st.integers(min_rows, 6), st.integers(min_cols, 12))
    return hnp.arrays(st.sampled_from([np.float32, np.float64]), shapes, elements=VALUES)


def ref_topk(row: list[float], k: int) -> list[int]:
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    best = [j for j in order if row[j] > -INF][:k]
    return best + [-1] * (k - len(best))


def ref_rank(row: list[float], t: int) -> int:
    return sum(1 for j, s in enumerate(row)
               if s > -INF and (s > row[t] or (s == row[t] and j < t)))


@settings(max_examples=300, deadline=None)
@given(score_matrices(), st.data())
def test_topk_matches_sorted_reference(scores, data):
    k = data.draw(st.integers(0, scores.shape[1] + 3), label="k")
    got = topk(scores, k)
    assert got.dtype == np.int64 and got.shape == (scores.shape[0], k)
    want = [ref_topk(row.tolist(), k) for row in scores]
    assert got.tolist() == want


@settings(max_examples=200, deadline=None)
@given(score_matrices(min_rows=1, min_cols=1), st.data())
def test_rank_of_matches_brute_force(scores, data):
    b, n = scores.shape
    target = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b), label="target"))
    got = rank_of(scores, target)
    assert got.dtype == np.int64 and got.shape == (b,)
    assert got.tolist() == [ref_rank(row.tolist(), t) for row, t in zip(scores, target)]


@settings(max_examples=200, deadline=None)
@given(score_matrices(min_rows=1, min_cols=1))
def test_rank_of_inverts_topk(scores):
    """The item at position p of the top list has rank p: the two share one tie rule."""
    top = topk(scores, scores.shape[1])
    for p in range(scores.shape[1]):
        shown = top[:, p] >= 0
        if shown.any():
            assert (rank_of(scores[shown], top[shown, p]) == p).all()


def test_all_equal_rows_pick_smallest_indices():
    scores = np.zeros((4, 1000), dtype=np.float32)
    np.testing.assert_array_equal(topk(scores, 20), np.tile(np.arange(20), (4, 1)))


def test_masked_columns_never_selected_and_padding():
    scores = np.array([[1.0, -INF, 1.0, -INF, 5.0],
                       [-INF, -INF, -INF, -INF, -INF],
                       [2.0, 2.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(topk(scores, 4), [[4, 0, 2, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])


def test_large_row_with_ties_at_the_cut():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(3, 5000)).astype(np.float32)
    scores[:, rng.choice(5000, 1000, replace=False)] = -INF
    got = topk(scores, 300)
    for row, g in zip(scores, got):
        assert g.tolist() == ref_topk(row.tolist(), 300)


def test_torch_and_numpy_kth_paths_give_the_same_lists(monkeypatch):
    from llm4rec import ranking

    scores = np.random.default_rng(5).integers(0, 6, size=(13, 300)).astype(np.float32)
    scores[:, ::7] = -np.inf
    expected = ranking.topk(scores, 20)
    monkeypatch.setattr(ranking, "_TORCH_MIN_ELEMENTS", 0)
    np.testing.assert_array_equal(ranking.topk(scores, 20), expected)
