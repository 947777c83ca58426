"""Checks of a round's request and feedback, and Monte Carlo slate-position frequencies, shared by the policies."""

from __future__ import annotations

import numpy as np

from llm4rec.errors import InputError
from llm4rec.strategies.policy import Feedback

#: booleans held at once by rank_frequencies' (samples, k, candidates) comparison
_COMPARE_BUDGET = 1 << 22


def check_request(candidates: np.ndarray, k: int, n_actions: int) -> tuple[np.ndarray, int]:
    """Validated (int64[c] distinct candidate actions, k) of a ``select`` call."""
    cands = np.asarray(candidates)
    if cands.ndim != 1 or not (np.issubdtype(cands.dtype, np.integer) or cands.size == 0):
        raise InputError("candidates must be a 1-D array of action indices", value=(cands.shape, str(cands.dtype)),
                         expected="int64[c]")
    cands = cands.astype(np.int64, copy=False)
    if cands.size and (cands.min() < 0 or cands.max() >= n_actions):
        bad = int(cands.min() if cands.min() < 0 else cands.max())
        raise InputError("candidate action out of range", value=bad, expected=f"0..{n_actions - 1}")
    if not 1 <= k <= len(cands):
        raise InputError("slate size k must be between 1 and the number of candidates", value=k,
                         expected=f"1..{len(cands)}")
    if len(np.unique(cands)) != len(cands):
        raise InputError("candidates hold a repeated action", value=len(cands) - len(np.unique(cands)),
                         expected="distinct action indices")
    return cands, int(k)


def check_feedback(feedback: Feedback, n_actions: int, *, unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validated (int64[k] distinct shown actions, float64[k] rewards); ``unit``: rewards must lie in [0, 1]."""
    items = np.atleast_1d(np.asarray(feedback.items))
    rewards = np.atleast_1d(np.asarray(feedback.rewards, dtype=np.float64))
    if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer):
        raise InputError("feedback items must be a 1-D array of action indices", value=items.shape,
                         expected="int64[k]")
    if rewards.shape != items.shape:
        raise InputError("feedback needs one reward per shown item", value=(len(items), rewards.shape),
                         expected=f"float[{len(items)}]")
    if items.size and (items.min() < 0 or items.max() >= n_actions):
        raise InputError("feedback item out of range", value=int(items.min() if items.min() < 0 else items.max()),
                         expected=f"0..{n_actions - 1}")
    if len(np.unique(items)) != len(items):
        raise InputError("feedback shows an item twice", value=items.tolist(), expected="distinct shown items")
    if not np.isfinite(rewards).all():
        raise InputError("feedback rewards must be finite", value=rewards.tolist(), expected="finite numbers")
    if unit and rewards.size and (rewards.min() < 0 or rewards.max() > 1):
        raise InputError("this policy takes rewards in [0, 1]", value=rewards.tolist(),
                         expected="rewards in [0, 1] (e.g. clicks)")
    return items.astype(np.int64), rewards


def check_setting(name: str, value: float, low: float, high: float = np.inf, *, low_open: bool = False) -> float:
    """``value`` as a float if it lies in [low, high] ((low, high] when ``low_open``), else InputError."""
    value = float(value)
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        span = ("(" if low_open else "[") + f"{low:g}, {high:g}]"
        raise InputError(f"bad value for setting {name!r}", value=value, expected=f"a number in {span}")
    return value


def check_samples(value: int) -> int:
    """The number of Monte Carlo samples ``propensity_samples`` (an int >= 1)."""
    if int(value) != value or value < 1:
        raise InputError("bad value for setting 'propensity_samples'", value=value, expected="an integer >= 1")
    return int(value)


def rank_frequencies(draws: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Monte Carlo P(candidate ``order[j]`` is j-th best): float64[k], each in [1/m, 1].

    ``draws``: float[m, c] m independent samples of the candidates' random
    scores; ``order``: int64[k] positions (in 0..c-1) of the shown slate. The
    estimate is count/m, floored at 1/m: the shown slate did occur, so its
    probability is positive; the floor biases only events rarer than about 1/m.
    """
    m, c = draws.shape
    k = len(order)
    counts = np.zeros(k, dtype=np.int64)
    step = max(1, _COMPARE_BUDGET // max(1, k * c))
    for start in range(0, m, step):  # chunks of samples (memory), never of candidates
        block = draws[start:start + step]  # (s, c)
        shown = block[:, order]  # (s, k)
        ranks = (block[:, None, :] > shown[:, :, None]).sum(axis=2)  # (s, k) candidates above each shown item
        counts += (ranks == np.arange(k)).sum(axis=0)
    return np.maximum(counts, 1) / m


def position_frequencies(draws: np.ndarray, k: int) -> np.ndarray:
    """Monte Carlo P(action a at position j): float64[..., n, k] from draws float[..., m, n] (top-k of each draw)."""
    *lead, m, n = draws.shape
    flat = draws.reshape(-1, n)  # (B m, n)
    top = np.argpartition(-flat, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(flat), 1))
    order = np.argsort(-np.take_along_axis(flat, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)  # (B m, k) best first
    batch = np.arange(len(flat)) // m  # (B m,) which leading index each draw belongs to
    index = (batch[:, None] * n + top) * k + np.arange(k)
    counts = np.bincount(index.ravel(), minlength=(len(flat) // m) * n * k)
    return (counts / m).reshape(*lead, n, k)
