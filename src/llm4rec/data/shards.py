"""P-LOO over an interaction log too large for one process: the users cut into shards, each split on its own.

A sharded split is a directory::

    OUT/manifest.json        format, protocol, seed, shard count, what each shard holds
    OUT/items.parquet        the item vocabulary in index order, with the item table's attributes
    OUT/shard-00000.parquet  user_id, item_id, timestamp[, rating], stage (int8: 0 train, 1 valid, 2 test)
    ...

Every interaction of a user is in the same shard (:func:`user_shard`: a hash of the id's UTF-8 text that
does not depend on the run, the machine or a library's version). P-LOO decides per user, so the shards split
apart are exactly ``make_split(whole, "loo")``: the same rows, duplicates collapsed the same way, the same
stage for each. :func:`read_shard` gives a shard back as a :class:`~llm4rec.data.splits.Split` over the whole
item vocabulary.

The work is a map over the interaction table's row groups (:func:`map_read`: rows to one part per shard)
and a reduce per shard (:func:`reduce_shard`), with the item vocabulary built in between
(:func:`write_items`). Memory is one read (up to :data:`ROWS_PER_READ` rows) or one shard at a time, never
the whole log. :func:`split_to_shards` runs every step in this process; ``llm4rec.distributed.split`` runs
the same steps as Ray tasks.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llm4rec._atomic import atomic_dir, atomic_file, atomic_write_text
from llm4rec.data.dataset import Dataset
from llm4rec.data.splits import Split, check_protocol, make_split
from llm4rec.errors import InputError

__all__ = ["FORMAT", "Source", "open_source", "read_manifest", "read_shard", "split_to_shards", "user_shard"]

FORMAT = "llm4rec-shards/1"
ROWS_PER_READ = 1 << 21  # rows one map step reads at most (whole row groups; one larger group is read alone)
PARTS = ".parts"  # map output inside the output being written
STAGES = ("train", "valid", "test")
_HASH_STRINGS = 1 << 20  # ids hashed at once
_P = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime, as the base of a polynomial hash
_Q = np.uint64(0x9E3779B97F4A7C15)
_NUMERIC = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64, pl.Float32,
            pl.Float64)
_CONVERT = "llm4rec data convert DATA OUT --to parquet"


# ----------------------------------------------------------------------------------------------- hashing
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_text(values: pl.Series) -> np.ndarray:
    """uint64[n]: sum_j byte_j * P^j + len * Q over each value's UTF-8 bytes, mixed (no Python loop)."""
    import pyarrow as pa

    arr = values.to_arrow().cast(pa.large_string())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if len(arr) and offsets[-1] > offsets[0] else \
        np.zeros(0, np.uint8)
    data = data[offsets[0]: offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    powers = np.ones(max(int(lengths.max(initial=0)), 1), dtype=np.uint64)  # P^0, P^1, ... (mod 2^64)
    if len(powers) > 1:
        powers[1:] = np.cumprod(np.full(len(powers) - 1, _P, dtype=np.uint64))
    position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    terms = data.astype(np.uint64) * powers[position]
    sums = np.zeros(len(arr), dtype=np.uint64)
    filled = lengths > 0
    if filled.any():
        sums[filled] = np.add.reduceat(terms, starts[filled])
    return _mix(sums + lengths.astype(np.uint64) * _Q)


def user_shard(user_ids: pl.Series, shards: int) -> np.ndarray:
    """int32[n]: the shard (0..shards-1) of each user id, from its text (``5`` and ``"5"`` agree)."""
    text = user_ids.cast(pl.Utf8)
    out = np.empty(len(text), dtype=np.int32)
    for start in range(0, len(text), _HASH_STRINGS):
        part = text.slice(start, _HASH_STRINGS)
        out[start: start + len(part)] = (_hash_text(part) % np.uint64(shards)).astype(np.int32)
    return out


# ------------------------------------------------------------------------------------------------ input
@dataclass(frozen=True)
class Source:
    """An interaction table in Parquet, read in pieces.

    Attributes:
        interactions: the Parquet file (columns ``user_id``, ``item_id``, optionally a numeric ``timestamp``
            and ``rating``).
        items: the item table (Parquet, keyed by ``item_id``) or ``None``.
        name, text_fields: from the directory's ``dataset.json`` (or the file's stem, none).
        reads: ``(first row group, end row group, first row)`` per map step.
        rows: rows of the interaction table.
    """

    interactions: Path
    items: Path | None
    name: str
    text_fields: tuple[str, ...]
    has_timestamp: bool
    has_rating: bool
    reads: tuple[tuple[int, int, int], ...]
    rows: int


def open_source(path: str | Path) -> Source:
    """The interaction table at ``path``: a Parquet file, or a directory as ``llm4rec data generate`` and
    ``llm4rec data convert --to parquet`` write (``interactions.parquet``, ``items.parquet``,
    ``dataset.json``). Only the files' metadata is read."""
    import pyarrow.parquet as pq

    from llm4rec.data.sources.tabular import _export_layout

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=path, expected="a Parquet interaction table or a "
                                                                          "directory holding interactions.parquet")
    items, meta = None, {}
    if path.is_dir():
        path, items, _, meta = _export_layout(path, None, None)
    if path.suffix != ".parquet":
        raise InputError("a sharded split reads Parquet", path=path, expected="interactions.parquet",
                         hint=f"Convert it first: {_CONVERT}")
    try:
        meta_pq = pq.ParquetFile(path).metadata
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise InputError(f"cannot read the Parquet file: {str(exc).splitlines()[0]}", path=path,
                         expected="a Parquet file") from None
    for column in ("user_id", "item_id"):
        if column not in schema:
            raise InputError("missing column", path=path, column=column,
                             expected=f"columns user_id and item_id (found {list(schema)})",
                             hint=f"Map other column names with {_CONVERT} --user-col ... --item-col ...")
    for column in ("timestamp", "rating"):
        if column in schema and schema[column] not in _NUMERIC:
            raise InputError(f"the {column} column is not numeric", path=path, column=column,
                             value=str(schema[column]), expected="numbers (epoch seconds for a timestamp)",
                             hint=f"{_CONVERT} parses dates")
    if items is not None and items.suffix != ".parquet":
        raise InputError("a sharded split reads Parquet", path=items, expected="items.parquet",
                         hint=f"Convert it first: {_CONVERT}")
    if items is not None and "item_id" not in pl.read_parquet_schema(items):
        raise InputError("missing column", path=items, column="item_id", expected="an item_id column")
    reads, first_group, first_row, rows_in, row = [], 0, 0, 0, 0
    for g in range(meta_pq.num_row_groups):
        n = meta_pq.row_group(g).num_rows
        if rows_in and rows_in + n > ROWS_PER_READ:
            reads.append((first_group, g, first_row))
            first_group, first_row, rows_in = g, row, 0
        rows_in += n
        row += n
    if rows_in:
        reads.append((first_group, meta_pq.num_row_groups, first_row))
    if row == 0:
        raise InputError("no interactions in the Parquet table", path=path, expected="at least one row")
    name = meta.get("name") or (path.parent.name if path.name == "interactions.parquet" else path.stem)
    return Source(path, items, str(name), tuple(meta.get("text_fields", ())), "timestamp" in schema,
                  "rating" in schema, tuple(reads), row)


# ------------------------------------------------------------------------------------------------- steps
def _part(work: Path, read: int, shard: int) -> Path:
    return work / PARTS / f"read-{read:05d}" / f"shard-{shard:05d}.parquet"


def shard_path(out: Path, shard: int) -> Path:
    return Path(out) / f"shard-{shard:05d}.parquet"


def map_read(source: Source, read: int, shards: int, work: str | Path) -> int:
    """Read ``source.reads[read]``, cut its rows by :func:`user_shard` and write one part per non-empty shard
    (rows in file order; ``timestamp`` = the row's position in the file when the table has none) and the
    read's distinct item ids; returns the rows read. Each file is written whole or not at all, so a retried
    step leaves the same files."""
    import pyarrow.parquet as pq

    work = Path(work)
    first, end, first_row = source.reads[read]
    columns = ["user_id", "item_id"] + [c for c, has in (("timestamp", source.has_timestamp),
                                                        ("rating", source.has_rating)) if has]
    frame = pl.from_arrow(pq.ParquetFile(source.interactions).read_row_groups(range(first, end), columns=columns))
    frame = frame.with_columns(pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8))
    for column in columns:
        nulls = frame.get_column(column).is_null()
        if nulls.any():
            row = first_row + int(nulls.arg_max())
            raise InputError(f"row {row}: missing value", path=source.interactions, column=column,
                             expected="a value in every row")
    if not source.has_timestamp:
        frame = frame.with_columns(pl.int_range(first_row, first_row + frame.height, dtype=pl.Int64)
                                   .cast(pl.Float64).alias("timestamp"))
    shard = pl.Series("_shard", user_shard(frame.get_column("user_id"), shards))
    for (s,), part in frame.with_columns(shard).partition_by("_shard", as_dict=True, maintain_order=True).items():
        _write(part.drop("_shard"), _part(work, read, int(s)))
    _write(frame.select(pl.col("item_id").unique()), work / PARTS / f"read-{read:05d}" / "items.parquet")
    return frame.height


def _write(frame: pl.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        frame.write_parquet(tmp)


def write_items(source: Source, work: str | Path) -> int:
    """``items.parquet``: every item of the item table and of the interactions, in vocabulary order, with the
    item table's attributes (nulls for an item it lacks); returns the item count."""
    from llm4rec.data.vocabulary import Vocabulary

    work = Path(work)
    seen = pl.concat([pl.read_parquet(p) for p in sorted((work / PARTS).glob("read-*/items.parquet"))])
    table = None
    if source.items is not None:
        table = pl.read_parquet(source.items).with_columns(pl.col("item_id").cast(pl.Utf8))
        seen = pl.concat([seen, table.select("item_id")])
    vocab = Vocabulary.from_tokens(seen.get_column("item_id").unique().to_list(), kind="item")
    items = pl.DataFrame({"item_id": pl.Series(vocab.tokens.tolist(), dtype=pl.Utf8)})
    if table is not None:
        table = table.filter(pl.col("item_id").is_not_null()).unique("item_id", keep="first", maintain_order=True)
        items = items.join(table, on="item_id", how="left", maintain_order="left")
    _write(items, work / "items.parquet")
    return items.height


def reduce_shard(source: Source, shard: int, protocol: str, seed: int, work: str | Path) -> dict:
    """Split one shard: its parts in read order -> a dataset over the whole item vocabulary -> ``make_split``;
    writes ``shard-NNNNN.parquet`` in the dataset's order and returns its counts."""
    work = Path(work)
    parts = [p for r in range(len(source.reads)) if (p := _part(work, r, shard)).is_file()]
    schema = {"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64,
              **({"rating": pl.Float32} if source.has_rating else {}), "stage": pl.Int8}
    counts = {"users": 0, "interactions": 0, "rows": 0, "duplicates_dropped": 0, **{s: 0 for s in STAGES}}
    if not parts:
        _write(pl.DataFrame(schema=schema), shard_path(work, shard))
        return counts
    frame = pl.concat([pl.read_parquet(p) for p in parts])
    items = pl.read_parquet(work / "items.parquet", columns=["item_id"])
    ds = Dataset.from_frame(frame, item_attrs=items, name=source.name, source=str(source.interactions))
    del frame
    split = make_split(ds, protocol, seed)
    columns = {"user_id": pl.Series(ds.users.tokens.tolist(), dtype=pl.Utf8).gather(ds.user),
               "item_id": pl.Series(ds.items.tokens.tolist(), dtype=pl.Utf8).gather(ds.item),
               "timestamp": ds.timestamp}
    if ds.rating is not None:
        columns["rating"] = ds.rating
    columns["stage"] = split.assignment
    _write(pl.DataFrame(columns, schema=schema), shard_path(work, shard))
    stages = np.bincount(split.assignment, minlength=3)
    counts.update(users=ds.n_users, interactions=ds.n_interactions, rows=ds.load_report["rows"],
                  duplicates_dropped=ds.load_report["duplicates_dropped"],
                  **{s: int(n) for s, n in zip(STAGES, stages)})
    return counts


def finish(source: Source, work: str | Path, shards: int, protocol: str, seed: int, n_items: int,
           counts: list[dict]) -> dict:
    """Drop the map parts and anything a killed step left, then write ``manifest.json`` (last)."""
    work = Path(work)
    shutil.rmtree(work / PARTS, ignore_errors=True)
    for stray in work.glob(".*.tmp"):  # a step killed mid-write (its retry wrote the file again)
        stray.unlink()
    total = {key: sum(c[key] for c in counts) for key in counts[0]}
    manifest = {"format": FORMAT, "protocol": protocol, "seed": seed, "shards": shards, "name": source.name,
                "text_fields": list(source.text_fields), "source": str(source.interactions),
                "items": n_items,
                "hash": "user id text: sum byte_j * 0x100000001b3^j + length * 0x9e3779b97f4a7c15 (mod 2^64), "
                        "splitmix64 finaliser, mod shards",
                "total": total, "per_shard": counts}
    atomic_write_text(work / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------- whole runs
def check_request(out: str | Path, shards: int, protocol: str, overwrite: bool) -> str:
    """The protocol key, after checking the shard count and that ``out`` may be written."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 65_536:
        raise InputError("bad shard count", value=shards, expected="a whole number from 1 to 65536")
    protocol = check_protocol(protocol)
    if protocol != "loo":
        raise InputError("a sharded split implements P-LOO only", value=protocol, expected="loo",
                         hint="P-RAND and P-LOO-100 draw one random sequence over all users, and P-COLD over "
                              "all items: split those in one process (llm4rec evaluate --protocol ...)")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        ours = out.is_dir() and (out / "manifest.json").is_file() and \
            _format_of(out / "manifest.json") == FORMAT and \
            all(_OURS.match(p.name) for p in out.iterdir())
        if not (overwrite and ours):
            raise InputError("the output exists and is not empty", path=out,
                             expected="a new or empty directory" + ("" if ours else " (nothing in it is removed)"),
                             hint="Add --overwrite to replace an earlier sharded split there." if ours else None)
    return protocol


_OURS = re.compile(r"^(manifest\.json|items\.parquet|shard-\d{5}\.parquet)$")


def _format_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def split_to_shards(data: str | Path, out: str | Path, shards: int = 16, *, protocol: str = "loo",
                    seed: int = 2026, overwrite: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Split ``data`` (see :func:`open_source`) under P-LOO into ``shards`` shards of users at ``out``, one
    step after another in this process; returns the manifest. ``out`` appears whole or not at all; with
    ``overwrite`` an earlier sharded split there is replaced (nothing else ever is)."""
    protocol = check_request(out, shards, protocol, overwrite)
    source = open_source(data)
    report = progress or (lambda step, done, total: None)
    with atomic_dir(out, replace=overwrite) as work:
        for r in range(len(source.reads)):
            map_read(source, r, shards, work)
            report("reading and cutting by user", r + 1, len(source.reads))
        n_items = write_items(source, work)
        counts = []
        for s in range(shards):
            counts.append(reduce_shard(source, s, protocol, seed, work))
            report("splitting the shards", s + 1, shards)
        return finish(source, work, shards, protocol, seed, n_items, counts)


# ------------------------------------------------------------------------------------------------ output
def read_manifest(out: str | Path) -> dict:
    """The manifest of a sharded split, or an InputError naming what is wrong."""
    path = Path(out) / "manifest.json"
    if _format_of(path) != FORMAT:
        raise InputError("not a sharded split", path=Path(out), expected=f"a directory with a {FORMAT} "
                                                                         "manifest.json (llm4rec data split)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_shard(out: str | Path, shard: int) -> Split:
    """Shard ``shard`` of a sharded split as a :class:`Split` (its users, the whole item vocabulary with the
    item attributes); the stages stored are checked against ``make_split`` of what was read."""
    manifest = read_manifest(out)
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < manifest["shards"]:
        raise InputError("no such shard", value=shard, expected=f"0..{manifest['shards'] - 1}")
    path = shard_path(Path(out), shard)
    frame = pl.read_parquet(path)
    if frame.height == 0:
        raise InputError("this shard holds no users", path=path, expected="a shard with interactions")
    items = pl.read_parquet(Path(out) / "items.parquet")
    ds = Dataset.from_frame(frame.drop("stage"), item_attrs=items, text_fields=tuple(manifest["text_fields"]),
                            name=f"{manifest['name']}/shard-{shard:05d}", source=str(path))
    split = make_split(ds, manifest["protocol"], manifest["seed"])
    if not np.array_equal(split.assignment, frame.get_column("stage").to_numpy()):
        raise InputError("the shard's stages are not P-LOO of its rows (was the file changed?)", path=path,
                         column="stage", expected="the file as llm4rec data split wrote it")
    return split
