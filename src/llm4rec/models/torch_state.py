"""Torch module weights as flat ``.npz`` arrays (no pickle): ``net__<dotted name with __>`` keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["module_arrays", "module_weights"]

PREFIX = "net__"


def module_arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict (parameters and buffers) as numpy arrays under ``net__`` keys."""
    return {PREFIX + key.replace(".", "__"): value.detach().cpu().numpy()
            for key, value in module.state_dict().items()}


def module_weights(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict saved by :func:`module_arrays` (other keys of ``arrays`` are ignored)."""
    import torch

    return {k[len(PREFIX):].replace("__", "."): torch.from_numpy(np.array(v))
            for k, v in arrays.items() if k.startswith(PREFIX)}
