"""Ranking and rating metrics, per user.

The ranking metrics (HR, Recall, Precision, NDCG, MRR, MAP at K, from a
top-K hit matrix; definitions in :mod:`llm4rec.ranking`) live below the
models so that training validation computes the very same numbers as the
evaluator; they are re-exported here beside the rating metrics (RMSE, MAE).
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
    "RANKING_METRICS",
    "average_precision",
    "hit_rate",
    "mae",
    "mrr",
    "ndcg",
    "parse_metric",
    "precision",
    "ranking_metric",
    "recall",
    "rmse",
]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of rating predictions."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64))))
