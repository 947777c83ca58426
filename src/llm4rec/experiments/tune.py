"""Hyperparameter search with Optuna: trials on a protocol's ``valid`` stage, one ``test`` run of the choice.

``tune(ds, "ease", space=["l2=log(10,2000)"], trials=20, study_dir="tune-ease")``
fits one model per trial on the valid stage (P-COLD's pseudo-cold one included)
and maximises the protocol's tuning metric (``PROTOCOLS[p]["tune"]``, e.g.
NDCG@10). TPE samples the space; a space of choices only is a grid, run in a
seeded order (at most its size of trials). Neural trials report their
validation curve per epoch and a median pruner stops the poor ones. With
``study_dir`` the study is Optuna's SQLite ``study.db``: the same call again
resumes it (only the trials still missing run; interrupted ones are retried
with their parameters). Then the chosen setting is fitted once on the test
stage. :func:`write_outputs` writes ``trials.csv``, ``tune.json``,
``history.png`` and ``importance.png``.

The pieces of :func:`tune` (:func:`plan_search`, :func:`start_study`,
:func:`valid_metrics`, :func:`finish`) are also what
:func:`llm4rec.distributed.tune.tune_ray` runs, with the trials on a Ray
cluster: the same study, result and outputs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.data import PROTOCOLS, Dataset, make_split
from llm4rec.data.splits import check_protocol
from llm4rec.errors import InputError, Llm4recError
from llm4rec.evaluation.experiment import Experiment, run_experiment
from llm4rec.experiments.space import Param, check_space, parse_space, settings_for
from llm4rec.training import Callback

if TYPE_CHECKING:
    import optuna

__all__ = ["OUTPUT_FILES", "STUDY_FILE", "TuneResult", "check_study", "tune", "write_outputs"]

STUDY_FILE = "study.db"
#: what :func:`write_outputs` writes beside the study
OUTPUT_FILES = ("trials.csv", "tune.json", "history.png", "importance.png")
STUDY_NAME = "llm4rec-tune"
#: the default pruner: a trial stops when its epoch's validation value is below the median of earlier trials'
#: at that epoch, once this many trials are done, from this epoch on (epochs count from 1)
PRUNE_STARTUP_TRIALS, PRUNE_FROM_EPOCH = 3, 3


@dataclass
class TuneResult:
    """The outcome of :func:`tune`; :meth:`record` is its JSON form.

    ``trials``: one dict per finished trial (``number``, ``state`` complete /
    pruned / failed, ``params`` by dotted name, ``value`` (complete trials),
    ``seconds``, ``pruned_at_epoch``, ``error``). ``best_settings``: the chosen
    parameters as model settings (nested for dotted names); ``test``: the test
    stage run with them (and the fixed ``settings``).
    """

    model: str
    dataset: str
    protocol: str
    seed: int
    metric: str
    space: dict[str, Param]
    settings: dict[str, Any]
    sampler: str
    pruner: str | None
    study_path: Path | None
    trials: list[dict[str, Any]]
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_settings: dict[str, Any]
    valid_metrics: dict[str, float]
    importances: dict[str, float] | None
    test: Experiment

    def record(self) -> dict[str, Any]:
        """A JSON-able dict: what was searched, every trial, the choice and its test record."""
        return {
            "dataset": self.dataset, "model": self.model,
            "protocol": PROTOCOLS[self.protocol]["title"], "seed": self.seed, "metric": self.metric,
            "space": {n: p.spec() for n, p in self.space.items()},
            "settings": self.settings, "sampler": self.sampler, "pruner": self.pruner,
            "study": None if self.study_path is None else str(self.study_path),
            "trials": self.trials,
            "best": {"trial": self.best_trial, "params": self.best_params, "settings": self.best_settings,
                     "valid_value": self.best_value, "valid_metrics": self.valid_metrics},
            "importances": self.importances,
            "test": self.test.record,
        }


class _Pruning(Callback):
    """Reports each epoch's validation value to an Optuna trial and stops the trial when the pruner says so.

    Epochs are counted across a model's training phases (e.g. LoRA fine-tuning after the main training).
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial, self.epochs = trial, 0

    def on_epoch_end(self, state: Any, record: dict[str, float]) -> bool:
        import optuna

        self.epochs += 1
        if state.monitor is None or state.monitor not in record:  # no validation: nothing to judge by
            return False
        self.trial.report(record[state.monitor], self.epochs)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {self.epochs}")
        return False


def _meta(model: str, protocol: str, seed: int, space: dict[str, Param], settings: dict[str, Any],
          dataset: Dataset | None) -> dict[str, Any]:
    """What a study is of (its user attributes): a resumed study must match it."""
    out = {"model": model, "protocol": protocol, "seed": seed, "space": {n: p.spec() for n, p in space.items()},
           "settings": json.loads(json.dumps(settings))}
    if dataset is not None:
        out["dataset"] = {"name": dataset.name, "fingerprint": dataset.fingerprint}
    return out


def check_study(study_dir: str | Path, *, model: str, protocol: str, space: dict[str, Param] | list[str],
                seed: int = 2026, settings: dict[str, Any] | None = None,
                dataset: Dataset | None = None) -> int | None:
    """The number of finished (complete or pruned) trials of the study in ``study_dir``, None if it has none.

    An existing study made for another model, protocol, search space, seed,
    fixed settings or dataset (when ``dataset`` is given) is an InputError
    naming what differs; so is a ``study.db`` that is not a tuning study.
    """
    space = parse_space(space) if isinstance(space, list) else space
    return _check_meta(Path(study_dir) / STUDY_FILE,
                       _meta(model.lower(), check_protocol(protocol), seed, space, settings or {}, dataset))


def _check_meta(path: Path, wanted: dict[str, Any]) -> int | None:
    import optuna
    from optuna.trial import TrialState

    if not path.exists():
        return None
    with _quiet_optuna():
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(path))
        except KeyError:
            raise InputError("this file is not a study of llm4rec tune", path=path,
                             expected="a study.db written by llm4rec tune, or a new study directory") from None
        have = study.user_attrs.get("llm4rec", {})
        for key, label in (("model", "model"), ("protocol", "protocol"), ("dataset", "dataset"),
                           ("space", "search space"), ("seed", "seed"), ("settings", "fixed settings")):
            if key in wanted and have.get(key) != wanted[key]:
                raise InputError(f"the study was made for another {label}", path=path, value=_shown(wanted[key]),
                                 expected=f"{_shown(have.get(key))!r}, as in the study, or a new study directory")
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _shown(value: Any) -> Any:
    """A study attribute as an error shows it: a search space as its specs."""
    if isinstance(value, dict) and value and all(isinstance(v, str) and "=" in v for v in value.values()):
        return " ".join(value.values())
    return value


def _storage(path: Path) -> Any:
    """Optuna's SQLite storage at ``path`` (InputError when the file is not a database)."""
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise InputError("cannot open the study", path=path, value=str(exc.orig or exc).splitlines()[0],
                         expected="an SQLite study.db written by llm4rec tune") from None


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs warnings only (no line per trial) while the block runs."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def tune(dataset: Dataset, model: str, *, space: dict[str, Param] | list[str], protocol: str = "loo",
         trials: int = 50, timeout: float | None = None, study_dir: str | Path | None = None, seed: int = 2026,
         settings: dict[str, Any] | None = None, data_path: str | Path | None = None,
         prune: bool | optuna.pruners.BasePruner = True,
         progress: Callable[[str, int, int], None] | None = None,
         on_trial: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """Search ``space`` for ``model`` on the protocol's valid stage, then fit the best setting on its test stage.

    ``settings`` are fixed settings (nested, as from ``--set``). ``trials``:
    how many trials the study should have finished (complete or pruned; a grid
    caps it at its size); a resumed study runs only the missing ones.
    ``timeout`` (seconds): no new trial starts after it (the first always
    does). ``prune``: True for the median pruner, False for none, or an
    Optuna pruner. ``progress(step, done, total)`` is called for the steps
    "trials", "test fit" and "test evaluate"; ``on_trial(row)`` after each
    trial (a row of :attr:`TuneResult.trials`). ``data_path`` goes into the
    test record.
    """
    import optuna
    from optuna.trial import TrialState

    plan = plan_search(dataset, model, space, protocol=protocol, trials=trials, timeout=timeout, seed=seed,
                 settings=settings, prune=prune)
    report = progress or (lambda step, done, total: None)
    split = make_split(dataset, plan.protocol, seed=seed)

    with _quiet_optuna():
        study, n_run = start_study(study_dir, plan)
        ran = 0
        while ran < n_run and (ran == 0 or plan.deadline is None or time.monotonic() < plan.deadline):
            report("trials", ran, n_run)
            ran += 1
            trial = study.ask()
            try:
                point = {name: p.suggest(trial) for name, p in plan.space.items()}
                metrics = valid_metrics(dataset, split, plan, point, callbacks=[_Pruning(trial)])
                trial.set_user_attr("metrics", metrics)
            except optuna.TrialPruned:
                frozen = study.tell(trial, state=TrialState.PRUNED)
            except Llm4recError as exc:  # e.g. a diverging learning rate: the search goes on
                trial.set_user_attr("error", str(exc))
                frozen = study.tell(trial, state=TrialState.FAIL)
            except BaseException:  # Ctrl-C, a bug: the study stays resumable, the trial is retried
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                frozen = study.tell(trial, metrics[plan.metric])
            if on_trial is not None:
                on_trial(_row(frozen))
        report("trials", ran, n_run)
    return finish(study, plan, dataset, split, study_dir=study_dir, data_path=data_path, progress=report)


@dataclass(frozen=True)
class Plan:
    """A checked search: what :func:`tune` and the Ray path (:mod:`llm4rec.distributed.tune`) run.

    ``trials`` is capped at a grid's size; ``deadline`` is a ``time.monotonic()`` instant (or None) after
    which no new trial starts; ``meta`` is what the study is of (its ``llm4rec`` user attribute).
    """

    model: str
    protocol: str
    seed: int
    settings: dict[str, Any]
    space: dict[str, Param]
    grid: bool
    trials: int
    metric: str
    meta: dict[str, Any]
    pruner: Any
    deadline: float | None


def plan_search(dataset: Dataset, model: str, space: dict[str, Param] | list[str], *, protocol: str, trials: int,
          timeout: float | None, seed: int, settings: dict[str, Any] | None,
          prune: bool | optuna.pruners.BasePruner) -> Plan:
    """Check the arguments of a search (InputError naming the bad one) and settle what it runs."""
    import optuna

    protocol = check_protocol(protocol)
    model = model.lower()
    settings = settings or {}
    space = parse_space(space) if isinstance(space, list) else space
    if not space:
        raise InputError("the search space is empty", expected="at least one parameter, e.g. l2=log(10,2000)")
    check_space(space, model, settings)
    if trials < 1:
        raise InputError("the number of trials must be positive", value=trials, expected="1 or more")
    if timeout is not None and not timeout > 0:
        raise InputError("the timeout must be positive", value=timeout, expected="seconds > 0")
    grid = all(p.categorical for p in space.values())
    if grid:
        trials = min(trials, int(np.prod([len(p.choices) for p in space.values()])))
    pruner = prune if isinstance(prune, optuna.pruners.BasePruner) else \
        optuna.pruners.MedianPruner(PRUNE_STARTUP_TRIALS, PRUNE_FROM_EPOCH) if prune else optuna.pruners.NopPruner()
    return Plan(model=model, protocol=protocol, seed=seed, settings=settings, space=space, grid=grid, trials=trials,
                metric=PROTOCOLS[protocol]["tune"], meta=_meta(model, protocol, seed, space, settings, dataset),
                pruner=pruner, deadline=None if timeout is None else time.monotonic() + timeout)


def start_study(study_dir: str | Path | None, plan: Plan, *, constant_liar: bool = False) -> tuple[optuna.Study, int]:
    """The opened (or resumed) study, its sampler and pruner set and the next points queued; and how many
    trials to run. ``constant_liar``: TPE's setting for trials that run concurrently."""
    import optuna
    from optuna.trial import TrialState

    study = _open_study(study_dir, plan.meta)
    # reseeded by the trials already run, so a resumed search does not redraw its first points; a grid's
    # trials are all queued by _enqueue, so there the sampler draws nothing
    with warnings.catch_warnings():  # constant_liar is an experimental feature
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(seed=plan.seed + len(study.trials), constant_liar=constant_liar)
    study.pruner = plan.pruner
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    needed = plan.trials - len(study.get_trials(deepcopy=False, states=finished))
    return study, _enqueue(study, plan.space, plan.grid, needed, plan.seed)


def valid_metrics(dataset: Dataset, split: Any, plan: Plan, point: dict[str, Any],
                  callbacks: list[Callback] | None = None) -> dict[str, float]:
    """One trial's fit on the valid stage with the searched ``point`` (by dotted name); its metrics."""
    exp = run_experiment(dataset, plan.model, protocol=plan.protocol, seed=plan.seed, stage="valid", split=split,
                         settings=settings_for(point, plan.settings), callbacks=callbacks)
    return exp.record["metrics"]


def finish(study: optuna.Study, plan: Plan, dataset: Dataset, split: Any, *, study_dir: str | Path | None,
           data_path: str | Path | None, progress: Callable[[str, int, int], None]) -> TuneResult:
    """The best completed trial of ``study`` (InputError when none completed) fitted once on the test stage."""
    from optuna.trial import TrialState

    with _quiet_optuna():
        all_trials = study.get_trials(deepcopy=False)
        complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
        if not complete:
            errors = [t.user_attrs["error"] for t in all_trials if "error" in t.user_attrs]
            pruned = sum(t.state == TrialState.PRUNED for t in all_trials)
            raise InputError(f"no trial completed ({pruned} pruned, {len(errors)} failed with an error)",
                             value=errors[-1] if errors else None,
                             expected="a search space and settings the model can be fitted with, or more trials")
        best = max(complete, key=lambda t: (t.value, -t.number))  # a tie goes to the earlier trial
        importances = _importances(study, plan.space, len(complete))

    model, settings = plan.model, plan.settings
    test = run_experiment(dataset, model, protocol=plan.protocol, seed=plan.seed,
                          settings=settings_for(best.params, settings), stage="test", split=split,
                          progress=lambda step, d, t: progress(f"test {step}", d, t),
                          data_path=None if data_path is None else str(data_path))
    rows = [_row(t) for t in all_trials if t.state.is_finished()]
    return TuneResult(
        model=model, dataset=dataset.name, protocol=plan.protocol, seed=plan.seed, metric=plan.metric,
        space=plan.space, settings=settings, sampler="grid" if plan.grid else "tpe",
        pruner=type(plan.pruner).__name__,
        study_path=None if study_dir is None else Path(study_dir) / STUDY_FILE, trials=rows,
        best_trial=best.number, best_value=float(best.value), best_params=dict(best.params),
        best_settings=settings_for(best.params), valid_metrics=best.user_attrs["metrics"], importances=importances,
        test=test)


def _open_study(study_dir: str | Path | None, meta: dict[str, Any]) -> optuna.Study:
    """A new or resumed study (in memory without ``study_dir``); a resumed one must match ``meta``.

    Trials left running by a process that died are marked failed (one search per study at a time).
    """
    import optuna
    from optuna.trial import TrialState

    storage = None
    if study_dir is not None:
        path = Path(study_dir) / STUDY_FILE
        _check_meta(path, meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = _storage(path)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True)
    if "llm4rec" not in study.user_attrs:
        study.set_user_attr("llm4rec", meta)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    return study


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


def _enqueue(study: optuna.Study, space: dict[str, Param], grid: bool, needed: int, seed: int) -> int:
    """Queue the points the next trials must run; returns how many trials to run (at most ``needed``).

    A grid queues its points not yet finished, in a seeded order (Optuna's
    GridSampler counts failed trials as visited, so it would not retry them);
    TPE queues the parameters of interrupted trials. Trials that failed with
    an error are not repeated.
    """
    from optuna.trial import TrialState

    if needed <= 0:
        return 0
    trials = study.get_trials(deepcopy=False)
    waiting = [t.system_attrs.get("fixed_params", t.params) for t in trials if t.state == TrialState.WAITING]
    seen = {_key(p) for p in waiting} | {_key(t.params) for t in trials if t.state in (
        TrialState.COMPLETE, TrialState.PRUNED) or "error" in t.user_attrs}
    room = needed - len(waiting)
    queue: list[dict[str, Any]] = []
    if grid:
        names = list(space)
        shape = [len(space[n].choices) for n in names]
        for flat in np.random.default_rng(seed).permutation(int(np.prod(shape))):
            if len(queue) >= room:
                break
            point = {n: space[n].choices[i] for n, i in zip(names, np.unravel_index(flat, shape), strict=True)}
            if _key(point) not in seen:
                queue.append(point)
    else:
        for t in trials:
            if t.state == TrialState.FAIL and "error" not in t.user_attrs and set(t.params) == set(space) \
                    and _key(t.params) not in seen and len(queue) < room:
                queue.append(dict(t.params))
                seen.add(_key(t.params))
    for point in queue:
        study.enqueue_trial(point)
    return min(needed, len(waiting) + len(queue)) if grid else needed


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One finished trial as a row of :attr:`TuneResult.trials`."""
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[trial.state.name]
    return {"number": trial.number, "state": state, "params": dict(trial.params),
            "value": trial.value if state == "complete" else None,
            "seconds": None if trial.duration is None else round(trial.duration.total_seconds(), 3),
            "pruned_at_epoch": trial.last_step if state == "pruned" else None,
            "error": trial.user_attrs.get("error", "interrupted") if state == "failed" else None}


def _importances(study: optuna.Study, space: dict[str, Param], n_complete: int) -> dict[str, float] | None:
    """PED-ANOVA parameter importances (summing to 1), or None with one parameter or under 3 completed trials."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if len(space) < 2 or n_complete < 3:
        return None
    with warnings.catch_warnings():  # "too few trials" and experimental-feature warnings
        warnings.simplefilter("ignore")
        found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=list(space))
    return {name: float(value) for name, value in found.items()}


# --------------------------------------------------------------- outputs
def write_outputs(result: TuneResult, out_dir: str | Path, *, overwrite: bool = False,
                  option: str = "out_dir") -> list[Path]:
    """Write ``trials.csv``, ``tune.json`` (:meth:`TuneResult.record`), ``history.png`` and ``importance.png``.

    Everything is rendered first, then each file is written atomically; an
    existing one is refused unless ``overwrite`` (``option`` names the
    directory in that error).
    """
    from llm4rec._atomic import write_output_files
    from llm4rec.evaluation.report import png_bytes

    files = {"trials.csv": _trials_csv(result).encode(),
             "tune.json": (json.dumps(result.record(), indent=2) + "\n").encode(),
             "history.png": png_bytes(_history_figure(result)),
             "importance.png": png_bytes(_importance_figure(result))}
    return write_output_files(out_dir, files, overwrite=overwrite, option=option)


def _trials_csv(result: TuneResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = ["number", "state", "value", "seconds", "pruned_at_epoch", "error"]
    writer.writerow(fields + list(result.space))
    for row in result.trials:
        writer.writerow([row[f] for f in fields] + [row["params"].get(name) for name in result.space])
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _history_figure(result: TuneResult) -> Any:
    """The objective of each completed trial, the best so far, the chosen trial; pruned and failed ones marked."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    done = [r for r in result.trials if r["state"] == "complete"]
    x = np.array([r["number"] for r in done])
    y = np.array([r["value"] for r in done], dtype=float)
    ax.plot(x, y, "o", color="tab:blue", markersize=4, label="completed trial")
    ax.step(x, np.maximum.accumulate(y), where="post", color="tab:orange", label="best so far")
    ax.plot([result.best_trial], [result.best_value], "o", markersize=11, markerfacecolor="none",
            markeredgecolor="black", label=f"chosen (trial {result.best_trial})")
    for state, color in (("pruned", "tab:red"), ("failed", "0.4")):
        numbers = [r["number"] for r in result.trials if r["state"] == state]
        if numbers:  # along the bottom: their values are not comparable
            ax.plot(numbers, [0.03] * len(numbers), "x", color=color, transform=ax.get_xaxis_transform(),
                    label=f"{state} ({len(numbers)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel=f"{result.metric}, valid stage",
           title=f"{result.model} on {result.dataset}, {PROTOCOLS[result.protocol]['title']}: "
                 f"{len(result.trials)} trials ({result.sampler})")
    ax.title.set_fontsize("medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _importance_figure(result: TuneResult) -> Any:
    """Horizontal bars of the parameter importances, or a note saying why there are none."""
    plt = _pyplot()
    if result.importances is None:
        fig, ax = plt.subplots(figsize=(6.5, 2.2))
        ax.axis("off")
        n_complete = sum(r["state"] == "complete" for r in result.trials)
        ax.text(0.5, 0.5, "Parameter importances need two or more parameters and three completed trials\n"
                          f"(this search: {len(result.space)} parameter{'s' * (len(result.space) > 1)}, "
                          f"{n_complete} completed).", ha="center", va="center", fontsize="small")
        return fig
    names = list(result.importances)[::-1]  # the most important on top
    fig, ax = plt.subplots(figsize=(6.5, 1.4 + 0.45 * len(names)))
    ax.barh(names, [result.importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (PED-ANOVA; sums to 1)", xlim=(0, 1),
           title=f"parameter importance for {result.metric}: {result.model}, {len(result.trials)} trials")
    ax.title.set_fontsize("medium")
    ax.grid(axis="x", alpha=0.3)
    return fig
