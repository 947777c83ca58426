"""The evaluator: masking, tie rule, sampled ranking, bounded batches, against brute force."""

import numpy as np
import polars as pl
import pytest

from llm4rec.data import Dataset, make_split
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.testing import checkerboard


class FixedScores:
    """A stand-in scorer with a given score matrix (float32[n_users, n_items])."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)

    def score_indices(self, users, items=None):
        s = self.scores[np.asarray(users)]
        return s if items is None else s[:, items]


def tiny_dataset():
    # user 0: items 0,1,2,3 in time order -> train {0,1}, valid 2, test 3
    frame = pl.DataFrame({"user_id": ["0"] * 4 + ["1"] * 3, "item_id": ["0", "1", "2", "3", "4", "5", "1"],
                          "timestamp": [1.0, 2, 3, 4, 1, 2, 3]})
    return Dataset.from_frame(frame)


def test_fit_items_are_masked_and_ties_go_to_the_smaller_index():
    ds = tiny_dataset()
    stage = make_split(ds, "loo").stage("test")  # user 0 target 3; user 1 target 1
    scores = np.zeros((2, 6))
    scores[0, [0, 1, 2]] = 9.0  # fit-set items: masked although best
    scores[1, :] = 1.0  # all tied: list is 0, 1, 2, ... minus fit items {4, 5}
    result = evaluate(FixedScores(scores), stage, metrics=("HR@1", "HR@10", "MRR@10", "NDCG@10"))
    # user 0: candidates 3,4,5 all score 0 -> 3 first. user 1: candidates 0,1,2,3 -> 1 at position 1
    np.testing.assert_allclose(result.per_user["MRR@10"], [1.0, 0.5])
    np.testing.assert_allclose(result.per_user["HR@1"], [1.0, 0.0])
    np.testing.assert_allclose(result.per_user["NDCG@10"], [1.0, 1 / np.log2(3)])


def brute_force_loo(scores, stage, k=10):
    out = []
    for u in stage.users:
        fit = set(stage.fit.matrix()[u].indices)
        target = stage.targets[u].indices[0]
        ranked = sorted((j for j in range(scores.shape[1]) if j not in fit), key=lambda j: (-scores[u, j], j))
        p = ranked.index(target)
        out.append(1 / np.log2(p + 2) if p < k else 0.0)
    return np.array(out)


@pytest.mark.parametrize("budget", [1, 7, 1 << 20])
def test_batched_results_equal_brute_force_for_any_budget(budget):
    ds = checkerboard(n_users=30, n_items=25, density=0.5, seed=3)
    stage = make_split(ds, "loo").stage("test")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(ds.n_users, ds.n_items)).astype(np.float32)  # many ties
    result = evaluate(FixedScores(scores), stage, budget=budget)
    np.testing.assert_allclose(result.per_user["NDCG@10"], brute_force_loo(scores, stage))


def test_sampled_protocol_ranks_among_negatives_and_says_so():
    ds = checkerboard(n_users=20, n_items=150, density=0.2, seed=1)
    stage = make_split(ds, "loo100").stage("test")
    scores = np.random.default_rng(1).integers(0, 3, size=(ds.n_users, ds.n_items)).astype(np.float32)
    result = evaluate(FixedScores(scores), stage)
    assert result.sampled and "sampled" in result.title
    for row, u in enumerate(stage.users):
        t = stage.targets[u].indices[0]
        neg = stage.negatives[row][stage.negatives[row] >= 0]
        r = ((scores[u, neg] > scores[u, t]) | ((scores[u, neg] == scores[u, t]) & (neg < t))).sum()
        assert result.per_user["HR@10"][row] == float(r < 10)


def test_cold_protocol_ranks_only_cold_items():
    ds = checkerboard(n_users=30, n_items=40, density=0.5, seed=2)
    stage = make_split(ds, "cold").stage("test")
    scores = np.zeros((ds.n_users, ds.n_items), dtype=np.float32)
    scores[:, stage.candidates] = -1.0  # warm items score higher, but are not candidates
    result = evaluate(FixedScores(scores), stage)
    assert result.metrics["Recall@20"] > 0.5  # 8 cold items: all fit in the top 20
    assert result.extra["Coverage@20"] == 1.0


def test_nan_scores_are_an_error():
    ds = checkerboard()
    stage = make_split(ds, "loo").stage("test")
    with pytest.raises(Exception, match="NaN"):
        evaluate(FixedScores(np.full((ds.n_users, ds.n_items), np.nan)), stage)


def test_personalised_model_beats_popularity_on_checkerboard():
    ds = checkerboard(n_users=60, n_items=40)
    stage = make_split(ds, "rand").stage("test")
    ease = evaluate(create_model("ease", {"l2": 5.0}).fit(stage.fit), stage)
    pop = evaluate(create_model("pop").fit(stage.fit), stage)
    assert ease.metrics["NDCG@20"] > pop.metrics["NDCG@20"] + 0.2


def test_auc_for_one_target_is_the_share_of_items_ranked_below():
    ds = checkerboard(n_users=20, n_items=30, density=0.5, seed=4)
    stage = make_split(ds, "loo").stage("test")
    scores = np.random.default_rng(2).standard_normal((ds.n_users, ds.n_items)).astype(np.float32)
    result = evaluate(FixedScores(scores), stage, metrics=("HR@10", "AUC"))
    fit = stage.fit.matrix()
    for row, u in enumerate(stage.users):
        t = stage.targets[u].indices[0]
        free = np.setdiff1d(np.arange(ds.n_items), np.append(fit[u].indices, t))
        assert result.per_user["AUC"][row] == pytest.approx((scores[u, free] < scores[u, t]).mean())


def test_unknown_metric_is_an_input_error():
    from llm4rec.errors import InputError

    stage = make_split(checkerboard(), "loo").stage("test")
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(FixedScores(np.zeros((40, 30))), stage, metrics=("NDCG",))
