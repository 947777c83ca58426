"""Ranking and rating metrics, per user.

Every ranking metric here takes ``hits``: bool[n_users, K], ``hits[u, p]`` true
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

The functions return float64[n_users]; the evaluator averages them.
"""

from __future__ import annotations

import numpy as np

from llm4rec.errors import InputError

__all__ = [
    "RANKING_METRICS", "hit_rate", "recall", "precision", "ndcg", "mrr", "average_precision",
    "parse_metric", "ranking_metric", "rmse", "mae",
]


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


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of rating predictions."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64))))
