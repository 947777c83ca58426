"""``llm4rec run``: a whole comparison from an experiment file, into one results folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llm4rec.cli._common import console, err_console, progress_bar

if TYPE_CHECKING:
    from llm4rec.experiments.config import ExperimentConfig
    from llm4rec.experiments.pipeline import PipelineResult


def _seeds(text: str) -> list[int]:
    from llm4rec.errors import InputError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise InputError("bad --seeds", value=text, expected="comma-separated integers, e.g. --seeds 2026,7,11")
    return seeds


def run_command(
    experiment: Path = typer.Argument(..., help="The experiment file (TOML): data, protocol, seeds, models, "
                                                "report; see configs/ for examples."),
    out: Path = typer.Option(None, "--out", help="The results folder to create (default: results/<the file's "
                                                 "stem> in the current directory)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a key of the file, KEY=VALUE with a dotted "
                                                            "key (repeatable): protocol.seeds=[7,11], "
                                                            "models.ease.settings.l2=200 (a model by its label), "
                                                            "report.baseline=als."),
    seeds: str = typer.Option(None, "--seeds", help="Run every model under each of these seeds, e.g. 2026,7,11 "
                                                    "(replaces protocol.seeds): means with 95% t-intervals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results folder, once the new "
                                                              "one is complete."),
) -> None:
    """Run every model of EXPERIMENT under each seed into one results folder: the records, per-user metrics,
    paired tests against the baseline, a chart and a report (Markdown and HTML).

    The folder appears only once every run has finished; it is built in a hidden .partial folder beside it.
    A rerun after an interruption reuses the runs that had finished.
    """
    from llm4rec.cli._training import TrainingDisplay
    from llm4rec.experiments.config import load_config
    from llm4rec.experiments.pipeline import check_out_dir, partial_dir, run_pipeline

    config = load_config(experiment, overrides or [], seeds=None if seeds is None else _seeds(seeds))
    out = out if out is not None else Path("results") / experiment.stem
    check_out_dir(out, overwrite=overwrite)  # before loading any data
    if partial_dir(out).is_dir():
        console.print(f"resuming from {partial_dir(out)}: finished runs with the same settings are reused")
    with progress_bar() as progress:
        task = progress.add_task(f"loading {config.data.path}", total=None)
        training = TrainingDisplay(progress)

        def report(event: str, text: str, done: int, total: int) -> None:
            if event == "running":
                training.prefix = f"{text}: "
                progress.update(task, completed=done, total=total, description=f"run {done + 1}/{total}: {text}")
                return
            progress.update(task, completed=done, total=total, description="runs")
            progress.console.print(f"{'reused (finished earlier)' if event == 'reused' else 'done'}: {text}",
                                   soft_wrap=True, markup=False, highlight=False)

        result = run_pipeline(config, out, overwrite=overwrite, progress=report, callbacks=[training])
    _print(config, result)


def _print(config: ExperimentConfig, result: PipelineResult) -> None:
    """The comparison table (without the settings column), the verdict, the report's path."""
    from rich.table import Table

    header, rows = result.table
    table = Table(title=config.name, caption=f"mean [{result.summary['interval']}]; ≈ within noise of the "
                                             "baseline; settings: in the report")
    for i, name in enumerate(header):
        if i != 1:  # the settings column is the report's
            table.add_column(name, justify="left" if i == 0 else "right", style="cyan" if i == 0 else None,
                             no_wrap=i > 0)
    for row in rows:
        table.add_row(row[0], *row[2:])
    console.print(table)
    for line in result.verdict:
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if result.reused:
        err_console.print(f"{result.reused} of {len(result.runs)} runs reused from an interrupted attempt")
    console.print(f"report: {result.out_dir / 'report.md'} (and report.html)", soft_wrap=True)
