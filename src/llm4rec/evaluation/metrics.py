"""Ranking and rating metrics, per user.

The ranking metrics live in :mod:`llm4rec.ranking` (so that training
validation, below the evaluator, computes the very same numbers) and are
re-exported here. Every ranking metric takes ``hits``: bool[n_users, K], ``hits[u, p]`` true
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

from llm4rec.ranking import (
    RANKING_METRICS,
    average_precision,
    hit_rate,
    mrr,
    ndcg,
    parse_metric,
    precision,
    ranking_metric,
    recall,
)

__all__ = [
    "RANKING_METRICS", "hit_rate", "recall", "precision", "ndcg", "mrr", "average_precision",
    "parse_metric", "ranking_metric", "rmse", "mae",
]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of rating predictions."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64))))
