"""The shared training loop: early stopping, run directory, determinism, DP, validation hold-outs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from llm4rec.errors import InputError
from llm4rec.testing import checkerboard
from llm4rec.training import Callback, Trainer, TrainingConfig, Validation, holdout


class ToyTask:
    """Least squares y = X w on 64 examples, a linear module."""

    n_examples = 64

    def __init__(self) -> None:
        gen = np.random.default_rng(0)
        self.x = torch.from_numpy(gen.normal(size=(64, 3)).astype(np.float32))
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.module = None

    def build(self):
        self.module = torch.nn.Linear(3, 1)
        return self.module

    def batch(self, index, rng):
        return self.x[index], self.y[index]

    def loss(self, module, batch):
        x, y = batch
        return ((module(x)[:, 0] - y) ** 2).mean()

    def score(self, users, items=None):
        raise AssertionError("not used")


class Snapshots(Callback):
    """Copies the weights after every epoch."""

    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, state, record):
        self.weights[int(record["epoch"])] = {k: v.clone() for k, v in state.module.state_dict().items()}
        return False


def scripted(values):
    """A validation metric that returns ``values`` one per epoch."""
    it = iter(values)
    return Validation("valid_score", lambda: next(it))


def options(**kw):
    return TrainingConfig(**{"epochs": 10, "batch_size": 16, "lr": 0.05, **kw})


def test_early_stopping_restores_the_best_epoch():
    snaps = Snapshots()
    result = Trainer(options(patience=2), callbacks=[snaps]).fit(ToyTask(), scripted([0.1, 0.5, 0.3, 0.2, 0.9]))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]  # two worse epochs after the best: stop
    assert result.best_epoch == 2 and result.best_value == 0.5
    for key, value in result.module.state_dict().items():
        assert torch.equal(value, snaps.weights[2][key])
        assert not torch.equal(value, snaps.weights[4][key])


def test_patience_zero_trains_every_epoch_and_still_restores_the_best():
    snaps = Snapshots()
    values = [0.1, 0.2, 0.9, 0.3, 0.4]
    result = Trainer(options(epochs=5, patience=0), callbacks=[snaps]).fit(ToyTask(), scripted(values))
    assert len(result.history) == 5 and result.best_epoch == 3
    assert torch.equal(result.module.weight, snaps.weights[3]["weight"])


def test_lower_is_better_validation():
    it = iter([3.0, 1.0, 2.0, 2.5])
    valid = Validation("valid_RMSE", lambda: next(it), higher_is_better=False)
    result = Trainer(options(epochs=4, patience=2)).fit(ToyTask(), valid)
    assert result.best_epoch == 2 and result.best_value == 1.0 and len(result.history) == 4


def test_training_reduces_the_loss_and_is_deterministic_under_a_seed():
    a = Trainer(options(epochs=5, seed=1)).fit(ToyTask())
    b = Trainer(options(epochs=5, seed=1)).fit(ToyTask())
    c = Trainer(options(epochs=5, seed=2)).fit(ToyTask())
    assert a.history[-1]["loss"] < a.history[0]["loss"] / 4
    assert torch.equal(a.module.weight, b.module.weight)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert not torch.equal(a.module.weight, c.module.weight)
    assert a.best_epoch is None and a.epsilon is None  # no validation, no DP


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_the_optimiser_steps_exactly_as_the_per_weight_adam_loop(monkeypatch, l2):
    """The trainer's Adam (one batched kernel per step over all weights) gives the very weights of torch's
    per-weight loop (``foreach=False``, the slow reference)."""
    fast = Trainer(options(epochs=3, l2=l2)).fit(ToyTask())
    adam = torch.optim.Adam

    def per_weight(params, **kwargs):
        return adam(params, **{**kwargs, "foreach": False})

    monkeypatch.setattr(torch.optim, "Adam", per_weight)
    slow = Trainer(options(epochs=3, l2=l2)).fit(ToyTask())
    assert torch.equal(fast.module.weight, slow.module.weight) and torch.equal(fast.module.bias, slow.module.bias)


def test_run_directory_holds_csv_tensorboard_plot_config_and_metrics(tmp_path):
    run = tmp_path / "run"
    config = {"model": "toy", "config": {"lr": 0.05}}
    result = Trainer(options(epochs=3, patience=0, run_dir=str(run)), config=config).fit(
        ToyTask(), scripted([0.2, 0.4, 0.3]))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "loss", "seconds", "valid_score"}
    assert float(rows[1]["valid_score"]) == 0.4
    assert math.isclose(float(rows[0]["loss"]), result.history[0]["loss"])
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "toy" and saved["seed"] == 2026 and saved["config"] == {"lr": 0.05}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2 and metrics["monitor"] == "valid_score" and len(metrics["history"]) == 3


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(options(epochs=2, patience=0, run_dir=str(tmp_path))).fit(ToyTask(), scripted([0.1, 0.2]))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"loss", "valid_score"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("valid_score")] == pytest.approx([0.1, 0.2])


def test_dp_sgd_reports_a_finite_growing_epsilon(tmp_path):
    result = Trainer(options(epochs=3, dp_noise_multiplier=1.0, dp_max_grad_norm=1.0, run_dir=str(tmp_path))).fit(
        ToyTask())
    eps = [r["epsilon"] for r in result.history]
    assert all(math.isfinite(e) and e > 0 for e in eps) and eps[0] < eps[1] < eps[2]
    assert result.epsilon == eps[-1] and result.delta == 1e-5
    assert json.loads((tmp_path / "metrics.json").read_text())["epsilon"] == pytest.approx(eps[-1])
    assert not hasattr(result.module, "_forward_counter")  # Opacus' wrapper is gone
    more_noise = Trainer(options(epochs=3, dp_noise_multiplier=2.0)).fit(ToyTask())
    assert more_noise.epsilon < result.epsilon


def test_dp_is_deterministic_under_a_seed():
    a = Trainer(options(epochs=2, dp_noise_multiplier=1.0)).fit(ToyTask())
    b = Trainer(options(epochs=2, dp_noise_multiplier=1.0)).fit(ToyTask())
    assert torch.equal(a.module.weight, b.module.weight)


def test_a_non_finite_loss_is_a_clear_error():
    class Exploding(ToyTask):
        def loss(self, module, batch):
            return super().loss(module, batch) * float("inf")

    with pytest.raises(InputError, match="not finite"):
        Trainer(options(epochs=1)).fit(Exploding())


def test_stage_validation_uses_the_evaluator():
    data = checkerboard()
    train, stage = holdout(data, "last")

    class Popularity(ToyTask):
        n_examples = train.n_interactions

        def build(self):
            self.module = torch.nn.Embedding(data.n_items, 1)
            return self.module

        def batch(self, index, rng):
            return torch.from_numpy(train.item[index].astype(np.int64))

        def loss(self, module, batch):
            return -torch.nn.functional.logsigmoid(module(batch)).mean() + module.weight.pow(2).mean()

        def score(self, users, items=None):
            s = self.module.weight[:, 0].detach().numpy()
            s = s if items is None else s[items]
            return np.tile(s, (len(users), 1))

    result = Trainer(options(epochs=2, patience=0)).fit(Popularity(), stage)
    assert result.monitor == "valid_NDCG@10"
    assert all(0.0 <= r["valid_NDCG@10"] <= 1.0 for r in result.history)

    scored = []

    class Recording(Popularity):
        def score(self, users, items=None):
            scored.append(np.asarray(users).copy())
            return super().score(users, items)

    Trainer(options(epochs=1, patience=0, valid_users=7)).fit(Recording(), stage)
    Trainer(options(epochs=1, patience=0, valid_users=7)).fit(Recording(), stage)
    first, again = np.concatenate(scored[:len(scored) // 2]), np.concatenate(scored[len(scored) // 2:])
    assert len(first) == 7 and set(first) <= set(stage.users)  # a seeded sample of 7 validation users
    np.testing.assert_array_equal(first, again)


def test_holdout_last_takes_each_long_users_last_interaction():
    data = checkerboard()
    train, stage = holdout(data, "last")
    counts = np.diff(data.user_offsets)
    assert train.n_interactions == data.n_interactions - (counts >= 3).sum()
    assert stage.k == 10 and stage.candidates is None
    last = data.item[data.user_offsets[1:] - 1]
    for u in stage.users[:5]:
        assert stage.targets[u].indices.tolist() == [last[u]]
    assert stage.fit is train


def test_holdout_items_is_pseudo_cold_and_seeded():
    data = checkerboard()
    train, stage = holdout(data, "items", seed=3)
    assert stage.k == 20 and len(stage.candidates) == round(0.1 * data.n_items)
    assert not np.isin(train.item, stage.candidates).any()
    again = holdout(data, "items", seed=3)[1]
    assert np.array_equal(again.candidates, stage.candidates)
    assert not np.array_equal(holdout(data, "items", seed=4)[1].candidates, stage.candidates)


def test_holdout_none_and_nobody_to_validate():
    import polars as pl

    from llm4rec.data import Dataset

    data = checkerboard()
    assert holdout(data, "none") == (data, None)
    pairs = Dataset.from_frame(pl.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 2, 3]}))
    assert holdout(pairs, "last") == (pairs, None)  # nobody has 3 interactions
    with pytest.raises(InputError, match="unknown validation"):
        holdout(data, "bogus")


def test_options_are_validated():
    with pytest.raises(ValueError):
        TrainingConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainingConfig(no_such_option=1)
