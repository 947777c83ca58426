"""Slate selection after any model's scores: plain top-k and maximal marginal relevance (MMR).

Both take a model's ``score()`` output as it is, one row per user, and use
the project's tie rule (higher score first, then the smaller index;
``-inf`` marks a column that may not be shown, padded with -1 when a row has
fewer than k others). MMR (Carbonell & Goldstein, 1998) builds the list one
position at a time, each time taking the item with the best
``lambda_ * score - (1 - lambda_) * max cosine similarity to the items
already listed``; the first item is the best-scored one. Scores should be on
the scale of a cosine (e.g. min-max scaled per row) for ``lambda_`` to mean
the same thing across models.
"""

from __future__ import annotations

import numpy as np

from llm4rec.errors import InputError
from llm4rec.ranking import topk

__all__ = ["mmr", "top_k"]


def _check(scores: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim not in (1, 2):
        raise InputError("scores must be float[n] or float[users, n]", value=scores.shape, expected="1 or 2 axes")
    if not 1 <= k <= scores.shape[-1]:
        raise InputError("k must be between 1 and the number of scored items", value=k,
                         expected=f"1..{scores.shape[-1]}")
    return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first: int64[k] for float[n], int64[b, k] for float[b, n].

    One user is a stable sort; a batch is :func:`llm4rec.ranking.topk`.
    """
    scores = _check(scores, k)
    if scores.ndim == 2:
        return topk(scores, k)
    order = np.argsort(-scores, kind="stable")[:k]  # stable: ties to the smaller index
    return np.where(scores[order] > -np.inf, order, -1)


def mmr(scores: np.ndarray, item_vectors: np.ndarray, k: int, lambda_: float = 0.5) -> np.ndarray:
    """Maximal-marginal-relevance lists: int64[b, k] (int64[k] for one row of scores), -1 padded.

    Args:
        scores: float[b, n] (or float[n]) relevance per user and item; -inf excludes an item.
        item_vectors: float[n, d] item representations; similarity is their cosine (0 for a zero vector).
        k: list length.
        lambda_: in [0, 1]; 1 gives :func:`top_k`, smaller values trade relevance for diversity.

    Cost: k steps, each one (b, d) x (d, n) product; no loop over users or items.
    """
    scores = _check(scores, k)
    single = scores.ndim == 1
    scores = np.atleast_2d(scores)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    b, n = scores.shape
    if vectors.ndim != 2 or len(vectors) != n:
        raise InputError("item_vectors must have one row per scored item", value=vectors.shape,
                         expected=f"float[{n}, d]")
    if not 0.0 <= lambda_ <= 1.0:
        raise InputError("bad value for lambda_", value=lambda_, expected="a number in [0, 1]")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)  # (n, d)
    rows = np.arange(b)
    open_ = scores > -np.inf  # (b, n) neither listed nor excluded (NaN counts as excluded)
    relevance = np.where(open_, scores, 0.0)
    out = np.full((b, k), -1, dtype=np.int64)
    max_sim = np.zeros((b, n))  # max cosine to the listed items (0 before the first pick)
    for step in range(k):  # loop over list positions only
        value = relevance if step == 0 else lambda_ * relevance - (1.0 - lambda_) * max_sim
        pick = np.argmax(np.where(open_, value, -np.inf), axis=1)  # (b,) first maximum: ties to the smaller index
        ok = open_[rows, pick]
        out[ok, step] = pick[ok]
        open_[rows, pick] = False
        sim = unit[pick] @ unit.T  # (b, n) cosine of each item to the one just listed
        max_sim = sim if step == 0 else np.maximum(max_sim, sim)
    return out[0] if single else out
