"""Pieces shared by the CLI commands: consoles, --set parsing, output checks, reports, progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from llm4rec.errors import InputError

__all__ = ["OVERWRITE_HELP", "StepReporter", "check_output_file", "console", "data_report_line",
           "err_console", "parse_settings", "progress_bar"]

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough for a metrics table
    console = Console(width=120)
err_console = Console(stderr=True)

OVERWRITE_HELP = "Replace this command's own output files if they exist (nothing else is touched)."


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["l2=400", "lora.rank=8"]`` -> ``{"l2": "400", "lora": {"rank": "8"}}`` (the model config validates).

    A dotted key sets a field of a nested setting (``first_stage_settings.l2=400``); a leading
    ``model.`` is dropped.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        *sections, name = [p.strip() for p in key.strip().removeprefix("model.").split(".")]
        if not sep or not name or not all(sections):
            raise InputError("bad --set option", value=pair,
                             expected="KEY=VALUE or SECTION.KEY=VALUE, e.g. --set l2=400 or --set lora.rank=8")
        node = out
        for depth, section in enumerate(sections):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {'.'.join(sections[:depth + 1])} is already set to a value", value=pair,
                                 expected="either --set KEY=VALUE or --set KEY.FIELD=VALUE")
        if isinstance(node.get(name), dict):
            raise InputError(f"--set {name} conflicts with --set {name}.FIELD settings", value=pair,
                             expected="either --set KEY=VALUE or --set KEY.FIELD=VALUE")
        node[name] = value.strip()
    return out


def check_output_file(path: Path | None, *, overwrite: bool, option: str) -> None:
    """Before any work: ``path`` (a file the command will write) is new, or may be replaced, and writable."""
    from llm4rec._atomic import check_output_files

    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{option} names a directory", path=path, expected="a file name, e.g. results.json")
    if path.exists() and not overwrite:
        raise InputError(f"{option}: the file already exists", path=path, expected="a new file name",
                         hint="Add --overwrite to replace it.")
    above = path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise InputError(f"{option}: {above} is a file, not a directory", path=path,
                         expected="a file name in a directory")
    check_output_files(path.parent, [path.name], overwrite=True, option=option)


_LEFT_OUT = {"loo": "fewer than 3 interactions: the protocol needs a history, a validation and a test interaction",
             "loo100": "fewer than 3 interactions: the protocol needs a history, a validation and a test interaction",
             "rand": "too few interactions to hold one out in this stage",
             "cold": "no interaction with this stage's held-out items, or none left to learn from"}


def data_report_line(report: dict[str, int], protocol: str) -> str | None:
    """One line on what loading dropped and whom the evaluation left out, or None when nothing was."""
    parts = []
    if report["duplicates_dropped"]:
        n = report["duplicates_dropped"]
        parts.append(f"{n} duplicate (user, item) row{'s' * (n > 1)} of {report['rows']} dropped (the latest kept)")
    if report["users_left_out"]:
        parts.append(f"{report['users_left_out']} of {report['users']} users left out of the evaluation "
                     f"({_LEFT_OUT[protocol]})")
    if report["items_without_interactions"]:
        parts.append(f"{report['items_without_interactions']} catalogue items without interactions are left out "
                     "of the ranking")
    return "data: " + "; ".join(parts) if parts else None


# --------------------------------------------------------------- progress
@contextmanager
def progress_bar(transient: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr; off when stderr is not a terminal (``progress.console.print`` still
    prints there)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=transient,
                  disable=not err_console.is_terminal) as progress:
        yield progress


class StepReporter:
    """Turns ``(step, done, total)`` callbacks into one progress bar per step."""

    def __init__(self, progress: Progress, prefix: str = "") -> None:
        self.progress, self.prefix, self.tasks = progress, prefix, {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(f"{self.prefix}{step}", total=total)
        self.progress.update(self.tasks[step], completed=done, total=total)
