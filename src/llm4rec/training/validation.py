"""Validation carved deterministically out of a fit set.

``fit(dataset)`` only sees the fit set, so early stopping needs part of it
held out. :func:`holdout` returns the training part (a :class:`Dataset`) and a
:class:`~llm4rec.data.Stage` whose targets are the held-out interactions;
:func:`holdout_ndcg` measures a scorer on it with the protocols' rules (full
ranking, fit items masked, ties to the smaller index), the same numbers as
``llm4rec.evaluation.evaluate``, which sits above the models and so cannot
serve them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from llm4rec.data import Dataset, Stage
from llm4rec.errors import InputError
from llm4rec.ranking import mask_seen, ndcg, top_hits

__all__ = ["check_valid_stage", "holdout", "holdout_ndcg"]

#: share of items whose interactions are held out by ``how="items"``
ITEM_SHARE = 0.1


def holdout(dataset: Dataset, how: str, seed: int = 2026) -> tuple[Dataset, Stage | None]:
    """Split ``dataset`` into (training part, validation stage).

    how:
        ``"last"``: each user with >= 3 interactions loses the last one
            (chronological order) to the targets; P-LOO's rule, ranking all
            items (stage protocol ``loo``: NDCG@10).
        ``"items"``: ``floor(0.1 * m + 0.5)`` of the m items with interactions,
            drawn with ``np.random.default_rng(seed)``, lose all their
            interactions to the targets; users with a target and a training
            interaction rank those items only (P-COLD's rule, NDCG@20).
        ``"none"``: the whole dataset, no stage.

    The stage is ``None`` when nobody qualifies (e.g. every user has two
    interactions); the training part is then the whole dataset.
    """
    if how == "none":
        return dataset, None
    n = dataset.n_interactions
    if how == "last":
        offsets = dataset.user_offsets
        ends = offsets[1:][np.diff(offsets) >= 3] - 1
        held = np.zeros(n, dtype=bool)
        held[ends] = True
        candidates = None
    elif how == "items":
        present = np.flatnonzero(np.bincount(dataset.item, minlength=dataset.n_items) > 0)
        chosen = np.random.default_rng(seed).permutation(present)[: math.floor(ITEM_SHARE * len(present) + 0.5)]
        candidates = np.sort(chosen).astype(np.int64)
        held = np.isin(dataset.item, candidates)
    else:
        raise InputError("unknown validation hold-out", value=how, expected="'last', 'items' or 'none'")
    train = dataset.subset(~held)
    targets = sp.csr_matrix((np.ones(int(held.sum()), dtype=np.float32), (dataset.user[held], dataset.item[held])),
                            shape=(dataset.n_users, dataset.n_items))
    targets.sort_indices()
    has_train = np.bincount(train.user, minlength=dataset.n_users) > 0
    users = np.flatnonzero((np.diff(targets.indptr) > 0) & has_train).astype(np.int64)
    if len(users) == 0 or train.n_interactions == 0:
        return dataset, None
    return train, Stage("loo" if how == "last" else "cold", "valid", train, targets, users, candidates=candidates)


def check_valid_stage(stage: Stage | None, data: Dataset) -> None:
    """Refuse a validation stage that could leak test targets into training.

    Early stopping may only look at a ``valid`` stage whose fit set is the
    data being fitted: a test stage (its targets are what is reported) or a
    stage built on another fit set is an InputError.
    """
    if stage is None:
        return
    if not isinstance(stage, Stage):
        raise InputError("valid must be a Stage", value=type(stage).__name__, expected="split.stage('valid')")
    if stage.name != "valid":
        raise InputError(f"early stopping on a {stage.name!r} stage would tune on the targets that are reported",
                         value=stage.name, expected="a validation stage: split.stage('valid'), fitting its .fit")
    if stage.fit.fingerprint != data.fingerprint:
        raise InputError("the validation stage was built on another fit set", value=stage.name,
                         expected="a stage whose .fit is the dataset being fitted")


def holdout_ndcg(score: Callable[[np.ndarray, np.ndarray | None], np.ndarray], stage: Stage, k: int,
                 budget: int = 1 << 24) -> float:
    """Mean NDCG@k over ``stage.users`` of ``score(users, candidates) -> float[B, C]``.

    Full ranking over all items (or ``stage.candidates``), the user's fit
    items masked, top-k and NDCG by :mod:`llm4rec.ranking` (the evaluator's
    own functions); users are scored in batches of ``budget // C`` rows.
    Stages with sampled negatives are not supported (a hold-out never has them).
    """
    if stage.negatives is not None:
        raise InputError("validation ranks all items", value=stage.protocol, expected="a full-ranking stage")
    users, cands = stage.users, stage.candidates
    n_cols = stage.fit.n_items if cands is None else len(cands)
    fit, targets = stage.fit.matrix(), stage.targets
    batch = max(1, budget // max(1, n_cols))
    total = 0.0
    for start in range(0, len(users), batch):
        ub = users[start:start + batch]
        scores = mask_seen(np.array(score(ub, cands), dtype=np.float32), fit[ub], cands)  # (B, C) fresh copy
        hits, _ = top_hits(scores, targets[ub], k, cands)
        tgt = targets[ub] if cands is None else targets[ub][:, cands]  # targets among the ranked items
        total += float(ndcg(hits, np.diff(tgt.indptr), k).sum())
    return total / max(1, len(users))
