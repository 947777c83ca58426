"""Evaluate a saved model as it is (no refit), and refuse a stage whose targets it may have seen.

A bundle knows what it was fitted on (``provenance_``: dataset and split
fingerprints, protocol, stage, seed) and holds its fit interactions by
external id. :func:`check_leakage` compares that with a stage:

* same dataset, fitted on the whole of it: every target was seen;
* same dataset under another protocol, split or seed: that split's fit set
  holds this split's targets;
* any (user, item) pair both in the model's fit set and among the stage's
  targets, whatever the dataset.

:func:`evaluate_saved` then scores every evaluated user from their history in
the stage's fit set (by external id, so the model need not have seen the
user); items of the data the model does not know are added through their text
(``add_items``) for text models, and refused for the others.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.data import Dataset, Split, Stage, make_split
from llm4rec.errors import InputError
from llm4rec.evaluation.evaluator import evaluate
from llm4rec.evaluation.experiment import Experiment, data_report, rerun_fields
from llm4rec.models import TEXT_MODELS, Histories, Recommender

__all__ = ["check_leakage", "evaluate_saved"]


def _describe(prov: dict) -> str:
    if prov.get("protocol") is None:
        return f"the whole dataset {prov.get('dataset')!r}"
    return (f"the {prov.get('stage')} stage of {prov.get('protocol')} with seed {prov.get('seed')} "
            f"(split {prov.get('split_fingerprint')})")


def check_leakage(model: Recommender, split: Split, stage: Stage, *, path: str | Path | None = None) -> None:
    """InputError, with an explanation, when ``model`` may have seen ``stage``'s targets (see the module)."""
    prov = model.provenance_
    where = f"this model was fitted on {_describe(prov)}"
    if prov.get("dataset_fingerprint") == split.dataset.fingerprint:
        if prov.get("protocol") is None:
            raise InputError(f"{where}, so it has seen every target of this evaluation", path=path,
                             expected="a model fitted on a protocol stage's fit set (llm4rec evaluate "
                                      "--save-model saves one)")
        same = (prov.get("protocol"), prov.get("seed"), prov.get("split_fingerprint")) == \
            (split.protocol, split.seed, split.fingerprint)
        if not same:
            raise InputError(f"{where}; evaluating it under {split.protocol} with seed {split.seed} would score "
                             "targets that another split gave it to learn", path=path,
                             expected=f"--protocol {prov.get('protocol')} --seed {prov.get('seed')}, or a model "
                                      "fitted under this protocol and seed")
    seen = _pair_keys(model.users_.tokens, model.items_.tokens, model.fit_offsets_, model.fit_items_)
    t_users, t_items = stage.targets.nonzero()
    targets = _keys(split.dataset.users.tokens[t_users], split.dataset.items.tokens[t_items])
    overlap = np.isin(targets, seen)
    if overlap.any():
        k = int(np.argmax(overlap))
        raise InputError(f"{where}; {int(overlap.sum())} of this {stage.name} stage's {len(targets)} targets are "
                         f"among its fit interactions (e.g. user {split.dataset.users.tokens[t_users[k]]!r}, item "
                         f"{split.dataset.items.tokens[t_items[k]]!r})", path=path,
                         expected="a stage whose targets the model never saw (for a model saved from the valid "
                                  "stage: --stage test; from the test stage: nothing of this split)")


def _keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One string key per (user id, item id) pair."""
    return np.char.add(np.char.add(users.astype(str), "\x1f"), items.astype(str))


def _pair_keys(users: np.ndarray, items: np.ndarray, offsets: np.ndarray, fit_items: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return _keys(users[rows], items[fit_items])


class _FromHistories:
    """A dense scorer over a dataset's indices that asks a saved model about each user's fit-set history."""

    def __init__(self, model: Recommender, data: Dataset, fit: Dataset) -> None:
        self.model, self.fit = model, fit
        self.item_map = model.items_.index(list(data.items.tokens))  # dataset index -> model index
        self.user_map = model.users_.index(list(data.users.tokens), unknown="missing")  # -1: new to the model

    def score_indices(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        offsets = self.fit.user_offsets
        h = Histories.from_sequences(offsets, self.item_map[self.fit.item], users, self.model.n_items_)
        h = Histories(h.items, h.offsets, self.user_map[users], h.n_items)
        cols = self.item_map if items is None else self.item_map[np.asarray(items, dtype=np.int64)]
        return self.model._finish(self.model._score_histories(h, cols), h.lengths, cols)


def evaluate_saved(model_path: str | Path, dataset: Dataset, *, protocol: str = "loo", seed: int = 2026,
                   stage: str = "test", progress: Any = None, data_path: str | None = None,
                   metrics: tuple[str, ...] | None = None) -> Experiment:
    """Evaluate the bundle at ``model_path`` as it is on a stage of ``dataset`` (see the module docstring).

    ``progress(step, done, total)`` as in
    :func:`~llm4rec.evaluation.experiment.run_experiment`. The record is
    run_experiment's, with ``fit_seconds`` 0, plus ``model_path``,
    ``evaluated_as`` and ``model_provenance``. ``metrics``: the stage's own when None.
    """
    from llm4rec._runinfo import PeakMemory

    start = time.perf_counter()
    with PeakMemory() as peak:
        model, split, st, result, added = _evaluate_bundle(model_path, dataset, protocol, seed, stage, progress,
                                                           metrics)
    record = {
        "dataset": dataset.name, "protocol": result.title.split(" ")[0], "seed": seed,
        "split_fingerprint": split.fingerprint, "model": model.name,
        "config": model.config.model_dump(mode="json"), "metrics": result.metrics, "fit_seconds": 0.0,
        "eval_seconds": round(result.eval_seconds, 4), "n_users_evaluated": result.n_users, "stage": stage,
        "ranking": "sampled (1 target + 100 negatives)" if result.sampled else "full",
        "extra_metrics": result.extra, "model_path": str(model_path),
        "evaluated_as": "saved model, no refit" + (f"; {added} items added through their text" if added else ""),
        "model_provenance": dict(model.provenance_), "data_report": data_report(dataset, st),
        **rerun_fields(dataset, model, data_path=data_path, start=start, peak=peak),
    }
    return Experiment(record, result, model, split)


def _evaluate_bundle(model_path, dataset, protocol, seed, stage, progress, metrics):
    """(model, split, stage, EvalResult, number of items added) of :func:`evaluate_saved`."""
    model = Recommender.load(model_path)
    split = make_split(dataset, protocol, seed=seed)
    st = split.stage(stage)
    check_leakage(model, split, st, path=model_path)
    unknown = np.flatnonzero(model.items_.index(list(dataset.items.tokens), unknown="missing") < 0)
    added = 0
    if len(unknown):
        if not _adds_items(model):
            raise InputError(f"{len(unknown)} of the data's {dataset.n_items} items are unknown to this "
                             f"{model.name!r} model, which knows items only through their interactions",
                             path=model_path, value=dataset.items.token(int(unknown[0])),
                             expected="data over the model's own items, or a text model (" + ", ".join(TEXT_MODELS)
                                      + ") that adds new items through their text")
        model.add_items(dataset.item_table(unknown))
        added = len(unknown)
    same_fit = model.provenance_.get("fit_fingerprint") == st.fit.fingerprint and not added and \
        list(model.items_.tokens) == list(dataset.items.tokens)
    scorer = model if same_fit else _FromHistories(model, dataset, st.fit)
    report = progress or (lambda step, done, total: None)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        report("evaluate", done[0], len(st.users))

    return model, split, st, evaluate(scorer, st, metrics=metrics, progress=advance), added


def _adds_items(model: Recommender) -> bool:
    """Whether the model overrides add_items (an ensemble of text models does)."""
    return type(model).add_items is not Recommender.add_items
