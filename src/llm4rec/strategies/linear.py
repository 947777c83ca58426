"""Linear contextual bandits: LinUCB (Li et al., 2010) and linear Thompson sampling (Agrawal & Goyal, 2013).

The expected reward of showing action a in a round is linear in a feature
vector x (float[D]), learned by ridge regression: A = ridge I + sum x x^T,
b = sum reward x, theta = A^-1 b. Two models (setting ``model``):

- ``"disjoint"``: one ridge model per action; x is the round's context
  (float[context_dim], e.g. the user's embedding). State: n_actions inverses
  of D x D, so memory and each ``select`` cost n_actions D^2 (8 MB at D=32,
  1.2 GB at D=384 for 1000 actions).
- ``"shared"``: one ridge model over per-(context, action) features built
  from the caller's item features V (float[n_actions, d], e.g. text
  embeddings; argument ``item_features``) and the context c (setting
  ``features``): ``"item"`` x = v_a (context ignored), ``"concat"`` x = [v_a, c],
  ``"product"`` x = v_a * c (elementwise, context_dim = d), ``"outer"``
  x = vec(v_a c^T) (D = d context_dim: small d only). A never-shown item
  gets its mean and its exploration bonus from its features, which is how
  text embeddings let new items be explored.

Updates are Sherman-Morrison (disjoint: one rank-1 update per shown item,
vectorised over the slate) and Woodbury (shared: the slate's rank-k update) of
A^-1, so nothing is inverted from scratch. For the ``"item"`` and ``"concat"``
features each action's x^T A^-1 x (its item part) is kept up to date by the
same rank-k update, so ``select`` costs O(c d) for c candidates; ``"product"``
and ``"outer"`` cost O(c D^2).

``linucb`` shows the top-k by mean + alpha sqrt(x^T A^-1 x) (propensities 1).
``lin-thompson`` shows the top-k by one draw of theta ~ N(theta_hat, scale^2
A^-1) (shared: one theta for all candidates, sampled through the Cholesky
factor of A; disjoint: each action's posterior is independent, so its score
is drawn directly as N(c . theta_a, scale^2 c^T A_a^-1 c), exactly the same
distribution); propensities by Monte Carlo over ``propensity_samples`` more
draws (:func:`~llm4rec.strategies._common.rank_frequencies`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import cholesky, solve_triangular

from llm4rec.errors import InputError
from llm4rec.ranking import topk
from llm4rec.strategies._common import (
    check_feedback,
    check_request,
    check_samples,
    check_setting,
    position_frequencies,
    rank_frequencies,
)
from llm4rec.strategies.policy import Feedback, Policy, Slate
from llm4rec.strategies.rerank import top_k

__all__ = ["LinThompson", "LinUCB"]

MODELS = ("disjoint", "shared")
FEATURES = ("item", "concat", "product", "outer")
#: elements of the (rounds, actions, D or samples) blocks held at once by distribution()
_BLOCK = 1 << 23


class _Linear(Policy):
    """Ridge-regression state, features and posterior moments shared by the linear bandits (see module)."""

    def __init__(self, n_actions: int, *, seed: int = 0, model: str = "disjoint", context_dim: int = 0,
                 features: str = "item", ridge: float = 1.0, item_features: np.ndarray | None = None,
                 **settings: Any) -> None:
        if model not in MODELS:
            raise InputError("bad value for setting 'model'", value=model, expected="'disjoint' or 'shared'")
        if features not in FEATURES:
            raise InputError("bad value for setting 'features'", value=features, expected="one of " +
                             ", ".join(map(repr, FEATURES)))
        if int(context_dim) != context_dim or context_dim < 0:
            raise InputError("bad value for setting 'context_dim'", value=context_dim, expected="an integer >= 0")
        super().__init__(n_actions, seed=seed, model=model, context_dim=int(context_dim), features=features,
                         ridge=check_setting("ridge", ridge, 0.0, low_open=True), **settings)
        self._chol: np.ndarray | None = None  # Cholesky factor of A (shared), rebuilt after an update
        if model == "disjoint":
            if context_dim < 1:
                raise InputError("the disjoint model needs the context's dimension", value=context_dim,
                                 expected="context_dim >= 1")
            if item_features is not None:
                raise InputError("item_features are used by the shared model only", expected="model='shared'")
            d = self.config["context_dim"]
            self.A_inv_ = np.tile(np.eye(d) / self.config["ridge"], (self.n_actions, 1, 1))  # (n, D, D)
            self.b_ = np.zeros((self.n_actions, d))
            self.theta_ = np.zeros((self.n_actions, d))
        elif item_features is not None:
            self._start_shared(item_features)
        # else a shared policy being loaded: load_policy restores its arrays through _set_state

    # ------------------------------------------------------------ features
    @property
    def _disjoint(self) -> bool:
        return self.config["model"] == "disjoint"

    def _start_shared(self, item_features: np.ndarray) -> None:
        """Empty ridge model over the features built from ``item_features`` float[n_actions, d]."""
        v = np.asarray(item_features, dtype=np.float64)
        if v.ndim != 2 or len(v) != self.n_actions or not np.isfinite(v).all():
            raise InputError("item_features must be finite, one row per action", value=v.shape,
                             expected=f"float[{self.n_actions}, d]")
        feats, dc = self.config["features"], self.config["context_dim"]
        if feats != "item" and dc < 1:
            raise InputError(f"features={feats!r} need the context's dimension", value=dc,
                             expected="context_dim >= 1")
        if feats == "product" and dc != v.shape[1]:
            raise InputError("features='product' needs contexts as long as the item features", value=dc,
                             expected=f"context_dim = {v.shape[1]}")
        d = {"item": v.shape[1], "concat": v.shape[1] + dc, "product": v.shape[1], "outer": v.shape[1] * dc}[feats]
        ridge = self.config["ridge"]
        self.item_features_ = v
        self.A_, self.A_inv_ = ridge * np.eye(d), np.eye(d) / ridge
        self.b_, self.theta_ = np.zeros(d), np.zeros(d)
        if feats in ("item", "concat"):
            self.arm_var_ = np.einsum("nd,nd->n", v, v) / ridge  # (n,) v_a^T (item block of A^-1) v_a

    def _check_shared(self) -> None:
        if not hasattr(self, "item_features_"):
            raise InputError("the shared linear model has no item features",
                             expected="item_features=float[n_actions, d] when creating the policy")

    def _contexts(self, context: np.ndarray | None, n_rounds: int | None = None) -> np.ndarray | None:
        """float64[R, context_dim] (R = 1 for one round), or None when the features ignore the context."""
        if not self._disjoint:
            self._check_shared()
            if self.config["features"] == "item":
                return None
        dc = self.config["context_dim"]
        if context is None:
            raise InputError(f"policy {self.name!r} needs a context", expected=f"float[{dc}]")
        c = np.asarray(context, dtype=np.float64)
        want = (dc,) if n_rounds is None else (n_rounds, dc)
        if c.shape != want or not np.isfinite(c).all():
            raise InputError("context has the wrong shape or non-finite values", value=c.shape,
                             expected="finite float" + str(list(want)))
        return c.reshape(-1, dc)

    def _features(self, contexts: np.ndarray | None, actions: np.ndarray) -> np.ndarray:
        """float64[R or 1, a, D] features of ``actions`` int64[a] in each round's context float[R, dc]."""
        v = self.item_features_[actions][None]  # (1, a, d)
        feats = self.config["features"]
        if feats == "item":
            return v
        c = contexts[:, None, :]  # (R, 1, dc)
        if feats == "concat":
            r, a = len(contexts), v.shape[1]
            return np.concatenate([np.broadcast_to(v, (r, a, v.shape[2])), np.broadcast_to(c, (r, a, c.shape[2]))],
                                  axis=2)
        if feats == "product":
            return v * c
        return (v[..., :, None] * c[..., None, :]).reshape(len(contexts), v.shape[1], -1)  # outer

    # ------------------------------------------------------------ posterior
    def _moments(self, contexts: np.ndarray | None, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance x^T A^-1 x of each candidate's reward: float64[R, c] each."""
        if self._disjoint:
            n, d = self.theta_.shape
            mean = contexts @ self.theta_[cands].T  # (R, c)
            every = 4 * len(cands) >= n  # most actions: one product over all, no gather of c D x D blocks
            a_inv = self.A_inv_ if every else self.A_inv_[cands]
            q = (a_inv.reshape(-1, d) @ contexts.T).reshape(len(a_inv), d, -1)  # (n or c, D, R) A_a^-1 x
            var = np.einsum("adr,rd->ra", q, contexts)
            return mean, np.maximum(var[:, cands] if every else var, 0.0)
        mean = self._scores(contexts, cands, self.theta_[None, None])[:, 0]  # (R, c)
        feats = self.config["features"]
        if feats == "product" or feats == "outer":
            x = self._features(contexts, cands)  # (R, c, D)
            return mean, np.maximum(np.einsum("rcd,rcd->rc", x @ self.A_inv_, x), 0.0)
        var = self.arm_var_[cands][None]  # (1, c) kept up to date by update()
        if feats == "concat":
            d = self.item_features_.shape[1]
            q, r = self.A_inv_[:d, d:], self.A_inv_[d:, d:]  # item-context and context blocks of A^-1
            rows, cols = self._item_rows(cands)
            var = var + 2.0 * ((contexts @ q.T) @ rows.T)[:, cols] + \
                np.einsum("rd,de,re->r", contexts, r, contexts)[:, None]
        return mean, np.maximum(var, 0.0)

    def _item_rows(self, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray | slice]:
        """(item feature rows, then the columns to keep): all of V when most actions are candidates, no gather."""
        v = self.item_features_
        return (v, cands) if 4 * len(cands) >= self.n_actions else (v[cands], slice(None))

    def _scores(self, contexts: np.ndarray | None, cands: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        """float64[R, m, c] x . theta for thetas float[R or 1, m, D], without building the (c, D) features."""
        rows, cols = self._item_rows(cands)
        d, feats = rows.shape[1], self.config["features"]
        if feats == "item":
            item_weights = thetas
        elif feats == "concat":
            item_weights = thetas[..., :d]
        elif feats == "product":
            item_weights = thetas * contexts[:, None, :]  # v . (c * theta)
        else:  # outer: vec(v c^T) . theta = v . (Theta c)
            item_weights = (thetas.reshape(*thetas.shape[:2], d, -1) @ contexts[:, None, :, None])[..., 0]
        out = (item_weights @ rows.T)[..., cols]
        if feats == "concat":
            out = out + np.einsum("rd,rmd->rm", contexts, thetas[..., d:])[..., None]
        return out

    def _draws(self, contexts: np.ndarray | None, cands: np.ndarray, m: int, scale: float) -> np.ndarray:
        """float64[R, m, c] posterior draws of the candidates' rewards (theta ~ N(theta_hat, scale^2 A^-1))."""
        if self._disjoint:
            mean, var = self._moments(contexts, cands)
            noise = self.rng.standard_normal((len(mean), m, len(cands)))
            return mean[:, None, :] + scale * np.sqrt(var)[:, None, :] * noise
        if self._chol is None:
            self._chol = cholesky(self.A_, lower=True)
        rounds = 1 if contexts is None else len(contexts)
        d = len(self.theta_)
        z = self.rng.standard_normal((d, rounds * m))
        thetas = self.theta_ + scale * solve_triangular(self._chol, z, lower=True, trans="T").T  # cov A^-1
        return self._scores(contexts, cands, thetas.reshape(rounds, m, d))

    def update(self, feedback: Feedback) -> None:
        """Add the shown items' rewards to the ridge model(s) by rank-1 / rank-k updates of A^-1."""
        items, rewards = check_feedback(feedback, self.n_actions)
        contexts = self._contexts(feedback.context)
        if self._disjoint:
            x = contexts[0]  # (D,) the same context for every shown item, one model each
            u = self.A_inv_[items] @ x  # (k, D)
            self.A_inv_[items] -= u[:, :, None] * u[:, None, :] / (1.0 + u @ x)[:, None, None]
            self.b_[items] += rewards[:, None] * x
            self.theta_[items] = np.einsum("kde,ke->kd", self.A_inv_[items], self.b_[items])
            return
        x = self._features(contexts, items)[0]  # (k, D)
        u = self.A_inv_ @ x.T  # (D, k)
        inner = np.eye(len(items)) + x @ u  # (k, k) Woodbury's capacitance matrix
        shrink = np.linalg.solve(inner, u.T)  # (k, D)
        self.A_inv_ -= u @ shrink
        self.A_inv_ = 0.5 * (self.A_inv_ + self.A_inv_.T)  # keep it symmetric against rounding
        self.A_ += x.T @ x
        self.b_ += x.T @ rewards
        self.theta_ = self.A_inv_ @ self.b_
        self._chol = None
        if hasattr(self, "arm_var_"):
            w = self.item_features_ @ u[:self.item_features_.shape[1]]  # (n, k) v_a^T (item rows of A^-1 X^T)
            self.arm_var_ -= np.einsum("nk,nk->n", w, np.linalg.solve(inner, w.T).T)

    # --------------------------------------------------- selection, distribution
    def _select_ucb(self, context: np.ndarray | None, candidates: np.ndarray, k: int, alpha: float) -> Slate:
        cands, k = check_request(candidates, k, self.n_actions)
        mean, var = self._moments(self._contexts(context), cands)
        return Slate(cands[top_k(mean[0] + alpha * np.sqrt(var[0]), k)], np.ones(k))

    def _select_thompson(self, context: np.ndarray | None, candidates: np.ndarray, k: int, scale: float,
                         samples: int) -> Slate:
        cands, k = check_request(candidates, k, self.n_actions)
        draws = self._draws(self._contexts(context), cands, 1 + samples, scale)[0]  # (1 + m, c) row 0 decides
        order = top_k(draws[0], k)
        return Slate(cands[order], rank_frequencies(draws[1:], order))

    def _distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int, alpha: float | None,
                      scale: float, samples: int) -> np.ndarray:
        """float64[n_rounds, n_actions, k]: exact one-hot (UCB, ``alpha`` given) or Monte Carlo (Thompson)."""
        if not 1 <= k <= self.n_actions:
            raise InputError("slate size k must be between 1 and the number of actions", value=k,
                             expected=f"1..{self.n_actions}")
        contexts = self._contexts(contexts, int(n_rounds))
        actions = np.arange(self.n_actions)

        def block(c: np.ndarray | None) -> np.ndarray:  # (R, n, k) for the rounds of c
            if alpha is None:
                return position_frequencies(self._draws(c, actions, samples, scale), k)
            mean, var = self._moments(c, actions)
            top = topk(mean + alpha * np.sqrt(var), k)  # (R, k)
            out = np.zeros((len(top), self.n_actions, k))
            out[np.arange(len(top))[:, None], top, np.arange(k)] = 1.0
            return out

        if contexts is None:  # the same every round
            return np.broadcast_to(block(None)[0], (int(n_rounds), self.n_actions, k))
        d = self.A_inv_.shape[-1]
        step = max(1, _BLOCK // (self.n_actions * max(d, samples if alpha is None else 1)))
        return np.concatenate([block(contexts[s:s + step]) for s in range(0, len(contexts), step)])

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        names = ["A_inv", "b", "theta"] if self._disjoint else \
            ["item_features", "A", "A_inv", "b", "theta"] + (["arm_var"] if hasattr(self, "arm_var_") else [])
        return {name: getattr(self, name + "_") for name in names}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name, value in arrays.items():
            setattr(self, name + "_", np.array(value))
        self._chol = None


class LinUCB(_Linear):
    """LinUCB: top-k by mean + alpha sqrt(x^T A^-1 x); see the module for ``model``, ``features``.

    Settings: ``model``, ``context_dim``, ``features``, ``ridge`` (> 0),
    ``alpha`` (>= 0, the width of the confidence bound); argument
    ``item_features`` float[n_actions, d] (shared model). Deterministic:
    propensities are 1.
    """

    name = "linucb"

    def __init__(self, n_actions: int, *, seed: int = 0, model: str = "disjoint", context_dim: int = 0,
                 features: str = "item", ridge: float = 1.0, alpha: float = 1.0,
                 item_features: np.ndarray | None = None) -> None:
        super().__init__(n_actions, seed=seed, model=model, context_dim=context_dim, features=features,
                         ridge=ridge, item_features=item_features, alpha=check_setting("alpha", alpha, 0.0))

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Top-k of ``candidates`` by upper confidence bound for ``context`` float[context_dim] (or None)."""
        return self._select_ucb(context, candidates, k, self.config["alpha"])

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Exact: one-hot on each round's top-k (contexts float[n_rounds, context_dim])."""
        return self._distribution(contexts, n_rounds, k, self.config["alpha"], 0.0, 0)


class LinThompson(_Linear):
    """Linear Thompson sampling: top-k by one posterior draw; see the module for ``model``, ``features``.

    Settings: ``model``, ``context_dim``, ``features``, ``ridge`` (> 0),
    ``scale`` (>= 0, the posterior's standard-deviation multiplier),
    ``propensity_samples`` (Monte Carlo draws per ``select``, default 100);
    argument ``item_features`` float[n_actions, d] (shared model).
    """

    name = "lin-thompson"

    def __init__(self, n_actions: int, *, seed: int = 0, model: str = "disjoint", context_dim: int = 0,
                 features: str = "item", ridge: float = 1.0, scale: float = 1.0, propensity_samples: int = 100,
                 item_features: np.ndarray | None = None) -> None:
        super().__init__(n_actions, seed=seed, model=model, context_dim=context_dim, features=features,
                         ridge=ridge, item_features=item_features, scale=check_setting("scale", scale, 0.0),
                         propensity_samples=check_samples(propensity_samples))

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Top-k of ``candidates`` by one posterior draw for ``context``; Monte Carlo propensities."""
        return self._select_thompson(context, candidates, k, self.config["scale"],
                                     self.config["propensity_samples"])

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Monte Carlo over ``propensity_samples`` posterior draws per round."""
        return self._distribution(contexts, n_rounds, k, None, self.config["scale"],
                                  self.config["propensity_samples"])
