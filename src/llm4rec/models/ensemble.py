"""Ensemble: fuse the scores of several recommenders, weights tuned on held-out fit data."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from llm4rec.errors import InputError
from llm4rec.models.base import (
    FIT_STATE,
    TEXT_MODELS,
    ModelConfig,
    Recommender,
    share_fit_state,
)
from llm4rec.models.history import Histories

__all__ = ["Ensemble", "EnsembleConfig"]

#: what :meth:`Recommender.fit` keeps of the fit set (besides ``provenance_``), shared by a model's members
class EnsembleConfig(ModelConfig):
    models: list[str] = Field(["ease", "semantic-knn"], min_length=1,
                              description="member model names (comma-separated on the command line)")
    settings: dict[str, dict[str, Any]] = Field({}, description="per-member settings, e.g. {'ease': {'l2': 400}} "
                                                                "(JSON on the command line)")
    method: str = Field("score", pattern="^(score|rrf)$",
                        description="'score': weighted sum of per-user z-scored scores; 'rrf': reciprocal-rank fusion")
    weights: list[float] | None = Field(None, description="member weights; None = tuned on held-out fit data")
    tune_on: Literal["auto", "last", "items"] = Field(
        "auto", description="what the weights are tuned on: each user's last fit interaction held out ('last', "
                            "NDCG@10 over all items), 10% of the items held out as pseudo-cold items ranked "
                            "among themselves ('items', NDCG@20), or 'auto': 'items' on a P-COLD fit set, "
                            "'last' otherwise")
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
    """score(h, i) = sum_m w_m * normalise(score_m(h, .))[i] for a history h.

    ``normalise`` is a per-row z-score over all items (``method="score"``)
    or ``1 / (rrf_k + rank)`` (``method="rrf"``); each member scores the
    history its own way (a known user through the member's fast path).
    Without ``weights``, the fit set is split once more
    (:func:`llm4rec.training.holdout`: ``tune_on``), the members are fitted on
    the rest, the weight grid (the simplex in ``grid_step`` steps) is searched
    on the hold-out's NDCG (at its cutoff) over a seeded sample of
    ``tune_users`` users, and the members are refitted on the whole fit set.
    Under P-COLD (``tune_on="auto"``) the hold-out is pseudo-cold items, as
    PROTOCOLS.md prescribes for validation, so a member that cannot rank cold
    items gets no weight for being good at warm ones.

    Learned attributes: ``members_`` (fitted members), ``weights_``
    float32[n_members], and after tuning ``tuned_on_`` and ``tuned_ndcg_``.
    """

    name = "ensemble"
    Config = EnsembleConfig
    config: EnsembleConfig

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

    # ------------------------------------------------------------------ fit
    def _fit(self, data) -> None:
        cfg = self.config
        if cfg.weights is not None and len(cfg.weights) != len(cfg.models):
            raise InputError("one weight per member model", value=cfg.weights, expected=f"{len(cfg.models)} weights")
        self.weights_ = np.asarray(cfg.weights, dtype=np.float32) if cfg.weights is not None \
            else self._tune(data)
        self.members_ = [m.fit(data) for m in self._members()]
        for m in self.members_:
            for key, value in m.provenance_.items():  # e.g. a text member's encoder fingerprint
                self.provenance_.setdefault(key, value)
            share_fit_state(m, self)  # one copy of the fit-set state, as after load

    def _tune(self, data) -> np.ndarray:
        """float32[n_members]: the grid weights with the best hold-out NDCG (the first of equals)."""
        from llm4rec.training import holdout

        cfg = self.config
        how = cfg.tune_on
        if how == "auto":
            how = "items" if (data.provenance or {}).get("protocol") == "cold" else "last"
        train, stage = holdout(data, how, seed=cfg.seed)
        if stage is None:
            raise InputError(f"no user qualifies for the tuning hold-out (tune_on={how})",
                             expected="users with 3+ fit interactions ('last') or with interactions beside "
                                      "the held-out items ('items')", hint="Give the weights instead: weights=0.5,0.5")
        if len(stage.users) > cfg.tune_users:
            users = np.random.default_rng(cfg.seed).choice(stage.users, cfg.tune_users, replace=False)
            stage = dataclasses.replace(stage, users=np.sort(users))
        members = [m.fit(train) for m in self._members()]
        steps = int(round(1 / cfg.grid_step))
        grid = [np.asarray(c, dtype=np.float32) / steps
                for c in itertools.product(range(steps + 1), repeat=len(members)) if sum(c) == steps]
        totals = np.zeros(len(grid))
        for part in _chunks(stage, len(members)):
            parts = np.stack([_normalise(m._score_users(part.users, None), cfg) for m in members])  # (M, b, I)
            for g, w in enumerate(grid):
                totals[g] += _holdout_ndcg(parts, w, part) * len(part.users)
        best = int(np.argmax(totals))  # the first of equals: grid order puts weight on the last members first
        self.tuned_on_ = how
        self.tuned_ndcg_ = float(totals[best] / len(stage.users))
        return grid[best]

    # -------------------------------------------------------------- scoring
    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or len(items)]; members are normalised over all items, so a subset keeps its
        scores."""
        fused = _fuse([m._score_histories(histories, None) for m in self.members_], self.weights_, self.config)
        return fused if items is None else fused[:, items]

    def _score_users(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        fused = _fuse([m._score_users(users, None) for m in self.members_], self.weights_, self.config)
        return fused if items is None else fused[:, items]

    def _explain(self, histories: Histories, item: int, top: int) -> dict[str, Any]:
        """The explanation of the member that adds most to this item's fused score (``"member"``), with
        each member's share (``"member_shares"``); ``"score"`` is the fused score, ``"member_score"`` the
        lead member's own."""
        parts = [w * _normalise(m._score_histories(histories, None), self.config)[0, item]
                 for m, w in zip(self.members_, self.weights_)]
        lead = self.members_[int(np.argmax(parts))]
        out = lead._explain(histories, item, top)
        out["member"] = lead.name
        out["member_score"] = out["score"]
        out["score"] = float(self._finish(np.asarray([[sum(parts)]], dtype=np.float32), histories.lengths,
                                          np.array([item]))[0, 0])
        out["member_shares"] = {m.name: round(float(p), 6) for m, p in zip(self.members_, parts)}
        return out

    # ------------------------------------------------------------ new items
    def add_items(self, table: Any) -> Ensemble:
        """New items (or new text for known ones) through every member; only when every member reads item
        text. The members grow on copies, so a member that refuses the table leaves the ensemble as it was."""
        self._check_fitted()
        cannot = [m.name for m in self.members_ if type(m).add_items is Recommender.add_items]
        if cannot:
            raise InputError(f"member {cannot[0]!r} knows items only through their interactions, so the ensemble "
                             "cannot rank new items without retraining", value=cannot,
                             expected="members that all read item text: " + ", ".join(TEXT_MODELS))
        grown = []
        for m in self.members_:
            twin = copy.copy(m)
            twin.provenance_ = dict(m.provenance_)
            grown.append(twin.add_items(table))
        lead = grown[0]  # every member grew the fit-set state alike, as the ensemble's own would
        for name in FIT_STATE:
            setattr(self, name, getattr(lead, name))
        self.provenance_["items_added"] = lead.provenance_["items_added"]
        self.members_ = grown
        return self

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"weights": self.weights_}
        for j, m in enumerate(self.members_):
            arrays.update({f"m{j}_{k}": v for k, v in m._state().items()})
        return arrays

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        weights = arrays["weights"]
        members = self._members()
        if len(weights) != len(members):
            raise ValueError(f"{len(weights)} weights for {len(members)} members")
        for j, m in enumerate(members):
            prefix = f"m{j}_"
            share_fit_state(m, self)
            m._set_state({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        self.weights_, self.members_ = weights, members


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


def _fuse(scores: list[np.ndarray], weights: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """float32[b, n_items]: the weighted sum of the members' normalised scores (each float32[b, n_items])."""
    out = None
    for s, w in zip(scores, weights):
        part = w * _normalise(s, cfg)
        out = part if out is None else out + part
    return out


def _chunks(stage: Any, n_members: int, budget: int = 1 << 24) -> list[Any]:
    """The stage cut into stages of consecutive users whose member scores (M, b, n_items) fit ``budget``."""
    per = max(1, budget // max(1, n_members * stage.fit.n_items))
    return [dataclasses.replace(stage, users=stage.users[s:s + per]) for s in range(0, len(stage.users), per)]


def _holdout_ndcg(parts: np.ndarray, weights: np.ndarray, stage: Any) -> float:
    """NDCG at the stage's cutoff of the fusion ``sum_m weights[m] * parts[m]`` (parts: float32[M, b, I],
    rows = ``stage.users``), by :func:`llm4rec.training.validation.holdout_ndcg`."""
    from llm4rec.training.validation import holdout_ndcg

    fused = np.tensordot(weights, parts, axes=1)  # (b, I)

    def score(users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        rows = fused[np.searchsorted(stage.users, users)]
        return rows if items is None else rows[:, items]

    return holdout_ndcg(score, stage, stage.k)
