"""Ensemble: fuse the scores of several recommenders, weights tuned on held-out fit data."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender

__all__ = ["Ensemble", "EnsembleConfig"]


class EnsembleConfig(ModelConfig):
    models: list[str] = Field(["ease", "semantic-knn"], min_length=1,
                              description="member model names (comma-separated on the command line)")
    settings: dict[str, dict[str, Any]] = Field({}, description="per-member settings, e.g. {'ease': {'l2': 400}} "
                                                                "(JSON on the command line)")
    method: str = Field("score", pattern="^(score|rrf)$",
                        description="'score': weighted sum of per-user z-scored scores; 'rrf': reciprocal-rank fusion")
    weights: list[float] | None = Field(None, description="member weights; None = tuned on held-out fit data")
    rrf_k: float = Field(60.0, gt=0)
    grid_step: float = Field(0.1, gt=0, le=1, description="weight grid step when tuning")
    tune_users: int = Field(3000, ge=1, description="held-out users used for tuning (a seeded sample)")
    seed: int = 2026

    @field_validator("models", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("settings", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("weights", mode="before")
    @classmethod
    def _split_weights(cls, value: Any) -> Any:
        return [float(v) for v in value.split(",")] if isinstance(value, str) else value


class Ensemble(Recommender):
    """score(u, i) = sum_m w_m * normalise(score_m(u, .))[i].

    ``normalise`` is a per-user z-score over all items (``method="score"``)
    or ``1 / (rrf_k + rank)`` (``method="rrf"``). Without ``weights``, the fit
    set is split once more (each user's last fit interaction held out, P-LOO
    style), the members are fitted on the rest, the weight grid (the simplex
    in ``grid_step`` steps) is searched on NDCG@10 of a seeded sample of
    ``tune_users`` users, and the members are refitted on the whole fit set.
    """

    name = "ensemble"
    Config = EnsembleConfig

    def _members(self) -> list[Recommender]:
        from llm4rec.models.registry import create_model

        cfg = self.config
        unknown = set(cfg.settings) - set(cfg.models)
        if unknown:
            raise InputError("settings given for a model that is not a member", value=sorted(unknown),
                             expected=f"keys among {cfg.models}")
        if "ensemble" in cfg.models:
            raise InputError("an ensemble cannot contain an ensemble", value=cfg.models)
        members = [create_model(m, cfg.settings.get(m, {})) for m in cfg.models]
        partial = [m.name for m in members if m.partial_scores]
        if partial and cfg.method == "score":
            raise InputError("these members score only the items they generate, so their scores cannot be "
                             "z-scored", value=partial, expected="method=rrf (fusion by ranks)")
        return members

    def _fit(self, data) -> None:
        cfg = self.config
        if cfg.weights is not None and len(cfg.weights) != len(cfg.models):
            raise InputError("one weight per member model", value=cfg.weights, expected=f"{len(cfg.models)} weights")
        self.weights_ = np.asarray(cfg.weights, dtype=np.float32) if cfg.weights is not None \
            else self._tune(data)
        self.members_ = [m.fit(data) for m in self._members()]

    def _tune(self, data) -> np.ndarray:
        from llm4rec.data.splits import make_split
        from llm4rec.training.validation import holdout_ndcg

        holdout = make_split(data, "loo", seed=self.config.seed).stage("test")
        rng = np.random.default_rng(self.config.seed)
        users = holdout.users
        if len(users) > self.config.tune_users:
            users = np.sort(rng.choice(users, self.config.tune_users, replace=False))
        stage = type(holdout)(holdout.protocol, "valid", holdout.fit, holdout.targets, users)
        members = [m.fit(holdout.fit) for m in self._members()]
        steps = int(round(1 / self.config.grid_step))
        best, best_value = None, -1.0
        for combo in itertools.product(range(steps + 1), repeat=len(members)):
            if sum(combo) != steps:
                continue
            w = np.asarray(combo, dtype=np.float32) / steps
            fused = _Fused(members, w, self.config)
            value = holdout_ndcg(fused.score, stage, 10)
            if value > best_value:
                best, best_value = w, value
        self.tuned_ndcg_ = best_value
        return best

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return _fuse(self.members_, self.weights_, self.config, users)

    def explain(self, user: int, item: int, top: int = 3) -> dict:
        """The explanation of the member that adds most to this item's fused score."""
        self._check_fitted()
        parts = [w * _normalise(m.score([user]), self.config)[0, item] for m, w in zip(self.members_, self.weights_)]
        lead = self.members_[int(np.argmax(parts))]
        if not hasattr(lead, "explain"):
            raise InputError(f"member {lead.name!r} has no explanations", expected="a member with explain()")
        out = lead.explain(user, item, top=top)
        out["member"] = lead.name
        out["member_shares"] = {m.name: round(float(p), 6) for m, p in zip(self.members_, parts)}
        return out

    def _state(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"weights": self.weights_}
        for j, m in enumerate(self.members_):
            arrays[f"m{j}_history_indptr"] = m.history_.indptr
            arrays[f"m{j}_history_indices"] = m.history_.indices
            arrays[f"m{j}_history_data"] = m.history_.data
            arrays.update({f"m{j}_{k}": v for k, v in m._state().items()})
        return arrays

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        import scipy.sparse as sp

        self.weights_ = arrays["weights"]
        self.members_ = self._members()
        for j, m in enumerate(self.members_):
            prefix = f"m{j}_"
            m.n_users_, m.n_items_, m.item_labels_ = self.n_users_, self.n_items_, self.item_labels_
            m.history_ = sp.csr_matrix((arrays[prefix + "history_data"], arrays[prefix + "history_indices"],
                                        arrays[prefix + "history_indptr"]), shape=(self.n_users_, self.n_items_))
            m._set_state({k[len(prefix):]: v for k, v in arrays.items()
                          if k.startswith(prefix) and not k.startswith(prefix + "history_")})


def _normalise(scores: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """Per-row z-score (``score``) or reciprocal rank ``1 / (rrf_k + rank)`` (``rrf``): float32[b, n]."""
    if cfg.method == "rrf":
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
        return (1.0 / (cfg.rrf_k + ranks + 1.0)).astype(np.float32)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return ((scores - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _fuse(members: list[Recommender], weights: np.ndarray, cfg: EnsembleConfig, users: np.ndarray) -> np.ndarray:
    """float32[b, n_items]; members are normalised over all items, so a subset keeps its scores."""
    out = None
    for m, w in zip(members, weights):
        part = w * _normalise(m.score(users), cfg)
        out = part if out is None else out + part
    return out


class _Fused:
    """A scorer over already-fitted members with given weights (used while tuning)."""

    def __init__(self, members: list[Recommender], weights: np.ndarray, cfg: EnsembleConfig) -> None:
        self.members, self.weights, self.cfg = members, weights, cfg

    def score(self, users, items=None):
        scores = _fuse(self.members, self.weights, self.cfg, np.asarray(users))
        return scores if items is None else scores[:, items]
