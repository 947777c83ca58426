"""The training progress display of ``evaluate`` and ``quickstart`` (imported when a command runs)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llm4rec.training import Callback

if TYPE_CHECKING:
    from rich.progress import Progress

    from llm4rec.training import TrainState

__all__ = ["TrainingDisplay"]


def _duration(seconds: float) -> str:
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TrainingDisplay(Callback):
    """Training progress on stderr: a bar over the epoch's batches (terminals only) and one line per epoch.

    The line: ``epoch i/N · loss · validation metric (best so far) · elapsed · time left``; the time
    left is for all N epochs (early stopping may end sooner).
    """

    def __init__(self, progress: Progress, prefix: str = "") -> None:
        self.progress, self.prefix = progress, prefix
        self._task: Any = None

    def on_train_begin(self, state: TrainState) -> None:
        self._start, self._epochs = time.perf_counter(), state.options.epochs
        self._sum = self._n = 0.0
        self._task = self.progress.add_task(self._head(1), total=state.batches_per_epoch)

    def _head(self, epoch: int) -> str:
        return f"{self.prefix}epoch {epoch}/{self._epochs}"

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        self._sum, self._n = self._sum + loss, self._n + 1
        self.progress.update(self._task, advance=1,
                             description=f"{self._head(state.epoch)} · loss {self._sum / self._n:.4f}")

    def on_epoch_end(self, state: TrainState, record: dict[str, float]) -> bool:
        epoch = int(record["epoch"])
        elapsed = time.perf_counter() - self._start
        parts = [self._head(epoch), f"loss {record['loss']:.4f}"]
        if state.monitor is not None and state.monitor in record:
            best = "" if state.best_epoch is None else " (best)" if state.best_epoch == epoch else \
                f" (best {state.best_value:.4f} at epoch {state.best_epoch})"
            parts.append(f"{state.monitor.removeprefix('valid_')} {record[state.monitor]:.4f}{best}")
        parts.append(f"{_duration(elapsed)} elapsed")
        if epoch < self._epochs:
            parts.append(f"≤ {_duration(elapsed / epoch * (self._epochs - epoch))} left")
        self.progress.console.print(" · ".join(parts), soft_wrap=True, markup=False, highlight=False)
        self._sum = self._n = 0.0
        if epoch < self._epochs:
            self.progress.reset(self._task, description=self._head(epoch + 1))
        return False

    def on_train_end(self, state: TrainState) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None
