"""Semantic k-NN: recommend items whose text resembles the user's recent history.

Every item gets a language-model embedding of its text (``llm4rec.text``), so
items without a single interaction (cold start) are scored like any other.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["SemanticKNN", "SemanticKNNConfig"]


class SemanticKNNConfig(ModelConfig):
    """Defaults chosen on validation stages (P-LOO and pseudo-cold P-COLD), see bench/RESULTS.md."""

    encoder: str = Field("minilm", description="text encoder name or model path (llm4rec.text.get_encoder)")
    template: str | None = Field(None, description="item text template; None = the dataset's default")
    temperature: float = Field(0.1, gt=0, description="kernel exp((cos - 1) / temperature); large = plain mean")
    half_life: float = Field(10.0, gt=0, description="recency: a history item k steps back weighs 0.5 ** (k / half_life)")
    max_history: int = Field(50, ge=1, description="most recent fit-set items used per user")
    batch_items: int = Field(4096, ge=1, description="history items per similarity block (memory bound)")


class SemanticKNN(Recommender):
    """score(u, i) = sum_h w_uh * exp((cos(e_h, e_i) - 1) / temperature).

    ``w_uh`` are recency weights over the user's last ``max_history`` fit-set
    items (most recent weight 1). A small temperature lets each history item
    vote for its own neighbourhood (multi-interest users); a large one tends
    to the cosine with the weighted mean of the history embeddings. Shapes:
    item embeddings ``e``: float32[n_items, d], L2-normalised.
    """

    name = "semantic-knn"
    Config = SemanticKNNConfig

    def _fit(self, data) -> None:
        from llm4rec.text import item_embeddings

        cfg = self.config
        self.item_embeddings_ = item_embeddings(data, encoder=cfg.encoder, template=cfg.template)
        self.weights_ = self._recency_weights(data)

    def _recency_weights(self, data) -> sp.csr_matrix:
        """CSR (n_users, n_items): recency weight of each of the last ``max_history`` fit-set items."""
        cfg = self.config
        offsets = data.user_offsets
        age = (offsets[1:][data.user] - 1) - np.arange(data.n_interactions)  # 0 = most recent
        keep = age < cfg.max_history
        w = np.power(0.5, age[keep] / cfg.half_life).astype(np.float32)
        m = sp.csr_matrix((w, (data.user[keep], data.item[keep])), shape=(data.n_users, data.n_items))
        m.sum_duplicates()
        return m

    def _kernel_scores(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """float32[len(users), n_cols]: recency-weighted kernel votes of the history items."""
        cfg = self.config
        e = self.item_embeddings_
        cand = e if items is None else e[items]  # (C, d)
        w = self.weights_[users]  # (B, I) sparse
        hist = np.unique(w.indices)  # history items of this batch
        out = np.zeros((len(users), len(cand)), dtype=np.float32)
        for start in range(0, len(hist), cfg.batch_items):  # blocks of history items, not users
            block = hist[start:start + cfg.batch_items]
            kernel = np.exp((e[block] @ cand.T - 1.0) / cfg.temperature, dtype=np.float32)  # (H, C)
            out += np.asarray(w[:, block] @ kernel, dtype=np.float32)
        return out

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return self._kernel_scores(users, None)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._kernel_scores(users, items)

    def explain(self, user: int, item: int, top: int = 3) -> dict:
        """The history items that contributed most to score(user, item), with their weights."""
        from llm4rec.models.explain import explanation

        self._check_fitted()
        u = int(self._users([user])[0])
        row = self.weights_[u]
        sims = self.item_embeddings_[row.indices] @ self.item_embeddings_[int(item)]
        contrib = row.data * np.exp((sims - 1.0) / self.config.temperature)
        return explanation(self, u, int(item), row.indices, contrib, top=top,
                           reason="similar in text to")

    def _state(self) -> dict[str, np.ndarray]:
        w = self.weights_
        return {"item_embeddings": self.item_embeddings_, "w_indptr": w.indptr, "w_indices": w.indices,
                "w_data": w.data}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_embeddings_ = arrays["item_embeddings"]
        self.weights_ = sp.csr_matrix((arrays["w_data"], arrays["w_indices"], arrays["w_indptr"]),
                                      shape=(self.n_users_, self.n_items_))
