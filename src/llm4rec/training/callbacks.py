"""Callbacks of the training loop: early stopping, a progress bar, run-directory logs.

The trainer calls, in order: ``on_train_begin(state)``; per step
``on_batch_end(state, loss)``; per epoch ``on_epoch_end(state, record)``
(returning True asks the trainer to stop); ``on_train_end(state)``.
``record`` is one row of the history: ``epoch``, ``loss``, ``seconds``, the
validation metric (``valid_NDCG@10``...) and, under DP, ``epsilon``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4rec._atomic import atomic_write_text

if TYPE_CHECKING:
    from llm4rec.training.loop import TrainState

__all__ = ["Callback", "EarlyStopping", "ProgressBar", "RunLogger"]


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, state: TrainState) -> None:
        return None

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        return None

    def on_epoch_end(self, state: TrainState, record: dict[str, float]) -> bool:
        return False

    def on_train_end(self, state: TrainState) -> None:
        return None


class EarlyStopping(Callback):
    """Keep the weights of the epoch with the best ``monitor`` value; stop after ``patience`` worse epochs.

    ``patience=0`` never stops early. The best weights are restored at the end
    either way, and ``state.best_epoch`` / ``state.best_value`` are set. A tie
    keeps the earlier epoch.
    """

    def __init__(self, monitor: str, patience: int, *, higher_is_better: bool = True) -> None:
        self.monitor, self.patience, self.sign = monitor, patience, 1.0 if higher_is_better else -1.0
        self._best_weights: dict[str, Any] | None = None
        self._bad_epochs = 0

    def on_epoch_end(self, state: TrainState, record: dict[str, float]) -> bool:
        value = record[self.monitor]
        if state.best_value is None or self.sign * value > self.sign * state.best_value:
            state.best_epoch, state.best_value = int(record["epoch"]), value
            self._best_weights = {k: v.detach().clone() for k, v in state.module.state_dict().items()}
            self._bad_epochs = 0
            return False
        self._bad_epochs += 1
        return self.patience > 0 and self._bad_epochs >= self.patience

    def on_train_end(self, state: TrainState) -> None:
        if self._best_weights is not None:
            state.module.load_state_dict(self._best_weights)

    def resume_state(self) -> tuple[int, dict[str, Any] | None]:
        """(epochs since the best one, the best epoch's weights or None): what a checkpoint must keep."""
        return self._bad_epochs, self._best_weights

    def restore(self, bad_epochs: int, best_weights: dict[str, Any] | None) -> None:
        """Continue from :meth:`resume_state` of an earlier run (``state.best_epoch``/``best_value`` are the
        trainer's to restore)."""
        self._bad_epochs, self._best_weights = bad_epochs, best_weights


class ProgressBar(Callback):
    """A rich progress bar on stderr: one task per epoch, with the running mean loss."""

    def on_train_begin(self, state: TrainState) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = None
        self._sum = self._n = 0.0

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        if self._task is None:
            self._task = self._progress.add_task(f"epoch {state.epoch}", total=state.batches_per_epoch, loss=0.0)
            self._sum = self._n = 0.0
        self._sum, self._n = self._sum + loss, self._n + 1
        self._progress.update(self._task, advance=1, loss=self._sum / self._n)

    def on_epoch_end(self, state: TrainState, record: dict[str, float]) -> bool:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
        self._progress.console.print(f"epoch {int(record['epoch'])}: {shown}")
        return False

    def on_train_end(self, state: TrainState) -> None:
        self._progress.stop()


class RunLogger(Callback):
    """Write a run directory.

    Files: ``config.json`` (the resolved config, seed included) at the start;
    per epoch a row of ``metrics.csv`` and TensorBoard scalars under
    ``tensorboard/``; at the end ``metrics.json`` (history, best epoch and
    value, epsilon under DP, seconds) and ``curves.png`` (loss and validation
    metric per epoch). The model itself adds ``model/`` (see
    :meth:`Recommender.save`).
    """

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        self.run_dir, self.config = Path(run_dir), config

    def on_train_begin(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.json",
                          json.dumps({**self.config, "seed": state.options.seed}, indent=2) + "\n")
        (self.run_dir / "metrics.csv").unlink(missing_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def on_epoch_end(self, state: TrainState, record: dict[str, float]) -> bool:
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)
        for key, value in record.items():
            if key != "epoch":
                self._writer.add_scalar(key.replace("@", "_at_"), value, int(record["epoch"]))
        self._writer.flush()
        return False

    def on_train_end(self, state: TrainState) -> None:
        self._writer.close()
        summary = {"best_epoch": state.best_epoch, "best_value": state.best_value, "monitor": state.monitor,
                   "epochs_run": len(state.history), "epsilon": state.epsilon, "delta":
                   state.options.dp_delta if state.epsilon is not None else None,
                   "seconds": round(state.seconds, 3), "history": state.history}
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
        _plot(state.history, self.run_dir / "curves.png")


def _plot(history: list[dict[str, float]], path: Path) -> None:
    """Loss and validation metrics per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    valid_keys = [k for k in (history[0] if history else {}) if k.startswith("valid_")]
    fig, axes = plt.subplots(1, 2 if valid_keys else 1, figsize=(9 if valid_keys else 4.5, 3.2), squeeze=False)
    axes[0, 0].plot(epochs, [r["loss"] for r in history], marker="o")
    axes[0, 0].set(xlabel="epoch", ylabel="training loss", title="loss")
    for key in valid_keys:
        values = [r[key] if not math.isnan(r[key]) else None for r in history]
        axes[0, 1].plot(epochs, values, marker="o", label=key.removeprefix("valid_"))
    if valid_keys:
        axes[0, 1].set(xlabel="epoch", ylabel="validation", title="validation")
        axes[0, 1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
