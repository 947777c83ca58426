"""Item-based k-nearest-neighbours with shrunk cosine similarity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.ranking import topk

__all__ = ["ItemKNN", "ItemKNNConfig"]


class ItemKNNConfig(ModelConfig):
    neighbors: int = Field(100, ge=1, description="similar items kept per item")
    shrink: float = Field(10.0, ge=0, description="shrinkage added to the cosine denominator")
    block_size: int = Field(2048, ge=1, description="items per block when computing similarities")


class ItemKNN(Recommender):
    """sim(i, j) = x_i . x_j / (|x_i| |x_j| + shrink), top ``neighbors`` per item.

    score(u, j) = sum over the user's fit-set items i of sim(i, j). The
    similarity matrix is built in item blocks, so memory stays at
    O(block_size * n_items) plus the sparse result.
    """

    name = "itemknn"
    Config = ItemKNNConfig

    def _fit(self, data) -> None:
        cfg = self.config
        x = self.history_.tocsc()
        xt = x.T.tocsr()  # (I, U)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())  # (I,)
        n = self.n_items_
        k = min(cfg.neighbors, max(n - 1, 1))
        rows, cols, vals = [], [], []
        for start in range(0, n, cfg.block_size):
            stop = min(n, start + cfg.block_size)
            co = (xt[start:stop] @ x).toarray()  # (blk, I) co-occurrence counts
            sim = co / (norms[start:stop, None] * norms[None, :] + cfg.shrink + 1e-12)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
            top = topk(sim, k)  # ties to the smaller index: the same neighbours on every CPU (argpartition's
            # choice among ties depends on numpy's SIMD path)
            top_vals = np.take_along_axis(sim, top, axis=1)
            keep = top_vals > 0
            rows.append(np.repeat(np.arange(start, stop), k)[keep.ravel()])
            cols.append(top[keep])
            vals.append(top_vals[keep])
        sim = sp.csr_matrix((np.concatenate(vals).astype(np.float32),
                             (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        self.similarity_ = sim  # row i: neighbours of i

    def _score_histories(self, histories, items: np.ndarray | None) -> np.ndarray:
        return self._scores(histories.matrix(), items)

    def _score_users(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._scores(self.history_[users], items)

    def _scores(self, x, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n]: history indicator rows x (CSR (B, I)) times the neighbour similarities."""
        sim = self.similarity_ if items is None else self.similarity_[:, items]
        return np.asarray((x @ sim).toarray(), dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        return {"sim_indptr": s.indptr, "sim_indices": s.indices, "sim_data": s.data}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity_ = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]),
            shape=(self.n_items_, self.n_items_))
