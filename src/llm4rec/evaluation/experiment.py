"""One experiment: split a dataset by a protocol, fit a model, evaluate it, make a record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llm4rec.data import Dataset, Split, Stage, make_split
from llm4rec.evaluation.evaluator import EvalResult, evaluate
from llm4rec.models import Recommender, create_model, model_class

__all__ = ["Experiment", "data_report", "rerun_fields", "run_experiment"]


@dataclass
class Experiment:
    """The outcome of :func:`run_experiment`; ``record`` is the stable JSON contract."""

    record: dict[str, Any]
    result: EvalResult
    model: Recommender
    split: Split


def data_report(dataset: Dataset, stage: Stage) -> dict[str, int]:
    """What loading dropped and whom ``stage`` leaves out of the evaluation.

    ``rows`` read, ``duplicates_dropped`` (repeated (user, item) pairs; the
    latest is kept), ``items_without_interactions`` (catalogue items that no
    protocol ranks), ``users``, ``users_evaluated`` and ``users_left_out``
    (too few interactions for the protocol, e.g. fewer than 3 under P-LOO).
    """
    loaded = dataset.load_report
    return {
        "rows": int(loaded.get("rows", dataset.n_interactions)),
        "duplicates_dropped": int(loaded.get("duplicates_dropped", 0)),
        "items_without_interactions": int(loaded.get("items_without_interactions",
                                                     dataset.n_items - len(dataset.interacted_items))),
        "users": dataset.n_users,
        "users_evaluated": len(stage.users),
        "users_left_out": dataset.n_users - len(stage.users),
    }


def run_experiment(dataset: Dataset, model: str, *, protocol: str = "loo", seed: int = 2026,
                   settings: dict[str, Any] | None = None, stage: str = "test",
                   split: Split | None = None, progress: Any = None, callbacks: list | None = None,
                   data_path: str | None = None, fit: Any = None) -> Experiment:
    """Fit ``model`` on the stage's fit set and evaluate it on the stage's targets.

    ``seed`` drives the protocol's random draws and, unless ``settings`` says
    otherwise, the model's own ``seed``. Pass ``split`` to reuse one.
    ``progress(step, done, total)`` is called with step "fit" and "evaluate";
    ``callbacks`` (:class:`~llm4rec.training.Callback`) go to the model's fit
    (neural models report their epochs to them; the others train at once).
    ``fit(model, fit_set, callbacks)`` replaces ``model.fit(fit_set, callbacks=callbacks)`` (e.g. a
    data-parallel fit on Ray, :func:`llm4rec.distributed.train.fit_distributed`).
    The record holds: dataset, protocol, seed, split_fingerprint, model,
    config, metrics, fit_seconds, eval_seconds, n_users_evaluated (plus stage,
    ranking, extra_metrics and data_report, see :func:`data_report`), and what a rerun needs: ``data`` (the
    path given as ``data_path``, the dataset and item-text fingerprints), ``encoder_fingerprint`` (text
    models), ``environment`` (versions, git commit, threads, device; :func:`llm4rec._runinfo.environment`),
    ``wall_seconds`` (split, fit and evaluation) and ``peak_memory_mib`` (this run's peak resident memory).
    """
    from llm4rec._runinfo import PeakMemory

    start = time.perf_counter()
    settings = dict(settings or {})
    klass = model_class(model)
    if "seed" in klass.Config.model_fields and "seed" not in settings:
        settings["seed"] = seed
    recommender = create_model(model, settings)  # validates settings before any work
    with PeakMemory() as peak:
        split = split or make_split(dataset, protocol, seed=seed)
        st = split.stage(stage)
        report = progress or (lambda step, done, total: None)
        report("fit", 0, 1)
        t0 = time.perf_counter()
        if fit is None:
            recommender.fit(st.fit, callbacks=callbacks)
        else:
            fit(recommender, st.fit, callbacks)
        fit_seconds = time.perf_counter() - t0
        report("fit", 1, 1)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            report("evaluate", done[0], len(st.users))

        result = evaluate(recommender, st, progress=advance)
    record = {
        "dataset": dataset.name,
        "protocol": result.title.split(" ")[0],
        "seed": seed,
        "split_fingerprint": split.fingerprint,
        "model": recommender.name,
        "config": recommender.config.model_dump(mode="json"),
        "metrics": result.metrics,
        "fit_seconds": round(fit_seconds, 4),
        "eval_seconds": round(result.eval_seconds, 4),
        "n_users_evaluated": result.n_users,
        "stage": stage,
        "ranking": "sampled (1 target + 100 negatives)" if result.sampled else "full",
        "extra_metrics": result.extra,
        "data_report": data_report(dataset, st),
        **rerun_fields(dataset, recommender, data_path=data_path, start=start, peak=peak),
    }
    # saved with the model (bundle.json's provenance), so a registry can show how each version scored offline
    recommender.provenance_["offline_metrics"] = {
        key: record[key] for key in ("dataset", "protocol", "stage", "seed", "split_fingerprint", "ranking",
                                     "n_users_evaluated")} | {"metrics": {**result.metrics, **result.extra}}
    return Experiment(record, result, recommender, split)


def rerun_fields(dataset: Dataset, model: Recommender, *, data_path: str | None, start: float,
                 peak: Any) -> dict[str, Any]:
    """The record's fields for a rerun: ``data``, ``encoder_fingerprint``, ``environment``, ``wall_seconds``
    (since ``start``, a ``perf_counter`` value) and ``peak_memory_mib`` (a closed
    :class:`llm4rec._runinfo.PeakMemory`)."""
    from llm4rec._runinfo import environment

    return {"data": {"path": data_path, "fingerprint": dataset.fingerprint,
                     "item_text_fingerprint": dataset.item_text_fingerprint},
            "encoder_fingerprint": model.provenance_.get("encoder_fingerprint"),
            "environment": environment(_device(model.config)),
            "wall_seconds": round(time.perf_counter() - start, 4), "peak_memory_mib": peak.mib}


def _device(config: Any) -> str:
    """Where a model computes: its ``device`` setting resolved (neural models), else the CPU."""
    device = getattr(config, "device", None)
    if device is None:
        return "cpu"
    from llm4rec.training import resolve_device

    return resolve_device(device)
