"""Ranking, shared by the models, the training loop and the evaluator.

Top-k with the protocols' tie rule (higher score first, then smaller index),
the one place that masks a user's seen items (:func:`mask_seen`), the hits
of a top-k list against sparse targets (:func:`top_hits`), and the ranking
metrics computed from hits. Every full-ranking number in llm4rec (evaluation,
early stopping, ensemble tuning) goes through these functions.

Every ranking metric takes ``hits``: bool[n_users, K], ``hits[u, p]`` true
when the item at 0-based position p of user u's top-K list is a target, and
``n_targets``: int[n_users] = |T_u| (>= 1). Definitions (binary relevance):

- ``HR@K``        = 1 if any hit in the top K else 0.
- ``Recall@K``    = |L ∩ T| / |T|  (not divided by min(|T|, K), as PROTOCOLS.md says).
- ``Precision@K`` = |L ∩ T| / K.
- ``NDCG@K``      = DCG / IDCG, DCG = sum_{p<K, hit} 1/log2(p+2),
                    IDCG = sum_{p < min(|T|, K)} 1/log2(p+2).
- ``MRR@K``       = 1/(p+1) for the first hit at p < K, else 0.
- ``MAP@K``       = (1/min(|T|, K)) * sum_{p<K, hit} Precision@(p+1)
                    (average precision cut at K, normalised by the best reachable).

They return float64[n_users].
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from llm4rec.errors import InputError

__all__ = ["RANKING_METRICS", "average_precision", "hit_rate", "mask_seen", "mrr", "ndcg", "parse_metric",
           "precision", "rank_of", "ranking_metric", "recall", "top_hits", "topk"]


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
    # The `need` ties of a row are usually exactly the candidates equal to the k-th value: a row holding more
    # ties than that is scanned for its smallest-index ones (a full scan of every row cost most of the time).
    cand_tie = cand_val == kth[:, None]  # (b, k)
    scan = np.flatnonzero((scores == kth[:, None]).sum(axis=1) > cand_tie.sum(axis=1))
    cand_tie[scan] = False
    r_known, j_known = np.nonzero(cand_tie)
    r_tie, c_tie = r_known, cand_idx[r_known, j_known]
    if len(scan):
        tie = scores[scan] == kth[scan, None]  # (s, n)
        if tie.sum() > 4 * len(scan) * k_eff:  # many ties (e.g. unscored cold items): keep the first `need`
            tie &= np.cumsum(tie, axis=1, dtype=np.int32) <= need[scan, None]
        r_scan, c_scan = np.nonzero(tie)  # row-major: ascending columns
        r_scan = scan[r_scan]
        scan_pos = np.arange(len(r_scan)) - np.searchsorted(r_scan, r_scan)
        first = scan_pos < need[r_scan]  # the smallest-index ties fill the list
        r_tie, c_tie = np.concatenate([r_tie, r_scan[first]]), np.concatenate([c_tie, c_scan[first]])
    allowed = kth[r_tie] > -np.inf
    r_tie, c_tie = r_tie[allowed], c_tie[allowed]
    rows = np.concatenate([r_above, r_tie])
    cols = np.concatenate([c_above, c_tie])
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


def mask_seen(scores: np.ndarray, seen: sp.csr_matrix, columns: np.ndarray | None = None) -> np.ndarray:
    """Set ``scores`` (float[B, C]) to -inf where the row's user has seen the item; returns ``scores``.

    ``seen``: CSR (B, n_items), nonzero = seen. ``columns``: int[C] the item
    of each score column (None: column j is item j). In place.
    """
    if columns is not None:
        seen = seen[:, np.asarray(columns, dtype=np.int64)]
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    return scores


def top_hits(scores: np.ndarray, targets: sp.csr_matrix, k: int,
             columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top k of ``scores`` (already masked) against ``targets`` (CSR (B, n_items), nonzero = target).

    Returns (hits bool[B, k], items int64[B, k] with -1 padding); ``columns``
    as in :func:`mask_seen`. Membership is tested through sorted keys, never
    a dense (B, n_items) array.
    """
    top = topk(scores, k)  # (B, k) column positions, -1 padded
    items = top if columns is None else np.where(top >= 0, np.asarray(columns)[np.maximum(top, 0)], -1)
    tgt = targets.tocsr()
    tgt.sort_indices()
    n = tgt.shape[1]
    b = scores.shape[0]
    keys = np.repeat(np.arange(b, dtype=np.int64), np.diff(tgt.indptr)) * n + tgt.indices
    if len(keys) == 0:
        return np.zeros(items.shape, dtype=bool), items
    query = np.arange(b, dtype=np.int64)[:, None] * n + np.maximum(items, 0)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (items >= 0) & (keys[pos] == query), items


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)


def hit_rate(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].any(axis=1).astype(np.float64)


def recall(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / np.asarray(n_targets, dtype=np.float64)


def precision(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / float(k)


def ndcg(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    disc = _discounts(k)
    h = hits[:, :k]
    dcg = (h * disc[: h.shape[1]]).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(np.asarray(n_targets), k)]
    return dcg / idcg


def mrr(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    h = hits[:, :k]
    first = np.argmax(h, axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1.0), 0.0)


def average_precision(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    h = hits[:, :k].astype(np.float64)
    prec_at = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    return (prec_at * h).sum(axis=1) / np.minimum(np.asarray(n_targets), k)


RANKING_METRICS = {
    "HR": hit_rate, "Recall": recall, "Precision": precision,
    "NDCG": ndcg, "MRR": mrr, "MAP": average_precision,
}


def parse_metric(name: str) -> tuple[str, int]:
    """``"NDCG@10"`` -> ``("NDCG", 10)``; InputError for anything else."""
    base, _, cut = name.partition("@")
    if base not in RANKING_METRICS or not cut.isdigit() or int(cut) < 1:
        raise InputError("unknown metric", value=name,
                         expected="NAME@K with NAME in " + ", ".join(RANKING_METRICS))
    return base, int(cut)


def ranking_metric(name: str, hits: np.ndarray, n_targets: np.ndarray) -> np.ndarray:
    """Compute a metric spelled ``"NDCG@10"`` from hits: float64[n_users]."""
    base, k = parse_metric(name)
    if hits.shape[1] < k:
        raise InputError("metric cutoff exceeds the list length", value=name,
                         expected=f"K <= {hits.shape[1]}")
    return RANKING_METRICS[base](hits, n_targets, k)
