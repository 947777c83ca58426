"""Write a :class:`Dataset` to disk as RecBole atomic files, Parquet or CSV.

Interactions are written with their original tokens (not indices), the
timestamp and the rating when there is one, in the dataset's order (user, then
time). Attribute tables are written with one row per vocabulary entry.

* ``to="recbole"``: ``<name>.inter``, ``<name>.item``, ``<name>.user`` in
  ``out/`` (``<name>``: the dataset name, characters other than letters,
  digits, ``.``, ``-`` and ``_`` replaced by ``_``); loads back with
  ``load_recbole(out)``.
* ``to="parquet"``: ``interactions.parquet``, ``items.parquet``,
  ``users.parquet`` and ``dataset.json`` (name, text fields); loads back with
  ``load_table(out)`` (or ``load_dataset(out)``).
* ``to="csv"``: the same with ``.csv`` files.

Any of them loads back to a dataset with the same fingerprint, provided every
user and item of the vocabularies has an interaction (true of every loaded
dataset; a :meth:`Dataset.subset` may lose the idle ones). RecBole typing: item
text fields are ``token_seq``, float columns ``float``, every other column
``token``; list columns are written space-joined (``token_seq`` /
``float_seq``), as in CSV. RecBole files cannot quote, so tabs and line breaks
inside attribute values become spaces there; ids containing them are an error.
The directory is written atomically: a failed save leaves no trace and an
existing ``out`` is replaced only with ``overwrite=True``, and only when it
holds nothing but an earlier export's files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from llm4rec._atomic import atomic_dir
from llm4rec.data.dataset import Dataset
from llm4rec.errors import InputError

__all__ = ["EXPORT_FORMATS", "save_dataset"]

EXPORT_FORMATS = ("recbole", "parquet", "csv")
_BREAKS = re.compile(r"[\t\r\n]")


def save_dataset(dataset: Dataset, out: str | Path, to: str = "recbole", *, overwrite: bool = False) -> Path:
    """Write ``dataset`` into the directory ``out`` in format ``to``; return ``out``.

    Args:
        dataset: what to write.
        out: the directory to create (its parent is created if needed).
        to: ``"recbole"``, ``"parquet"`` or ``"csv"``.
        overwrite: replace ``out`` when it exists and is not empty.
    """
    if to not in EXPORT_FORMATS:
        raise InputError("unknown export format", value=to, expected=f"one of {list(EXPORT_FORMATS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path is a file", path=out, expected="a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError("output directory is not empty", path=out, expected="a new or empty directory",
                             hint="Pass overwrite=True (--overwrite) to replace an earlier export there.")
        if not _is_export(out):
            raise InputError("output directory is not empty and is not an earlier export, so it is not replaced",
                             path=out, expected="a new or empty directory, or one written by save_dataset")
    if dataset.n_interactions == 0:
        raise InputError(f"dataset {dataset.name!r} has no interactions", expected="at least one to save")
    inter = _interactions(dataset)
    tables = {"items": dataset.item_attrs, "users": dataset.user_attrs}
    with atomic_dir(out, replace=overwrite) as tmp:
        if to == "recbole":
            _write_recbole(dataset, inter, tables, tmp)
        else:
            for kind, table in {"interactions": inter, **tables}.items():
                if table is None:
                    continue
                if to == "parquet":
                    table.write_parquet(tmp / f"{kind}.parquet")
                else:
                    _flat(table, kind).write_csv(tmp / f"{kind}.csv")
            meta = {"name": dataset.name, "text_fields": list(dataset.text_fields)}
            (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _interactions(dataset: Dataset) -> pl.DataFrame:
    """Tokens, timestamp and rating; integral numbers as integers so files read plainly."""
    columns = {
        "user_id": pl.Series(dataset.users.tokens[dataset.user].astype(str), dtype=pl.Utf8),
        "item_id": pl.Series(dataset.items.tokens[dataset.item].astype(str), dtype=pl.Utf8),
        "timestamp": _plain(dataset.timestamp),
    }
    if dataset.rating is not None:
        columns["rating"] = _plain(dataset.rating)
    return pl.DataFrame(columns)


def _plain(values: np.ndarray) -> pl.Series:
    """int64 when every value is a whole number that int64 holds exactly, else the float values."""
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
        return pl.Series(values.astype(np.int64))
    return pl.Series(values)


def _flat(table: pl.DataFrame, kind: str) -> pl.DataFrame:
    """List columns space-joined; other nested columns cannot go to a text file."""
    for name, dtype in table.schema.items():
        if isinstance(dtype, pl.List) and not dtype.inner.is_nested():
            table = table.with_columns(pl.col(name).list.eval(pl.element().cast(pl.Utf8)).list.join(" "))
        elif dtype.is_nested():
            raise InputError(f"cannot write the {kind} column of type {dtype} as text", column=name,
                             expected="scalar or list columns (or to='parquet')")
    return table


def _is_export(folder: Path) -> bool:
    """True when every file in ``folder`` is one an export writes (so replacing it loses nothing else)."""
    allowed = re.compile(r"^(dataset\.json|(interactions|items|users)\.(csv|parquet)|[^/]+\.(inter|item|user))$")
    return all(p.is_file() and allowed.match(p.name) for p in folder.iterdir())


def _write_recbole(dataset: Dataset, inter: pl.DataFrame, tables: dict[str, pl.DataFrame | None],
                   folder: Path) -> None:
    stem = re.sub(r"[^\w.-]", "_", dataset.name).strip(".") or "dataset"
    for key in ("user_id", "item_id"):
        bad = inter.filter(pl.col(key).str.contains(_BREAKS.pattern))
        if bad.height:
            raise InputError("id with a tab or line break cannot go to a RecBole file", column=key,
                             value=bad.get_column(key)[0], expected="ids without tabs or line breaks")
    _write_atomic_file(inter, {"rating": "float", "timestamp": "float"}, folder / f"{stem}.inter")
    for kind, suffix in (("items", ".item"), ("users", ".user")):
        table = tables[kind]
        if table is None:
            continue
        types = {}
        for name, dtype in table.schema.items():
            if isinstance(dtype, pl.List):
                types[name] = "float_seq" if dtype.inner.is_numeric() else "token_seq"
            elif dtype.is_float():
                types[name] = "float"
            else:
                types[name] = "token_seq" if kind == "items" and name in dataset.text_fields else "token"
        flat = _flat(table, kind)
        text = [n for n, d in flat.schema.items() if d == pl.Utf8 and n not in ("item_id", "user_id")]
        flat = flat.with_columns(pl.col(text).str.replace_all(_BREAKS.pattern, " "))
        _write_atomic_file(flat, types, folder / f"{stem}{suffix}")


def _write_atomic_file(table: pl.DataFrame, types: dict[str, str], path: Path) -> None:
    """A tab-separated file under a ``name:type`` header (``token`` unless ``types`` says otherwise)."""
    for name in table.columns:
        if _BREAKS.search(name):
            raise InputError("column name with a tab or line break", column=name, path=path.name,
                             expected="names without tabs or line breaks")
    header = "\t".join(f"{name}:{types.get(name, 'token')}" for name in table.columns)
    body = table.write_csv(separator="\t", include_header=False, quote_style="never")
    path.write_text(header + "\n" + body, encoding="utf-8")
