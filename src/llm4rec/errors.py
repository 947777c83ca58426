"""Errors that say what to fix.

Every error raised on bad user input is an :class:`InputError`. Its message is
one paragraph naming the file, line, column (or config key) and value where known,
and what was expected. The CLI prints it without a traceback (unless ``--debug``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "Llm4recError"]


class Llm4recError(Exception):
    """Base class of every error llm4rec raises on purpose."""


class InputError(Llm4recError, ValueError):
    """Bad input: a file, a value, an option.

    ``InputError("non-numeric rating", path=p, line=12, column="rating",
    value="x", expected="a number")`` renders as
    ``p, line 12, column 'rating': non-numeric rating (got 'x'; expected a number)``.
    ``key`` names a setting of a config file instead of a column: ``..., line 3, key 'protocol.seeds': ...``.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | int | None = None,
        value: object = None,
        expected: str | None = None,
        hint: str | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.value = value
        self.expected = expected
        self.hint = hint
        self.key = key
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        text = (", ".join(where) + ": " if where else "") + self.problem
        detail = []
        if self.value is not None:
            shown = repr(self.value)
            detail.append("got " + (shown if len(shown) <= 80 else shown[:77] + "..."))
        if self.expected:
            detail.append("expected " + self.expected)
        if detail:
            text += " (" + "; ".join(detail) + ")"
        if self.hint:
            text += ". " + self.hint
        return text
