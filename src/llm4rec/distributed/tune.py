"""Hyperparameter search on a Ray cluster: ``llm4rec tune --ray``, the same study and outputs as ``tune``.

:func:`tune_ray` is :func:`llm4rec.experiments.tune.tune` with its trials run
concurrently by Ray Tune, one CPU each, at most ``concurrency`` at a time. The
search is the one of the single-process path, reused piece by piece:

- the same checks, plan and study (:func:`~llm4rec.experiments.tune.plan_search`,
  :func:`~llm4rec.experiments.tune.start_study`): ``study_dir/study.db`` is
  opened or resumed, trials left running by a dead driver are marked failed,
  a grid's points (and the points of interrupted TPE trials) are queued;
- the search algorithm is Ray's ``OptunaSearch`` **on that very study**: it is
  given the study's storage and name, so every trial is asked and told in
  ``study.db`` by the driver, as it happens (nothing is copied at the end;
  an interrupted run leaves a resumable study). TPE is seeded as in the
  single-process path, with ``constant_liar`` so that concurrent trials do not
  crowd one point; it is wrapped in a ``ConcurrencyLimiter``;
- a trial is :func:`~llm4rec.experiments.tune.valid_metrics`, the same fit on
  the valid stage, on a worker; it reports each epoch's validation value
  (``ray.tune.report``) and finally its metrics, node id and pid;
- pruning keeps **Optuna's pruner** (by default the same ``MedianPruner``): a
  small Ray scheduler, run by the driver on each reported epoch, records the
  value in the trial (``trial.report``) and asks the study's pruner
  (``trial.should_prune()``); when it says so, Ray stops the trial and it is
  told PRUNED, its last epoch its ``pruned_at_epoch``. A Ray scheduler such
  as ASHA or MedianStoppingRule would judge by different rules, and would
  leave a study whose pruned trials Optuna's pruner had never seen;
- the end is :func:`~llm4rec.experiments.tune.finish`: the best completed
  trial, fitted once on the test stage on the driver, the same
  :class:`~llm4rec.experiments.tune.TuneResult`; ``write_outputs`` writes the
  same files.

Each trial's Optuna user attributes are those of the single-process path
(``metrics``, or ``error`` for a trial that failed with an llm4rec error) plus
``node_id`` and ``pid``: where it ran. A trial's ``seconds`` (its Optuna
duration) runs from its ask to its tell on the driver, so it includes the wait
for a worker and, for a worker's first trial, the worker's start-up.

Trials finish in any order: their numbers are the order they were asked, and
``on_trial`` sees them as they finish. With ``reuse_actors`` (the default) a
worker process runs trial after trial; a very short trial may then be taken by
a worker that is already up before another worker has started.

How the data reaches the workers: the driver loads the dataset (a
:class:`~llm4rec.data.Dataset`, or a path read with
:func:`~llm4rec.data.sources.load_dataset`), makes the split once, and
``tune.with_parameters`` puts both in the object store; every worker reads
them from there. So nothing needs to be at the same path on every node, at the
cost of one copy of the dataset per node (a few MB for MovieLens-1M).

Ray Tune's own experiment state (trial directories, its searcher snapshots)
goes to a temporary directory removed at the end: the study is the record,
and nothing pickled is left beside it. A trial's working directory is the
driver's (when the worker sees it), so relative paths in ``--set`` settings
mean what they mean to the single-process run.

Failures: a trial that raises an llm4rec error is FAIL with that ``error`` (and
not repeated, as in ``tune``); any other exception stops the search (Ray's
``fail_fast``), the trials cut short are FAIL without an error (so a resumed
search runs them again) and the exception is raised. Ctrl-C reaches the driver
as KeyboardInterrupt (Tune's own SIGINT handler is off); the study stays
resumable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4rec.errors import InputError, Llm4recError
from llm4rec.experiments.space import Param
from llm4rec.experiments.tune import (
    STUDY_NAME,
    Plan,
    TuneResult,
    _Pruning,
    _quiet_optuna,
    _row,
    finish,
    plan_search,
    start_study,
    valid_metrics,
)

if TYPE_CHECKING:
    import optuna

    from llm4rec.data import Dataset

__all__ = ["tune_ray"]

#: Ray Tune settings of the driver while a search runs: no SIGINT handler of Tune's own (Ctrl-C is a
#: KeyboardInterrupt, as in the single-process path), no result files or progress tables (the number of
#: trials waiting for a CPU is set to the concurrency: with a searcher Tune keeps only one waiting)
_TUNE_ENV = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
#: Ray Tune loggers that would warn about the result files it was told not to write
_QUIET_LOGGERS = ("ray.tune.analysis.experiment_analysis", "ray.tune.result_grid")


def tune_ray(data: Dataset | str | Path, model: str, *, space: dict[str, Param] | list[str], protocol: str = "loo",
             trials: int = 50, timeout: float | None = None, study_dir: str | Path | None = None,
             seed: int = 2026, settings: dict[str, Any] | None = None, data_path: str | Path | None = None,
             prune: bool | optuna.pruners.BasePruner = True, address: str | None = None,
             concurrency: int | None = None, reuse_actors: bool = True,
             progress: Callable[[str, int, int], None] | None = None,
             on_trial: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """:func:`llm4rec.experiments.tune.tune` with the trials run concurrently on a Ray cluster.

    The arguments are those of ``tune`` (``data`` may also be a dataset path,
    loaded here with default options), plus:

    Args:
        address: the cluster (:func:`~llm4rec.distributed.cluster.connect`: ``"auto"``, ``"local"`` or
            ``host:port``); None: the one this process is connected to, else ``"auto"``.
        concurrency: trials running at once (one CPU each); None: the cluster's CPUs.
        reuse_actors: a worker process runs trial after trial (no process start and imports per trial);
            False: each trial gets a fresh one (so two trials started together always run on two CPUs,
            however short they are; with reuse, a ready worker may take a trial before another starts).

    ``timeout``: no trial starts after it (the first always does); running ones finish. ``on_trial`` and
    ``progress`` are called on the driver, as each trial finishes (in the order they finish).
    """
    from llm4rec.data import make_split
    from llm4rec.distributed.cluster import session

    if concurrency is not None and concurrency < 1:
        raise InputError("the concurrency must be positive", value=concurrency, expected="1 or more trials at once")
    if isinstance(data, (str, Path)):
        from llm4rec.data.sources import load_dataset

        data_path = data if data_path is None else data_path
        data = load_dataset(data)
    plan = plan_search(data, model, space, protocol=protocol, trials=trials, timeout=timeout, seed=seed,
                       settings=settings, prune=prune)
    report = progress or (lambda step, done, total: None)
    split = make_split(data, plan.protocol, seed=seed)
    with session(address) as ray, _quiet_optuna():
        study, n_run = start_study(study_dir, plan, constant_liar=True)
        if n_run > 0:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if cpus < 1:
                raise InputError("the Ray cluster has no CPU for the trials", value=address or "auto",
                                 expected="a cluster with worker CPUs")
            _search(ray, study, plan, data, split, n_run, min(concurrency or cpus, n_run), reuse_actors, report,
                    on_trial)
    return finish(study, plan, data, split, study_dir=study_dir, data_path=data_path, progress=report)


def _search(ray: Any, study: optuna.Study, plan: Plan, data: Dataset, split: Any, n_run: int, concurrency: int,
            reuse_actors: bool, report: Callable[[str, int, int], None], on_trial: Callable[[dict[str, Any]], None] | None) -> None:
    """Run ``n_run`` trials of ``study`` with Ray Tune, at most ``concurrency`` at once."""
    from ray import tune as ray_tune
    from ray.tune.search import ConcurrencyLimiter

    searcher = _searcher_class()(study, plan, n_run, report, on_trial)
    trainable = ray_tune.with_resources(
        # the plan without its pruner (which runs here, and may be of a class the workers cannot import)
        ray_tune.with_parameters(_trial, data=data, split=split, plan=dataclasses.replace(plan, pruner=None),
                                 cwd=os.getcwd()), {"cpu": 1})
    scratch = tempfile.mkdtemp(prefix="llm4rec-tune-ray-")
    env = {**_TUNE_ENV, "TUNE_MAX_PENDING_TRIALS_PG": str(concurrency)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        report("trials", 0, n_run)
        tuner = ray_tune.Tuner(
            trainable,
            tune_config=ray_tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                                            scheduler=_scheduler_class()(searcher), num_samples=n_run,
                                            reuse_actors=reuse_actors),
            run_config=ray_tune.RunConfig(name="llm4rec-tune", storage_path=scratch, verbose=0,
                                          failure_config=ray_tune.FailureConfig(fail_fast=True)))
        results = tuner.fit()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)
    if results.errors:  # a bug, not a setting the model refused: stop as the single-process path does
        raise results.errors[0]


def _trial(config: dict[str, Any], *, data: Dataset, split: Any, plan: Plan, cwd: str) -> None:
    """One trial, on a worker: the valid-stage fit of ``config`` (the searched point), reported to Ray Tune."""
    import ray
    from ray import tune as ray_tune

    if os.path.isdir(cwd):
        os.chdir(cwd)
    where = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    try:
        metrics = valid_metrics(data, split, plan, dict(config), callbacks=[_Pruning(_EpochReporter(where))])
    except Llm4recError as exc:
        ray_tune.report({"value": math.nan, "final": False, "error": str(exc), **where})
        return
    ray_tune.report({"value": float(metrics[plan.metric]), "final": True, "metrics": json.dumps(metrics),
                     **where})


class _EpochReporter:
    """What :class:`~llm4rec.experiments.tune._Pruning` takes for an Optuna trial, on a Ray worker: each epoch's
    validation value goes to Ray Tune; the driver's scheduler decides on pruning and stops the trial."""

    def __init__(self, where: dict[str, Any]) -> None:
        self.where = where

    def report(self, value: float, step: int) -> None:
        from ray import tune as ray_tune

        ray_tune.report({"value": float(value), "epoch": step, "final": False, **self.where})

    def should_prune(self) -> bool:
        return False


def _searcher_class() -> type:
    """Ray's ``OptunaSearch`` on our study (defined here: the module imports without ray)."""
    from optuna.trial import TrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch asking and telling the trials of ``study`` (its storage, name, sampler and pruner).

        The per-epoch values are reported by :class:`_Pruner`, which sees them first; this class
        tells each finished trial with the state the single-process path would give it, and its user
        attributes, then calls ``on_trial`` with its row.
        """

        def __init__(self, study: optuna.Study, plan: Plan, n_run: int, report: Callable[[str, int, int], None],
                     on_trial: Callable[[dict[str, Any]], None] | None) -> None:
            super().__init__(space=_Suggest(plan.space), metric="value", mode="max", sampler=study.sampler,
                             study_name=STUDY_NAME, storage=study._storage)
            self._ot_study.pruner = plan.pruner
            self.deadline, self.n_run, self.report, self.on_trial = plan.deadline, n_run, report, on_trial
            self.started, self.done, self.pruned = 0, 0, set()

        def suggest(self, trial_id: str) -> dict | None:
            if self.started and self.deadline is not None and time.monotonic() >= self.deadline:
                return Searcher.FINISHED  # the timeout: no new trial (the first always starts)
            self.started += 1
            return super().suggest(trial_id)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            return None  # reported (and judged) by the scheduler

        def prune(self, trial_id: str, value: float, epoch: int) -> bool:
            """Report an epoch's value to the trial; whether the study's pruner stops it."""
            trial = self._ot_trials.get(trial_id)
            if trial is None or trial_id in self._completed_trials:
                return False
            trial.report(value, epoch)
            if trial.should_prune():
                self.pruned.add(trial_id)
                return True
            return False

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            trial, result = self._ot_trials[trial_id], result or {}
            for key in ("node_id", "pid"):
                if key in result:
                    trial.set_user_attr(key, result[key])
            value = None
            if result.get("final") and not error:
                trial.set_user_attr("metrics", json.loads(result["metrics"]))
                state, value = TrialState.COMPLETE, result["value"]
            elif "error" in result and not error:  # an llm4rec error: recorded, not repeated
                trial.set_user_attr("error", result["error"])
                state = TrialState.FAIL
            elif trial_id in self.pruned and not error:
                state = TrialState.PRUNED
            else:  # cut short by another trial's bug or an interruption: retried when the study resumes
                state = TrialState.FAIL
            frozen = self._ot_study.tell(trial, value, state=state)
            self._completed_trials.add(trial_id)
            self.done += 1
            if self.on_trial is not None:
                self.on_trial(_row(frozen))
            if self.report is not None:
                self.report("trials", self.done, self.n_run)

        def __getstate__(self) -> dict[str, Any]:
            # Tune pickles the searcher beside its experiment state; the callbacks (a progress bar...) stay here
            return {**self.__dict__, "report": None, "on_trial": None}

        def save(self, checkpoint_path: str) -> None:
            return None  # the study is the record; Tune's searcher snapshot would pickle it (and fail on callbacks)

        def restore(self, checkpoint_path: str) -> None:
            # only Tune's own Tuner.restore calls this; tune_ray never does (its experiment state is temporary)
            raise InputError("a search resumes from its study, not from Tune's experiment state",
                             path=checkpoint_path, expected="llm4rec tune --study DIR --ray ... again")

    return StudySearch


def _scheduler_class() -> type:
    """The scheduler that applies the study's (Optuna) pruner to each reported epoch."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class Pruner(FIFOScheduler):
        """FIFO, except that an epoch the study's pruner judges poor stops its trial."""

        def __init__(self, searcher: Any) -> None:
            super().__init__()
            self.searcher = searcher

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if "epoch" in result and not result.get("final") and \
                    self.searcher.prune(trial.trial_id, result["value"], int(result["epoch"])):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return Pruner


class _Suggest:
    """The define-by-run search space given to OptunaSearch: each parameter suggested as ``tune`` does."""

    def __init__(self, space: dict[str, Param]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        for param in self.space.values():
            param.suggest(trial)
