"""Helpers shared by the loaders: existence checks and typed column parsing."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llm4rec.errors import InputError

__all__ = ["parse_float_column", "require_file"]


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise InputError if it is not an existing file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found", path=path, expected="an existing file")
    if not path.is_file():
        raise InputError(f"{what} is not a regular file", path=path, expected="a file")
    return path


def parse_float_column(df: pl.DataFrame, column: str, *, path: Path, line_offset: int,
                       rename: str | None = None) -> pl.DataFrame:
    """Cast a string column to float64, naming the first unparseable value.

    ``line_offset`` is the file line of data row 0 (2 when there is a header).
    """
    raw = df.get_column(column)
    parsed = raw.str.strip_chars().cast(pl.Float64, strict=False)
    bad = parsed.is_null() & raw.is_not_null() & (raw.str.strip_chars() != "")
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError("not a number", path=path, line=row + line_offset, column=column,
                         value=raw[row], expected="a numeric value")
    return df.with_columns(parsed.alias(rename or column))
