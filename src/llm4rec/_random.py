"""Counter-based random numbers: a value is a pure function of its keys, so results do not depend on batching.

``uniform(seed, a, b, ...)`` hashes integer arrays (broadcast together) with
SplitMix64 into floats in [0, 1). Scoring a user alone or in a batch of a
thousand draws the same numbers for that user, which a shared generator
walked batch by batch cannot promise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hash64", "uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash64(seed: int, *keys: np.ndarray) -> np.ndarray:
    """uint64 hash of ``(seed, *keys)`` element-wise (keys are int arrays, broadcast together)."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLDEN)
        for key in keys:
            h = _mix(h ^ (np.asarray(key).astype(np.int64).view(np.uint64) + _GOLDEN))
    return h


def uniform(seed: int, *keys: np.ndarray) -> np.ndarray:
    """float64 in [0, 1) element-wise from ``(seed, *keys)`` (53 random bits)."""
    return (hash64(seed, *keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
