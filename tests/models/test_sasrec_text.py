"""sasrec-text: cold items ranked through text, ID part only for seen items, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.evaluation import evaluate
from llm4rec.models import Recommender, create_model

FAST = {"dim": 32, "layers": 1, "max_len": 20, "epochs": 15, "lr": 0.005, "batch_size": 64, "dropout": 0.1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def cold():
    ds = make_synthetic(n_users=300, n_items=300, interactions_per_user=(8, 30))
    return make_split(ds, "cold").stage("test")


def test_cold_items_are_ranked_through_text_far_above_the_id_only_model(cold, cache):
    text = create_model("sasrec-text", {**FAST, "cache_dir": cache}).fit(cold.fit)
    ids = create_model("sasrec", FAST).fit(cold.fit)
    ours, base = evaluate(text, cold).metrics, evaluate(ids, cold).metrics
    assert ours["Recall@20"] >= base["Recall@20"] + 0.2


def test_the_id_part_is_only_for_seen_items_and_reload_scores_the_same(cold, cache, tmp_path):
    import torch

    model = create_model("sasrec-text", {**FAST, "cache_dir": cache, "epochs": 2}).fit(cold.fit)
    net = model.net_
    cand = torch.from_numpy(cold.candidates + 1)
    assert (net.seen[cand] == 0).all() and net.seen.sum() > 0
    with torch.no_grad():
        np.testing.assert_allclose(net.item_table()[cand - 1].numpy(), net.adapter(net.text[cand]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(np.arange(10)), model.score(np.arange(10)))
    explained = model.explain(0, int(cold.candidates[0]))
    assert explained["because"] and "position" in explained["because"][0]
