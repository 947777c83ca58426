"""Matrix factorisation through the ``implicit`` library: ALS and BPR."""

from __future__ import annotations

import functools
from abc import abstractmethod

import numpy as np
from pydantic import Field

from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["ALS", "BPR", "ALSConfig", "BPRConfig"]


def _blas_single_thread():
    """implicit's kernels are parallel themselves; a threaded BLAS underneath only slows them."""
    return _threadpools().limit(limits=1, user_api="blas")


@functools.cache
def _threadpools():
    """threadpoolctl's view of the loaded libraries, found once (finding them costs 2 ms, more than a fold-in)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class ALSConfig(ModelConfig):
    """Defaults chosen on the P-LOO validation stages of ML-100K and the synthetic data."""

    factors: int = Field(128, ge=1)
    regularization: float = Field(10.0, ge=0)
    alpha: float = Field(1.0, gt=0, description="confidence = 1 + alpha * interaction")
    iterations: int = Field(15, ge=1)
    seed: int = 2026


class BPRConfig(ModelConfig):
    """Defaults chosen on the P-LOO validation stages of ML-100K and the synthetic data."""

    factors: int = Field(64, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1)
    seed: int = 2026
    threads: int = Field(1, ge=0, description="SGD threads; >1 (0 = all cores) is faster but not reproducible")


class _ImplicitMF(Recommender):
    """score(u, i) = user_factors[u] . item_factors[i] (bias folded in by implicit).

    A user known at fit time keeps the learned factors; any other history
    (a new user, or a known user's grown history) is folded in: its factors
    are solved from the fixed item factors (:meth:`_fold_in`), no refit.
    """

    @abstractmethod
    def _make(self):
        """The configured ``implicit`` model object."""

    @abstractmethod
    def _fold_in(self, x) -> np.ndarray:
        """float32[B, F'] user factors for history indicator rows x (CSR (B, I))."""

    def _score_histories(self, histories, items: np.ndarray | None) -> np.ndarray:
        factors = self._fold_in(histories.matrix())  # (B, F')
        cand = self.item_factors_ if items is None else self.item_factors_[items]
        return factors @ cand.T  # (B, F') @ (F', I)

    def _score_users(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        cand = self.item_factors_ if items is None else self.item_factors_[items]
        return self.user_factors_[users] @ cand.T  # (B, F') @ (F', I)

    def _fit(self, data) -> None:
        with _blas_single_thread():
            model = self._make()
            model.fit(self.history_.tocsr(), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]


class ALS(_ImplicitMF):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) via ``implicit.cpu.als``."""

    name = "als"
    Config = ALSConfig

    def _make(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(factors=c.factors, regularization=c.regularization, alpha=c.alpha,
                                       iterations=c.iterations, random_state=c.seed, num_threads=0)  # per-row solves: reproducible with threads

    def _fold_in(self, x) -> np.ndarray:
        """implicit's own ``recalculate_user``: the exact least-squares user step of ALS (Cholesky)."""
        with _blas_single_thread():
            return np.asarray(self._folder().recalculate_user(np.arange(x.shape[0]), x.tocsr()), dtype=np.float32)

    def _folder(self):
        """implicit's ALS holding the item factors, kept while they stay the same array: its cached Gram
        matrix Y'Y (F, F) costs a pass over every item, 0.1 s at 1M items, once instead of per history."""
        cached = getattr(self, "_fold_cache", None)
        if cached is None or cached[0] is not self.item_factors_:
            model = self._make()
            model.item_factors = self.item_factors_
            cached = (self.item_factors_, model)
            self._fold_cache = cached
        return cached[1]


class BPR(_ImplicitMF):
    """Bayesian personalised ranking (Rendle et al. 2009) via ``implicit.cpu.bpr``."""

    name = "bpr"
    Config = BPRConfig

    def _fold_in(self, x) -> np.ndarray:
        """BPR's own objective on the user factors alone, the item factors fixed (implicit has no BPR fold-in).

        implicit's item factors are [v_i, b_i] (bias last) and its user factors
        [w_u, 1]. Starting from w = 0, each of ``iterations`` steps pairs every
        history item i with a negative j outside the history and moves w by
        ``learning_rate * (sigmoid(-(x_ui - x_uj)) (v_i - v_j) - regularization w)``
        summed over the pairs: the updates of one epoch of implicit's SGD,
        applied at once, for a block of users in a few matrix products. The
        negatives are hashed from (seed, step, history item, position), so a
        history folds in the same alone or in a batch.
        """
        import scipy.sparse as sp

        from llm4rec._random import hash64

        cfg = self.config
        x = x.tocsr()
        b, n_items = x.shape
        v, bias = self.item_factors_[:, :-1], self.item_factors_[:, -1]  # (I, F), (I,)
        rows = np.repeat(np.arange(b), np.diff(x.indptr))  # (nnz,)
        pos = x.indices.astype(np.int64)
        slot = np.arange(len(pos)) - x.indptr[rows]  # position within the history
        gather = sp.csr_matrix((np.ones(len(pos), dtype=np.float32), (rows, np.arange(len(pos)))),
                               shape=(b, len(pos)))  # (B, nnz): sums the pairs of each user
        count = np.diff(x.indptr).astype(np.float32)[:, None]  # (B, 1)
        keys = n_items * rows.astype(np.int64)
        seen = np.sort(keys + pos)
        w = np.zeros((b, v.shape[1]), dtype=np.float32)  # (B, F)
        for step in range(cfg.iterations):
            neg = (hash64(cfg.seed, step, pos, slot) % np.uint64(n_items)).astype(np.int64)
            for retry in range(4):  # redraw negatives that are in the history (implicit verifies them too)
                clash = np.flatnonzero(_isin_sorted(keys + neg, seen))
                if not len(clash):
                    break
                neg[clash] = (hash64(cfg.seed + 1 + retry, step, pos[clash], slot[clash])
                              % np.uint64(n_items)).astype(np.int64)
            diff = v[pos] - v[neg]  # (nnz, F)
            margin = np.einsum("nf,nf->n", w[rows], diff) + bias[pos] - bias[neg]  # (nnz,)
            grad = gather @ ((1.0 / (1.0 + np.exp(margin)))[:, None] * diff)  # (B, F): sigmoid(-margin) (v_i - v_j)
            w += cfg.learning_rate * (grad - cfg.regularization * count * w)
        return np.concatenate([w, np.ones((len(w), 1))], axis=1).astype(np.float32)

    def _make(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        return BayesianPersonalizedRanking(factors=c.factors, learning_rate=c.learning_rate,
                                           regularization=c.regularization, iterations=c.iterations,
                                           random_state=c.seed, num_threads=c.threads)


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """bool[n]: which of ``values`` occur in ``sorted_keys`` (ascending int64)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values
