"""Explanations: which history items made a model recommend an item, in numbers and words."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["explanation"]


def explanation(model: Any, histories: Any, item: int, history: np.ndarray, contributions: np.ndarray, *,
                top: int = 3, reason: str = "similar to") -> dict[str, Any]:
    """Build a model's ``_explain`` answer from per-history-item contributions.

    ``histories``: the one-row :class:`~llm4rec.models.history.Histories`
    explained; ``item``: its dense index; ``history``: int[h] item indices;
    ``contributions``: float[h], how much each added to the score. Returns
    ``{"item", "label", "score", "because": [{"item", "label", "weight"}, ...],
    "text"}`` (dense item indices; :meth:`Recommender.explain` turns them into
    ids) with the ``top`` largest positive contributions, largest first.
    """
    history = np.asarray(history, dtype=np.int64)
    contributions = np.asarray(contributions, dtype=np.float64)
    order = np.argsort(-contributions, kind="stable")
    order = order[contributions[order] > 0][:top]
    labels = model.item_labels_
    because = [{"item": int(history[j]), "label": str(labels[history[j]]),
                "weight": round(float(contributions[j]), 6)} for j in order]
    items = np.array([item], dtype=np.int64)
    score = float(model._finish(model._score_histories(histories, items), histories.lengths, items)[0, 0])
    if because:
        named = ", ".join(f"'{b['label']}'" for b in because)
        text = f"'{labels[item]}' is recommended because it is {reason} {named}, which you interacted with."
    else:
        text = f"'{labels[item]}' is recommended for its overall score; no single history item stands out."
    return {"item": int(item), "label": str(labels[item]), "score": score, "because": because, "text": text}
