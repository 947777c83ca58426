"""Ranking and rating metrics against slow references written from the definitions.

The references take a ranked list L (item ids, -1 for an empty slot) and a
target set T, exactly as PROTOCOLS.md states the metrics, and loop over them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4rec.errors import InputError
from llm4rec.evaluation.metrics import (
    RANKING_METRICS,
    average_precision,
    hit_rate,
    mae,
    mrr,
    ndcg,
    precision,
    ranking_metric,
    recall,
    rmse,
)

# --------------------------------------------------------------- references


def ref_hr(L: list[int], T: set[int], k: int) -> float:
    return 1.0 if any(x in T for x in L[:k]) else 0.0


def ref_recall(L: list[int], T: set[int], k: int) -> float:
    return len([x for x in L[:k] if x in T]) / len(T)


def ref_precision(L: list[int], T: set[int], k: int) -> float:
    return len([x for x in L[:k] if x in T]) / k


def ref_ndcg(L: list[int], T: set[int], k: int) -> float:
    dcg = sum(1.0 / math.log2(p + 2) for p, x in enumerate(L[:k]) if x in T)
    idcg = sum(1.0 / math.log2(p + 2) for p in range(min(len(T), k)))
    return dcg / idcg


def ref_mrr(L: list[int], T: set[int], k: int) -> float:
    for p, x in enumerate(L[:k]):
        if x in T:
            return 1.0 / (p + 1)
    return 0.0


def ref_map(L: list[int], T: set[int], k: int) -> float:
    total = 0.0
    for p, x in enumerate(L[:k]):
        if x in T:
            total += ref_precision(L, T, p + 1)
    return total / min(len(T), k)


REFERENCES = {"HR": ref_hr, "Recall": ref_recall, "Precision": ref_precision,
              "NDCG": ref_ndcg, "MRR": ref_mrr, "MAP": ref_map}


def hits_of(lists: list[list[int]], targets: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    hits = np.array([[x in T for x in L] for L, T in zip(lists, targets)], dtype=bool).reshape(len(lists), -1)
    return hits, np.array([len(T) for T in targets], dtype=np.int64)


# --------------------------------------------------------------- strategies


@st.composite
def ranked_lists(draw) -> tuple[list[list[int]], list[set[int]]]:
    """Users with a top-K list of distinct items (maybe -1 padded) and a non-empty target set."""
    k_list = draw(st.integers(1, 12))
    n_items = draw(st.integers(k_list, 30))
    n_users = draw(st.integers(1, 6))
    lists, targets = [], []
    for _ in range(n_users):
        n_shown = draw(st.integers(0, k_list))
        shown = draw(st.permutations(range(n_items)))[:n_shown]
        lists.append(list(shown) + [-1] * (k_list - n_shown))
        targets.append(draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items)))
    return lists, targets


# --------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(ranked_lists(), st.data())
def test_every_metric_matches_reference(case, data):
    lists, targets = case
    hits, n_targets = hits_of(lists, targets)
    k = data.draw(st.integers(1, hits.shape[1]), label="k")
    for name, ref in REFERENCES.items():
        got = ranking_metric(f"{name}@{k}", hits, n_targets)
        assert got.dtype == np.float64 and got.shape == (len(lists),)
        want = [ref(L, T, k) for L, T in zip(lists, targets)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"{name}@{k}")


@settings(max_examples=100, deadline=None)
@given(ranked_lists())
def test_bounds_and_orderings(case):
    lists, targets = case
    hits, n_targets = hits_of(lists, targets)
    for k in range(1, hits.shape[1] + 1):
        vals = {name: fn(hits, n_targets, k) for name, fn in RANKING_METRICS.items()}
        for name, v in vals.items():
            assert ((v >= 0) & (v <= 1 + 1e-12)).all(), name
        assert (vals["MRR"] <= vals["HR"]).all()
        assert (vals["Recall"] <= vals["HR"]).all()
        assert (vals["NDCG"] <= vals["HR"] + 1e-12).all()
        assert ((vals["HR"] > 0) == (vals["NDCG"] > 0)).all()
        assert ((vals["HR"] > 0) == (vals["MAP"] > 0)).all()
        if k > 1:  # cumulative counts cannot shrink with a longer cut
            for name in ("HR", "Recall", "MRR"):
                assert (vals[name] >= RANKING_METRICS[name](hits, n_targets, k - 1)).all(), name


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10), st.integers(1, 5))
def test_perfect_ranking_scores_one(n_targets, k, n_users):
    """Targets in the first min(|T|, K) positions: NDCG = MAP = 1, Precision = min(|T|,K)/K."""
    hits = np.zeros((n_users, k), dtype=bool)
    hits[:, :min(n_targets, k)] = True
    nt = np.full(n_users, n_targets)
    np.testing.assert_allclose(ndcg(hits, nt, k), 1.0)
    np.testing.assert_allclose(average_precision(hits, nt, k), 1.0)
    np.testing.assert_allclose(precision(hits, nt, k), min(n_targets, k) / k)
    np.testing.assert_allclose(recall(hits, nt, k), min(n_targets, k) / n_targets)


# --------------------------------------------------------------- known answers


def one_hit(p: int, k: int = 10) -> np.ndarray:
    h = np.zeros((1, k), dtype=bool)
    h[0, p] = True
    return h


@pytest.mark.parametrize("p", range(10))
def test_single_target_known_answers(p):
    """P-LOO: HR = 1, NDCG = 1/log2(p+2), MRR = 1/(p+1), MAP = 1/(p+1), Precision = 1/K."""
    h, nt = one_hit(p), np.array([1])
    assert hit_rate(h, nt, 10)[0] == 1.0
    assert ndcg(h, nt, 10)[0] == pytest.approx(1.0 / math.log2(p + 2), rel=1e-14)
    assert mrr(h, nt, 10)[0] == pytest.approx(1.0 / (p + 1), rel=1e-14)
    assert average_precision(h, nt, 10)[0] == pytest.approx(1.0 / (p + 1), rel=1e-14)
    assert precision(h, nt, 10)[0] == pytest.approx(0.1)
    assert recall(h, nt, 10)[0] == 1.0


def test_named_positions():
    nt = np.array([1])
    assert ndcg(one_hit(0), nt, 10)[0] == 1.0
    assert ndcg(one_hit(3), nt, 10)[0] == pytest.approx(1.0 / math.log2(5))
    assert ndcg(one_hit(9), nt, 10)[0] == pytest.approx(1.0 / math.log2(11))


def test_hit_beyond_cut_scores_zero():
    h, nt = one_hit(5), np.array([1])
    for fn in RANKING_METRICS.values():
        assert fn(h, nt, 5)[0] == 0.0


def test_multi_target_known_answers():
    # L hits at positions 0 and 2, |T| = 2, K = 5
    h = np.array([[True, False, True, False, False]])
    nt = np.array([2])
    assert ndcg(h, nt, 5)[0] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert average_precision(h, nt, 5)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert recall(h, nt, 5)[0] == 1.0
    assert precision(h, nt, 5)[0] == pytest.approx(0.4)
    assert mrr(h, nt, 5)[0] == 1.0


def test_recall_divides_by_all_targets_and_ndcg_ideal_is_cut():
    """|T| = 30 > K = 10, every slot a hit: Recall = 10/30 (not 1), NDCG = MAP = 1."""
    h = np.ones((1, 10), dtype=bool)
    nt = np.array([30])
    assert recall(h, nt, 10)[0] == pytest.approx(1 / 3)
    assert ndcg(h, nt, 10)[0] == pytest.approx(1.0)
    assert average_precision(h, nt, 10)[0] == pytest.approx(1.0)


def test_metric_at_smaller_cut_uses_prefix():
    h = np.array([[False, False, True, True]])
    nt = np.array([2])
    assert ranking_metric("HR@2", h, nt)[0] == 0.0
    assert ranking_metric("NDCG@3", h, nt)[0] == pytest.approx((1 / 2) / (1 + 1 / math.log2(3)))
    assert ranking_metric("MRR@4", h, nt)[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("name", ["NDCG", "NDCG@", "NDCG@0", "NDCG@x", "ndcg@5", "AUC@5", "@5", "NDCG@-1"])
def test_ranking_metric_rejects_bad_names(name):
    with pytest.raises(InputError):
        ranking_metric(name, np.zeros((2, 10), dtype=bool), np.array([1, 1]))


def test_ranking_metric_rejects_cut_longer_than_lists():
    with pytest.raises(InputError, match="K <= 10"):
        ranking_metric("HR@11", np.zeros((2, 10), dtype=bool), np.array([1, 1]))


# --------------------------------------------------------------- rating metrics


def test_rmse_mae_known_answer():
    pred, truth = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 5.0])
    assert rmse(pred, truth) == pytest.approx(math.sqrt(5 / 3))
    assert mae(pred, truth) == pytest.approx(1.0)
    assert rmse(truth, truth) == 0.0 and mae(truth, truth) == 0.0


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=30))
def test_rmse_mae_match_reference(pairs):
    pred = np.array([p for p, _ in pairs], dtype=np.float32)
    truth = np.array([t for _, t in pairs], dtype=np.float32)
    diffs = [float(p) - float(t) for p, t in zip(pred, truth)]
    want_rmse = math.sqrt(sum(d * d for d in diffs) / len(diffs))
    want_mae = sum(abs(d) for d in diffs) / len(diffs)
    assert rmse(pred, truth) == pytest.approx(want_rmse, rel=1e-12, abs=1e-12)
    assert mae(pred, truth) == pytest.approx(want_mae, rel=1e-12, abs=1e-12)
    assert mae(pred, truth) <= rmse(pred, truth) + 1e-9
    assert isinstance(rmse(pred, truth), float) and isinstance(mae(pred, truth), float)
