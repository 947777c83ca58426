"""Metrics of recommendation lists beyond hits: diversity, coverage, novelty, AUC.

``lists`` is int64[n_users, K]: row u is user u's top-K list, best first, item
indices in ``0..n_items-1``, padded with -1 (padding is ignored everywhere).
Definitions:

- ``intra_list_diversity``: per user, the mean over unordered pairs of
  positions {i, j} (i != j) of the list of ``1 - cos(v_{L_i}, v_{L_j})``, with
  ``v`` the rows of ``item_vectors`` (float[n_items, d], dense or scipy
  sparse). A zero vector has cosine 0 with everything. Lists with fewer than
  2 items give NaN. float64[n_users].
- ``catalogue_coverage``: |{items in any list}| / n_items. float.
- ``novelty``: per user, the mean self-information ``-log2(p_i)`` of the
  listed items, ``p_i = (pop_i + 1) / (n_users + 1)`` where ``pop_i`` is the
  number of the ``n_users`` (fit-set) users who interacted with item i. The
  add-one smoothing keeps never-seen items finite (``log2(n_users + 1)``) and an
  item everyone saw at 0. Empty lists give NaN. float64[n_rows].
- ``auc``: per row of a score batch (float[b, n]), over the columns not in
  ``mask``: the probability that a random target column scores above a random
  non-target column, ties counting 1/2 (the Mann-Whitney U statistic divided by
  |P| |N|). Rows without a target or without a non-target give NaN.
  float64[b].

Every function is vectorised over users (no Python loop over rows).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import stats

from llm4rec.errors import InputError

__all__ = ["auc", "catalogue_coverage", "intra_list_diversity", "novelty"]

#: elements of the dense (users, d) list-sum held at once by intra_list_diversity
_ILD_BUDGET = 1 << 24


def _check_lists(lists: np.ndarray, n_items: int) -> np.ndarray:
    lists = np.asarray(lists)
    if lists.ndim != 2 or not np.issubdtype(lists.dtype, np.integer):
        raise InputError("recommendation lists must be a 2-D integer array", value=(lists.shape, str(lists.dtype)),
                         expected="int64[n_users, K] with -1 padding")
    if lists.size and (lists.min() < -1 or lists.max() >= n_items):
        raise InputError("recommendation lists hold an item index out of range",
                         value=(int(lists.min()), int(lists.max())), expected=f"-1 (padding) or 0..{n_items - 1}")
    return lists.astype(np.int64, copy=False)


def intra_list_diversity(lists: np.ndarray, item_vectors: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
    """Mean pairwise cosine distance within each list: float64[n_users] (NaN if < 2 items).

    For unit vectors ``n_i``, ``sum_{i != j} n_i . n_j = |sum_i n_i|^2 - sum_i |n_i|^2``,
    so each user costs one row of a sparse (users x items) @ (items x d)
    product instead of a K x K Gram matrix.
    """
    n_items, d = item_vectors.shape
    lists = _check_lists(lists, n_items)
    n_users = lists.shape[0]
    valid = lists >= 0
    m = valid.sum(axis=1)  # (U,) list lengths
    uniq, pos = np.unique(lists[valid], return_inverse=True)  # items that occur; their column in `sel`
    if sp.issparse(item_vectors):
        vec = sp.csr_matrix(item_vectors)[uniq].astype(np.float64)
        norms = np.sqrt(np.asarray(vec.multiply(vec).sum(axis=1)).ravel())
        unit = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ vec
    else:
        vec = np.asarray(item_vectors)[uniq].astype(np.float64)
        norms = np.linalg.norm(vec, axis=1)
        unit = vec / np.where(norms > 0, norms, 1.0)[:, None]
    nonzero = (norms > 0)[pos]  # per listed item: does it have a direction?
    rows = np.nonzero(valid)[0]
    n_nonzero = np.bincount(rows, weights=nonzero, minlength=n_users)
    sel = sp.csr_matrix((np.ones(len(pos)), (rows, pos)), shape=(n_users, len(uniq)))  # (U, |uniq|)
    sq = np.empty(n_users, dtype=np.float64)  # |sum of unit vectors|^2 per user
    batch = max(1, _ILD_BUDGET // max(1, d))
    for start in range(0, n_users, batch):
        s = sel[start:start + batch] @ unit  # (B, d)
        sq[start:start + batch] = np.asarray(s.multiply(s).sum(axis=1)).ravel() if sp.issparse(s) \
            else np.einsum("ij,ij->i", s, s)
    pairs = m * (m - 1.0)  # ordered pairs of positions
    with np.errstate(invalid="ignore", divide="ignore"):
        ild = 1.0 - (sq - n_nonzero) / pairs
    return np.where(m >= 2, np.clip(ild, 0.0, 2.0), np.nan)  # clip: rounding of |sum|^2 - count


def catalogue_coverage(lists: np.ndarray, n_items: int) -> float:
    """Share of the n_items catalogue that occurs in at least one list."""
    if n_items < 1:
        raise InputError("the catalogue is empty", value=n_items, expected="n_items >= 1")
    lists = _check_lists(lists, n_items)
    return float(len(np.unique(lists[lists >= 0])) / n_items)


def novelty(lists: np.ndarray, item_popularity: np.ndarray, n_users: int) -> np.ndarray:
    """Mean ``-log2((pop_i + 1) / (n_users + 1))`` of each list's items: float64[n_rows] (NaN if empty).

    ``item_popularity``: int[n_items], how many of the ``n_users`` users
    interacted with each item (0 <= pop_i <= n_users).
    """
    pop = np.asarray(item_popularity)
    if pop.ndim != 1 or (pop.size and (pop.min() < 0 or pop.max() > n_users)):
        raise InputError("item popularity must be per-item user counts", value=(pop.shape, n_users),
                         expected=f"a 1-D array of counts in 0..n_users={n_users}")
    lists = _check_lists(lists, len(pop))
    info = -np.log2((pop.astype(np.float64) + 1.0) / (n_users + 1.0))  # (n_items,) self-information
    total = np.append(info, 0.0)[lists].sum(axis=1)  # padding -1 picks the appended 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / (lists >= 0).sum(axis=1)


def auc(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row AUC of scores against targets, masked columns excluded: float64[b].

    ``scores``: float[b, n] (``±inf`` allowed, NaN not); ``targets``: bool[b, n];
    ``mask``: bool[b, n], true for columns that take no part (e.g. fit-set
    items). A masked target is excluded too. Computed from mid-ranks within
    each row: AUC = (R_P - |P| (|P| + 1) / 2) / (|P| |N|), R_P the sum of the
    targets' ranks among the unmasked columns.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if scores.ndim != 2 or targets.shape != scores.shape or mask.shape != scores.shape:
        raise InputError("scores, targets and mask must have one shape (b, n)",
                         value=(scores.shape, targets.shape, mask.shape), expected="three arrays of shape (b, n)")
    if np.isnan(scores).any():
        raise InputError("scores contain NaN", expected="real scores (-inf and inf allowed)")
    if scores.size == 0:
        return np.full(scores.shape[0], np.nan)
    ranks = stats.rankdata(np.where(mask, np.nan, scores), method="average", axis=1, nan_policy="omit")
    pos = targets & ~mask
    n_pos = pos.sum(axis=1).astype(np.float64)
    n_neg = (~targets & ~mask).sum(axis=1).astype(np.float64)
    r_pos = np.where(pos, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), np.nan)
