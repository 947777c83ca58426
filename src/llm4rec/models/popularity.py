"""Most-popular baseline: every user gets the items with the most fit-set interactions."""

from __future__ import annotations

import numpy as np

from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["Popularity", "PopularityConfig"]


class PopularityConfig(ModelConfig):
    pass


class Popularity(Recommender):
    """score(u, i) = number of fit-set interactions of item i (ties: smaller index)."""

    name = "pop"
    Config = PopularityConfig

    def _fit(self, data) -> None:
        self.item_counts_ = np.bincount(data.item, minlength=data.n_items).astype(np.float32)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_counts_, (len(users), self.n_items_)).copy()

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_counts_[items], (len(users), len(items))).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_counts": self.item_counts_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_counts_ = arrays["item_counts"]
