"""A dot-product view of a fitted model, so a service can retrieve its top items with an ANN index.

Many models score a history ``h`` against item ``i`` as an inner product
``q(h) . v_i``: matrix factorisation (user factors folded in from the
history), the two-tower model (user tower . item tower) and SASRec (last
hidden state . item table). :func:`vector_view` exposes those two sides::

    view = vector_view(model)                       # None: the model has no such view
    q = view.query(model.histories(histories=[["50", "181"]]))   # (B, d)
    scores = q @ view.items.T                       # == model.score(...) when view.exact

Models whose score is not an inner product may still give an approximate
view (``exact=False``), good enough to shortlist candidates that the model
then re-scores exactly: ``semantic-knn`` (a sum of similarity kernels over
the history) is approximated by the cosine with the recency-weighted mean of
the history's item embeddings.

A view is a snapshot: build it again after ``add_items`` (or a new fit). Its
``items`` may share memory with the model; treat it as read-only. An empty
history's row is not meaningful (the model falls back to popularity there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from llm4rec.errors import InputError
from llm4rec.models.history import Histories

__all__ = ["VectorView", "vector_view"]


class VectorView(NamedTuple):
    """The two sides of a model's score as an inner product.

    Attributes:
        items: float32[n_items, d], C-contiguous, rows in the model's item (score-column) order.
        query: dense :class:`~llm4rec.models.history.Histories` of B users -> float32[B, d] query vectors.
        exact: True when the model's score of item i for history h is ``query(h) . items[i]`` (up to float
            error; empty histories aside); False when the view only approximates the model's ranking,
            to shortlist candidates the model then re-scores.
    """

    items: np.ndarray
    query: Callable[[Histories], np.ndarray]
    exact: bool


def vector_view(model: Any) -> VectorView | None:
    """The dot-product view of a fitted model, or None for a model without one.

    Views: ``als``, ``bpr`` (item factors; user factors by the model's own
    fold-in; BPR's item bias is the last factor, against a constant 1 in the
    query), ``llm-two-tower`` (item tower; user tower, rating biases appended
    under ``loss="mse"``), ``sasrec`` and ``sasrec-text`` (item table; last
    hidden state) are exact; ``semantic-knn`` is approximate. Every other
    model (popularity, EASE, item k-NN, LLM reranking, generative retrieval,
    ensembles) has none.
    """
    build = _VIEWS.get(getattr(model, "name", None))
    if build is None:
        return None
    model._check_fitted()
    return build(model)


def _checked(model: Any, histories: Histories) -> Histories:
    if not isinstance(histories, Histories):
        raise InputError("a vector view's query reads dense Histories", value=type(histories).__name__,
                         expected="model.histories(...) or Histories.from_lists(...)")
    if histories.n_items != model.n_items_:
        raise InputError("histories built for another catalogue", value=histories.n_items,
                         expected=f"{model.n_items_} items (rebuild them with model.histories())")
    return histories


def _matrix(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _mf_view(model: Any) -> VectorView:
    """ALS / BPR: ``score = fold_in(h) . item_factors`` (BPR: [w, 1] . [v_i, b_i], implicit's layout)."""

    def query(histories: Histories) -> np.ndarray:
        return _matrix(model._fold_in(_checked(model, histories).matrix()))  # (B, F')

    return VectorView(_matrix(model.item_factors_), query, True)


def _two_tower_view(model: Any) -> VectorView:
    """``score = u . v_i``; with ``loss="mse"`` ``mu + b_u + b_i + u . v_i`` = [u, 1, mu + b_u] . [v_i, b_i, 1]."""
    items = model.item_vectors()  # (I, d)
    net = model.net_
    if model.config.loss != "mse":
        return VectorView(_matrix(items), lambda h: _matrix(model._query_vectors(_checked(model, h))), True)
    import torch

    with torch.no_grad():
        item_bias = net.item_bias.weight[:, 0].cpu().numpy()  # (I,)
        mean = float(net.rating_mean)
    items = np.column_stack([items, item_bias, np.ones(len(items), dtype=np.float32)])  # (I, d + 2)

    def query(histories: Histories) -> np.ndarray:
        u = model._query_vectors(_checked(model, histories))  # (B, d)
        with torch.no_grad():
            users = torch.from_numpy(np.asarray(histories.users, dtype=np.int64)).to(net.item_bias.weight.device)
            user_bias = net._user_bias(users).cpu().numpy()  # (B,), 0 for unknown users
        return _matrix(np.column_stack([u, np.ones(len(u), dtype=np.float32), mean + user_bias]))

    return VectorView(_matrix(items), query, True)


def _sasrec_view(model: Any) -> VectorView:
    """``score = h_L . E[i]``: the last hidden state against the (tied) item table."""
    import torch

    with torch.no_grad():
        items = model.net_.item_table().cpu().numpy()  # (I, d)
    return VectorView(_matrix(items), lambda h: _matrix(model._query_vectors(_checked(model, h))), True)


def _semantic_knn_view(model: Any) -> VectorView:
    """Approximate: the cosine of each item embedding with the recency-weighted mean of the history's.

    The model's kernel ``exp((cos - 1) / temperature)`` tends to exactly this
    ranking as the temperature grows; at small temperatures it favours items
    close to any one history item, so the view shortlists (``exact=False``).
    """
    items = _matrix(model.item_embeddings_)  # (I, d), L2-normalised

    def query(histories: Histories) -> np.ndarray:
        q = np.asarray(model._weights(_checked(model, histories)) @ items, dtype=np.float32)  # (B, d)
        return _matrix(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12))

    return VectorView(items, query, False)


_VIEWS: dict[str, Callable[[Any], VectorView]] = {
    "als": _mf_view,
    "bpr": _mf_view,
    "llm-two-tower": _two_tower_view,
    "sasrec": _sasrec_view,
    "sasrec-text": _sasrec_view,
    "semantic-knn": _semantic_knn_view,
}
