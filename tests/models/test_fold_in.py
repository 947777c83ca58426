"""Fold-in of new histories into ALS and BPR on real data: close to the learned user factors."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.testing.conformance import top10_overlap

pytestmark = pytest.mark.realdata


class _FoldedIn:
    """Scores every user of a stage from their fit history, as a new user: the fold-in path only."""

    def __init__(self, model) -> None:
        self.model = model

    def score_indices(self, users, items=None):
        h = self.model.fit_histories(np.asarray(users))
        h = type(h)(h.items, h.offsets, np.full(len(h), -1), h.n_items)  # forget who they are
        return self.model._finish(self.model._score_histories(h, items), h.lengths, items)


@pytest.mark.parametrize("name, min_overlap, min_ratio", [("als", 0.95, 0.97), ("bpr", 0.3, 0.9)])
def test_fold_in_recommends_like_the_learned_factors(ml100k, name, min_overlap, min_ratio):
    stage = make_split(ml100k, "loo").stage("test")
    model = create_model(name).fit(stage.fit)
    ids = [str(t) for t in ml100k.users.tokens]
    seqs = stage.fit.sequences()
    learned = model.recommend(ids, k=10)
    folded = model.recommend(histories=[ml100k.items.token(s.tolist()) for s in seqs], k=10)
    assert top10_overlap(learned.items, folded.items) >= min_overlap
    ndcg_learned = evaluate(model, stage).metrics["NDCG@10"]
    ndcg_folded = evaluate(_FoldedIn(model), stage).metrics["NDCG@10"]
    assert ndcg_folded >= min_ratio * ndcg_learned
