"""Pieces shared by the CLI commands: consoles, --set parsing, progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llm4rec.errors import InputError

__all__ = ["StepReporter", "console", "err_console", "parse_settings", "progress_bar"]

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough for a metrics table
    console = Console(width=120)
err_console = Console(stderr=True)


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["l2=400", "factors=32"]`` -> ``{"l2": "400", "factors": "32"}`` (the model config validates)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError("bad --set option", value=pair, expected="KEY=VALUE, e.g. --set l2=400")
        out[key.removeprefix("model.")] = value.strip()
    return out


@contextmanager
def progress_bar(transient: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr (hidden when stderr is not a terminal)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=transient) as progress:
        yield progress


class StepReporter:
    """Turns ``(step, done, total)`` callbacks into one progress bar per step."""

    def __init__(self, progress: Progress, prefix: str = "") -> None:
        self.progress, self.prefix, self.tasks = progress, prefix, {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(f"{self.prefix}{step}", total=total)
        self.progress.update(self.tasks[step], completed=done, total=total)
