"""Hold-out validation: the NDCG the trainer early-stops on equals the evaluator's."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.training.validation import holdout, holdout_ndcg


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_users=200, n_items=150, interactions_per_user=(5, 25), seed=3)


@pytest.mark.parametrize("how", ["last", "items"])
def test_holdout_ndcg_matches_the_evaluator(data, how):
    train, stage = holdout(data, how)
    for name in ("ease", "pop"):  # pop: many ties, so the tie rule is exercised
        model = create_model(name).fit(train)
        metric = f"NDCG@{stage.k}"
        expected = evaluate(model, stage, metrics=(metric,), beyond_accuracy=False).metrics[metric]
        assert holdout_ndcg(model.score_indices, stage, stage.k, budget=1000) == pytest.approx(expected, abs=1e-12)


def test_holdout_ndcg_rejects_sampled_stages(data):
    stage = make_split(data, "loo100").stage("test")
    with pytest.raises(InputError, match="full-ranking"):
        holdout_ndcg(lambda users, items: np.zeros((len(users), 1)), stage, 10)
