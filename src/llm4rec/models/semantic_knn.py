"""Semantic k-NN: recommend items whose text resembles the user's recent history.

Every item gets a language-model embedding of its text (``llm4rec.text``), so
items without a single interaction (cold start) are scored like any other,
and items added after fit (:meth:`SemanticKNN.add_items`) too. A history is
all the model reads about a user: any history scores without refitting.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.text.templates import item_template

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

    ``w_uh`` are recency weights over the user's last ``max_history`` history
    items (most recent weight 1). A small temperature lets each history item
    vote for its own neighbourhood (multi-interest users); a large one tends
    to the cosine with the weighted mean of the history embeddings. Shapes:
    item embeddings ``e``: float32[n_items, d], L2-normalised.
    """

    name = "semantic-knn"
    Config = SemanticKNNConfig

    def _fit(self, data) -> None:
        from llm4rec.text import item_embeddings, text_encoder

        cfg = self.config
        self.template_ = item_template(data, cfg.template)
        self.item_embeddings_ = item_embeddings(data, encoder=cfg.encoder, template=self.template_)
        self.provenance_["encoder_fingerprint"] = text_encoder(cfg.encoder).fingerprint

    def _weights(self, histories) -> sp.csr_matrix:
        """CSR (B, n_items): recency weight of each of the last ``max_history`` items of every history."""
        cfg = self.config
        age = (histories.offsets[histories.rows + 1] - 1) - np.arange(len(histories.items))  # 0 = most recent
        keep = age < cfg.max_history
        w = np.power(0.5, age[keep] / cfg.half_life).astype(np.float32)
        m = sp.csr_matrix((w, (histories.rows[keep], histories.items[keep])),
                          shape=(len(histories), histories.n_items))
        m.sum_duplicates()
        return m

    def _score_histories(self, histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_cols]: recency-weighted kernel votes of the history items."""
        cfg = self.config
        e = self.item_embeddings_
        cand = e if items is None else e[items]  # (C, d)
        w = self._weights(histories)  # (B, I) sparse
        hist = np.unique(w.indices)  # history items of this batch
        out = np.zeros((len(histories), len(cand)), dtype=np.float32)
        for start in range(0, len(hist), cfg.batch_items):  # blocks of history items, not users
            block = hist[start:start + cfg.batch_items]
            kernel = np.exp((e[block] @ cand.T - 1.0) / cfg.temperature, dtype=np.float32)  # (H, C)
            out += np.asarray(w[:, block] @ kernel, dtype=np.float32)
        return out

    def _explain(self, histories, item: int, top: int) -> dict:
        """The history items that contributed most to the score, with their weights."""
        from llm4rec.models.explain import explanation

        row = self._weights(histories)[0]
        sims = self.item_embeddings_[row.indices] @ self.item_embeddings_[item]
        contrib = row.data * np.exp((sims - 1.0) / self.config.temperature)
        return explanation(self, histories, item, row.indices, contrib, top=top, reason="similar in text to")

    def add_items(self, table) -> SemanticKNN:
        """New items (or new text for known ones) get their text embedding; recommendable at once."""
        from llm4rec.text import encode_table

        ids, attrs, vectors = encode_table(table, self.template_, self.config.encoder)
        index, new = self._grow_items(ids, attrs)
        grown = np.zeros((self.n_items_, self.item_embeddings_.shape[1]), dtype=np.float32)
        grown[: len(self.item_embeddings_)] = self.item_embeddings_
        grown[index] = vectors
        self.item_embeddings_ = grown
        return self

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_embeddings": self.item_embeddings_, "template": np.asarray(self.template_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_embeddings_ = arrays["item_embeddings"]
        self.template_ = str(arrays["template"])
        if self.item_embeddings_.shape[0] != self.n_items_:
            raise ValueError(f"{self.item_embeddings_.shape[0]} item embeddings for {self.n_items_} items")
