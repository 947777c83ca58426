"""A recommendation simulator built from real data: :class:`RecSimEnv`, a Gymnasium environment.

Build one with ``RecSimEnv.from_dataset(dataset, model="ease")``. Every
assumption is listed here; where it has a number, that number is a setting of
:class:`SimConfig`.

Response model (:func:`fit_response_model`)
    Each user's interactions are split by protocol ``rand`` (seeded): about
    80% fit a recommender (any registered model; EASE by default), 20% are
    held out. The click probability of a *fresh* item i for user u at the top
    slot is ``sigmoid(a z_ui + b)``, z the recommender's score standardised
    over the calibration sample, and (a, b) fitted by logistic regression
    (Platt scaling) on held-out interactions (label 1) against ``negatives``
    (default 20) items per held-out one, drawn uniformly from the items the
    user never interacted with (label 0). A probability is therefore relative
    to that mix: it is the chance that an item with this score is a real
    interaction rather than one of ``negatives`` random items (fewer negatives,
    higher click rates; on ML-100K with EASE the user's best item gets about
    0.85, the 50th about 0.15). The fitted recommender *is*
    the simulated users' taste: a policy ranking by its scores knows the order
    of the fresh click probabilities exactly.
Sessions
    An episode is one session of at most ``session_length`` steps by one user
    drawn uniformly from users with at least ``min_history`` fit interactions
    (from a stream of its own, so the sequence of users does not depend on
    what a policy does; ``reset(options={"user": u})`` picks one). The
    session's candidates are the user's ``n_candidates`` best items by the
    recommender among those not in the user's fit set (held-out ones
    included), listed best first. Each step the agent shows a slate of
    ``slate_size`` candidates; the action is their positions in that list
    (a repeated position is an empty slot).
Clicks
    Independent per slot: P(click at slot j) = examination(j) *
    sigmoid(a z + b) * exp(-fatigue F_i), examination(j) = 1 / log2(j + 2)
    ** position_bias (1, 0.63, 0.5, ... ; 0 turns position bias off). The
    reward is the number of clicks. Not modelled: a click's effect on the
    other slots (no cascade), changes of taste within a session, revisits.
Fatigue (boredom)
    F_i (0 at the start of a session) is the user's recent exposure to items
    like i: after each step F <- recovery F + sum over shown items s of
    kernel(i, s), kernel(i, s) = max(0, cos(v_i, v_s)) ** similarity_power
    (1 for i = s). Showing an item, or one like it, again lowers its click
    probability; exposure fades by ``recovery`` per step. Item vectors v:
    ``"svd"`` (default) the item side of a rank-``dim`` SVD of the fit
    interaction matrix (items consumed by the same users are alike; the
    leading component, which for a non-negative matrix mostly measures
    popularity and would make all popular items alike, is dropped),
    ``"model"`` the recommender's own item vectors (als, bpr, sasrec,
    llm-two-tower), ``"text"`` the items' text embeddings.
Leaving
    After each step the user leaves with probability ``leave_base +
    leave_boredom * boredom``, boredom = 1 - mean over the slate of
    exp(-fatigue F_i) (0 for a fresh slate): ``terminated``. Reaching
    ``session_length`` steps ``truncated`` the episode.
Observation
    float32[2 dim + 1]: the user's taste vector u (the mean of the vectors of
    the user's fit items, unit length), the exposure history h (h <- recovery
    h + mean of the shown items' vectors; 0 at the start) and the elapsed share
    of the session t / session_length. ``info`` holds ``candidates`` (int64[C]
    item indices, best first) and, after a step, ``items`` (int64[k] shown,
    -1 for an empty slot), ``clicks`` (float64[k]), ``expected`` (the slate's
    expected clicks) and ``best_expected`` (the expected clicks of the myopic
    oracle's slate in the same state: the top-k candidates by current click
    probability, best at the top), so per-step regret against that oracle is
    ``best_expected - expected``.

Determinism: ``reset(seed=s)`` fixes the users and every click and exit that
follow; the response model is fixed by its ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm4rec.data import Dataset
from llm4rec.data.splits import make_split
from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model

__all__ = ["RecSimEnv", "ResponseModel", "SimConfig", "fit_response_model"]

#: users scored at once while calibrating (memory: block x n_items floats)
_USER_BLOCK = 256


class SimConfig(BaseModel):
    """Settings of a :class:`RecSimEnv` (see the module docstring for what each means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slate_size: int = Field(5, ge=1)
    n_candidates: int = Field(50, ge=1)
    session_length: int = Field(20, ge=1)
    position_bias: float = Field(1.0, ge=0.0)
    fatigue: float = Field(0.5, ge=0.0)
    recovery: float = Field(0.8, ge=0.0, lt=1.0)
    similarity_power: float = Field(4.0, gt=0.0)
    leave_base: float = Field(0.02, ge=0.0, le=1.0)
    leave_boredom: float = Field(0.3, ge=0.0, le=1.0)
    min_history: int = Field(5, ge=1)

    @classmethod
    def parse(cls, values: dict[str, Any]) -> SimConfig:
        """Validated settings; unknown keys and bad values raise InputError."""
        try:
            cfg = cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            if err["type"] == "extra_forbidden":
                raise InputError(f"unknown simulator setting {key!r}", value=values.get(key),
                                 expected="one of: " + ", ".join(cls.model_fields)) from None
            raise InputError(f"bad value for simulator setting {key!r}: {err['msg']}", value=err.get("input"),
                             expected=f"a valid {key}") from None
        if cfg.slate_size > cfg.n_candidates:
            raise InputError("the slate is longer than the candidate list", value=cfg.slate_size,
                             expected=f"slate_size <= n_candidates ({cfg.n_candidates})")
        return cfg


@dataclass(frozen=True, eq=False)
class ResponseModel:
    """How simulated users respond (see the module docstring).

    Attributes:
        model: the fitted recommender whose scores are the users' taste.
        link: (a, b, mean, std): P(click) = sigmoid(a (score - mean) / std + b).
        item_vectors: float64[n_items, d], unit rows (a zero row for an item without a vector).
        user_vectors: float64[n_users, d], unit taste vectors.
        diagnostics: calibration numbers (auc, log_loss, pairs, ...), JSON-ready.
    """

    model: Recommender
    link: tuple[float, float, float, float]
    item_vectors: np.ndarray
    user_vectors: np.ndarray
    diagnostics: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def click_probabilities(self, users: np.ndarray) -> np.ndarray:
        """float64[b, n_items] fresh top-slot click probabilities of ``users`` int64[b]."""
        a, b, mean, std = self.link
        return _sigmoid(a * (self.model.score_indices(users).astype(np.float64) - mean) / std + b)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def fit_response_model(dataset: Dataset, model: str | Recommender = "ease", *,
                       settings: dict[str, Any] | None = None, vectors: str = "svd", dim: int = 32,
                       negatives: int = 20, calibration_users: int = 2000, seed: int = 0) -> ResponseModel:
    """Fit the recommender on the fit part of a seeded ``rand`` split and calibrate its scores.

    Args:
        dataset: the interactions (and item text for ``vectors="text"``).
        model: a registered model name (fitted here with ``settings``) or an unfitted Recommender.
        vectors: ``"svd"``, ``"model"`` or ``"text"``: the item vectors of fatigue and observations.
        dim: rank of the ``"svd"`` vectors.
        negatives: random non-interacted items per held-out interaction in the calibration.
        calibration_users: at most this many users (drawn with ``seed``) calibrate the link.
    """
    if vectors not in ("svd", "model", "text"):
        raise InputError("unknown item vectors", value=vectors, expected="'svd', 'model' or 'text'")
    if negatives < 1 or dim < 1 or calibration_users < 1:
        raise InputError("negatives, dim and calibration_users must be positive",
                         value=(negatives, dim, calibration_users), expected="integers >= 1")
    stage = make_split(dataset, "rand", seed).stage("test")
    rec = create_model(model, settings) if isinstance(model, str) else model
    rec.fit(stage.fit)
    rng = np.random.default_rng(seed)
    users = stage.users if len(stage.users) <= calibration_users else \
        np.sort(rng.choice(stage.users, calibration_users, replace=False))
    if len(users) == 0:
        raise InputError("no held-out interactions to calibrate the click model on",
                         expected="users with at least 2 interactions")
    seen = (stage.fit.matrix() + stage.targets).tocsr()  # (n_users, n_items) everything each user touched
    scores, labels = _calibration_pairs(rec, stage.targets, seen, users, negatives, rng)
    mean, std = float(scores.mean()), float(scores.std()) or 1.0
    z = (scores - mean) / std
    a, b = _logistic_fit(z, labels)
    p = _sigmoid(a * z + b)
    eps = 1e-12
    diagnostics = {"model": rec.name, "vectors": vectors, "negatives": int(negatives), "seed": int(seed),
                   "users": len(users), "positives": int(labels.sum()), "pairs": len(labels),
                   "slope": float(a), "intercept": float(b), "auc": _auc(scores, labels),
                   "log_loss": float(-np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps)))}
    item_vecs = _unit_rows(_item_vectors(vectors, rec, stage.fit, dim, dataset))
    fit_matrix = stage.fit.matrix()
    user_vecs = _unit_rows(np.asarray(fit_matrix @ item_vecs))  # (n_users, d) mean of fit items, unit
    return ResponseModel(rec, (float(a), float(b), mean, std), item_vecs, user_vecs, diagnostics)


def _calibration_pairs(rec: Recommender, targets: sp.csr_matrix, seen: sp.csr_matrix, users: np.ndarray,
                       negatives: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(float64[m] scores, float64[m] labels): held-out pairs (1) and random never-touched pairs (0)."""
    tgt = targets[users].tocoo()  # rows index into ``users``
    pos_rows, pos_items = tgt.row.astype(np.int64), tgt.col.astype(np.int64)
    neg_rows = np.repeat(pos_rows, negatives)
    neg_items = rng.integers(0, targets.shape[1], len(neg_rows))
    for _ in range(100):  # redraw the few that hit a touched item
        bad = np.flatnonzero(np.asarray(seen[users[neg_rows], neg_items]).ravel() > 0)
        if not len(bad):
            break
        neg_items[bad] = rng.integers(0, targets.shape[1], len(bad))
    else:
        raise InputError("could not draw untouched items for the calibration", expected="users who have not "
                         "interacted with almost every item")
    rows = np.concatenate([pos_rows, neg_rows])
    items = np.concatenate([pos_items, neg_items])
    scores = np.empty(len(rows))
    for start in range(0, len(users), _USER_BLOCK):  # blocks of users: one score matrix each
        block = rec.score_indices(users[start:start + _USER_BLOCK])  # (b, n_items)
        mask = (rows >= start) & (rows < start + _USER_BLOCK)
        scores[mask] = block[rows[mask] - start, items[mask]]
    labels = np.concatenate([np.ones(len(pos_rows)), np.zeros(len(neg_rows))])
    return scores, labels


def _logistic_fit(z: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) maximising the likelihood of y ~ Bernoulli(sigmoid(a z + b)) by Newton's method."""
    x = np.stack([z, np.ones_like(z)], axis=1)  # (m, 2)
    w = np.zeros(2)
    for _ in range(iterations):
        p = _sigmoid(x @ w)
        grad = x.T @ (y - p)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _item_vectors(kind: str, rec: Recommender, fit: Dataset, dim: int, dataset: Dataset) -> np.ndarray:
    """float64[n_items, d] item vectors of the given kind (see :func:`fit_response_model`)."""
    if kind == "model":
        from llm4rec.strategies.neural_linear import item_vectors

        return item_vectors(rec)
    if kind == "text":
        from llm4rec.text import item_embeddings

        return np.asarray(item_embeddings(dataset), dtype=np.float64)
    from scipy.sparse.linalg import svds

    x = fit.matrix().astype(np.float64)  # (n_users, n_items) binary
    rank = min(dim + 1, min(x.shape) - 1)
    if rank < 2:
        raise InputError("too few users or items for SVD item vectors", value=x.shape, expected="at least 3 x 3")
    _, s, vt = svds(x, k=rank, v0=np.ones(min(x.shape)))  # fixed start vector: deterministic
    return (vt.T * s)[:, -2::-1].copy()  # (n_items, rank - 1) largest first, the leading (popularity) one dropped


class RecSimEnv(gym.Env):
    """Sessions of simulated users answering slates of recommendations (see the module docstring).

    Spaces: actions MultiDiscrete([n_candidates] * slate_size) (positions in
    ``info["candidates"]``); observations float32[2 d + 1].
    """

    metadata = {"render_modes": []}

    def __init__(self, response: ResponseModel, config: SimConfig | dict | None = None) -> None:
        self.response = response
        self.config = config if isinstance(config, SimConfig) else SimConfig.parse(dict(config or {}))
        cfg = self.config
        n_items = response.n_items
        history = np.diff(response.model.history_.indptr)  # (n_users,) fit interactions per user
        self.users = np.flatnonzero((history >= cfg.min_history) & (history <= n_items - cfg.n_candidates))
        if len(self.users) == 0:
            raise InputError("no user can start a session", value=cfg.min_history,
                             expected=f"users with >= min_history fit interactions and >= {cfg.n_candidates} "
                                      "items not yet seen")
        d = response.item_vectors.shape[1]
        self.dim = d
        self.examination = 1.0 / np.log2(np.arange(cfg.slate_size) + 2.0) ** cfg.position_bias  # (k,)
        self.action_space = gym.spaces.MultiDiscrete([cfg.n_candidates] * cfg.slate_size)
        reach = 1.0 / (1.0 - cfg.recovery)  # |h| <= sum of recovery ** t
        high = np.concatenate([np.ones(d), np.full(d, reach), [1.0]]).astype(np.float32)
        low = np.concatenate([-high[:-1], [0.0]]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._user_rng: np.random.Generator | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset, model: str | Recommender = "ease", *,
                     config: SimConfig | dict | None = None, seed: int = 0, **options: Any) -> RecSimEnv:
        """A simulator of ``dataset``'s users (``options``: see :func:`fit_response_model`)."""
        config = config if isinstance(config, SimConfig) else SimConfig.parse(dict(config or {}))
        return cls(fit_response_model(dataset, model, seed=seed, **options), config)

    @property
    def n_items(self) -> int:
        return self.response.n_items

    @property
    def item_vectors(self) -> np.ndarray:
        """float64[n_items, d] unit item vectors (fatigue similarity, observations)."""
        return self.response.item_vectors

    # ------------------------------------------------------------- episodes
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a session: (observation, info with ``user`` and ``candidates``)."""
        super().reset(seed=seed)
        if seed is not None or self._user_rng is None:
            self._user_rng = np.random.default_rng(self.np_random.integers(2 ** 63))
        options = options or {}
        if "user" in options:
            user = int(options["user"])
            if not np.isin(user, self.users):
                raise InputError("this user cannot start a session", value=user,
                                 expected=f"one of the {len(self.users)} users with enough history")
        else:
            user = int(self._user_rng.choice(self.users))
        cfg = self.config
        self.user = user
        self.candidates = self.response.model.recommend_indices([user], cfg.n_candidates)[0][0]  # (C,) best first
        self._fresh = self.response.click_probabilities(np.array([user]))[0][self.candidates]  # (C,)
        self.exposure = np.zeros(self.n_items)  # F, per item
        self.history = np.zeros(self.dim)  # h
        self.t = 0
        return self._observation(), {"user": user, "candidates": self.candidates.copy()}

    def _observation(self) -> np.ndarray:
        share = self.t / self.config.session_length
        return np.concatenate([self.response.user_vectors[self.user], self.history, [share]]).astype(np.float32)

    def attractiveness(self) -> np.ndarray:
        """float64[C] current top-slot click probability of each candidate (fatigue included)."""
        return self._fresh * np.exp(-self.config.fatigue * self.exposure[self.candidates])

    def oracle_action(self) -> np.ndarray:
        """int64[k] the myopic oracle's slate: the candidates with the highest current click probability."""
        return np.argsort(-self.attractiveness(), kind="stable")[:self.config.slate_size]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Show the slate at candidate positions ``action`` (int[k]); reward = number of clicks."""
        if self._user_rng is None:
            raise InputError("step() before reset()", expected="call reset() first")
        cfg = self.config
        pos = np.asarray(action).reshape(-1)
        if pos.shape != (cfg.slate_size,) or not np.issubdtype(pos.dtype, np.integer) or \
                pos.min() < 0 or pos.max() >= cfg.n_candidates:
            raise InputError("a slate is slate_size candidate positions", value=np.asarray(action).tolist(),
                             expected=f"int[{cfg.slate_size}] in 0..{cfg.n_candidates - 1}")
        pos = pos.astype(np.int64)
        first = np.zeros(len(pos), dtype=bool)
        first[np.unique(pos, return_index=True)[1]] = True  # later repeats are empty slots
        attract = self.attractiveness()  # (C,)
        probs = self.examination * attract[pos] * first  # (k,)
        best = float(np.sort(attract)[::-1][:cfg.slate_size] @ self.examination)
        clicks = (self.np_random.random(cfg.slate_size) < probs).astype(np.float64)
        shown = self.candidates[pos[first]]  # (s,) distinct items shown
        boredom = 1.0 - float(np.exp(-cfg.fatigue * self.exposure[shown]).mean())
        vecs = self.response.item_vectors
        kernel = np.maximum(vecs @ vecs[shown].T, 0.0) ** cfg.similarity_power  # (n_items, s)
        kernel[shown, np.arange(len(shown))] = 1.0  # an item is fully like itself (zero vectors too)
        self.exposure = cfg.recovery * self.exposure + kernel.sum(axis=1)
        self.history = cfg.recovery * self.history + vecs[shown].mean(axis=0)
        self.t += 1
        left = bool(self.np_random.random() < cfg.leave_base + cfg.leave_boredom * boredom)
        info = {"candidates": self.candidates.copy(), "items": np.where(first, self.candidates[pos], -1),
                "clicks": clicks, "expected": float(probs.sum()), "best_expected": best, "left": left}
        truncated = not left and self.t >= cfg.session_length
        return self._observation(), float(clicks.sum()), left, truncated, info
