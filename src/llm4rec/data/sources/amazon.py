"""Amazon review data in the P5 layout (``amazon-beauty``, ``amazon-sports``, ...).

* ``sequences.txt``: one user a line, ``reviewerID asin_1 asin_2 ... asin_n``
  (whitespace separated), items oldest to newest. There are no timestamps and
  no ratings: as PROTOCOLS.md says for such data, an item's 0-based position in
  its line is its timestamp.
* ``items.jsonl`` (optional): one JSON object a line with ``asin``, ``title``
  (raw Amazon text: HTML entities such as ``&amp;`` are unescaped) and
  ``categories`` (a list of category paths, each a list of str). Item
  attributes are ``title`` and ``categories``, the paths joined as
  ``"Beauty > Makeup > Nails; Beauty > Skin"``; both are text fields. Other
  keys (``p5_item_id``) are kept as columns. Every item of the file is in the
  item vocabulary with its attributes, even one no user bought yet (see
  ``Dataset.interacted_items``). Without the file the dataset has no item
  attributes.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import polars as pl

from llm4rec.data.dataset import Dataset
from llm4rec.data.sources._common import require_file
from llm4rec.errors import InputError

__all__ = ["load_amazon"]

_TEXT_FIELDS = ("title", "categories")


def load_amazon(path: str | Path, *, items_file: str = "items.jsonl", name: str | None = None) -> Dataset:
    """Load ``<dir>/sequences.txt`` (or a sequences file given directly) and its item file.

    Items of the item file that no sequence holds are kept (see the module docstring).

    Args:
        path: the dataset directory, or its sequences file.
        items_file: name of the item file beside the sequences; skipped when absent.
        name: dataset name; default: the directory name.
    """
    path = Path(path)
    sequences = path / "sequences.txt" if path.is_dir() else path
    sequences = require_file(sequences, "Amazon sequences file")
    name = name or sequences.parent.resolve().name
    inter = _read_sequences(sequences)
    items_path = sequences.parent / items_file
    items = _read_items(items_path) if items_path.is_file() else None
    return Dataset.from_frame(inter, name=name, item_attrs=items,
                              text_fields=_TEXT_FIELDS if items is not None else (), source=str(sequences))


def _read_sequences(path: Path) -> pl.DataFrame:
    """One row per (user, item) with the item's position in the line as ``timestamp``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError("not UTF-8 text", path=path, line=line, expected="UTF-8") from None
    lines = (pl.DataFrame({"text": text.split("\n")})
             .with_row_index("_line", offset=1)
             .with_columns(pl.col("text").str.extract_all(r"\S+").alias("tokens"))
             .filter(pl.col("tokens").list.len() > 0))
    if lines.height == 0:
        raise InputError("empty file", path=path, expected="at least one line 'user_id item_1 ... item_n'")
    short = lines.filter(pl.col("tokens").list.len() < 2)
    if short.height:
        raise InputError("a user without items", path=path, line=int(short.get_column("_line")[0]),
                         value=short.get_column("text")[0], expected="'user_id item_1 ... item_n', n >= 1")
    lines = lines.select(
        "_line",
        pl.col("tokens").list.first().alias("user_id"),
        pl.col("tokens").list.slice(1).alias("item_id"),
    )
    repeated = lines.filter(pl.col("user_id").is_duplicated())
    if repeated.height:
        user = repeated.get_column("user_id")[0]
        at = repeated.filter(pl.col("user_id") == user).get_column("_line").to_list()
        raise InputError(f"user on more than one line (lines {at[0]} and {at[1]})", path=path, line=at[1],
                         value=user, expected="one line per user")
    return (lines.with_columns(pl.int_ranges(0, pl.col("item_id").list.len()).alias("timestamp"))
            .explode("item_id", "timestamp")
            .select("user_id", "item_id", pl.col("timestamp").cast(pl.Float64)))


def _read_items(path: Path) -> pl.DataFrame:
    """The item table: ``item_id`` (the asin), ``title``, ``categories`` and any other scalar keys."""
    rows = []
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc.msg}", path=path, line=number, value=line.strip(),
                                 expected="one JSON object a line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("asin"), str):
                raise InputError("no 'asin' key", path=path, line=number, column="asin", value=line.strip(),
                                 expected="an object with a string 'asin'")
            rows.append({
                **{k: v for k, v in obj.items() if k not in ("asin", "title", "categories")},
                "item_id": obj["asin"],
                "title": _title(obj.get("title")),
                "categories": _categories(obj.get("categories"), path, number),
            })
    if not rows:
        raise InputError("empty file", path=path, expected="one JSON object per item")
    table = pl.DataFrame(rows, infer_schema_length=None)
    return table.select("item_id", "title", "categories", pl.exclude("item_id", "title", "categories"))


def _title(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return html.unescape(value).strip() or None


def _categories(value: object, path: Path, line: int) -> str | None:
    """``[["Beauty", "Makeup"], ["Beauty", "Skin"]]`` -> ``"Beauty > Makeup; Beauty > Skin"``."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(p, list) and all(isinstance(c, str) for c in p) for p in value):
        raise InputError("bad categories", path=path, line=line, column="categories", value=value,
                         expected="a list of category paths, each a list of strings")
    joined = "; ".join(" > ".join(html.unescape(c) for c in p) for p in value if p)
    return joined or None
