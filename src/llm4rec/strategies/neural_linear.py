"""``neural-linear``: a linear bandit head on a trained recommender's item representations (Riquelme et al., 2018).

The recommender is trained offline and then frozen; its item vectors are the
item features of the shared linear model of :mod:`llm4rec.strategies.linear`
(one ridge regression, Thompson sampling by default or UCB), which learns
online from the rewards. Items close in the model's space share what is
learned, and items never shown (cold items of a text-aware model included)
are explored through their vectors. ``ridge`` acts on the vectors' own
scale.

Where the vectors come from (:func:`item_vectors`): a model's public
``item_vectors()`` method (``llm-two-tower``: the item tower's outputs);
``sasrec`` / ``sasrec-text``: the output item embeddings;
``als`` / ``bpr``: the item factors. For any other model, pass ``vectors``
(a function of the fitted model returning float[n_items, d]) to
:meth:`NeuralLinear.from_model`, or create the policy with ``item_features``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.errors import InputError
from llm4rec.strategies._common import check_samples, check_setting
from llm4rec.strategies.linear import _Linear
from llm4rec.strategies.policy import Slate

if TYPE_CHECKING:  # importing the models (pydantic, scipy.sparse) only to type the argument would cost ~1 s
    from llm4rec.models import Recommender

__all__ = ["NeuralLinear", "item_vectors"]


def item_vectors(model: Recommender) -> np.ndarray:
    """float64[n_items, d] item representations of a fitted llm4rec model (see the module for which)."""
    model._check_fitted()
    if callable(getattr(model, "item_vectors", None)):  # llm-two-tower: the item tower's outputs
        return np.asarray(model.item_vectors(), dtype=np.float64)
    if hasattr(model, "item_factors_"):  # als, bpr
        return np.asarray(model.item_factors_, dtype=np.float64)
    net = getattr(model, "net_", None)
    if net is not None and hasattr(net, "item_table"):  # sasrec, sasrec-text
        import torch

        with torch.no_grad():
            return net.item_table().double().cpu().numpy()
    raise InputError(f"model {model.name!r} has no item representations that neural-linear knows",
                     expected="llm-two-tower, sasrec, sasrec-text, als or bpr",
                     hint="Pass vectors=<function of the model returning float[n_items, d]>")


class NeuralLinear(_Linear):
    """Shared linear bandit over a recommender's item vectors (argument ``item_features``).

    Settings: ``algorithm`` ("thompson" or "ucb"), ``features`` /
    ``context_dim`` (as for the shared linear model: "item" ignores the
    context; "product" with the user's representation as context makes
    theta = 1 the model's own dot-product score), ``ridge``, ``alpha`` (UCB),
    ``scale`` and ``propensity_samples`` (Thompson).
    """

    name = "neural-linear"

    def __init__(self, n_actions: int, *, seed: int = 0, algorithm: str = "thompson", model: str = "shared",
                 context_dim: int = 0, features: str = "item", ridge: float = 1.0, alpha: float = 1.0,
                 scale: float = 1.0, propensity_samples: int = 100, item_features: np.ndarray | None = None) -> None:
        if algorithm not in ("thompson", "ucb"):
            raise InputError("bad value for setting 'algorithm'", value=algorithm, expected="'thompson' or 'ucb'")
        if model != "shared":
            raise InputError("neural-linear is a shared linear model", value=model, expected="model='shared'")
        super().__init__(n_actions, seed=seed, model=model, context_dim=context_dim, features=features, ridge=ridge,
                         item_features=item_features, algorithm=algorithm,
                         alpha=check_setting("alpha", alpha, 0.0), scale=check_setting("scale", scale, 0.0),
                         propensity_samples=check_samples(propensity_samples))

    @classmethod
    def from_model(cls, model: Recommender, *, vectors: Callable[[Recommender], np.ndarray] | None = None,
                   **settings: Any) -> NeuralLinear:
        """A policy over ``model``'s items, features from :func:`item_vectors` (or ``vectors(model)``)."""
        feats = item_vectors(model) if vectors is None else np.asarray(vectors(model), dtype=np.float64)
        return cls(len(feats), item_features=feats, **settings)

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Top-k of ``candidates`` by posterior draw (Thompson) or upper confidence bound (UCB)."""
        cfg = self.config
        if cfg["algorithm"] == "ucb":
            return self._select_ucb(context, candidates, k, cfg["alpha"])
        return self._select_thompson(context, candidates, k, cfg["scale"], cfg["propensity_samples"])

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Exact (UCB) or Monte Carlo (Thompson) float64[n_rounds, n_actions, k]."""
        cfg = self.config
        return self._distribution(contexts, n_rounds, k, cfg["alpha"] if cfg["algorithm"] == "ucb" else None,
                                  cfg["scale"], cfg["propensity_samples"])
