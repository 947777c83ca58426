"""Loaders from the formats recommender data comes in, and format detection.

``load_dataset(path)`` recognises the layout (:func:`detect_format`) and calls
the loader for it; ``format=`` names it instead, and other keyword options go to
that loader:

===========  ==========================================  =======================
format       what                                        loader
===========  ==========================================  =======================
movielens    GroupLens 100K, 1M, 10M, ml-latest(-small)  :func:`load_movielens`
recbole      RecBole atomic ``.inter`` (+ ``.item``)     :func:`load_recbole`
amazon       P5 ``sequences.txt`` (+ ``items.jsonl``)    :func:`load_amazon`
csv          CSV / TSV / Parquet with a column mapping   :func:`load_table`
parquet      the same loader as ``csv``                  :func:`load_table`
===========  ==========================================  =======================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm4rec.data.dataset import Dataset
from llm4rec.data.sources.amazon import load_amazon
from llm4rec.data.sources.movielens import load_movielens
from llm4rec.data.sources.recbole import load_recbole
from llm4rec.data.sources.tabular import TABLE_SUFFIXES, from_dataframe, load_table
from llm4rec.errors import InputError

__all__ = [
    "FORMATS",
    "detect_format",
    "from_dataframe",
    "load_amazon",
    "load_dataset",
    "load_movielens",
    "load_recbole",
    "load_table",
]

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "movielens": load_movielens,
    "recbole": load_recbole,
    "amazon": load_amazon,
    "csv": load_table,
    "parquet": load_table,
}
#: Accepted values of ``load_dataset(format=...)``.
FORMATS: tuple[str, ...] = ("auto", *_LOADERS)

_LOOKED_FOR = (
    "a directory with *.inter (recbole); u.data, ratings.dat, movies.dat or ratings.csv + movies.csv "
    "(movielens); sequences.txt (amazon); interactions.parquet/.csv/.tsv (csv); or a file: "
    ".inter (recbole), u.data or .dat (movielens), sequences.txt (amazon), .csv/.tsv/.parquet (csv)"
)


def detect_format(path: str | Path) -> str:
    """The format of a dataset directory or file (one of ``FORMATS`` except auto and parquet)."""
    path = Path(path)
    if not path.exists():
        raise InputError("dataset path not found", path=path, expected="an existing file or directory")
    if path.is_dir():
        def has(name: str) -> bool:
            return (path / name).is_file()

        if any(path.glob("*.inter")):
            return "recbole"
        if has("u.data") or has("ratings.dat") or has("movies.dat") or (has("ratings.csv") and has("movies.csv")):
            return "movielens"
        if has("sequences.txt"):
            return "amazon"
        if any(has(f"interactions{s}") for s in TABLE_SUFFIXES):
            return "csv"
    else:
        if path.suffix == ".inter":
            return "recbole"
        if path.name == "u.data" or path.suffix == ".dat" or (
                path.name == "ratings.csv" and (path.parent / "movies.csv").is_file()):
            return "movielens"
        if path.name == "sequences.txt":
            return "amazon"
        if path.suffix in TABLE_SUFFIXES:
            return "csv"
    raise InputError("cannot tell the dataset format", path=path, expected=_LOOKED_FOR,
                     hint=f"Choose one with format= / --format: {', '.join(_LOADERS)}.")


def load_dataset(path: str | Path, format: str = "auto", **options: Any) -> Dataset:
    """Load a dataset from ``path`` in ``format`` (``"auto"``: :func:`detect_format`).

    ``options`` are keyword arguments of the format's loader, e.g.
    ``load_dataset("ml-1m", ratings_file="ratings_first10_per_user.dat")`` or
    ``load_dataset("log.csv", user_col="uid", item_col="sku")``. An unknown
    format or option is an :class:`InputError`.
    """
    if format not in FORMATS:
        raise InputError("unknown dataset format", value=format, expected=f"one of {list(FORMATS)}")
    if format == "auto":
        format = detect_format(path)
    loader = _LOADERS[format]
    accepted = [p for p in inspect.signature(loader).parameters if p != "path"]
    for key in options:
        if key not in accepted:
            raise InputError(f"unknown option {key!r} for format {format!r}", expected=f"one of {accepted}")
    return loader(path, **options)
