"""Beyond-accuracy metrics against slow references written from the definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llm4rec.errors import InputError
from llm4rec.evaluation.beyond import (
    auc,
    catalogue_coverage,
    intra_list_diversity,
    novelty,
)

# --------------------------------------------------------------- references


def ref_cos(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = math.sqrt(float(x @ x)), math.sqrt(float(y @ y))
    return 0.0 if nx == 0 or ny == 0 else float(x @ y) / (nx * ny)


def ref_ild(row: list[int], vectors: np.ndarray) -> float:
    items = [i for i in row if i >= 0]
    pairs = list(itertools.combinations(items, 2))
    if not pairs:
        return math.nan
    return sum(1.0 - ref_cos(vectors[i].astype(np.float64), vectors[j].astype(np.float64))
               for i, j in pairs) / len(pairs)


def ref_auc(s: list[float], t: list[bool], m: list[bool]) -> float:
    pos = [s[j] for j in range(len(s)) if t[j] and not m[j]]
    neg = [s[j] for j in range(len(s)) if not t[j] and not m[j]]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# --------------------------------------------------------------- strategies


@st.composite
def lists_and_vectors(draw):
    """Top-K lists with distinct items and -1 padding, plus small integer item vectors (zero rows too)."""
    n_items = draw(st.integers(1, 12))
    k = draw(st.integers(1, min(n_items, 6)))
    n_users = draw(st.integers(1, 6))
    rows = []
    for _ in range(n_users):
        n_shown = draw(st.integers(0, k))
        shown = draw(st.permutations(range(n_items)))[:n_shown]
        rows.append(list(shown) + [-1] * (k - n_shown))
    d = draw(st.integers(1, 4))
    vectors = draw(hnp.arrays(np.float32, (n_items, d), elements=st.sampled_from([-2.0, -1.0, 0.0, 0.0, 1.0, 3.0])))
    return np.array(rows, dtype=np.int64), vectors


# --------------------------------------------------------------- diversity


@settings(max_examples=150, deadline=None)
@given(lists_and_vectors(), st.booleans())
def test_ild_matches_pairwise_reference(case, sparse):
    lists, vectors = case
    got = intra_list_diversity(lists, sp.csr_matrix(vectors) if sparse else vectors)
    assert got.dtype == np.float64 and got.shape == (len(lists),)
    want = [ref_ild(row.tolist(), vectors) for row in lists]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_ild_known_answers():
    vectors = np.array([[1, 0], [0, 1], [-1, 0], [2, 0], [0, 0]], dtype=np.float32)
    lists = np.array([[0, 3, -1],    # same direction: 0
                      [0, 1, -1],    # orthogonal: 1
                      [0, 2, -1],    # opposite: 2
                      [0, 1, 2],     # pairs 1, 2, 1 -> 4/3
                      [0, 4, -1],    # zero vector: cosine 0 -> 1
                      [1, -1, -1]])  # one item: undefined
    got = intra_list_diversity(lists, vectors)
    np.testing.assert_allclose(got[:5], [0.0, 1.0, 2.0, 4 / 3, 1.0], atol=1e-12)
    assert np.isnan(got[5])


def test_ild_batches_users(monkeypatch):
    from llm4rec.evaluation import beyond

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    lists = np.array([rng.choice(50, 5, replace=False) for _ in range(23)])
    whole = intra_list_diversity(lists, vectors)
    monkeypatch.setattr(beyond, "_ILD_BUDGET", 20)  # 2 users per batch
    np.testing.assert_allclose(intra_list_diversity(lists, vectors), whole, rtol=1e-12)
    np.testing.assert_allclose(whole, [ref_ild(r.tolist(), vectors) for r in lists], rtol=1e-9)


def test_ild_rejects_out_of_range_items():
    with pytest.raises(InputError, match="out of range"):
        intra_list_diversity(np.array([[0, 3]]), np.eye(3, dtype=np.float32))
    with pytest.raises(InputError, match="out of range"):
        intra_list_diversity(np.array([[0, -2]]), np.eye(3, dtype=np.float32))


# --------------------------------------------------------------- coverage and novelty


@settings(max_examples=100, deadline=None)
@given(lists_and_vectors())
def test_coverage_matches_reference(case):
    lists, vectors = case
    n_items = len(vectors)
    want = len({i for row in lists.tolist() for i in row if i >= 0}) / n_items
    assert catalogue_coverage(lists, n_items) == pytest.approx(want)


def test_coverage_known_answer():
    assert catalogue_coverage(np.array([[0, 1, -1], [1, 2, 4]]), 10) == pytest.approx(0.4)
    assert catalogue_coverage(np.full((2, 3), -1), 10) == 0.0
    with pytest.raises(InputError):
        catalogue_coverage(np.array([[0]]), 0)


@settings(max_examples=100, deadline=None)
@given(lists_and_vectors(), st.data())
def test_novelty_matches_reference(case, data):
    lists, vectors = case
    n_items = len(vectors)
    n_users = data.draw(st.integers(0, 20), label="n_users")
    pop = np.array(data.draw(st.lists(st.integers(0, n_users), min_size=n_items, max_size=n_items)))
    got = novelty(lists, pop, n_users)
    assert got.dtype == np.float64 and got.shape == (len(lists),)
    for g, row in zip(got, lists.tolist()):
        items = [i for i in row if i >= 0]
        if not items:
            assert math.isnan(g)
        else:
            want = sum(-math.log2((pop[i] + 1) / (n_users + 1)) for i in items) / len(items)
            assert g == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_novelty_known_answer():
    pop = np.array([7, 0, 3])  # 7 users: p = 1, 1/8, 1/2
    got = novelty(np.array([[0, 1], [1, 2], [2, -1]]), pop, 7)
    np.testing.assert_allclose(got, [1.5, 2.0, 1.0])
    with pytest.raises(InputError):
        novelty(np.array([[0]]), np.array([8]), 7)


# --------------------------------------------------------------- AUC


@st.composite
def auc_batches(draw):
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 10)))
    scores = draw(hnp.arrays(np.float32, shape,
                             elements=st.sampled_from([-np.inf, -1.0, 0.0, 0.0, 1.0, 2.0, np.inf])))
    targets = draw(hnp.arrays(np.bool_, shape))
    mask = draw(hnp.arrays(np.bool_, shape, elements=st.sampled_from([False, False, True])))
    return scores, targets, mask


@settings(max_examples=200, deadline=None)
@given(auc_batches())
def test_auc_matches_pairwise_reference(case):
    scores, targets, mask = case
    got = auc(scores, targets, mask)
    assert got.dtype == np.float64 and got.shape == (len(scores),)
    want = [ref_auc(s.tolist(), t.tolist(), m.tolist()) for s, t, m in zip(scores, targets, mask)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_auc_known_answers():
    scores = np.array([[3.0, 2.0, 1.0, 0.0],    # targets on top: 1
                       [0.0, 1.0, 2.0, 3.0],    # targets at the bottom: 0
                       [1.0, 1.0, 1.0, 1.0],    # all tied: 1/2
                       [3.0, 9.0, 1.0, 2.0]])   # targets {3, 1} vs {2}; the 9 is masked
    targets = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0]], dtype=bool)
    mask = np.zeros_like(targets)
    np.testing.assert_allclose(auc(scores, targets, mask), [1.0, 0.0, 0.5, 1 / 4])
    mask[3, 1] = True
    np.testing.assert_allclose(auc(scores, targets, mask), [1.0, 0.0, 0.5, 1 / 2])


def test_auc_undefined_rows_and_errors():
    scores = np.zeros((2, 3))
    got = auc(scores, np.array([[0, 0, 0], [1, 1, 0]], dtype=bool), np.array([[0, 0, 0], [0, 0, 1]], dtype=bool))
    assert np.isnan(got).all()  # no target; every non-target masked
    with pytest.raises(InputError, match="NaN"):
        auc(np.array([[np.nan, 1.0]]), np.array([[True, False]]), np.zeros((1, 2), dtype=bool))
    with pytest.raises(InputError, match="shape"):
        auc(np.zeros((2, 3)), np.zeros((2, 2), dtype=bool), np.zeros((2, 3), dtype=bool))
