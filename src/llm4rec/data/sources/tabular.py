"""Generic interaction tables: CSV, TSV, Parquet files or in-memory DataFrames.

Columns are mapped by name (``user_col``, ``item_col``, ...). A timestamp or
rating column is found under the usual names when not given (see
``TIMESTAMP_NAMES``, ``RATING_NAMES``); pass ``None`` to go without one.
Timestamps may be numbers (epoch seconds, kept as they are), ISO 8601
date/times as text (naive ones read as UTC) or typed date/datetime columns;
the dataset stores epoch seconds. Delimited files need a header line; the
separator comes from the extension (``.csv`` comma, ``.tsv``/``.tab`` tab) or,
for other names, from the header line. Item and user attribute tables load
from ``items_path`` / ``users_path`` (same formats), keyed by ``item_key`` /
``user_key``. Every item of the item table is in the item vocabulary with its
attributes, even one without interactions yet (see
``Dataset.interacted_items``); users of the user table without interactions
are dropped. Every file needs at least one data row.

A directory written by :func:`llm4rec.data.export.save_dataset` (csv or
parquet) loads whole: ``interactions.<ext>``, ``items.<ext>`` and
``users.<ext>`` when present, and the name and text fields from ``dataset.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from llm4rec.data.dataset import Dataset, _to_polars
from llm4rec.data.sources._common import require_file
from llm4rec.errors import InputError

__all__ = ["RATING_NAMES", "TABLE_SUFFIXES", "TIMESTAMP_NAMES", "from_dataframe", "load_table", "read_table"]

TIMESTAMP_NAMES = ("timestamp", "time", "ts", "datetime", "date")
RATING_NAMES = ("rating", "score")
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".tab")
_SNIFF = ("\t", ",", ";", "|")
AUTO = "auto"
_ROWS = "a header line and at least one data row"
# What each column option looks for, for error messages.
_ROLES = {"user_col": "user id", "item_col": "item id", "timestamp_col": "timestamp", "rating_col": "rating"}


def load_table(
    path: str | Path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    timestamp_col: str | None = AUTO,
    rating_col: str | None = AUTO,
    separator: str | None = None,
    items_path: str | Path | None = None,
    item_key: str | None = None,
    users_path: str | Path | None = None,
    user_key: str | None = None,
    text_columns: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load interactions from a CSV / TSV / Parquet file (or an exported directory).

    Args:
        path: the interaction table, or a directory holding ``interactions.<ext>``.
        user_col, item_col: the id columns.
        timestamp_col, rating_col: the column to use, ``"auto"`` to look for the
            usual names, or ``None`` for none (the row order is then the time order).
        separator: field separator of a delimited file; default from the extension or header.
        items_path, users_path: attribute tables (any format above); every
            item of the item table is kept, with or without interactions.
        item_key, user_key: their id column; default ``item_col`` / ``user_col``.
        text_columns: item attribute columns that hold text; default: those
            listed in an exported directory's ``dataset.json``, else none.
        name: dataset name; default: the file's stem (the directory's name for a directory).
    """
    path = Path(path)
    if path.is_dir():
        folder = path
        path, items_path, users_path, meta = _export_layout(folder, items_path, users_path)
        name = name or meta.get("name") or folder.name
        if text_columns is None:
            text_columns = meta.get("text_fields", ())
    frame = read_table(path, separator=separator, what="interactions")
    items = None if items_path is None else _attrs(read_table(items_path, separator=separator, what="items"),
                                                   item_key or item_col, "item_id", items_path, "item_key")
    users = None if users_path is None else _attrs(read_table(users_path, separator=separator, what="users"),
                                                   user_key or user_col, "user_id", users_path, "user_key")
    return _build(frame, source=path, line_offset=None if path.suffix == ".parquet" else 2,
                  user_col=user_col, item_col=item_col, timestamp_col=timestamp_col, rating_col=rating_col,
                  item_attrs=items, user_attrs=users, text_columns=tuple(text_columns or ()),
                  name=name or path.stem)


def from_dataframe(
    frame: Any,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    timestamp_col: str | None = AUTO,
    rating_col: str | None = AUTO,
    items: Any = None,
    item_key: str | None = None,
    users: Any = None,
    user_key: str | None = None,
    text_columns: Sequence[str] = (),
    name: str = "dataset",
) -> Dataset:
    """Build a dataset from a pandas or polars DataFrame with the same mapping as :func:`load_table`.

    ``items`` / ``users`` are attribute DataFrames; every item of ``items`` is
    kept, with or without interactions. Errors name the 0-based row.
    """
    item_attrs = None if items is None else _attrs(_to_polars(items), item_key or item_col, "item_id",
                                                   "<items DataFrame>", "item_key")
    user_attrs = None if users is None else _attrs(_to_polars(users), user_key or user_col, "user_id",
                                                   "<users DataFrame>", "user_key")
    return _build(_to_polars(frame), source="<DataFrame>", line_offset=None, user_col=user_col,
                  item_col=item_col, timestamp_col=timestamp_col, rating_col=rating_col, item_attrs=item_attrs,
                  user_attrs=user_attrs, text_columns=tuple(text_columns), name=name)


def read_table(path: str | Path, *, separator: str | None = None, what: str = "data rows") -> pl.DataFrame:
    """Read a Parquet file, or a delimited file with a header as string columns.

    Row ``r`` of a delimited file is line ``r + 2`` (blank lines read as rows
    of nulls). A file without a data row (empty, only a header, a Parquet
    table of zero rows) is an InputError naming it and saying it has no
    ``what`` (``"interactions"``, ``"items"``, ...).
    """
    path = require_file(path, "table")
    if path.suffix == ".parquet":
        try:
            table = pl.read_parquet(path)
        except (pl.exceptions.ComputeError, OSError) as exc:
            raise InputError(f"cannot read the Parquet file: {str(exc).splitlines()[0]}", path=path,
                             expected="a Parquet file") from None
        if table.height == 0:
            raise InputError(f"no {what} in the Parquet table", path=path,
                             expected=f"a table with at least one row (its columns are {table.columns})")
        return table
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError("not UTF-8 text", path=path, line=line, expected="a UTF-8 file") from None
    if not text.strip():
        raise InputError("empty file", path=path, line=1, expected=_ROWS)
    separator = separator or _separator(path, text)
    try:
        table = pl.read_csv(text.encode("utf-8"), separator=separator, infer_schema=False)
    except pl.exceptions.ComputeError as exc:
        raise InputError(f"cannot parse the file: {str(exc).splitlines()[0]}", path=path,
                         expected=f"fields separated by {separator!r} under a header") from None
    if not table.select(pl.all_horizontal(pl.all().is_null()).not_().any()).item():  # blank lines read as nulls
        raise InputError(f"no {what} under the header", path=path, line=2, expected=_ROWS)
    return table


def _separator(path: Path, text: str) -> str:
    if path.suffix == ".csv":
        return ","
    if path.suffix in (".tsv", ".tab"):
        return "\t"
    header = text.lstrip().split("\n", 1)[0]
    counts = {s: header.count(s) for s in _SNIFF}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _export_layout(folder: Path, items_path: str | Path | None, users_path: str | Path | None
                   ) -> tuple[Path, Path | None, Path | None, dict]:
    found = [folder / f"interactions{s}" for s in TABLE_SUFFIXES if (folder / f"interactions{s}").is_file()]
    if not found:
        raise InputError("no interaction table in the directory", path=folder,
                         expected="interactions.parquet, .csv or .tsv (as save_dataset writes)")
    path = found[0]
    meta: dict = {}
    if (folder / "dataset.json").is_file():
        try:
            meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc.msg}", path=folder / "dataset.json", line=exc.lineno,
                             expected="the JSON object save_dataset writes") from None

    def side(given: str | Path | None, kind: str) -> Path | None:
        if given is not None:
            return Path(given)
        candidate = folder / f"{kind}{path.suffix}"
        return candidate if candidate.is_file() else None

    return path, side(items_path, "items"), side(users_path, "users"), meta


def _build(frame: pl.DataFrame, *, source: str | Path, line_offset: int | None, user_col: str, item_col: str,
           timestamp_col: str | None, rating_col: str | None, item_attrs: pl.DataFrame | None,
           user_attrs: pl.DataFrame | None, text_columns: tuple[str, ...], name: str) -> Dataset:
    """Map columns, check values, parse numbers and dates, then build the dataset.

    ``line_offset`` turns a 0-based row into a file line (2 under a header);
    ``None`` names rows instead (Parquet, DataFrames). Blank rows are skipped.
    """

    def fail(problem: str, row: int, column: str, value: object = None, expected: str | None = None
             ) -> InputError:
        if line_offset is None:
            problem = f"row {row}: {problem}"
        line = None if line_offset is None else row + line_offset
        return InputError(problem, path=source, line=line, column=column, value=value, expected=expected)

    def column(option: str, wanted: str) -> str:
        if wanted not in frame.columns:
            hint = None
            if len(frame.columns) == 1 and any(s in frame.columns[0] for s in _SNIFF + (":",)):
                hint = "The table has a single column: is the separator right (separator= / --separator)?"
            raise InputError(f"no {_ROLES[option]} column", path=source, column=wanted,
                             expected=f"a column {wanted!r} among {frame.columns}; {_choose(option)}", hint=hint)
        return wanted

    def optional(option: str, wanted: str | None, names: tuple[str, ...]) -> str | None:
        if wanted == AUTO:
            return next((c for c in names if c in frame.columns), None)
        return None if wanted is None else column(option, wanted)

    mapping = {"user_id": column("user_col", user_col), "item_id": column("item_col", item_col)}
    if ts := optional("timestamp_col", timestamp_col, TIMESTAMP_NAMES):
        mapping["timestamp"] = ts
    if rating := optional("rating_col", rating_col, RATING_NAMES):
        mapping["rating"] = rating
    df = (frame.select([pl.col(c).alias(k) for k, c in mapping.items()])
          .with_row_index("_row")
          .filter(~pl.all_horizontal(pl.col(k).is_null() for k in mapping)))
    if df.height == 0:
        ids = f"{mapping['user_id']!r} and an {mapping['item_id']!r}"
        raise InputError("no interactions", path=source, expected=f"at least one row with a {ids} value")
    for key in mapping:
        missing = df.filter(pl.col(key).is_null())
        if missing.height:
            raise fail("missing value", int(missing.get_column("_row")[0]), mapping[key],
                       expected="a value in every row")
    if ts:
        df = _parse(df, "timestamp", _epoch_seconds(df.get_column("timestamp")), ts, "not a timestamp",
                    "epoch seconds or an ISO 8601 date/time", fail)
    if rating:
        df = _parse(df, "rating", _number(df.get_column("rating")), rating, "not a number",
                    "a numeric rating", fail)
    for text in text_columns:
        if item_attrs is None or text not in item_attrs.columns:
            where = ("an item table (items_path= / --items-path) with that column" if item_attrs is None
                     else f"one of the item table's columns {item_attrs.columns[1:]}")
            raise InputError("text column not in the item table", path=source, column=text,
                             expected=f"{where}; {_choose('text_columns')}")
    return Dataset.from_frame(df.drop("_row"), name=name, item_attrs=item_attrs, user_attrs=user_attrs,
                              text_fields=text_columns, source=str(source))


def _parse(df: pl.DataFrame, key: str, parsed: pl.Series, original: str, problem: str, expected: str,
           fail: Callable[..., InputError]) -> pl.DataFrame:
    """Replace column ``key`` by ``parsed``; a null where the raw value was not is an error."""
    bad = parsed.is_null() & df.get_column(key).is_not_null()
    if bad.any():
        at = int(bad.arg_true()[0])
        raise fail(problem, int(df.get_column("_row")[at]), original, df.get_column(key)[at], expected)
    return df.with_columns(parsed.cast(pl.Float64).alias(key))


def _number(raw: pl.Series) -> pl.Series:
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    return raw.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)


def _epoch_seconds(raw: pl.Series) -> pl.Series:
    """Epoch seconds from numbers (as they are), ISO 8601 text (naive = UTC) or dates/datetimes.

    A text column is read as numbers when its first value is a number, as date/times otherwise.
    """
    if raw.dtype == pl.Date:
        return raw.dt.epoch("s").cast(pl.Float64)
    if isinstance(raw.dtype, pl.Datetime):
        return raw.dt.epoch("us") / 1e6
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    text = raw.cast(pl.Utf8).str.strip_chars()
    numbers = text.cast(pl.Float64, strict=False)
    if numbers[0] is not None:
        return numbers
    seconds = text.str.to_datetime(strict=False, time_zone="UTC", time_unit="us").dt.epoch("us") / 1e6
    failed = seconds.is_null().arg_true()  # polars keeps one format per column; mixed ISO forms go by hand
    if failed.len():
        seconds = seconds.scatter(failed, [_iso_seconds(v) for v in text.gather(failed)])
    return seconds


def _iso_seconds(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _choose(option: str) -> str:
    """How both a Python caller and a command-line user pick another column: ``user_col= / --user-col``."""
    return f"choose another with {option}= / --{option.replace('_', '-')}"


def _attrs(table: pl.DataFrame, key: str, rename: str, source: str | Path, option: str) -> pl.DataFrame:
    """The attribute table with its key column first, renamed ``item_id`` / ``user_id``, as text.

    ``option`` is the loader option that names the key column (``item_key``), for the error message.
    """
    if key not in table.columns:
        raise InputError("attribute table lacks its key column", path=source, column=key,
                         expected=f"a column {key!r} among {table.columns}; {_choose(option)}")
    others = [c for c in table.columns if c != key and c != rename]
    return table.select(pl.col(key).cast(pl.Utf8).alias(rename), *others)
