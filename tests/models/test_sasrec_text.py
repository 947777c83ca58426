"""sasrec-text: cold items ranked through text, ID part only for seen items, new items, save/load, transfer."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import Recommender, create_model
from llm4rec.testing import checkerboard

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

    from llm4rec.text import item_template

    model = create_model("sasrec-text", {**FAST, "cache_dir": cache, "epochs": 2}).fit(cold.fit)
    net = model.net_
    cand = torch.from_numpy(cold.candidates + 1)
    assert (net.seen[cand] == 0).all() and net.seen.sum() > 0
    with torch.no_grad():
        np.testing.assert_allclose(net.item_table()[cand - 1].numpy(), net.adapter(net.text[cand]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score_indices(np.arange(10)), model.score_indices(np.arange(10)))
    assert loaded.template_ == model.template_ == item_template(cold.fit)  # the dataset's default, resolved
    assert loaded.provenance_["encoder_fingerprint"] == model.provenance_["encoder_fingerprint"]
    explained = model.explain(cold.fit.users.token(0), cold.fit.items.token(int(cold.candidates[0])))
    assert explained["because"] and "position" in explained["because"][0]


#: the conformance settings: the checkerboard's 40 users in random time order, no hold-out, strong dropout
BOARD = {"dim": 32, "layers": 1, "max_len": 20, "epochs": 50, "lr": 0.005, "dropout": 0.5, "batch_size": 16,
         "valid": "none"}


def test_an_item_held_out_of_fit_is_added_and_ranked_through_its_text(cache):
    """Checkerboard: item 4 ("even item 4") is not in the fit set; added afterwards, with no interaction and
    no ID part, its text alone puts it above every odd item for every even user, below every odd item for
    every odd user."""
    import polars as pl

    board = checkerboard(order="random")
    held = int(board.items.index(["4"])[0])
    fit = board.without_items([held])
    model = create_model("sasrec-text", {**BOARD, "cache_dir": cache}).fit(fit)
    with pytest.raises(InputError, match="unknown item '4'"):
        model.score(histories=[["4"]])
    model.add_items(board.item_table([held]))
    assert model.item_ids[-1] == "4" and model.n_items_ == board.n_items
    assert model.net_.seen[-1] == 0 and model.net_.text.shape[0] == board.n_items + 1
    users = [str(u) for u in fit.users.tokens]
    scores = model.score(users)
    odd_items = np.array([int(i) % 2 == 1 for i in model.item_ids])
    even_users = np.array([int(u) % 2 == 0 for u in users])
    new = scores[:, -1]
    assert (new[even_users] > scores[even_users][:, odd_items].max(1)).all()
    assert (new[~even_users] < scores[~even_users][:, odd_items].min(1)).all()
    top = model.recommend(users, k=5).items
    assert np.mean([("4" in row) for row in top[even_users]]) >= 0.5
    # a known id gets its text replaced: item 6 now reads as odd, and even users lose interest in it
    six = list(model.item_ids).index("6")
    before = model.score(users, items=["6"])[:, 0]
    model.add_items(pl.DataFrame({"item_id": ["6"], "title": ["odd item 6"]}))
    after = model.score(users, items=["6"])[:, 0]
    assert model.n_items_ == board.n_items and model.item_labels_[six] == "odd item 6"
    assert (after[even_users] < before[even_users]).mean() >= 0.9


@pytest.fixture(scope="module")
def source(cold, cache, tmp_path_factory):
    """sasrec-text trained on one synthetic catalogue, saved."""
    path = tmp_path_factory.mktemp("source") / "model"
    create_model("sasrec-text", {**FAST, "cache_dir": cache}).fit(cold.fit).save(path)
    return path


@pytest.fixture(scope="module")
def other():
    """Another catalogue and other users: the same genre vocabulary, no shared item."""
    ds = make_synthetic(n_users=250, n_items=250, interactions_per_user=(8, 30), seed=7)
    return make_split(ds, "loo").stage("test")


def test_zero_shot_transfer_ranks_another_catalogue_through_text(source, other, cache):
    from llm4rec.models import transfer_settings

    name, settings = transfer_settings(source)
    assert name == "sasrec-text" and settings["epochs"] == 0 and settings["init_from"] == str(source)
    model = create_model(name, {**settings, "cache_dir": cache}).fit(other.fit)
    src = Recommender.load(source).net_.state_dict()
    got = model.net_.state_dict()
    for key in ("adapter.weight", "blocks.0.qkv.weight", "positions.weight"):
        np.testing.assert_array_equal(got[key].numpy(), src[key].numpy())
    assert not got["items.weight"].any()  # the source's ID embeddings stay behind
    assert got["text"].shape[0] == other.fit.n_items + 1
    ours = evaluate(model, other).metrics["NDCG@10"]
    n = other.fit.n_items - other.fit.matrix().getnnz(1).mean()  # candidates per user
    chance = (1 / np.log2(np.arange(2, 12))).sum() / n  # expected NDCG@10 of a random order
    assert ours > 3 * chance


def test_brief_fine_tuning_after_transfer_improves_on_zero_shot(source, other, cache):
    from llm4rec.models import transfer_settings

    _, settings = transfer_settings(source)
    zero = create_model("sasrec-text", {**settings, "cache_dir": cache}).fit(other.fit)
    tuned = create_model("sasrec-text", {**settings, "cache_dir": cache, "epochs": 5}).fit(other.fit)
    assert tuned.train_summary_["epochs_run"] >= 1
    assert evaluate(tuned, other).metrics["NDCG@10"] > evaluate(zero, other).metrics["NDCG@10"]


def test_transfer_settings_are_checked(source, tmp_path, cold, cache):
    from llm4rec.models import transfer_settings

    with pytest.raises(InputError, match="epochs=0 needs init_from"):
        create_model("sasrec-text", {"epochs": 0})
    create_model("ease").fit(cold.fit).save(tmp_path / "ease")
    with pytest.raises(InputError, match="cannot be applied to another dataset"):
        transfer_settings(tmp_path / "ease")
    with pytest.raises(InputError, match="not a saved model"):
        transfer_settings(tmp_path)
