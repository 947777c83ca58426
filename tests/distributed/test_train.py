"""Data-parallel training on Ray (``fit_distributed``): the same model as one process, checkpoints, resume.

Every Ray test here shares the session's local cluster (a head and two 1-CPU
worker nodes, separate processes). The reference run (2 workers, no failure)
is made once per module and compared with a single-process fit at the same
seed, with its own checkpoints, and with a run whose worker node is killed.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from llm4rec.data import make_split
from llm4rec.data.synthetic import make_synthetic
from llm4rec.evaluation.evaluator import evaluate
from llm4rec.models import Recommender, create_model

#: a small sasrec that still learns something in a few epochs; patience=0 runs every epoch
SASREC = dict(epochs=12, dim=32, max_len=20, batch_size=64, patience=0, seed=7)


@pytest.fixture(scope="module", autouse=True)
def _fast_health_checks():
    """Ray Train's controller polls its workers every 2 s by default; 0.5 s ends runs and notices deaths sooner."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def stage():
    data = make_synthetic(400, 250, seed=3)
    return make_split(data, "loo", seed=3).stage("test")


@pytest.fixture(scope="module")
def reference(ray_cluster, stage, tmp_path_factory):
    """sasrec fitted on 2 Ray workers (kept checkpoints in ``ckpt``), and the same fit on one process."""
    from llm4rec.distributed.train import fit_distributed

    ckpt = tmp_path_factory.mktemp("ckpt")
    ray_model = fit_distributed(create_model("sasrec", SASREC), stage.fit, workers=2, checkpoint_dir=ckpt,
                                keep_checkpoints=100)
    single = create_model("sasrec", SASREC).fit(stage.fit)
    return {"ray": ray_model, "single": single, "ckpt": ckpt}


def _weights(model: Recommender) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.net_.state_dict().items()}


def test_two_workers_match_one_process_within_noise(reference, stage):
    """Same seed, same global batches, same number of steps: test NDCG@10 within 0.02 of one process.

    The two fits differ only in their random draws (shuffles, dropout) and
    float rounding. 0.02 NDCG@10 is about two standard errors of the metric on
    these 400 users (NDCG@10 ~0.1, per-user sd ~0.2), and 3x the spread of
    single-process fits across seeds measured on this data (0.006).
    """
    ray_model, single = reference["ray"], reference["single"]
    got, want = evaluate(ray_model, stage).metrics, evaluate(single, stage).metrics
    assert got["NDCG@10"] > 0.03  # it learnt (popularity scores ~0.02 here)
    assert abs(got["NDCG@10"] - want["NDCG@10"]) < 0.02, (got, want)
    assert abs(got["HR@10"] - want["HR@10"]) < 0.04, (got, want)
    # the same kind of object as a single-process fit: history, summary, vocabularies, it saves and loads
    assert len(ray_model.training_history_) == SASREC["epochs"]
    assert ray_model.train_summary_["epochs_run"] == SASREC["epochs"]
    assert ray_model.train_summary_["distributed"] == {"workers": 2, "backend": "gloo", "resumed_from_epoch": None}
    losses = [r["loss"] for r in ray_model.training_history_]
    single_losses = [r["loss"] for r in single.training_history_]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, single_losses, rtol=0.05)  # the loss curve is the same curve
    assert ray_model.config == single.config
    assert ray_model.provenance_["fit_fingerprint"] == single.provenance_["fit_fingerprint"]
    users = stage.users[:50]
    np.testing.assert_array_equal(ray_model.fit_histories(users).recent(20), single.fit_histories(users).recent(20))


def test_fitted_model_saves_as_a_normal_bundle(reference, stage, tmp_path):
    model = reference["ray"]
    model.save(tmp_path / "bundle")
    back = Recommender.load(tmp_path / "bundle")
    users = stage.users[:20]
    np.testing.assert_allclose(back.score_indices(users), model.score_indices(users), rtol=1e-6, atol=1e-6)


def test_a_checkpoint_per_epoch_without_pickle(reference):
    from safetensors.torch import load_file

    from llm4rec.training.checkpoint import Snapshot

    runs = list(reference["ckpt"].iterdir())
    assert len(runs) == 1
    checkpoints = sorted(p for p in runs[0].glob("checkpoint_*") if p.is_dir())
    snaps = sorted((p / "snapshot" for p in checkpoints if (p / "snapshot").is_dir()),
                   key=lambda p: json.loads((p / "trainer.json").read_text())["epoch"])
    finals = [p for p in checkpoints if (p / "final").is_dir()]
    assert [json.loads((p / "trainer.json").read_text())["epoch"] for p in snaps] == \
        list(range(1, SASREC["epochs"] + 1))
    assert len(finals) == 1
    for path in [*runs[0].rglob("*")]:
        if path.is_file():
            assert path.suffix in (".safetensors", ".json", ".npz", ".csv", ".txt", ".lock", "") or \
                path.name.startswith("."), path
            assert b"\x80\x04\x95" not in path.read_bytes()[:64], path  # no pickle stream anywhere
    last = Snapshot.load(snaps[-1])
    assert set(last.weights) == set(reference["ray"].net_.state_dict())
    assert load_file(str(snaps[0] / "optimizer.safetensors"))  # Adam's moments are there
    with np.load(finals[0] / "final" / "arrays.npz", allow_pickle=False) as z:
        assert any(k.startswith("net__") for k in z.files)


def test_gradients_are_averaged_across_ranks():
    """Two gloo ranks, each with half of a batch: after one Adam step both hold the weights a single process
    reaches on the whole batch (the loss is a mean over examples, so the weighted average is exact)."""
    import torch.multiprocessing as mp

    out = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_rank_step, args=(r, 2, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    single = _one_step(None)
    for rank in (0, 1):
        for name, value in single.items():
            np.testing.assert_allclose(results[rank][name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    assert not all(np.allclose(results[0][n], _one_step(None, start=True)[n]) for n in single)  # it moved


@pytest.mark.parametrize("ids", ["few", "most"])
def test_a_large_table_is_reduced_by_the_rows_touched(ids):
    """An embedding table of 64 rows (>= sparse_min_rows): with a few rows looked up, only those rows travel,
    with most of them the whole table does; either way both ranks reach the single process's weights."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    out = context.Queue()
    port = 29532 if ids == "few" else 29533
    procs = [context.Process(target=_rank_table_step, args=(r, 2, ids, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    single, _ = _table_step(None, ids)
    for rank in (0, 1):
        weights, sent = results[rank]
        for name, value in single.items():
            np.testing.assert_allclose(weights[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
        table = 64 * 3
        if ids == "few":  # rows 0-6 of 64: 7 rows x 3 values + the row ids, not 192 values
            assert sent < table // 2
        else:
            assert sent >= table


def _table_step(par, ids: str) -> tuple[dict[str, np.ndarray], int]:
    """Weights after one Adam step of a bag-of-embeddings regressor on 8 examples (this rank's share)."""
    import torch

    torch.manual_seed(0)
    table = torch.nn.Embedding(64, 3)
    head = torch.nn.Linear(3, 1)
    params = [*table.parameters(), *head.parameters()]
    index = np.arange(8)
    look = torch.arange(16).reshape(8, 2) % 7 if ids == "few" else torch.arange(64).reshape(8, 8)
    y = torch.arange(8, dtype=torch.float32)[:, None] / 8
    mine = index if par is None else par.shard(index)
    loss = ((head(table(look[mine]).mean(1)) - y[mine]) ** 2).mean()
    loss.backward()
    if par is not None:
        par.average_gradients(params, len(mine) / len(index), float(loss))
    torch.optim.Adam(params, lr=0.1).step()
    weights = {"table": table.weight.detach().numpy().copy(), "head": head.weight.detach().numpy().copy()}
    return weights, 0 if par is None else par.values_sent - 4  # less the flat buffer's flags and loss


def _rank_table_step(rank: int, world: int, ids: str, port: int, out) -> None:
    import os

    import torch.distributed as dist

    from llm4rec.training.parallel import DataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out.put((rank, _table_step(DataParallel(rank, world, sparse_min_rows=16), ids)))
    finally:
        dist.destroy_process_group()


def _one_step(par, start: bool = False) -> dict[str, np.ndarray]:
    """A linear model's weights after one Adam step on 7 examples (this rank's share under ``par``)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    if start:
        return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    x = torch.linspace(-1, 1, 28).reshape(7, 4)
    y = torch.arange(7, dtype=torch.float32)[:, None] / 7
    index = np.arange(7)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    mine = index if par is None else par.shard(index)
    loss = ((net(x[mine]) - y[mine]) ** 2).mean()
    loss.backward()
    if par is not None:
        par.average_gradients(net.parameters(), len(mine) / len(index), float(loss))
    opt.step()
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _rank_step(rank: int, world: int, out) -> None:
    import os

    import torch.distributed as dist

    from llm4rec.training.parallel import DataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out.put((rank, _one_step(DataParallel(rank, world))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_and_writes_nothing_partial(ray_cluster, reference, stage, tmp_path,
                                                                         monkeypatch):
    """Kill a worker node after the second checkpoint: the group restarts on a fresh node, resumes from the
    latest checkpoint and ends with the weights of the uninterrupted run (the draws are seeded per epoch and
    rank, so the resumed epochs repeat exactly). The run directory holds each epoch once, the temporary
    checkpoints are gone."""
    import tempfile

    from llm4rec.distributed.train import fit_distributed

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the owned checkpoint directory goes
    run_dir = tmp_path / "run"
    outcome = {}

    def fit() -> None:  # Ray starts a node only from the main thread, so the fit runs in this one
        try:
            outcome["model"] = fit_distributed(create_model("sasrec", {**SASREC, "run_dir": str(run_dir)}),
                                               stage.fit, workers=2, max_failures=2)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    trainer = threading.Thread(target=fit, daemon=True)
    trainer.start()
    killed = False
    deadline = time.monotonic() + 180
    while trainer.is_alive() and time.monotonic() < deadline:
        # the second checkpoint on disk: the first is then surely the controller's latest (a kill right after
        # the first file appears may restart from scratch, which is correct but resumes nothing)
        if len(list(tmp_path.glob("llm4rec-ray-train-*/*/checkpoint_*/snapshot/trainer.json"))) >= 2:
            ray_cluster.kill_worker()
            killed = True
            ray_cluster.add_worker()  # back to two worker nodes, for the restart and the later tests
            break
        time.sleep(0.05)
    trainer.join(timeout=300)
    assert killed, "the worker was never killed"
    assert not trainer.is_alive(), "the fit did not finish"
    if "error" in outcome:
        raise outcome["error"]
    model = outcome["model"]
    resumed = model.train_summary_["distributed"]["resumed_from_epoch"]
    assert resumed is not None and 1 <= resumed < SASREC["epochs"]  # it resumed mid-way, not from scratch
    ref = reference["ray"]
    got, want = [r["loss"] for r in model.training_history_], [r["loss"] for r in ref.training_history_]
    np.testing.assert_allclose(got, want, rtol=1e-6)  # the resumed epochs repeat the uninterrupted ones
    for name, value in _weights(ref).items():
        np.testing.assert_allclose(_weights(model)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert evaluate(model, stage).metrics["NDCG@10"] == pytest.approx(evaluate(ref, stage).metrics["NDCG@10"],
                                                                     abs=1e-6)
    # nothing partial: no checkpoint directory left, the run directory has each epoch once and a whole bundle
    assert not list(tmp_path.glob("llm4rec-ray-train-*"))
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, SASREC["epochs"] + 1))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == SASREC["epochs"]
    assert Recommender.load(run_dir / "model").name == "sasrec"


@pytest.mark.slow
def test_a_run_that_keeps_failing_raises_and_leaves_nothing(ray_cluster, stage, tmp_path, monkeypatch):
    """A training error on the workers with no restarts left: DistributedTrainingError, no run directory, no
    checkpoint directory."""
    import tempfile

    from llm4rec.distributed.train import DistributedTrainingError, fit_distributed

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_dir = tmp_path / "run"
    model = create_model("sasrec", {**SASREC, "lr": 1e30, "epochs": 3, "run_dir": str(run_dir)})  # loss -> inf
    with pytest.raises(DistributedTrainingError, match="failed"):
        fit_distributed(model, stage.fit, workers=2, max_failures=0)
    assert not run_dir.exists()
    assert not list(tmp_path.glob("llm4rec-ray-train-*"))
    assert not hasattr(model, "net_")


@pytest.fixture(scope="module")
def text_stage():
    data = make_synthetic(250, 200, interactions_per_user=(8, 30), seed=5)
    return make_split(data, "loo", seed=5).stage("test")


@pytest.mark.slow
@pytest.mark.parametrize("name, settings", [
    ("llm-two-tower", {"dim": 32, "hidden": 0, "negatives": 50, "epochs": 4, "batch_size": 256, "patience": 0}),
    ("sasrec-text", {"epochs": 4, "dim": 32, "max_len": 20, "batch_size": 64, "patience": 0}),
])
def test_text_models_train_on_two_workers(ray_cluster, text_stage, tmp_path_factory, name, settings):
    """llm-two-tower and sasrec-text go through the same trainer: 2 workers give the single-process metrics
    within noise (0.03 NDCG@10 on 250 users, about two standard errors), and the text side (template, encoder
    fingerprint) comes back with the weights."""
    from llm4rec.distributed.train import fit_distributed

    cache = str(tmp_path_factory.mktemp("embeddings"))  # the single fit fills it, the workers read it
    settings = {**settings, "cache_dir": cache, "seed": 11}
    single = create_model(name, settings).fit(text_stage.fit)
    model = fit_distributed(create_model(name, settings), text_stage.fit, workers=2)
    got, want = evaluate(model, text_stage).metrics, evaluate(single, text_stage).metrics
    assert got["NDCG@10"] > 0.03
    assert abs(got["NDCG@10"] - want["NDCG@10"]) < 0.03, (got, want)
    assert model.template_ == single.template_
    assert model.provenance_["encoder_fingerprint"] == single.provenance_["encoder_fingerprint"]
    assert len(model.training_history_) == settings["epochs"]


@pytest.mark.slow
def test_cli_evaluate_trains_on_ray_and_ignores_it_for_other_models(ray_cluster, stage, tmp_path, capsys):
    """``llm4rec evaluate --ray ADDRESS --set workers=2``: a sasrec trained on the cluster, its record and bundle
    written; a model that does not train in epochs says --ray is ignored and fits as usual."""
    from llm4rec.cli.main import main
    from llm4rec.data.export import save_dataset

    data_dir = save_dataset(make_synthetic(400, 250, seed=3), tmp_path / "data")
    out_json, bundle = tmp_path / "result.json", tmp_path / "model"
    code = main(["evaluate", "--data", str(data_dir), "--model", "sasrec", "--seed", "3", "--ray",
                 ray_cluster.address, "--set", "workers=2", "--set", "epochs=3", "--set", "dim=32",
                 "--set", "max_len=20", "--json", str(out_json), "--save-model", str(bundle)])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out_json.read_text())
    assert record["metrics"]["NDCG@10"] > 0.02
    assert "workers" not in record["config"]  # a Ray option, not a model setting
    saved = Recommender.load(bundle)
    assert saved.name == "sasrec" and saved.config.epochs == 3 and saved.config.dim == 32
    assert "epoch 3/3" in out + err  # the driver's progress display saw the workers' epochs
    code = main(["evaluate", "--data", str(data_dir), "--model", "pop", "--ray", ray_cluster.address,
                 "--set", "workers=2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "--ray is ignored" in out
