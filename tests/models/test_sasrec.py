"""sasrec: a deterministic next-item rule is learned, losses, validation stages, attention explanations, settings."""

from __future__ import annotations

import pytest

from llm4rec.data import make_split
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.testing import cycle_chain

#: small and fast: 32-d, one block
FAST = {"dim": 32, "layers": 1, "max_len": 20, "epochs": 30, "lr": 0.005, "batch_size": 64, "dropout": 0.1}


@pytest.fixture(scope="module")
def split():
    """P-LOO on users walking a fixed cycle of 60 items: the next item is a function of the last."""
    return make_split(cycle_chain(), "loo")


@pytest.fixture(scope="module")
def stage(split):
    return split.stage("test")


@pytest.fixture(scope="module")
def model(stage):
    return create_model("sasrec", FAST).fit(stage.fit)


def cycle_successor(data) -> dict[str, str]:
    """The chain's rule as item ids: the item that follows each item in the users' walks."""
    seqs = data.sequences()
    return {data.items.token(int(a)): data.items.token(int(b)) for s in seqs for a, b in zip(s[:-1], s[1:])}


def test_a_deterministic_next_item_rule_is_learned_to_near_perfect_hr(model, stage):
    ours = evaluate(model, stage).metrics
    pop = evaluate(create_model("pop").fit(stage.fit), stage).metrics
    assert ours["HR@10"] >= 0.95 and ours["NDCG@10"] >= 0.8
    assert pop["HR@10"] < 0.4
    assert model.train_summary_["monitor"] == "valid_NDCG@10"


def test_a_new_users_history_is_continued_by_the_rule(model, stage):
    """A walk the model never saw, given by item ids: the top item is the next one on the cycle."""
    follows = cycle_successor(stage.fit)
    walk = ["0"]
    for _ in range(6):
        walk.append(follows[walk[-1]])
    rec = model.recommend(histories=[walk[:-1], walk[:3]], k=1)
    assert rec.items[:, 0].tolist() == [walk[-1], walk[3]]


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_sampled_losses_learn_the_rule_too(stage, loss):
    model = create_model("sasrec", {**FAST, "loss": loss, "negatives": 20, "epochs": 40}).fit(stage.fit)
    assert evaluate(model, stage).metrics["HR@10"] >= 0.8


def test_early_stopping_takes_a_valid_stage_and_refuses_the_test_stage(split, stage):
    with pytest.raises(InputError, match="would tune on the targets that are reported"):
        create_model("sasrec", FAST).fit(stage.fit, valid=stage)
    valid = split.stage("valid")
    model = create_model("sasrec", {**FAST, "epochs": 8}).fit(valid.fit, valid=valid)
    summary = model.train_summary_
    assert summary["monitor"] == "valid_NDCG@10" and 1 <= summary["best_epoch"] <= 8
    # the given stage is what was monitored, and its best epoch's weights are what the model keeps
    assert evaluate(model, valid).metrics["NDCG@10"] == pytest.approx(summary["best_value"], abs=1e-6)


def test_attention_explanation_points_at_history_positions(model, stage):
    user = stage.fit.users.token(5)
    hist = stage.fit.items.token(stage.fit.sequences()[5][-FAST["max_len"]:].tolist())
    item = model.recommend([user], k=1).items[0, 0]
    every = model.explain(user, item, top=len(hist))  # the rollout over the whole (read) history sums to 1
    assert sum(b["weight"] for b in every["because"]) == pytest.approx(1.0, abs=1e-4)
    out = model.explain(user, item)
    assert 1 <= len(out["because"]) <= 3 and out["item"] == item and out["user"] == user
    got = [b["weight"] for b in out["because"]]
    assert got == sorted(got, reverse=True) and got == [b["weight"] for b in every["because"][:len(got)]]
    for entry in out["because"]:  # position 1 = the most recent item
        assert hist[len(hist) - entry["position"]] == entry["item"]
    assert out["because"][0]["label"] in out["text"]
    assert out["score"] == pytest.approx(float(model.score([user], items=[item])[0, 0]), rel=1e-5)


def test_a_new_user_is_explained_from_their_history(model, stage):
    """By history, no user id: the same explanation as a known user with that very history."""
    user = stage.fit.users.token(7)
    hist = stage.fit.items.token(stage.fit.sequences()[7].tolist())
    item = model.recommend([user], k=1).items[0, 0]
    known, new = model.explain(user, item), model.explain(history=hist, item=item)
    assert new["user"] is None and new["because"]
    assert {b["item"] for b in new["because"]} <= set(hist)
    assert [(b["item"], b["position"]) for b in new["because"]] == \
        [(b["item"], b["position"]) for b in known["because"]]
    assert new["score"] == pytest.approx(known["score"], rel=1e-5)
    walk = hist[-3:]  # a short new history: positions count back from its own last item
    short = model.explain(history=walk, item=item, top=3)
    assert sorted(b["position"] for b in short["because"]) == list(range(1, len(short["because"]) + 1))


def test_the_contrastive_auxiliary_loss_keeps_the_rule_learnable(stage):
    model = create_model("sasrec", {**FAST, "contrastive": 0.1, "augment_rate": 0.4}).fit(stage.fit)
    assert evaluate(model, stage).metrics["HR@10"] >= 0.9


def test_the_contrastive_loss_finds_each_views_twin():
    """Identical views of distinct sequences at a low temperature: InfoNCE near 0; swapped twins: large."""
    import torch

    from llm4rec.models.sasrec import _contrastive
    from llm4rec.nn.sasrec_net import SASRecNet, SASRecNetConfig

    torch.manual_seed(0)
    net = SASRecNet(SASRecNetConfig(n_items=50, max_len=10, dim=32, layers=1, dropout=0.0)).eval()
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


def test_cuda_without_a_cuda_device_is_a_clear_error(stage):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(InputError, match="device='cuda' but torch sees no CUDA device") as info:
        create_model("sasrec", {**FAST, "epochs": 1, "device": "cuda"}).fit(stage.fit)
    assert "device=cpu" in str(info.value)


@pytest.mark.slow
@pytest.mark.realdata
def test_ml100k_loo_floor(ml100k):
    """Defaults (about 55 epochs, 2-3 minutes) on ml-100k P-LOO (test stage) beat EASE (NDCG@10 0.0409)."""
    stage = make_split(ml100k, "loo").stage("test")
    model = create_model("sasrec").fit(stage.fit)
    assert evaluate(model, stage).metrics["NDCG@10"] >= 0.0409


@pytest.mark.parametrize("loss", ["ce", "bce", "softmax"])
def test_items_without_training_interactions_are_never_trained_as_negatives(loss):
    """P-COLD's cold items are in the fit set's catalogue with no interaction: no loss may push them down,
    so training is the one a catalogue without them gets (they come in later through add_items)."""
    import numpy as np

    from llm4rec.models.sasrec import _Task

    data = cycle_chain()
    cold = np.array([3, 17])
    train = data.subset(~np.isin(data.item, cold))  # same vocabulary, no interaction with the cold items
    model = create_model("sasrec", {**FAST, "epochs": 1, "loss": loss, "negatives": 50}).fit(train)
    task = _Task(model, train)
    batch = task.batch(np.arange(task.n_examples), np.random.default_rng(0))
    task.loss(model.net_, batch).backward()
    grad = model.net_.items.weight.grad  # (n_items + 1, d), row 0 padding
    assert float(grad[cold + 1].abs().max()) == 0.0
    assert float(grad[1:].abs().sum()) > 0  # the interacted items do get gradient


def test_length_groups_are_runs_of_one_power_of_two_size_class():
    import numpy as np

    from llm4rec.models.sasrec import _length_groups

    lengths = np.array([1, 2, 4, 5, 8, 9, 16, 17, 50])  # classes: <= 4, 5-8, 9-16, 17-32, 33-64
    assert _length_groups(lengths) == ((0, 3, 4), (3, 5, 8), (5, 7, 16), (7, 8, 17), (8, 9, 50))
    assert _length_groups(np.array([3, 3])) == ((0, 2, 3),)


@pytest.mark.parametrize("loss", ["ce", "bce", "softmax"])
def test_the_loss_read_in_length_groups_is_the_loss_of_the_padded_batch(loss):
    """Reading each group of the batch only as wide as its longest sequence changes nothing but rounding:
    the loss and every gradient equal those of one forward pass over the padded batch (no dropout)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from llm4rec.models.sasrec import _Task
    from llm4rec.nn import LOSSES

    data = cycle_chain(n_users=120, length=(3, 30))  # sequences of every size class up to 32
    model = create_model("sasrec", {**FAST, "epochs": 1, "loss": loss, "negatives": 20, "dropout": 0.0,
                                    "max_len": 30}).fit(data)
    task = _Task(model, data)
    batch = task.batch(np.arange(task.n_examples), np.random.default_rng(0))
    assert len(batch.groups) >= 3 and batch.groups[-1][1] == task.n_examples
    net = model.net_.train()
    ours = task.loss(net, batch)
    grads = torch.autograd.grad(ours, list(net.parameters()))
    states, _ = net(batch.inputs)  # the reference: the whole padded batch at once
    valid = batch.target >= 0
    h, target, table = states[valid], batch.target[valid], net.item_table()
    if loss == "ce":
        reference = F.cross_entropy(h @ table.T, target)
    elif loss == "bce":
        neg = batch.neg[valid]
        reference = LOSSES["bce"]((h * table[target]).sum(-1), (h * table[neg]).sum(-1, keepdim=True),
                                  (neg != target)[:, None])
    else:
        reference = LOSSES["softmax"]((h * table[target]).sum(-1), h @ table[batch.neg].T,
                                      batch.neg[None, :] != target[:, None])
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    for g, r in zip(grads, torch.autograd.grad(reference, list(net.parameters()))):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)


def test_dp_reads_the_batch_in_one_forward_pass():
    """Opacus follows one forward pass per step, so under DP the batch is one group."""
    import numpy as np

    from llm4rec.models.sasrec import _Task

    data = cycle_chain(n_users=60, length=(3, 30))
    model = create_model("sasrec", {**FAST, "epochs": 1}).fit(data)
    model.config = model.config.model_copy(update={"dp_noise_multiplier": 1.0})
    task = _Task(model, data)
    batch = task.batch(np.arange(10), np.random.default_rng(0))
    assert batch.groups == ((0, 10, batch.inputs.shape[1]),)


def test_scores_read_by_size_class_equal_full_width_reads():
    """Each history is read as wide as its size class; the scores are those of a read of all max_len
    positions (the slow reference, one history at a time) up to rounding, whichever rows share the call."""
    import numpy as np
    import torch

    from llm4rec.models.sasrec import _last_states, _score

    data = cycle_chain(n_users=80, length=(1, 40))
    model = create_model("sasrec", {**FAST, "epochs": 1, "max_len": 30}).fit(data)
    net = model.net_.eval()
    recent = data.recent_items(30)
    recent[:5] = -1  # empty histories too
    with torch.no_grad():
        table = net.item_table()
        slow = np.stack([(net(torch.as_tensor(r[None] + 1))[0][0, -1] @ table.T).numpy() for r in recent])
    fast = _score(net, recent, None, torch.device("cpu"))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_score(net, recent[7:9], None, torch.device("cpu")), fast[7:9], rtol=1e-5, atol=1e-5)
    items = np.array([4, 0, 9])
    np.testing.assert_allclose(_score(net, recent, items, torch.device("cpu")), fast[:, items], rtol=1e-5, atol=1e-6)
    states = _last_states(net, recent, torch.device("cpu"))
    np.testing.assert_allclose(states @ table.detach().numpy().T, fast, rtol=1e-5, atol=1e-5)
