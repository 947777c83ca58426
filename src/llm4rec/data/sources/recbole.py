"""RecBole atomic files: ``<name>.inter`` (+ optional ``.item`` / ``.user``).

Tab separated, UTF-8, with a typed header ``field:type`` where type is one of
``token``, ``token_seq`` (space-separated tokens), ``float``, ``float_seq``.
The interaction file needs ``user_id`` and ``item_id`` fields; ``rating`` and
``timestamp`` are used when present. ``token_seq`` fields of the item file are
kept as text (titles, genres) and listed as the dataset's text fields. Every
item of the ``.item`` file is in the item vocabulary, with its attributes, even
one without any interaction yet (see ``Dataset.interacted_items``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llm4rec.data.dataset import Dataset
from llm4rec.data.sources._common import parse_float_column, require_file
from llm4rec.errors import InputError

__all__ = ["load_recbole", "read_atomic"]

_TYPES = {"token", "token_seq", "float", "float_seq"}


def read_atomic(path: str | Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read one atomic file into a frame of typed columns; return it and the field types."""
    path = require_file(path, "RecBole atomic file")
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        header = fh.readline().rstrip("\r\n")
    if not header:
        raise InputError("empty file", path=path, line=1,
                         expected="a typed header 'field:type<TAB>...' and at least one data row")
    with path.open("rb") as fh:
        fh.readline()
        has_rows = any(line.strip() for line in fh)  # stops at the first data row
    if not has_rows:
        raise InputError("no data rows under the header", path=path, line=2,
                         expected="a typed header line and at least one data row")
    fields: dict[str, str] = {}
    for col, spec in enumerate(header.split("\t"), start=1):
        name, sep, typ = spec.rpartition(":")
        if not sep or typ not in _TYPES:
            hint = " The file does not look tab separated." if "\t" not in header and len(header.split()) > 1 else ""
            raise InputError("bad header field", path=path, line=1, column=col, value=spec,
                             expected=f"'name:type' with type in {sorted(_TYPES)}", hint=hint.strip() or None)
        fields[name] = typ
    try:
        df = pl.read_csv(path, separator="\t", has_header=False, skip_rows=1, quote_char=None,
                         infer_schema=False, new_columns=list(fields), encoding="utf8",
                         truncate_ragged_lines=False)
    except pl.exceptions.ComputeError as exc:
        raise InputError(f"cannot parse the file: {str(exc).splitlines()[0]}", path=path,
                         expected=f"{len(fields)} tab-separated columns per line") from None
    for name, typ in fields.items():
        if typ == "float":
            df = parse_float_column(df, name, path=path, line_offset=2)
    return df, fields


def load_recbole(path: str | Path, *, name: str | None = None) -> Dataset:
    """Load ``<dir>/<name>.inter`` (or an explicit ``.inter`` path) with its side files.

    Items of ``<name>.item`` without interactions are kept (see the module
    docstring); users of ``<name>.user`` without interactions are dropped.
    """
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if not inters:
            raise InputError("no .inter file in the directory", path=path,
                             expected="a RecBole atomic '<name>.inter' file")
        path = inters[0]
    stem = path.with_suffix("")
    name = name or stem.name
    inter, fields = read_atomic(path)
    for need in ("user_id", "item_id"):
        if need not in fields:
            raise InputError("missing field", path=path, line=1, column=need,
                             expected=f"fields user_id and item_id (found {list(fields)})")
    keep = ["user_id", "item_id"] + [c for c in ("timestamp", "rating") if c in fields]
    item_attrs = user_attrs = None
    text_fields: tuple[str, ...] = ()
    if stem.with_suffix(".item").exists():
        item_attrs, item_fields = read_atomic(stem.with_suffix(".item"))
        text_fields = tuple(f for f, t in item_fields.items() if t == "token_seq")
    if stem.with_suffix(".user").exists():
        user_attrs, _ = read_atomic(stem.with_suffix(".user"))
    return Dataset.from_frame(inter.select(keep), name=name, item_attrs=item_attrs,
                              user_attrs=user_attrs, text_fields=text_fields, source=str(path))
