"""Run an experiment file: every model under every seed, resumably, into one results folder.

The folder is written all-or-nothing: the work happens in a sibling
``.<name>.partial/`` directory, which becomes ``<name>`` only once the report is
written. Each finished (model, seed) run is kept there (``runs/``), keyed by a
hash of everything that decides its result (the model's resolved settings or
tuning space, the seed, protocol, stage and dataset fingerprint), so a rerun
after an interruption redoes only the runs that did not finish.

The results folder holds ``config.toml`` (the file as given), ``resolved.json``,
``records.jsonl`` (every run's ``evaluate --json`` record), ``per_user/<label>-<seed>.npz``
(per-user metrics and user ids), ``significance.json``, ``comparison.png``,
``report.md`` and ``report.html``, and ``studies/`` for tuned models.

Statistics (level 95%): with one seed, each metric's mean over users with a
bootstrap interval, and each model's paired difference from the baseline over
the same users with its bootstrap interval (:func:`~llm4rec.evaluation.significance.paired_test`);
with several seeds, the mean of the per-seed means with a t-interval over
seeds, and the per-seed paired differences aggregated the same way. A
difference is *within noise* when its interval contains 0; with several seeds,
also when the bootstrap interval over users of the seed-averaged per-user
difference does (the users' noise, which seeds alone miss when the split and
the models do not change with the seed, as P-LOO's deterministic models).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.errors import InputError
from llm4rec.experiments.config import ExperimentConfig, ModelEntry

__all__ = ["PipelineResult", "Run", "partial_dir", "run_pipeline", "summarize"]

#: marks a value whose difference from the baseline is within noise (its 95% interval contains 0)
NOISE = "≈"
LEVEL = 0.95


@dataclass
class Run:
    """One (model, seed) run: its record, per-user metrics (float[n_users] each) and user ids (aligned)."""

    label: str
    seed: int
    record: dict[str, Any]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    reused: bool = False

    @property
    def name(self) -> str:
        return f"{self.label}-{self.seed}"


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` wrote: the folder, the runs, the statistics, the comparison table."""

    out_dir: Path
    runs: list[Run]
    summary: dict[str, Any]
    table: tuple[list[str], list[list[str]]]
    verdict: list[str]

    @property
    def reused(self) -> int:
        return sum(r.reused for r in self.runs)


def partial_dir(out_dir: str | Path) -> Path:
    """Where ``out_dir`` is built: ``.<name>.partial`` beside it (kept after an interruption, for resuming)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.partial"


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Before any work: ``out_dir`` is new or empty, or (with ``overwrite``) an earlier results folder."""
    from llm4rec._atomic import check_output_files

    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError("--out names a file", path=out_dir, expected="a directory for the results")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise InputError("--out: the results folder already exists", path=out_dir,
                                 expected="a new or empty directory",
                                 hint="Add --overwrite to replace it once the new one is complete.")
            if not (out_dir / "resolved.json").is_file():
                raise InputError("--out: the directory is not a results folder of llm4rec run, so it is not "
                                 "replaced", path=out_dir, expected="a new or empty directory, or an earlier "
                                                                    "results folder (with resolved.json)")
    check_output_files(out_dir.parent, [], option="--out")  # a writable directory above


def run_pipeline(config: ExperimentConfig, out_dir: str | Path, *, overwrite: bool = False,
                 progress: Callable[[str, str, int, int], None] | None = None,
                 callbacks: list | None = None) -> PipelineResult:
    """Run every model of ``config`` under each seed and write the results folder ``out_dir``.

    ``progress(event, text, done, total)`` is told of each run: event "running" (text: the run), then
    "finished" (text: the run and its main metric) or "reused" (a finished run of an interrupted
    attempt, not redone); ``done`` of ``total`` runs. ``callbacks`` go to neural models' training.
    An existing ``out_dir`` is refused unless ``overwrite`` (then replaced once the new one is complete).
    """
    from llm4rec._atomic import move_dir
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset

    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    report = progress or (lambda event, text, done, total: None)
    partial = partial_dir(out_dir)
    (partial / "runs").mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data.path, format=config.data.format, **config.data.loader_options())
    seeds, total = config.protocol.seeds, len(config.protocol.seeds) * len(config.models)
    runs: list[Run] = []
    splits: dict[int, Any] = {}  # one per seed, made when a run needs it (tuning makes its own)
    for seed in seeds:
        for entry in config.models:
            key = run_key(config, entry, seed, dataset)
            run = _load_run(partial / "runs", f"{entry.label}-{seed}", key)
            if run is None:
                text, done = f"{entry.label}, seed {seed}", len(runs)
                report("running", text, done, total)
                if entry.tune is None and seed not in splits:
                    splits[seed] = make_split(dataset, config.protocol.name, seed=seed)
                run = _execute(config, entry, seed, dataset, splits.get(seed), partial, callbacks,
                               lambda note, text=text, done=done: report("running", f"{text}, {note}", done, total))
                _save_run(partial / "runs", run, key)
            runs.append(run)
            report("reused" if run.reused else "finished", _describe(run), len(runs), total)
    summary = summarize(runs, baseline=config.report.baseline, metrics=_metrics(config), seeds=seeds)
    table, verdict = comparison(config, runs, summary)
    _write_results(partial, config, dataset, runs, summary, table, verdict)
    move_dir(partial, out_dir)
    return PipelineResult(out_dir, runs, summary, table, verdict)


def _metrics(config: ExperimentConfig) -> list[str]:
    from llm4rec.data.splits import PROTOCOLS

    return list(config.report.metrics or PROTOCOLS[config.protocol.name]["metrics"])


def _settings(entry: ModelEntry, seed: int) -> dict[str, Any]:
    """The entry's fixed settings with the run's seed, as :func:`run_experiment` completes them."""
    from llm4rec.models import model_class

    settings = dict(entry.settings)
    if "seed" in model_class(entry.name).Config.model_fields:
        settings.setdefault("seed", seed)
    return settings


def run_key(config: ExperimentConfig, entry: ModelEntry, seed: int, dataset: Any) -> str:
    """sha256 of what decides a run's result: model, resolved settings (every default), tuning, seed,
    protocol, stage and the dataset's (and its item text's) fingerprint."""
    from llm4rec.models import create_model

    payload = {"model": entry.name, "config": create_model(entry.name, _settings(entry, seed)).config.model_dump(
        mode="json"), "tune": None if entry.tune is None else entry.tune.model_dump(mode="json"), "seed": seed,
        "protocol": config.protocol.name, "stage": config.protocol.stage, "dataset": dataset.fingerprint,
        "item_text": dataset.item_text_fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _execute(config: ExperimentConfig, entry: ModelEntry, seed: int, dataset: Any, split: Any, partial: Path,
             callbacks: list | None, status: Callable[[str], None]) -> Run:
    """Fit and evaluate one model under one seed (tuned on the valid stage first, when it has ``tune``;
    ``status(text)`` follows the trials)."""
    data_path = config.data.path
    if entry.tune is None:
        from llm4rec.evaluation.experiment import run_experiment

        exp = run_experiment(dataset, entry.name, protocol=config.protocol.name, seed=seed, settings=entry.settings,
                             stage=config.protocol.stage, split=split, data_path=data_path, callbacks=callbacks)
        record = exp.record
    else:
        from llm4rec.experiments.tune import check_study, tune

        study = partial / "studies" / f"{entry.label}-{seed}"
        search = {"model": entry.name, "protocol": config.protocol.name, "space": entry.tune.space, "seed": seed,
                  "settings": entry.settings}
        try:  # a study of an earlier attempt goes on (more trials); one of another search starts afresh
            check_study(study, dataset=dataset, **search)
        except InputError:
            shutil.rmtree(study)
        tuned = tune(dataset, trials=entry.tune.trials, timeout=entry.tune.timeout, study_dir=study,
                     data_path=data_path, progress=lambda step, done, total: status(f"{step} {done}/{total}"),
                     **search)
        exp = tuned.test
        tuning = {k: v for k, v in tuned.record().items() if k != "test"}  # the test record is the run's own
        record = {**exp.record, "tuning": {**tuning, "study": f"studies/{study.name}/{Path(tuning['study']).name}"}}
    users = np.asarray(dataset.users.tokens, dtype=str)[exp.result.users]
    return Run(entry.label, seed, {"label": entry.label, **record}, dict(exp.result.per_user), users)


def _describe(run: Run) -> str:
    """``ease, seed 2026: HR@10 0.0870, NDCG@10 0.0409, MRR@10 0.0271 (0.2 s fit)``."""
    metrics = ", ".join(f"{m} {v:.4f}" for m, v in run.record["metrics"].items())
    fit = "" if run.reused else f" ({run.record['fit_seconds']:.1f} s fit)"
    return f"{run.label}, seed {run.seed}: {metrics}{fit}"


# ------------------------------------------------------------------------------------------------ the run store
def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _save_run(store: Path, run: Run, key: str) -> None:
    """The per-user arrays, then the record (its presence marks the run finished), each written atomically."""
    from llm4rec._atomic import atomic_write_bytes, atomic_write_text

    atomic_write_bytes(store / f"{run.name}.npz", _npz_bytes({**run.per_user, "users": run.users}))
    atomic_write_text(store / f"{run.name}.json", json.dumps({"key": key, "record": run.record}) + "\n")


def _load_run(store: Path, name: str, key: str) -> Run | None:
    """A finished run of an earlier attempt with the same key, or None."""
    try:
        saved = json.loads((store / f"{name}.json").read_text())
        with np.load(store / f"{name}.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError):
        return None
    if saved.get("key") != key:
        return None
    record = saved["record"]
    return Run(record["label"], record["seed"], record, {k: v for k, v in arrays.items() if k != "users"},
               arrays["users"], reused=True)


# ------------------------------------------------------------------------------------------------ statistics
def _t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean of ``values`` (n >= 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def _users_interval(runs: list[Run], bases: list[Run], metric: str, seed: int) -> list[float] | None:
    """The bootstrap interval over users of the seed-averaged paired difference, when every seed evaluated the
    same users (None otherwise): the users' own noise, which a t-interval over seeds misses when the split does
    not depend on the seed (P-LOO) and the models are deterministic (zero spread over seeds)."""
    from llm4rec.evaluation.significance import paired_test

    if any(not np.array_equal(r.users, runs[0].users) for r in runs):
        return None
    a = np.mean([r.per_user[metric] for r in runs], axis=0)
    b = np.mean([r.per_user[metric] for r in bases], axis=0)
    test = paired_test(a, b, seed=seed)
    return [test.ci_low, test.ci_high]


def summarize(runs: list[Run], *, baseline: str, metrics: list[str], seeds: list[int]) -> dict[str, Any]:
    """Means with 95% intervals for every model and metric, and paired differences from ``baseline``.

    One seed: bootstrap intervals over users (:func:`~llm4rec.evaluation.report.mean_interval`,
    :func:`~llm4rec.evaluation.significance.paired_test`, both with the run's seed). Several seeds: the mean
    of the per-seed values with a t-interval over seeds. ``within_noise``: the difference's interval holds 0
    (with several seeds: the t-interval over seeds, or the bootstrap interval over users of the seed-averaged
    per-user difference, ``users_interval``, when every seed evaluated the same users).
    """
    from llm4rec.evaluation.report import mean_interval
    from llm4rec.evaluation.significance import paired_test

    by = {(r.label, r.seed): r for r in runs}
    labels = list(dict.fromkeys(r.label for r in runs))
    models: dict[str, Any] = {}
    differences: dict[str, Any] = {}
    for label in labels:
        models[label] = {}
        for m in metrics:
            per_seed = {str(s): by[label, s].record["metrics"][m] for s in seeds}
            if len(seeds) == 1:
                mean = per_seed[str(seeds[0])]
                low, high = mean_interval(by[label, seeds[0]].per_user[m], seed=seeds[0])
            else:
                mean, low, high = _t_interval(list(per_seed.values()))
            models[label][m] = {"mean": mean, "low": low, "high": high, "per_seed": per_seed}
        if label == baseline:
            continue
        differences[label] = {}
        for m in metrics:
            tests = {}
            for s in seeds:
                run, base = by[label, s], by[baseline, s]
                if not np.array_equal(run.users, base.users):
                    raise InputError(f"runs {run.name} and {base.name} were evaluated on different users",
                                     expected="the same split (same protocol, stage and seed)")
                tests[str(s)] = paired_test(run.per_user[m], base.per_user[m], seed=s).to_dict()
            if len(seeds) == 1:
                only = tests[str(seeds[0])]
                diff, low, high = only["mean_diff"], only["ci_low"], only["ci_high"]
                users = None
            else:
                diff, low, high = _t_interval([t["mean_diff"] for t in tests.values()])
                users = _users_interval([by[label, s] for s in seeds], [by[baseline, s] for s in seeds], m, seeds[0])
            noise = low <= 0.0 <= high or (users is not None and users[0] <= 0.0 <= users[1])
            differences[label][m] = {"difference": diff, "low": low, "high": high, "within_noise": bool(noise),
                                     "users_interval": users, "per_seed": tests}
    n_users = len(runs[0].users)
    interval = (f"95% bootstrap interval over the {n_users} evaluated users" if len(seeds) == 1
                else f"95% t-interval over {len(seeds)} seeds")
    return {"baseline": baseline, "metrics": metrics, "seeds": list(seeds), "interval": interval,
            "models": models, "differences": differences}


# ------------------------------------------------------------------------------------------------ the report
def _settings_text(entry: ModelEntry, runs: list[Run]) -> str:
    def flat(settings: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for k, v in settings.items():
            shown = f"{v:.4g}" if isinstance(v, float) else v
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={shown}"]
        return out

    fixed = ", ".join(flat(entry.settings))
    if entry.tune is None:
        return fixed or "-"
    chosen = "; ".join((f"seed {r.seed}: " if len(runs) > 1 else "") +
                       ", ".join(flat(r.record["tuning"]["best"]["settings"])) for r in runs)
    return (f"{fixed}; " if fixed else "") + f"tuned ({entry.tune.trials} trials): {chosen}"


def comparison(config: ExperimentConfig, runs: list[Run], summary: dict[str, Any]
               ) -> tuple[tuple[list[str], list[list[str]]], list[str]]:
    """The comparison table (header, rows of text) and the verdict: which models differ beyond noise."""
    baseline, metrics = summary["baseline"], summary["metrics"]
    header = ["model", "settings", *metrics, "fit s", "eval s"]
    rows = []
    for entry in config.models:
        own = [r for r in runs if r.label == entry.label]
        cells = [entry.label + (" (baseline)" if entry.label == baseline else ""), _settings_text(entry, own)]
        for m in metrics:
            s = summary["models"][entry.label][m]
            near = summary["differences"].get(entry.label, {}).get(m, {}).get("within_noise", False)
            cells.append(f"{s['mean']:.4f} [{s['low']:.4f}, {s['high']:.4f}]" + (f" {NOISE}" if near else ""))
        for key in ("fit_seconds", "eval_seconds"):
            cells.append(f"{np.mean([r.record[key] for r in own]):.2f}")
        rows.append(cells)
    better, worse, same = [], [], []
    for label, diffs in summary["differences"].items():
        up = [m for m in metrics if diffs[m]["low"] > 0]
        down = [m for m in metrics if diffs[m]["high"] < 0]
        if up:
            better.append(f"{label} ({', '.join(up)})")
        if down:
            worse.append(f"{label} ({', '.join(down)})")
        if not up and not down:
            same.append(label)
    verdict = [f"Better than {baseline} beyond noise: {'; '.join(better)}." if better else
               f"No model is better than {baseline} beyond noise."]
    if worse:
        verdict.append(f"Worse than {baseline} beyond noise: {'; '.join(worse)}.")
    if same:
        verdict.append(f"Within noise of {baseline} on every metric: {', '.join(same)}.")
    return (header, rows), verdict


def _blocks(config: ExperimentConfig, dataset: Any, runs: list[Run], summary: dict[str, Any],
            table: tuple[list[str], list[list[str]]], verdict: list[str]) -> list[tuple]:
    """The report as blocks (``("h1", text)``, ``("p", text)``, ``("table", header, rows)``, ``("img", file)``),
    rendered to Markdown and to HTML."""
    from llm4rec.data.splits import PROTOCOLS

    first = runs[0].record
    baseline, metrics, seeds = summary["baseline"], summary["metrics"], summary["seeds"]
    protocol = PROTOCOLS[config.protocol.name]["title"] + (" (sampled ranking)" if first["ranking"] != "full"
                                                           else " (full ranking)")
    blocks: list[tuple] = [
        ("h1", config.name),
        ("p", f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} "
              f"interactions (fingerprint {dataset.fingerprint}) · {protocol} · {config.protocol.stage} stage · "
              f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))} · {first['n_users_evaluated']} users "
              "evaluated"),
        *[("p", line) for line in verdict],
        ("h2", "Comparison"),
        ("table", *table),
        ("p", f"Each value: the mean with its {summary['interval']}. {NOISE}: within noise of the baseline "
              f"{baseline}, the 95% interval of the paired difference from it (below) contains 0."),
        ("img", "comparison.png"),
        ("h2", f"Paired differences from {baseline}"),
    ]
    one = len(seeds) == 1
    rows = []
    for label, diffs in summary["differences"].items():
        for m in metrics:
            d = diffs[m]
            row = [label, m, f"{d['difference']:+.4f}", f"[{d['low']:+.4f}, {d['high']:+.4f}]"]
            if one:
                row.append(f"{d['per_seed'][str(seeds[0])]['t_pvalue']:.2g}")
            rows.append([*row, "yes" if d["within_noise"] else "no"])
    blocks.append(("table", ["model", "metric", f"difference from {baseline}", "95% interval",
                             *(["p (paired t-test)"] if one else []), "within noise"], rows))
    blocks.append(("p", "One seed: the difference is the mean over users of the per-user difference, its "
                        "interval a bootstrap over users." if one else
                        "The difference is the mean over seeds of each seed's mean paired difference, its "
                        "interval a t-interval over seeds; each seed's paired tests are in significance.json."))
    if not one:
        blocks.append(("h2", "Runs"))
        blocks.append(("table", ["model", "seed", "split", *metrics, "fit s", "eval s"],
                       [[r.label, str(r.seed), r.record["split_fingerprint"],
                         *[f"{r.record['metrics'][m]:.4f}" for m in metrics],
                         f"{r.record['fit_seconds']:.2f}", f"{r.record['eval_seconds']:.2f}"] for r in runs]))
    blocks.append(("p", "Files: records.jsonl (every run's record), per_user/ (per-user metrics), "
                        "significance.json (every test), resolved.json (the configuration with every default, "
                        "the command-line overrides, the dataset's fingerprint and the environment), "
                        "config.toml (the experiment file as given)."))
    return blocks


def _markdown(blocks: list[tuple]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = []
    for kind, *rest in blocks:
        if kind == "h1":
            out.append(f"# {rest[0]}")
        elif kind == "h2":
            out.append(f"## {rest[0]}")
        elif kind == "p":
            out.append(rest[0])
        elif kind == "img":
            out.append(f"![comparison]({rest[0]})")
        else:
            header, rows = rest
            out.append("\n".join(["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header),
                                  *["| " + " | ".join(map(cell, r)) + " |" for r in rows]]))
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
        "td{text-align:right;font-variant-numeric:tabular-nums}td:first-child,td:nth-child(2){text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}")


def _html(blocks: list[tuple], images: dict[str, bytes]) -> str:
    """Self-contained HTML: inline CSS, the PNG embedded as base64, nothing fetched."""
    esc = html.escape
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "img":
            data = base64.b64encode(images[rest[0]]).decode()
            body.append(f'<img alt="comparison" src="data:image/png;base64,{data}">')
        else:
            header, rows = rest
            body.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
    title = esc(blocks[0][1])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _figure(config: ExperimentConfig, summary: dict[str, Any]) -> bytes:
    from llm4rec.evaluation.report import comparison_figure, png_bytes

    metrics, baseline = summary["metrics"], summary["baseline"]
    rows = [{"model": label, "label": label + (" (baseline)" if label == baseline else ""),
             "highlight": label == baseline, "metrics": {m: s["mean"] for m, s in stats.items()},
             "intervals": {m: [s["low"], s["high"]] for m, s in stats.items()}}
            for label, stats in summary["models"].items()]
    return png_bytes(comparison_figure(rows, metrics, title=config.name, note=f"error bars: {summary['interval']}"))


def _write_results(partial: Path, config: ExperimentConfig, dataset: Any, runs: list[Run], summary: dict[str, Any],
                   table: tuple[list[str], list[list[str]]], verdict: list[str]) -> None:
    """Every file of the results folder into ``partial``; the run store and stale studies removed."""
    from llm4rec._atomic import atomic_write_bytes, atomic_write_text
    from llm4rec._runinfo import environment

    if config.text is not None:
        atomic_write_text(partial / "config.toml", config.text)
    resolved = {"experiment": config.model_dump(mode="json"), "source": None if config.source is None else
                str(config.source.resolve()), "overrides": config.overrides,
                "dataset": {"name": dataset.name, "path": config.data.path, "fingerprint": dataset.fingerprint,
                            "item_text_fingerprint": dataset.item_text_fingerprint, "users": dataset.n_users,
                            "items": dataset.n_items, "interactions": dataset.n_interactions},
                "environment": environment()}
    atomic_write_text(partial / "resolved.json", json.dumps(resolved, indent=2) + "\n")
    atomic_write_text(partial / "records.jsonl", "".join(json.dumps(r.record) + "\n" for r in runs))
    shutil.rmtree(partial / "per_user", ignore_errors=True)
    for run in runs:
        atomic_write_bytes(partial / "per_user" / f"{run.name}.npz", _npz_bytes({**run.per_user, "users": run.users}))
    atomic_write_text(partial / "significance.json", json.dumps(summary, indent=2) + "\n")
    png = _figure(config, summary)
    atomic_write_bytes(partial / "comparison.png", png)
    blocks = _blocks(config, dataset, runs, summary, table, verdict)
    atomic_write_text(partial / "report.md", _markdown(blocks))
    atomic_write_text(partial / "report.html", _html(blocks, {"comparison.png": png}))
    tuned = {r.name for r in runs if "tuning" in r.record}
    studies = partial / "studies"
    if studies.is_dir():
        for old in studies.iterdir():
            if old.name not in tuned:
                shutil.rmtree(old, ignore_errors=True)
        if not tuned:
            studies.rmdir()
    shutil.rmtree(partial / "runs")
