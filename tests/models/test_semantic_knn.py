"""semantic-knn: planted genres recovered through text alone, cold items, explanations."""

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(n_users=300, n_items=240, seed=11, return_truth=True)


def test_cold_items_are_ranked_by_text_far_above_the_tie_rule(synthetic):
    ds, _ = synthetic
    stage = make_split(ds, "cold").stage("test")
    text = evaluate(create_model("semantic-knn").fit(stage.fit), stage, beyond_accuracy=False)
    ids = evaluate(create_model("ease").fit(stage.fit), stage, beyond_accuracy=False)  # ties on cold items
    assert text.metrics["Recall@20"] > 2 * ids.metrics["Recall@20"]
    assert text.metrics["Recall@20"] > 0.3


def test_top_items_match_the_planted_genre(synthetic):
    ds, truth = synthetic
    model = create_model("semantic-knn").fit(ds)
    top, _ = model.recommend_indices(np.arange(ds.n_users), k=10)
    item_genre = truth.item_genre[top]  # (U, 10)
    user_genre = np.argmax(truth.user_genre_weights, axis=1)[:, None]
    share = (item_genre == user_genre).mean()
    chance = 1.0 / truth.user_genre_weights.shape[1]
    assert share > 3 * chance


def test_recency_weights_favour_the_latest_history():
    ds = make_synthetic(n_users=40, n_items=60, seed=2)
    model = create_model("semantic-knn", {"half_life": 1.0, "max_history": 3}).fit(ds)
    seq = ds.sequences()[0]
    row = model._weights(model.fit_histories(np.array([0])))[0]
    weights = dict(zip(row.indices.tolist(), row.data.tolist()))
    assert weights[int(seq[-1])] == pytest.approx(1.0)
    assert weights[int(seq[-2])] == pytest.approx(0.5)
    assert len(weights) == 3


def test_explain_names_history_items_and_says_why(synthetic):
    ds, _ = synthetic
    model = create_model("semantic-knn").fit(ds)
    user = ds.users.token(0)
    item = model.recommend([user], k=1).items[0, 0]
    out = model.explain(user, item)
    assert out["user"] == user and out["item"] == item
    hist = set(ds.items.token(ds.sequences()[0]))
    assert out["because"] and all(b["item"] in hist for b in out["because"])
    weights = [b["weight"] for b in out["because"]]
    assert weights == sorted(weights, reverse=True)
    assert out["label"] in out["text"] and out["because"][0]["label"] in out["text"]
