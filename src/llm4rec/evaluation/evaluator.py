"""Batched, memory-bounded evaluation of a fitted recommender on a protocol stage."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm4rec.data.splits import PROTOCOLS, Stage
from llm4rec.errors import Llm4recError
from llm4rec.evaluation.beyond import (
    auc,
    catalogue_coverage,
    intra_list_diversity,
    novelty,
)
from llm4rec.ranking import mask_seen, parse_metric, rank_of, ranking_metric, top_hits

__all__ = ["EvalResult", "evaluate"]

#: score-matrix elements held at once (float32: 4 bytes each)
DEFAULT_BUDGET = 1 << 24


@dataclass
class EvalResult:
    """Mean metrics plus per-user values (for significance tests).

    ``per_user[name]`` is float64[n_users_evaluated], aligned with ``users``.
    """

    protocol: str
    stage: str
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    users: np.ndarray = field(repr=False)
    sampled: bool = False
    eval_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def title(self) -> str:
        t = PROTOCOLS[self.protocol]["title"]
        return t + (" (sampled ranking: 1 target + 100 negatives)" if self.sampled else " (full ranking)")

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.title, "stage": self.stage, "metrics": self.metrics, "extra": self.extra,
                "n_users_evaluated": self.n_users, "eval_seconds": self.eval_seconds}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def evaluate(model: Any, stage: Stage, *, metrics: tuple[str, ...] | None = None,
             beyond_accuracy: bool = True, budget: int = DEFAULT_BUDGET,
             progress: Any = None) -> EvalResult:
    """Evaluate a fitted model on a stage of a protocol split.

    Users are scored in batches of ``budget // n_candidates`` rows: one
    ``model.score_indices`` call (dense user and item indices: the fast path;
    any object with that method works) and one top-k per batch, never the whole score
    matrix. Fit-set items are masked. Full ranking over all items (or the
    P-COLD candidates); P-LOO-100 ranks the target among its sampled negatives
    and says so in the result's title.

    ``metrics`` may include ``"AUC"`` (per-user ROC AUC over all unmasked
    candidates; costs a rank of every score row). ``beyond_accuracy`` adds
    catalogue coverage, novelty and intra-list diversity of the top-K lists to
    ``extra``. ``progress`` is an optional callable
    ``progress(n_done_users)``.
    """
    t0 = time.perf_counter()
    metrics = tuple(metrics or stage.metrics)
    want_auc = "AUC" in metrics
    metrics = tuple(m for m in metrics if m != "AUC")
    k_max = max([parse_metric(m)[1] for m in metrics] or [1])
    users = stage.users
    cands = None if stage.negatives is not None else stage.candidates  # negatives are item indices
    n_cols = stage.fit.n_items if cands is None else len(cands)
    batch = max(1, min(len(users), budget // max(1, n_cols)))
    fit_matrix = stage.fit.matrix()
    hits_all = np.zeros((len(users), k_max), dtype=bool)
    n_targets = np.diff(stage.targets.indptr)[users]
    lists = np.full((len(users), k_max), -1, dtype=np.int64)
    auc_all = np.full(len(users), np.nan)
    for start in range(0, len(users), batch):
        ub = users[start:start + batch]
        scores = np.array(model.score_indices(ub, cands), dtype=np.float32)  # (B, C) fresh copy
        if scores.shape != (len(ub), n_cols):
            raise Llm4recError(f"model {getattr(model, 'name', model)!r} returned scores of shape "
                               f"{scores.shape}, expected {(len(ub), n_cols)}")
        if np.isnan(scores).any():
            raise Llm4recError(f"model {getattr(model, 'name', model)!r} produced NaN scores")
        rows = slice(start, start + len(ub))
        if stage.negatives is not None:
            hits_all[rows] = _sampled_hits(scores, stage, ub, start, k_max)
        else:
            if want_auc:
                seen = fit_matrix[ub] if cands is None else fit_matrix[ub][:, cands]
                tgt = stage.targets[ub] if cands is None else stage.targets[ub][:, cands]
                auc_all[rows] = auc(scores, tgt.toarray() > 0, seen.toarray() > 0)
            mask_seen(scores, fit_matrix[ub], cands)
            hits_all[rows], lists[rows] = top_hits(scores, stage.targets[ub], k_max, cands)
        if progress is not None:
            progress(len(ub))
    per_user = {m: ranking_metric(m, hits_all, n_targets) for m in metrics}
    if want_auc:
        per_user["AUC"] = auc_all
    extra: dict[str, float] = {}
    if beyond_accuracy and stage.negatives is None and len(users):
        extra = _beyond_accuracy(lists, stage)
    return EvalResult(
        protocol=stage.protocol, stage=stage.name,
        metrics={m: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for m, v in per_user.items()},
        per_user=per_user, users=users, sampled=stage.negatives is not None,
        eval_seconds=time.perf_counter() - t0, extra=extra,
    )


def _sampled_hits(scores: np.ndarray, stage: Stage, ub: np.ndarray, start: int, k: int) -> np.ndarray:
    """P-LOO-100: rank the target among its negatives with the tie rule."""
    neg = stage.negatives[start:start + len(ub)]  # (B, 100), -1 padded
    target = stage.targets.indices[stage.targets.indptr[ub]]  # one target per user
    cols = np.concatenate([target[:, None], neg], axis=1)  # (B, 101)
    sub = np.take_along_axis(scores, np.maximum(cols, 0), 1)
    sub[:, 1:][neg < 0] = -np.inf
    # rank_of works on column positions; reproduce "index(neg) < index(t)" by ordering on item index
    order = np.argsort(cols, axis=1, kind="stable")
    sub_sorted = np.take_along_axis(sub, order, 1)
    target_pos = np.argmax(order == 0, axis=1)
    r = rank_of(sub_sorted, target_pos)
    return np.arange(k)[None, :] == r[:, None]


def _beyond_accuracy(lists: np.ndarray, stage: Stage) -> dict[str, float]:
    """Catalogue coverage, novelty and intra-list diversity of the top-K lists.

    Diversity uses each item's fit-set interaction vector (over users), so two
    items are similar when the same users consumed them.
    """
    k = lists.shape[1]
    fit = stage.fit
    n_cands = fit.n_items if stage.candidates is None else len(stage.candidates)
    covered = catalogue_coverage(lists, fit.n_items) * fit.n_items / max(1, n_cands)
    pop = np.diff(fit.matrix().tocsc().indptr)  # users per item
    return {
        f"Coverage@{k}": float(covered),
        f"Novelty@{k}": float(np.nanmean(novelty(lists, pop, fit.n_users))),
        f"ILD@{k}": float(np.nanmean(intra_list_diversity(lists, fit.matrix().T.tocsr()))),
    }
