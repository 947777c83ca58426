"""``llm4rec tune``: hyperparameter search with Optuna on a protocol's valid stage, then one test-stage run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from llm4rec.cli._common import (
    OVERWRITE_HELP,
    StepReporter,
    check_output_file,
    console,
    data_report_line,
    err_console,
    parse_settings,
    progress_bar,
)
from llm4rec.cli.data_cmd import FORMAT_HELP, LoadOptions, load_with_spinner
from llm4rec.errors import InputError

if TYPE_CHECKING:
    from llm4rec.experiments.tune import TuneResult

SPACE_HELP = ("A searched setting (repeatable; more specs may follow as arguments): NAME=log(LOW,HIGH) "
              "(log-uniform), float(LOW,HIGH), int(LOW,HIGH), intlog(LOW,HIGH) or [A,B,...] (choices: a grid "
              "when every setting is one), e.g. 'l2=log(10,2000)', 'factors=[32,64,128]', 'lora.rank=[4,8]'.")

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d*)?)s)?")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"1h30m"`` or plain seconds -> seconds; InputError naming the value otherwise."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d*)?", value):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if not value or match is None:
            raise InputError("bad --timeout", value=text, expected="a duration such as 90s, 30m, 1h or 1h30m")
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    if seconds <= 0:
        raise InputError("bad --timeout: it must be longer than zero", value=text, expected="e.g. 90s, 30m or 1h")
    return seconds


def tune_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset file or directory."),
    model: str = typer.Option(..., "--model", "-m", help="Model name, e.g. ease, als, sasrec."),
    protocol: str = typer.Option("loo", "--protocol", "-p", help="loo, loo100, rand or cold (PROTOCOLS.md); "
                                                                 "trials run on its valid stage."),
    space: list[str] = typer.Option(None, "--space", help=SPACE_HELP),
    more_space: list[str] = typer.Argument(None, metavar="SPEC", help="More search-space specs (as --space)."),
    trials: int = typer.Option(50, "--trials", min=1, help="Finished trials the study should have (complete or "
                                                           "pruned; a grid stops at its size)."),
    study: Path = typer.Option(None, "--study", help="Directory of the study (study.db: rerun the same command to "
                                                     "resume it) and of the outputs; default: tune-MODEL-PROTOCOL "
                                                     "in the current directory."),
    timeout: str = typer.Option(None, "--timeout", help="Start no new trial after this long, e.g. 90s, 30m, 1h, "
                                                        "1h30m (the running trial finishes)."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the protocol, the models and the sampler."),
    settings: list[str] = typer.Option(None, "--set", help="Fixed model setting KEY=VALUE (repeatable), e.g. "
                                                           "epochs=20; dotted keys set nested settings."),
    no_prune: bool = typer.Option(False, "--no-prune", help="Train every neural trial to its end (no pruning by "
                                                            "the validation curve)."),
    ray_address: str = typer.Option(None, "--ray", metavar="ADDRESS",
                                    help="Run the trials concurrently on a Ray cluster, one CPU each: auto (the "
                                         "cluster `ray start` started here), local (one in this process) or "
                                         "the head's host:port. Same study and outputs."),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="With --ray: trials at once (default: the "
                                                                       "cluster's CPUs)."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    json_out: Path = typer.Option(None, "--json", help="Also write the tuning record (tune.json) to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP + " For the study directory's "
                                                                              "outputs and --json (study.db is "
                                                                              "always resumed)."),
    separator: str = LoadOptions.separator, user_col: str = LoadOptions.user_col,
    item_col: str = LoadOptions.item_col, timestamp_col: str = LoadOptions.timestamp_col,
    rating_col: str = LoadOptions.rating_col, items_path: Path = LoadOptions.items_path,
    item_key: str = LoadOptions.item_key, users_path: Path = LoadOptions.users_path,
    user_key: str = LoadOptions.user_key, text_columns: str = LoadOptions.text_columns,
    ratings_file: str = LoadOptions.ratings_file, encoding: str = LoadOptions.encoding,
    tags: bool = LoadOptions.tags,
) -> None:
    """Search settings of MODEL on the protocol's valid stage (Optuna), then fit the best once on the test stage.

    TPE samples the space; when every setting is a list of choices the search
    is a grid. Neural trials whose validation curve falls below the median of
    earlier trials are pruned. The study (study.db) is stored as it goes:
    after an interruption, the same command resumes it. Outputs, written into
    the study directory after the test run: trials.csv, tune.json,
    history.png, importance.png. With --ray the trials run concurrently on a
    Ray cluster (one CPU each), into the same study.
    """
    from llm4rec._atomic import check_output_files
    from llm4rec.data.splits import PROTOCOLS, check_protocol
    from llm4rec.experiments.space import check_space, parse_space
    from llm4rec.experiments.tune import OUTPUT_FILES, STUDY_FILE, check_study, tune, write_outputs

    fixed = parse_settings(settings)
    protocol = check_protocol(protocol)
    metric = PROTOCOLS[protocol]["tune"]
    specs = [*(space or []), *(more_space or [])]
    if not specs:
        raise InputError("no search space given", expected="--space NAME=RANGE, e.g. --space 'l2=log(10,2000)' "
                                                           "--space 'factors=[32,64,128]'")
    searched = parse_space(specs)
    check_space(searched, model, fixed)  # unknown settings and refused values, before loading data
    seconds = None if timeout is None else parse_duration(timeout)
    if concurrency is not None and ray_address is None:
        raise InputError("--concurrency needs --ray", value=concurrency, expected="--ray ADDRESS as well")
    if ray_address is not None:
        from llm4rec.distributed.cluster import check_address

        check_address(ray_address)  # a wrong address is an error now, not after loading the data
    study = Path(f"tune-{model.lower()}-{protocol}") if study is None else study
    check_output_files(study, OUTPUT_FILES, overwrite=overwrite, option="--study")
    check_output_file(json_out, overwrite=overwrite, option="--json")
    finished = check_study(study, model=model, protocol=protocol, space=searched, seed=seed, settings=fixed)
    ds = load_with_spinner(data, fmt, separator=separator, user_col=user_col, item_col=item_col,
                           timestamp_col=timestamp_col, rating_col=rating_col, items_path=items_path,
                           item_key=item_key, users_path=users_path, user_key=user_key, text_columns=text_columns,
                           ratings_file=ratings_file, encoding=encoding, tags=tags)
    if finished is not None:
        err_console.print(f"resuming the study in {study / STUDY_FILE}: {finished} finished trial"
                          f"{'s' * (finished != 1)}", soft_wrap=True)
    with progress_bar() as progress:
        run: Any = tune
        if ray_address is not None:
            from functools import partial

            from llm4rec.distributed.tune import tune_ray

            run = partial(tune_ray, address=ray_address, concurrency=concurrency)
        try:
            result = run(ds, model, space=searched, protocol=protocol, trials=trials, timeout=seconds,
                         study_dir=study, seed=seed, settings=fixed, data_path=str(Path(data).resolve()),
                         prune=not no_prune, progress=StepReporter(progress, prefix=f"{model}: "),
                         on_trial=lambda row: progress.console.print(_trial_line(row, metric), soft_wrap=True,
                                                                     markup=False, highlight=False))
        except KeyboardInterrupt:
            if (study / STUDY_FILE).exists():
                err_console.print(f"the study is kept in {study / STUDY_FILE}: the same command resumes it",
                                  soft_wrap=True)
            raise
    _report(result)
    written = write_outputs(result, study, overwrite=overwrite, option="--study")
    if json_out is not None:
        from llm4rec._atomic import atomic_write_text

        check_output_file(json_out, overwrite=overwrite, option="--json")  # again: the search may have taken hours
        atomic_write_text(json_out, json.dumps(result.record(), indent=2) + "\n")
        written.append(json_out)
    console.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_line(row: dict[str, Any], metric: str) -> str:
    """``trial 3 · l2=412.5 · NDCG@10 0.0409 · 0.3s`` (or pruned at epoch N, or failed: why)."""
    params = ", ".join(f"{k}={_value(v)}" for k, v in row["params"].items())
    if row["state"] == "complete":
        outcome = f"{metric} {row['value']:.4f}"
    elif row["state"] == "pruned":
        outcome = f"pruned at epoch {row['pruned_at_epoch']}"
    else:
        outcome = f"failed: {row['error']}"
    return f"trial {row['number']} · {params} · {outcome} · {row['seconds']:.1f}s"


def _report(result: TuneResult) -> None:
    """The table of trials (the chosen one in bold), the chosen setting, its test metrics beside the valid ones."""
    from rich.table import Table

    test = result.test.record
    console.print(f"[bold]{result.dataset}[/bold] · {result.test.result.title} · {result.model} · seed "
                  f"{result.seed} · split {test['split_fingerprint']} · {len(result.trials)} trials "
                  f"({'grid' if result.sampler == 'grid' else 'TPE'}; {result.metric} on the valid stage)",
                  soft_wrap=True)
    if line := data_report_line(test["data_report"], result.protocol):
        console.print(line, soft_wrap=True)
    table = Table(title="trials (valid stage)")
    table.add_column("trial", justify="right")
    table.add_column("state")
    for name in result.space:
        table.add_column(name, justify="right")
    table.add_column(result.metric, justify="right")
    table.add_column("s", justify="right", style="dim")
    table.add_column("note")
    for row in result.trials:
        note = f"epoch {row['pruned_at_epoch']}" if row["state"] == "pruned" else row["error"] or ""
        table.add_row(str(row["number"]), row["state"], *(_value(row["params"].get(n, "-")) for n in result.space),
                      "-" if row["value"] is None else f"{row['value']:.4f}", f"{row['seconds']:.1f}", note,
                      style="bold" if row["number"] == result.best_trial else None)
    console.print(table)
    chosen = " ".join(f"{k}={v}" for k, v in result.best_params.items())
    console.print(f"chosen on the validation stage ({result.metric} {result.best_value:.4f}, trial "
                  f"{result.best_trial}): [bold]{chosen}[/bold]", soft_wrap=True)
    metrics = Table(title="the chosen setting")
    metrics.add_column("metric")
    metrics.add_column(f"valid (trial {result.best_trial})", justify="right")
    metrics.add_column("test", justify="right")
    for name, value in test["metrics"].items():
        valid = result.valid_metrics.get(name)
        metrics.add_row(name, "-" if valid is None else f"{valid:.4f}", f"{value:.4f}")
    console.print(metrics)
