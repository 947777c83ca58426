"""What the training loop needs to continue after a crash: a :class:`Snapshot`, stored without pickle.

A snapshot is taken after every epoch (when the trainer is given somewhere
to put it, see :class:`~llm4rec.training.parallel.DataParallel`) and holds
the weights, the optimiser's state, the history and the early-stopping
state. On disk it is a directory::

    weights.safetensors     the module's state dict (parameters and buffers)
    best.safetensors        the best epoch's weights (early stopping), when there is one
    optimizer.safetensors   the optimiser's per-parameter tensors, keyed "<param index>.<name>"
    trainer.json            epoch, stop flag, history, best epoch and value, bad epochs, seconds, the
                            optimiser's param groups and which tensor names each parameter has

(safetensors: tensors only, so a checkpoint from a stranger cannot run code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4rec._atomic import atomic_write_text
from llm4rec.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["Snapshot"]

_FILES = ("weights.safetensors", "optimizer.safetensors", "trainer.json")


@dataclass
class Snapshot:
    """The trainer's state at the end of epoch ``epoch``.

    Attributes:
        epoch: the last finished epoch (1-based).
        stopped: True when early stopping ended training at this epoch (nothing is left to train).
        history: one record per finished epoch.
        weights: the module's state dict after ``epoch``.
        optimizer: ``optimizer.state_dict()`` after ``epoch``.
        best_epoch, best_value: early stopping's best so far (None without validation).
        bad_epochs: epochs since the best one.
        best_weights: the best epoch's state dict (None without validation).
        seconds: training time so far.
    """

    epoch: int
    stopped: bool
    history: list[dict[str, float]]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_epoch: int | None = None
    best_value: float | None = None
    bad_epochs: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        """Write the snapshot's files into ``directory`` (created; ``trainer.json`` last); returns it."""
        from safetensors.torch import save_file

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        save_file(_plain(self.weights), str(path / "weights.safetensors"))
        if self.best_weights is not None:
            save_file(_plain(self.best_weights), str(path / "best.safetensors"))
        tensors, slots = {}, {}
        for index, values in self.optimizer.get("state", {}).items():
            slots[str(index)] = sorted(values)
            for name, value in values.items():
                tensors[f"{index}.{name}"] = value if _is_tensor(value) else _scalar(value)
        save_file(_plain(tensors), str(path / "optimizer.safetensors"))
        meta = {"epoch": self.epoch, "stopped": self.stopped, "history": self.history,
                "best_epoch": self.best_epoch, "best_value": self.best_value, "bad_epochs": self.bad_epochs,
                "seconds": self.seconds, "extra": self.extra,
                "optimizer": {"param_groups": self.optimizer.get("param_groups", []), "slots": slots}}
        atomic_write_text(path / "trainer.json", json.dumps(meta, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Snapshot:
        """The snapshot :meth:`save` wrote into ``directory`` (InputError naming a missing or bad file)."""
        from safetensors.torch import load_file

        path = Path(directory)
        for name in _FILES:
            if not (path / name).is_file():
                raise InputError("incomplete training checkpoint", path=path / name,
                                 expected="the files Snapshot.save wrote: " + ", ".join(_FILES))
        try:
            meta = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
            weights = load_file(str(path / "weights.safetensors"))
            best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
            flat = load_file(str(path / "optimizer.safetensors"))
        except (OSError, ValueError, json.JSONDecodeError) as exc:  # safetensors raises SafetensorError(Exception)
            raise InputError(f"cannot read the training checkpoint ({type(exc).__name__}: {exc})", path=path,
                             expected="the files Snapshot.save wrote") from None
        opt = meta["optimizer"]
        state = {int(index): {name: flat[f"{index}.{name}"] for name in names}
                 for index, names in opt["slots"].items()}
        return cls(epoch=int(meta["epoch"]), stopped=bool(meta["stopped"]), history=meta["history"],
                   weights=weights, optimizer={"state": state, "param_groups": opt["param_groups"]},
                   best_epoch=meta["best_epoch"], best_value=meta["best_value"], bad_epochs=int(meta["bad_epochs"]),
                   best_weights=best, seconds=float(meta["seconds"]), extra=meta.get("extra", {}))


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _scalar(value: Any) -> torch.Tensor:
    import torch

    return torch.tensor(value)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
