"""sasrec: a deterministic next-item rule is learned, losses, attention explanations, settings."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.testing import cycle_chain

#: small and fast: 32-d, one block
FAST = {"dim": 32, "layers": 1, "max_len": 20, "epochs": 30, "lr": 0.005, "batch_size": 64, "dropout": 0.1}


@pytest.fixture(scope="module")
def stage():
    """P-LOO on users walking a fixed cycle of 60 items: the next item is a function of the last."""
    return make_split(cycle_chain(), "loo").stage("test")


@pytest.fixture(scope="module")
def model(stage):
    return create_model("sasrec", FAST).fit(stage.fit)


def test_a_deterministic_next_item_rule_is_learned_to_near_perfect_hr(model, stage):
    ours = evaluate(model, stage).metrics
    pop = evaluate(create_model("pop").fit(stage.fit), stage).metrics
    assert ours["HR@10"] >= 0.95 and ours["NDCG@10"] >= 0.8
    assert pop["HR@10"] < 0.4
    assert model.train_summary_["monitor"] == "valid_NDCG@10"


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_sampled_losses_learn_the_rule_too(stage, loss):
    model = create_model("sasrec", {**FAST, "loss": loss, "negatives": 20, "epochs": 40}).fit(stage.fit)
    assert evaluate(model, stage).metrics["HR@10"] >= 0.8


def test_attention_explanation_points_at_history_positions(model, stage):
    user = 5
    hist = model.history_items_[user]
    hist = hist[hist >= 0]
    weights = model.attention(user)
    assert weights.shape == hist.shape and weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    item = int(model.recommend([user], k=1)[0][0, 0])
    out = model.explain(user, item)
    assert 1 <= len(out["because"]) <= 3 and out["item"] == item
    got = [b["weight"] for b in out["because"]]
    assert got == sorted(got, reverse=True) and got[0] == pytest.approx(weights.max(), abs=1e-6)
    for entry in out["because"]:  # position 1 = the most recent item
        assert hist[len(hist) - entry["position"]] == entry["item"]
    assert out["because"][0]["label"] in out["text"]


def test_the_contrastive_auxiliary_loss_keeps_the_rule_learnable(stage):
    model = create_model("sasrec", {**FAST, "contrastive": 0.1, "augment_rate": 0.4}).fit(stage.fit)
    assert evaluate(model, stage).metrics["HR@10"] >= 0.9


def test_the_contrastive_loss_finds_each_views_twin():
    """Identical views of distinct sequences at a low temperature: InfoNCE near 0; swapped twins: large."""
    import torch

    from llm4rec.models.sasrec import SASRecConfig, _build_net, _contrastive

    torch.manual_seed(0)
    net = _build_net(SASRecConfig(dim=32, layers=1, max_len=10, dropout=0.0), n_items=50).eval()
    seqs = torch.arange(1, 41).reshape(8, 5)  # 8 sequences without shared items
    with torch.no_grad():
        same = _contrastive(net, (seqs, seqs), temperature=0.01)
        wrong = _contrastive(net, (seqs, seqs.roll(1, 0)), temperature=0.01)
    assert same < 1e-3 and wrong > 1.0


def test_settings_are_checked(stage):
    with pytest.raises(InputError, match="heads must divide dim"):
        create_model("sasrec", {**FAST, "heads": 3, "epochs": 1}).fit(stage.fit)
    with pytest.raises(InputError, match="loss"):
        create_model("sasrec", {"loss": "mse"})
    with pytest.raises(InputError, match="augmentation"):
        create_model("sasrec", {"augment": "none"})
    with pytest.raises(InputError, match="DP-SGD"):
        create_model("sasrec", {**FAST, "contrastive": 0.1, "dp_noise_multiplier": 1.0}).fit(stage.fit)


@pytest.mark.slow
@pytest.mark.realdata
def test_ml100k_loo_floor(ml100k):
    """Defaults (about 55 epochs, 2-3 minutes) on ml-100k P-LOO (test stage) beat EASE (NDCG@10 0.0409)."""
    stage = make_split(ml100k, "loo").stage("test")
    model = create_model("sasrec").fit(stage.fit)
    assert evaluate(model, stage).metrics["NDCG@10"] >= 0.0409
