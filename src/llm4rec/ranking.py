"""Top-k with the protocols' tie rule: higher score first, then smaller index."""

from __future__ import annotations

import numpy as np

__all__ = ["topk", "rank_of"]


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first: int64[b, k].

    Ties in score are broken by the smaller column index. ``-inf`` (or NaN)
    marks a column that may not be recommended; a row with fewer than k such
    columns is padded with -1. Cost: one partition per row to find the k-th
    best value, then linear scans and a sort of only the k winners per row, so
    it is safe for millions of columns, ties included.
    """
    b, n = scores.shape
    k_eff = min(k, n)
    out = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or k_eff == 0:
        return out
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    cand_idx, cand_val = _some_topk(scores, k_eff)  # (b, k) a top-k set, tie order arbitrary
    kth = cand_val.min(axis=1)  # (b,) the k-th largest value
    # Columns strictly above the k-th value are all in the candidate set; the ties are scanned for.
    above = (cand_val > kth[:, None]) & (cand_val > -np.inf)
    r_above, c_above = np.nonzero(above)[0], cand_idx[above]
    need = k_eff - above.sum(axis=1)  # (b,) list places left for ties
    tie = scores == kth[:, None]  # (b, n)
    if tie.sum() > 4 * b * k_eff:  # many ties (e.g. unscored cold items): keep the first `need` per row
        tie &= np.cumsum(tie, axis=1, dtype=np.int32) <= need[:, None]
    r_tie, c_tie = np.nonzero(tie)  # row-major: ascending columns
    allowed = kth[r_tie] > -np.inf
    r_tie, c_tie = r_tie[allowed], c_tie[allowed]
    tie_pos = np.arange(len(r_tie)) - np.searchsorted(r_tie, np.arange(b))[r_tie]
    first = tie_pos < need[r_tie]  # the smallest-index ties fill the list
    rows = np.concatenate([r_above, r_tie[first]])
    cols = np.concatenate([c_above, c_tie[first]])
    order = np.lexsort((cols, -scores[rows, cols], rows))  # row, score descending, index ascending
    rows, cols = rows[order], cols[order]
    pos = np.arange(len(rows)) - np.searchsorted(rows, np.arange(b))[rows]
    out[rows, pos] = cols
    return out


#: above this many scores per call, torch.topk (about 3x faster than a partition) is used
_TORCH_MIN_ELEMENTS = 1 << 22


def _some_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of k largest entries per row (ties in any order): (int64[b, k], float[b, k])."""
    if scores.size >= _TORCH_MIN_ELEMENTS and scores.dtype == np.float32:
        import torch

        vals, idx = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
        return idx.numpy(), vals.numpy()
    n = scores.shape[1]
    idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    return idx, np.take_along_axis(scores, idx, axis=1)


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
