"""Data-parallel training of the neural models on a Ray cluster (Ray Train's ``TorchTrainer``).

:func:`fit_distributed` runs the model's own :meth:`~llm4rec.models.neural.NeuralRecommender.fit`
on ``workers`` Ray Train workers, one rank each of a ``torch.distributed``
process group (gloo on CPUs, NCCL on GPUs). The training loop is the shared
:class:`~llm4rec.training.Trainer`, made data-parallel by a
:class:`~llm4rec.training.parallel.DataParallel` (sharded batches, averaged
gradients, all-reduced validation; see that module for what matches a
single-process fit and what does not). After every epoch rank 0 writes a
:class:`~llm4rec.training.checkpoint.Snapshot` (safetensors + JSON) into a Ray
Train checkpoint and every rank reports the epoch's metrics; when a worker
dies, Ray restarts the group (up to ``max_failures`` times) and training
continues from the latest checkpoint, exactly as the uninterrupted run would
have. At the end rank 0's fitted model (its ``.npz`` state and a JSON
summary) is the run's last checkpoint; the driver installs it into ``model``,
which is then the same kind of object a single-process ``fit`` leaves (it
saves as a normal bundle).

Nothing is written outside the checkpoint directory until the fit has
succeeded, and the checkpoint directory is a temporary one (removed at the
end, success or not) unless ``checkpoint_dir`` names one to keep. On a
cluster of several machines ``checkpoint_dir`` must be storage every node
reaches (a shared file system, or a ``s3://``-style URI that Ray accepts).

The driver's callbacks (e.g. a progress display) see each epoch as rank 0
finishes it (``on_train_begin``, ``on_epoch_end``, ``on_train_end``; not
``on_batch_end``). The model's ``run_dir`` is written by the driver once the
fit has succeeded (metrics, curves and the model, each epoch once however
often the workers restarted).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.errors import InputError, Llm4recError
from llm4rec.training.callbacks import Callback

if TYPE_CHECKING:
    from llm4rec.data import Dataset, Stage
    from llm4rec.models.neural import NeuralRecommender

__all__ = ["DistributedTrainingError", "fit_distributed"]

#: sub-directories of a Ray Train checkpoint: an epoch's snapshot, or the finished model
SNAPSHOT, FINAL = "snapshot", "final"


class DistributedTrainingError(Llm4recError):
    """The workers failed more often than ``max_failures`` allowed (the cause is chained)."""


def fit_distributed(model: NeuralRecommender, data: Dataset, valid: Stage | None = None, *, workers: int = 2,
                    address: str | None = None, checkpoint_dir: str | Path | None = None, max_failures: int = 3,
                    cpus_per_worker: int = 1, use_gpu: bool | None = None, callbacks: list | None = None,
                    keep_checkpoints: int = 2) -> NeuralRecommender:
    """Fit ``model`` (a neural model: ``sasrec``, ``sasrec-text``, ``llm-two-tower``...) data-parallel on Ray.

    Args:
        model: an unfitted (or to-be-refitted) neural recommender; it is fitted in place and returned.
        data: the fit set, as for ``model.fit(data)``.
        valid: a validation stage of ``data`` (as for ``model.fit``), or None for the model's own hold-out.
        workers: Ray Train workers, one training process (rank) each.
        address: the cluster to join (:func:`~llm4rec.distributed.cluster.connect`); None = the one this
            process is connected to, else ``"auto"``.
        checkpoint_dir: where Ray Train keeps the per-epoch checkpoints (kept afterwards); None = a
            temporary directory removed at the end.
        max_failures: worker-group restarts allowed (each resumes from the latest checkpoint).
        cpus_per_worker: CPUs (and torch threads) of each worker.
        use_gpu: one GPU per worker, NCCL between them; None = whether this process sees a GPU.
        callbacks: :class:`~llm4rec.training.Callback` objects fed each epoch (see the module docstring).
        keep_checkpoints: checkpoints Ray keeps (the latest ones).

    Returns:
        ``model``, fitted: rank 0's weights, ``train_summary_`` (with ``distributed``: workers, backend, and
        the epoch the last restart resumed from, None without one) and ``training_history_``.
    """
    from llm4rec.distributed.cluster import require_ray
    from llm4rec.models.neural import NeuralRecommender
    from llm4rec.training import check_valid_stage

    if not isinstance(model, NeuralRecommender):
        raise InputError(f"model {model.name!r} does not train in epochs, so it has nothing to distribute",
                         value=model.name, expected="a neural model: sasrec, sasrec-text, llm-two-tower")
    for name, value, least in (("workers", workers, 1), ("cpus_per_worker", cpus_per_worker, 1),
                               ("max_failures", max_failures, 0), ("keep_checkpoints", keep_checkpoints, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"bad {name} for distributed training", value=value, expected=f"an integer >= {least}")
    if getattr(model.config, "dp_noise_multiplier", 0) > 0:
        raise InputError("DP-SGD cannot run data-parallel (its privacy accounting assumes one process)",
                         value=model.config.dp_noise_multiplier, expected="dp_noise_multiplier=0 with --ray")
    if getattr(model.config, "epochs", 1) == 0:  # zero-shot transfer: nothing to train
        return model.fit(data, valid, callbacks=callbacks)
    check_valid_stage(valid, data)
    ray = require_ray()
    if use_gpu is None:
        import torch

        use_gpu = torch.cuda.is_available()
    owned = checkpoint_dir is None
    storage = Path(tempfile.mkdtemp(prefix="llm4rec-ray-train-")) if owned else Path(checkpoint_dir)
    joined = not ray.is_initialized()
    try:
        if joined:
            from llm4rec.distributed.cluster import connect

            connect(address or "auto")
        result = _run(ray, model, data, valid, workers=workers, storage=storage, max_failures=max_failures,
                      cpus_per_worker=cpus_per_worker, use_gpu=use_gpu, callbacks=list(callbacks or []),
                      keep=keep_checkpoints)
    finally:
        if owned:
            shutil.rmtree(storage, ignore_errors=True)
        if joined and ray.is_initialized():
            ray.shutdown()
    return result


def _run(ray: Any, model: NeuralRecommender, data: Dataset, valid: Stage | None, *, workers: int, storage: Path,
         max_failures: int, cpus_per_worker: int, use_gpu: bool, callbacks: list, keep: int) -> NeuralRecommender:
    """Train on the cluster, relay the epochs to ``callbacks``, install rank 0's model into ``model``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from llm4rec.training import RunLogger, TrainingConfig

    cfg = model.config
    queue = Queue(actor_options={"num_cpus": 0}) if callbacks else None
    settings = {**cfg.model_dump(mode="json"), "run_dir": None, "progress": False, "threads": cpus_per_worker}
    loop_config = {"model": model.name, "settings": settings, "data": ray.put(data),
                   "valid": None if valid is None else ray.put(valid), "queue": queue}
    trainer = TorchTrainer(
        _train_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"{model.name}-{uuid.uuid4().hex[:8]}", storage_path=str(storage.resolve()),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep)))
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - handed to the driver thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="llm4rec-ray-train", daemon=True)
    thread.start()
    relay = _DriverRelay(callbacks, TrainingConfig.from_config(cfg))
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
            relay.drain(queue)
        relay.drain(queue)
    finally:
        if queue is not None:
            queue.shutdown()
    if "error" in outcome:
        exc = outcome["error"]
        raise DistributedTrainingError(f"distributed training of {model.name!r} failed "
                                       f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
                                       ) from exc
    result = outcome["result"]
    if result.checkpoint is None:
        raise DistributedTrainingError(f"distributed training of {model.name!r} ended without a model")
    with result.checkpoint.as_directory() as directory:
        arrays, info = _read_final(Path(directory) / FINAL)
    relay.end(info)
    if cfg.run_dir is not None:  # written only now, from rank 0's history: a failed run leaves no run directory
        logger = _DriverRelay([RunLogger(cfg.run_dir, {"model": model.name, "config": cfg.model_dump(mode="json")})],
                              TrainingConfig.from_config(cfg))
        logger.replay(info)
    model._adopt_fit(data, arrays, info, keep=("device", "run_dir", "progress", "threads"))
    return model


class _DriverRelay:
    """Feeds the driver's callbacks from rank 0's epoch messages (each epoch once, across restarts)."""

    def __init__(self, callbacks: list, options: Any) -> None:
        from llm4rec.training import TrainState

        self.callbacks = callbacks
        self.state = TrainState(options, None, None, 0)
        self.begun = False

    def drain(self, queue: Any) -> None:
        from ray.util.queue import Empty

        if queue is None:
            return
        while True:
            try:
                message = queue.get_nowait()
            except Empty:
                return
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        state = self.state
        if message["kind"] == "begin":
            if not self.begun:
                state.monitor, state.batches_per_epoch = message["monitor"], message["batches"]
                self.begun = True
                for cb in self.callbacks:
                    cb.on_train_begin(state)
            return
        record = message["record"]
        if not self.begun or int(record["epoch"]) <= state.epoch:  # a restart repeats epochs already shown
            return
        state.epoch = int(record["epoch"])
        state.best_epoch, state.best_value = message["best_epoch"], message["best_value"]
        state.history.append(record)
        for cb in self.callbacks:
            cb.on_epoch_end(state, record)

    def replay(self, info: dict[str, Any]) -> None:
        """The whole run at once, from rank 0's fit summary."""
        summary = info["train_summary"]
        self._handle({"kind": "begin", "monitor": summary.get("monitor"), "batches": 0})
        for record in info["training_history"]:
            self._handle({"kind": "epoch", "record": record, "best_epoch": None, "best_value": None})
        self.end(info)

    def end(self, info: dict[str, Any]) -> None:
        if not self.begun:
            return
        summary = info["train_summary"]
        self.state.history = list(info["training_history"])
        self.state.best_epoch, self.state.best_value = summary.get("best_epoch"), summary.get("best_value")
        self.state.seconds = float(summary.get("seconds") or 0.0)
        for cb in self.callbacks:
            cb.on_train_end(self.state)


def _train_loop(config: dict[str, Any]) -> None:
    """One rank's work (runs inside a Ray Train worker): fit the model data-parallel, rank 0 reporting."""
    import os

    import ray
    import ray.train
    import ray.train.torch
    import torch

    from llm4rec.models import create_model
    from llm4rec.training.checkpoint import Snapshot
    from llm4rec.training.parallel import DataParallel

    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    settings = {**config["settings"], "device": "cuda" if device.type == "cuda" else "cpu"}
    model = create_model(config["model"], settings)
    data = ray.get(config["data"])
    valid = None if config["valid"] is None else ray.get(config["valid"])
    queue = config["queue"] if rank == 0 else None

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            if (Path(directory) / FINAL).is_dir():  # the model was finished before a late failure
                ray.train.report({"epoch": -1, "done": 1}, checkpoint=checkpoint if rank == 0 else None)
                return
            resume = Snapshot.load(Path(directory) / SNAPSHOT)

    def save(snapshot: Snapshot) -> None:
        metrics = {**snapshot.history[-1], "stopped": int(snapshot.stopped)}
        with tempfile.TemporaryDirectory(prefix="llm4rec-ckpt-") as tmp:
            if rank == 0:
                snapshot.save(Path(tmp) / SNAPSHOT)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)

    relay = [_WorkerRelay(queue)] if queue is not None else []
    model.fit(data, valid, callbacks=relay, parallel=DataParallel.from_process_group(save, resume))
    with tempfile.TemporaryDirectory(prefix="llm4rec-final-") as tmp:
        if rank == 0:
            arrays, info = model._fit_outcome()
            info["train_summary"] = {**info["train_summary"], "distributed": {
                "workers": ray.train.get_context().get_world_size(), "backend": "nccl" if device.type == "cuda"
                else "gloo", "resumed_from_epoch": None if resume is None else resume.epoch}}
            final = Path(tmp) / FINAL
            final.mkdir()
            np.savez(final / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
            (final / "fit.json").write_text(json.dumps(info, default=_plain) + "\n", encoding="utf-8")
        ray.train.report({"epoch": -1, "done": 1, "pid": os.getpid()},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)


class _WorkerRelay(Callback):
    """Rank 0's callback: sends the start of training and each epoch's record to the driver."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def on_train_begin(self, state: Any) -> None:
        self.queue.put({"kind": "begin", "monitor": state.monitor, "batches": state.batches_per_epoch})

    def on_epoch_end(self, state: Any, record: dict[str, float]) -> bool:
        self.queue.put({"kind": "epoch", "record": dict(record), "best_epoch": state.best_epoch,
                        "best_value": state.best_value})
        return False


def _read_final(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state arrays, fit summary) that rank 0 wrote into the last checkpoint."""
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads((path / "fit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DistributedTrainingError(f"the finished model in the last checkpoint is unreadable ({exc})") from None
    return arrays, info


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values (anything else as its string)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
