"""Top-k with the protocols' tie rule: higher score first, then smaller index."""

from __future__ import annotations

import numpy as np

__all__ = ["topk", "rank_of"]


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first: int64[b, k].

    Ties in score are broken by the smaller column index. ``-inf`` marks a
    column that may not be recommended; a row with fewer than k finite scores
    is padded with -1. Cost: one partition and one cumulative sum per row
    (no full sort), so it is safe for millions of columns.
    """
    b, n = scores.shape
    k_eff = min(k, n)
    out = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or k_eff == 0:
        return out
    kth = np.partition(scores, n - k_eff, axis=1)[:, n - k_eff]  # (b,) the k-th largest value
    finite = scores > -np.inf  # excludes masked (-inf) and NaN
    above = (scores > kth[:, None]) & finite
    at = (scores == kth[:, None]) & finite
    need = k_eff - above.sum(axis=1)
    chosen = above | (at & (np.cumsum(at, axis=1) <= need[:, None]))  # first `need` ties by index
    rows, cols = np.nonzero(chosen)  # row-major: columns ascending within a row
    counts = np.bincount(rows, minlength=b)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(rows)) - starts[rows]
    grid = np.full((b, k_eff), -1, dtype=np.int64)
    grid[rows, pos] = cols
    vals = np.where(grid >= 0, scores[np.arange(b)[:, None], np.maximum(grid, 0)], -np.inf)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: ties keep ascending index
    out[:, :k_eff] = np.take_along_axis(grid, order, axis=1)
    return out


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of column ``target[r]`` in row r under the tie rule: int64[b].

    rank = #{j: s_j > s_t} + #{j: s_j == s_t and j < t}; ``-inf`` columns
    never count.
    """
    b, n = scores.shape
    rows = np.arange(b)
    st = scores[rows, target][:, None]
    idx = np.arange(n)[None, :]
    better = (scores > st) | ((scores == st) & (idx < target[:, None]))
    better &= scores > -np.inf
    return better.sum(axis=1).astype(np.int64)
