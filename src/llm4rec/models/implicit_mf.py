"""Matrix factorisation through the ``implicit`` library: ALS and BPR."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from pydantic import Field

from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["ALS", "ALSConfig", "BPR", "BPRConfig"]


def _blas_single_thread():
    """implicit's kernels are parallel themselves; a threaded BLAS underneath only slows them."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


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
    """score(u, i) = user_factors[u] . item_factors[i] (bias folded in by implicit)."""

    @abstractmethod
    def _make(self):
        """The configured ``implicit`` model object."""

    def _fit(self, data) -> None:
        with _blas_single_thread():
            model = self._make()
            model.fit(self.history_.tocsr(), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T  # (B, F) @ (F, I)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_[items].T  # (B, F) @ (F, |items|)

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


class BPR(_ImplicitMF):
    """Bayesian personalised ranking (Rendle et al. 2009) via ``implicit.cpu.bpr``."""

    name = "bpr"
    Config = BPRConfig

    def _make(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        return BayesianPersonalizedRanking(factors=c.factors, learning_rate=c.learning_rate,
                                           regularization=c.regularization, iterations=c.iterations,
                                           random_state=c.seed, num_threads=c.threads)
