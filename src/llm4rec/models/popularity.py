"""Most-popular baseline: every user gets the items with the most fit-set interactions."""

from __future__ import annotations

import numpy as np

from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["Popularity", "PopularityConfig"]


class PopularityConfig(ModelConfig):
    pass


class Popularity(Recommender):
    """score(u, i) = number of fit-set interactions of item i (ties: smaller index), for any history.

    The counts are ``popularity_``, which every model keeps as its fallback.
    """

    name = "pop"
    Config = PopularityConfig

    def _fit(self, data) -> None:
        pass

    def _score_histories(self, histories, items: np.ndarray | None) -> np.ndarray:
        counts = self.popularity_ if items is None else self.popularity_[items]
        return np.broadcast_to(counts, (len(histories), len(counts))).copy()
