"""llm-two-tower: known answers on the synthetic data, options, run directory, DP, ratings, histories,
explanations, new items (LoRA-tuned encoder included), devices."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import Recommender, create_model

#: small and fast: a linear 32-d item tower, few negatives, few epochs
FAST = {"dim": 32, "hidden": 0, "negatives": 50, "epochs": 3, "batch_size": 256}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(n_users=300, n_items=300, interactions_per_user=(8, 30), return_truth=True)


@pytest.fixture(scope="module")
def cold(synthetic):
    return make_split(synthetic[0], "cold").stage("test")


@pytest.fixture(scope="module")
def loo(synthetic):
    return make_split(synthetic[0], "loo").stage("valid")


def fit(stage, cache, **settings):
    return create_model("llm-two-tower", {"cache_dir": cache, **FAST, **settings}).fit(stage.fit)


def genre_match(model, stage, truth) -> float:
    """Share of the top-10 cold recommendations whose primary genre the user has a planted taste for."""
    top, _ = model.recommend_indices(stage.users, k=10, items=stage.candidates)
    likes = truth.user_genre_weights[stage.users][np.arange(len(top))[:, None], truth.item_genre[top]] > 0
    return float(likes.mean())


def test_planted_genres_are_recovered_from_text_alone_on_cold_items(synthetic, cold, cache):
    ds, truth = synthetic
    model = fit(cold, cache, id_embeddings=False, dim=None, hidden=64, epochs=4)
    pop = create_model("pop").fit(cold.fit)
    ours, base = evaluate(model, cold).metrics, evaluate(pop, cold).metrics
    # cold items have no interaction: popularity falls back on the tie rule
    assert ours["Recall@20"] >= base["Recall@20"] + 0.25 and ours["NDCG@20"] >= 2.5 * base["NDCG@20"]
    assert genre_match(model, cold, truth) >= 0.6 > 2 * genre_match(pop, cold, truth)


def test_cold_items_get_their_text_part_only(cold, cache):
    import torch

    model = fit(cold, cache, dim=None, epochs=1)
    net = model.net_
    cold_items = torch.from_numpy(cold.candidates)
    assert (net.seen[cold_items] == 0).all()
    with torch.no_grad():
        text = net.text[cold_items]
        expected = net.proj(text) + text  # the residual text tower, no ID part
    vectors = model.item_vectors()
    assert vectors.dtype == np.float32 and vectors.shape == (cold.fit.n_items, 384)
    np.testing.assert_allclose(vectors[cold.candidates], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.score_indices(cold.users[:5], cold.candidates)).all()


def test_run_directory_and_reload(loo, cache, tmp_path):
    run = tmp_path / "run"
    model = fit(loo, cache, run_dir=str(run), patience=0)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.csv", "metrics.json", "curves.png", "tensorboard", "model"} <= names
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "llm-two-tower" and config["seed"] == 2026 and config["config"]["dim"] == 32
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "loss", "seconds", "valid_NDCG@10"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] in (1, 2, 3)
    loaded = Recommender.load(run / "model")
    np.testing.assert_array_equal(loaded.score_indices(np.arange(20)), model.score_indices(np.arange(20)))


def test_a_seed_fixes_the_model_and_another_seed_changes_it(loo, cache):
    a, b = fit(loo, cache, epochs=1), fit(loo, cache, epochs=1)
    c = fit(loo, cache, epochs=1, seed=7)
    np.testing.assert_array_equal(a.score_indices(np.arange(10)), b.score_indices(np.arange(10)))
    assert not np.allclose(a.score_indices(np.arange(10)), c.score_indices(np.arange(10)))


def test_early_stopping_keeps_the_best_validation_epoch(loo, cache):
    model = fit(loo, cache, epochs=6, patience=1, lr=0.05)
    history = model.training_history_
    best = max(range(len(history)), key=lambda e: history[e]["valid_NDCG@10"])
    assert model.train_summary_["best_epoch"] == best + 1
    assert len(history) == 6 or history[-1]["valid_NDCG@10"] <= history[best]["valid_NDCG@10"]


def test_dp_sgd_reports_a_finite_epsilon(loo, cache, tmp_path):
    model = fit(loo, cache, epochs=1, negatives=5, dp_noise_multiplier=1.0, dp_max_grad_norm=1.0,
                run_dir=str(tmp_path))
    eps = model.train_summary_["epsilon"]
    assert math.isfinite(eps) and eps > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["epsilon"] == pytest.approx(eps)
    assert np.isfinite(model.score_indices(np.arange(5))).all()


@pytest.mark.parametrize("option", [{"adv_eps": 0.5, "adv_weight": 1.0}, {"augment": "crop,mask,reorder"},
                                    {"loss": "bce"}, {"loss": "bpr"},
                                    {"sampler": "popularity", "logq": True}, {"pooling": "mean"}])
def test_options_run_and_change_training(loo, cache, option):
    base = fit(loo, cache, epochs=1, valid="none")
    other = fit(loo, cache, epochs=1, valid="none", **option)
    assert math.isfinite(other.training_history_[0]["loss"])
    assert not np.allclose(base.score_indices(np.arange(10)), other.score_indices(np.arange(10)))


def test_user_text_option(loo, cache):
    model = fit(loo, cache, epochs=1, user_text=True)
    assert model.net_.user_text.shape[0] == loo.fit.n_users
    assert np.isfinite(model.score_indices(np.arange(5))).all()


def history_ids(model, user: int) -> list[str]:
    return [str(t) for t in model.item_ids[model.fit_histories([user]).row(0)]]


def test_a_history_scores_as_its_known_user_without_user_state(loo, cache):
    """The user text (user_text=True) is known users' state: a known user's row adds it, the same history
    of a user the model never saw does not (it is zero), and the rest of the score is the history's."""
    import torch

    model = fit(loo, cache, epochs=1, user_text=True)
    user = 7
    uid = str(model.user_ids[user])
    known = model.score([uid])
    np.testing.assert_array_equal(model.score([uid], histories=[history_ids(model, user)]), known)
    unknown = model.score(histories=[history_ids(model, user)])
    net = model.net_
    with torch.no_grad():
        user_term = net.user_text_proj(net.user_text[user]) @ torch.from_numpy(model.item_vectors()).T  # (I,)
    np.testing.assert_allclose(known[0] - unknown[0], user_term.numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(user_term.numpy()).max() > 1e-3


def test_rating_mode_gives_unknown_users_no_user_bias(synthetic, cache):
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "loss": "mse", "epochs": 2, "lr": 0.05,
                                           "valid": "none"}).fit(synthetic[0])
    user = 4
    known = model.score([str(model.user_ids[user])])[0]
    unknown = model.score(histories=[history_ids(model, user)])[0]
    bias = float(model.net_.user_bias.weight[user, 0].detach())
    assert abs(bias) > 1e-3
    np.testing.assert_allclose(known - unknown, bias, rtol=1e-4, atol=1e-5)


def test_rating_mode_predicts_ratings_better_than_the_mean(synthetic, cache):
    ds = synthetic[0]
    stage = make_split(ds, "rand").stage("test")
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "loss": "mse", "epochs": 8,
                                           "lr": 0.01}).fit(stage.fit)
    assert model.training_history_[0].keys() >= {"valid_RMSE"}
    users, items = stage.targets.nonzero()
    truth = np.asarray(ds.matrix("rating")[users, items]).ravel()
    pred = model.predict(users, items)
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    baseline = np.sqrt(np.mean((stage.fit.rating.mean() - truth) ** 2))
    assert rmse < 0.9 * baseline
    np.testing.assert_allclose(model.score_indices(users[:3], items[:3]).diagonal(), pred[:3], rtol=1e-5)


def test_rating_validation_on_an_explicit_stage_reads_the_stage_ratings(synthetic, cache):
    """fit(valid=stage) with loss="mse" measures RMSE against the stage's own target ratings."""
    stage = make_split(synthetic[0], "rand").stage("valid")
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "loss": "mse", "epochs": 1, "lr": 0.01})
    model.fit(stage.fit, valid=stage)
    users, items = stage.targets.nonzero()
    truth = np.asarray(stage.target_ratings[users, items]).ravel()
    assert truth.min() >= 1
    rmse = float(np.sqrt(np.mean((model.predict(users, items) - truth) ** 2)))
    assert model.training_history_[0]["valid_RMSE"] == pytest.approx(rmse, rel=1e-5)
    assert rmse < 1.5


def test_explain_names_the_history_items_that_add_up_to_the_score(loo, cache):
    import torch

    model = fit(loo, cache, epochs=1)
    user, item = 3, int(model.recommend_indices([3], k=1)[0][0, 0])
    uid, iid = str(model.user_ids[user]), str(model.item_ids[item])
    score = float(model.score_indices([user], [item])[0, 0])
    hist, contrib, attention, _ = model._contributions(model.fit_histories([user]), item)
    with torch.no_grad():  # the rest of the score: W's bias
        bias_term = float(model.net_.user_proj.bias @ torch.from_numpy(model.item_vectors()[item]))
    assert contrib.sum() + bias_term == pytest.approx(score, rel=1e-4, abs=1e-4)
    assert attention.sum() == pytest.approx(1.0, rel=1e-5)
    out = model.explain(uid, iid)
    assert out["score"] == pytest.approx(score) and out["item"] == iid and out["user"] == uid
    assert 1 <= len(out["because"]) <= 3
    weights = [b["weight"] for b in out["because"]]
    assert weights == sorted(weights, reverse=True) and weights[0] == pytest.approx(contrib.max(), rel=1e-5)
    assert {b["item"] for b in out["because"]} <= {str(t) for t in model.item_ids[hist]}
    assert out["because"][0]["label"] in out["text"] and 0 <= out["because"][0]["attention"] <= 1
    # any history: the explanation is of that history, not of a user's
    mine = history_ids(model, user)[-3:]
    given = model.explain(item=iid, history=mine)
    assert given["user"] is None and {b["item"] for b in given["because"]} <= set(mine)
    assert given["score"] == pytest.approx(float(model.score(histories=[mine], items=[iid])[0, 0]))


def test_fit_with_an_explicit_validation_stage(loo, cache):
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "epochs": 1})
    model.fit(loo.fit, valid=loo)
    assert model.train_summary_["monitor"] == "valid_NDCG@10"
    other = make_split(make_synthetic(n_users=50, n_items=60), "loo").stage("valid")
    with pytest.raises(InputError, match="another fit set"):
        model.fit(loo.fit, valid=other)


def test_a_test_stage_is_refused_for_validation(synthetic, cache):
    test = make_split(synthetic[0], "loo").stage("test")
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "epochs": 1})
    with pytest.raises(InputError, match="would tune on the targets that are reported"):
        model.fit(test.fit, valid=test)
    assert not hasattr(model, "net_")


def test_bad_settings_are_clear_errors(loo, cache):
    with pytest.raises(InputError, match="augment"):
        create_model("llm-two-tower", {"augment": "shuffle"})
    with pytest.raises(InputError, match="DP-SGD"):
        create_model("llm-two-tower", {"adv_eps": 0.1, "dp_noise_multiplier": 1.0})
    with pytest.raises(InputError, match="id_embeddings"):
        create_model("llm-two-tower", {"encoder": None, "id_embeddings": False})
    cli = create_model("llm-two-tower", {"encoder": "none", "dim": "None", "augment": "crop, mask"}).config
    assert cli.encoder is None and cli.dim is None and cli.augment == "crop,mask"
    ranking = fit(loo, cache, epochs=1, valid="none")
    with pytest.raises(InputError, match="loss='mse'"):
        ranking.predict([0], [0])


def test_id_only_model_without_text(loo):
    model = create_model("llm-two-tower", {**FAST, "encoder": None, "epochs": 2}).fit(loo.fit)
    assert model.net_.text is None
    assert evaluate(model, loo).metrics["NDCG@10"] > evaluate(create_model("pop").fit(loo.fit), loo).metrics[
        "NDCG@10"] * 0.5
    with pytest.raises(InputError, match="no text encoder"):
        model.add_items(pl.DataFrame({"item_id": ["new"], "title": ["a new item"]}))


def item_rows(data, index: list[int], ids: list[str]):
    """The attribute rows of items ``index`` under the ids ``ids``."""
    attrs = data.item_attrs
    rows = pl.concat([attrs.filter(pl.col("item_id") == str(data.items.token(i))) for i in index])
    return rows.with_columns(pl.Series("item_id", ids))


def test_added_items_go_through_the_text_part_and_known_ids_get_new_text(loo, cache):
    import torch

    model = fit(loo, cache, epochs=1, dim=None)
    n, before = model.n_items_, model.item_vectors()
    text_before = model.net_.text.clone()
    # a new item with item 5's text: its LM row is item 5's; its vector is the text part alone (no ID part)
    model.add_items(item_rows(loo.fit, [5], ["brand-new"]))
    assert model.n_items_ == n + 1 and model.item_ids[-1] == "brand-new"
    net = model.net_
    torch.testing.assert_close(net.text[n], text_before[5])
    assert net.seen[n] == 0 and net.log_count[n] == 0 and (net.ids.weight[n] == 0).all()
    with torch.no_grad():
        text_only = net.proj(net.text[n]) + net.text[n]
    np.testing.assert_allclose(model.item_vectors()[n], text_only.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.item_vectors()[:n], before)
    # a known id with another item's text: only its text changes (it keeps its ID part)
    model.add_items(item_rows(loo.fit, [8], [str(model.item_ids[3])]))
    assert model.n_items_ == n + 1
    torch.testing.assert_close(net.text[3], text_before[8])
    changed = np.flatnonzero(np.abs(model.item_vectors()[:n] - before).max(1) > 0)
    assert changed.tolist() == [3]


def test_device_cuda_without_a_gpu_is_a_clear_error(loo, cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    model = create_model("llm-two-tower", {"cache_dir": cache, **FAST, "device": "cuda"})
    with pytest.raises(InputError, match="device='cuda' but torch sees no CUDA device"):
        model.fit(loo.fit)
    assert fit(loo, cache, epochs=1, device="cpu").net_.log_count.device.type == "cpu"


@pytest.mark.slow
@pytest.mark.realdata
def test_ml100k_loo_floor(ml100k):
    """Defaults, 5 epochs (about 2 minutes), on ml-100k P-LOO (test stage) beat EASE (NDCG@10 0.0409)."""
    stage = make_split(ml100k, "loo").stage("test")
    model = create_model("llm-two-tower", {"epochs": 5}).fit(stage.fit)
    assert evaluate(model, stage).metrics["NDCG@10"] >= 0.0409


def test_lora_encoder_starts_as_the_frozen_encoder_and_trains_only_its_adapters():
    import torch

    from llm4rec.text import get_encoder
    from llm4rec.text.tuning import LoraTextEncoder

    torch.set_num_threads(1)
    texts = ["Toy Story (1995). Genres: Animation, Children", "GoldenEye (1995). Genres: Action", "x" * 300]
    frozen = get_encoder("minilm")
    lora = LoraTextEncoder(frozen, rank=4)
    np.testing.assert_allclose(lora.encode(texts), frozen.encode(texts), atol=1e-5)
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    lora.train()  # gradients, but no dropout: the same vectors as encode()
    z = lora(texts)
    np.testing.assert_allclose(z.detach().numpy(), lora.encode(texts), atol=1e-6)
    z.sum().backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)
    with pytest.raises(InputError, match="torch text encoder"):
        LoraTextEncoder(get_encoder("minilm-int8"))


def test_trained_adapters_round_trip_as_arrays_into_a_text_encoder():
    import torch

    from llm4rec.text import get_encoder
    from llm4rec.text.tuning import LoraTextEncoder, TunedTextEncoder

    torch.set_num_threads(1)
    texts = ["Toy Story (1995). Genres: Animation, Children", "GoldenEye (1995). Genres: Action", "Heat (1995)"]
    frozen = get_encoder("minilm")
    lora = LoraTextEncoder(frozen, rank=4)
    with torch.no_grad():  # stands for training: every adapter moves
        for p in lora.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    state = lora.adapter_state()
    assert state and all("lora_" in name and a.dtype == np.float32 for name, a in state.items())
    tuned = TunedTextEncoder(frozen, state, rank=4, alpha=16.0)
    np.testing.assert_allclose(tuned.encode(texts), lora.encode(texts), atol=1e-6)
    assert np.abs(tuned.encode(texts) - frozen.encode(texts)).max() > 1e-3
    other = {name: a * 2 for name, a in state.items()}
    retuned = TunedTextEncoder(frozen, other, rank=4, alpha=16.0)
    assert len({frozen.fingerprint, tuned.fingerprint, retuned.fingerprint}) == 3
    assert TunedTextEncoder(frozen, state, rank=4, alpha=16.0, device="cuda").fingerprint == tuned.fingerprint
    fresh = LoraTextEncoder(frozen, rank=4)
    name = next(iter(state))
    with pytest.raises(ValueError, match="has shape"):
        fresh.load_adapter_state({**state, name: state[name][:1]})
    with pytest.raises(ValueError, match="do not fit"):
        fresh.load_adapter_state({k: v for k, v in state.items() if k != name})
    np.testing.assert_allclose(fresh.encode(texts), frozen.encode(texts), atol=1e-5)  # nothing half-loaded


LORA = {"finetune": "lora", "lora_epochs": 1, "lora_steps": 3, "lora_batch": 8, "lora_negatives": 8}


def test_lora_finetuning_rewrites_the_item_table_with_the_tuned_encoder(loo, cache, tmp_path):
    import torch

    frozen = fit(loo, cache, epochs=1, dim=None, valid="none")
    tuned = fit(loo, cache, epochs=1, dim=None, valid="none", lora_lr=3e-3, run_dir=str(tmp_path), **LORA)
    assert tuned.train_summary_["lora"]["kept"] and tuned.train_summary_["lora"]["epochs_run"] == 1
    before, after = frozen.net_.text, tuned.net_.text  # (I, 384): LM table before / after tuning
    cos = torch.nn.functional.cosine_similarity(before, after, dim=1)
    assert cos.min() > 0.5 and cos.mean() < 0.9999  # moved, not destroyed
    np.testing.assert_allclose(torch.linalg.norm(after, dim=1).numpy(), 1.0, atol=1e-5)
    assert (tmp_path / "lora" / "metrics.csv").is_file()
    loaded = Recommender.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score_indices(np.arange(10)), tuned.score_indices(np.arange(10)))


def test_items_added_after_reload_are_encoded_by_the_tuned_encoder(loo, cache, tmp_path):
    """The LoRA adapters travel in the bundle: an item added after load gets exactly the LM embedding its
    text got from the tuned encoder at fit time, not the frozen encoder's."""
    from llm4rec.text import get_encoder, item_texts

    tuned = fit(loo, cache, epochs=1, dim=None, valid="none", lora_lr=3e-3, **LORA)
    assert tuned.train_summary_["lora"]["kept"] and tuned.adapters_
    x = 11
    at_fit = tuned.net_.text[x].numpy()
    frozen = get_encoder("minilm").encode([item_texts(loo.fit, tuned.template_)[x]])[0]
    assert np.abs(at_fit - frozen).max() > 1e-4  # the tuning moved it
    loaded = Recommender.load(tuned.save(tmp_path / "tuned"))
    assert loaded.adapters_.keys() == tuned.adapters_.keys()
    loaded.add_items(item_rows(loo.fit, [x], ["x-again"]))
    np.testing.assert_allclose(loaded.net_.text[-1].numpy(), at_fit, atol=1e-6)
    again = Recommender.load(loaded.save(tmp_path / "added"))
    user = [str(loaded.user_ids[0])]
    np.testing.assert_array_equal(again.score(user), loaded.score(user))


def test_lora_finetuning_that_validates_worse_keeps_the_frozen_model(loo, cache):
    frozen = fit(loo, cache, epochs=1)
    wrecked = fit(loo, cache, epochs=1, lora_lr=5.0, **LORA)  # a huge step ruins the encoder
    summary = wrecked.train_summary_["lora"]
    assert not summary["kept"] and summary["best_value"] < wrecked.train_summary_["best_value"]
    np.testing.assert_array_equal(wrecked.score_indices(np.arange(10)), frozen.score_indices(np.arange(10)))
    assert wrecked.adapters_ == {}
    with pytest.raises(InputError, match="finetune"):
        create_model("llm-two-tower", {"finetune": "lora", "encoder": None})


def test_the_batch_forward_equals_the_towers_applied_to_each_part():
    """forward computes each distinct item of a batch once and splits the result: the representations and
    every gradient are those of the item tower applied to the history, the positives and the negatives apart."""
    import torch

    from llm4rec.nn.two_tower_net import TwoTowerNet, TwoTowerNetConfig

    gen = torch.Generator().manual_seed(0)
    cfg = TwoTowerNetConfig(n_items=40, n_users=5, dim=8, text_dim=8, hidden=16, id_dropout=0.0, dropout=0.0,
                            max_history=4)
    net = TwoTowerNet(cfg, text=torch.randn(40, 8, generator=gen), log_count=torch.rand(40, generator=gen) + 0.5)
    for p in net.parameters():  # every weight away from its (partly zero) start
        torch.nn.init.normal_(p, std=0.3, generator=gen)
    users = torch.arange(5)
    history = torch.randint(40, (5, 4), generator=gen)
    mask = torch.rand(5, 4, generator=gen) < 0.7
    pos, neg = torch.randint(40, (5,), generator=gen), torch.randint(40, (1, 9), generator=gen)
    ours = net(users, history, mask, pos, neg)
    parts = (net.users(users, net.items(history), mask), net.items(pos), net.items(neg))
    for a, b in zip(ours, parts):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    weights = [torch.randn(t.shape, generator=gen) for t in parts]
    params = [p for p in net.parameters()]
    grads = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ours)), params)
    reference = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, parts)), params)
    for g, r in zip(grads, reference):
        assert torch.allclose(g, r, atol=1e-5)
