"""Batch inference: the top-k of many users or histories, streamed to a Parquet, CSV or JSONL file.

``recommend_to_file(model, requests, path, k)`` scores ``requests`` (see
:func:`all_users`, :func:`users_from_file`, :func:`histories_from_file`) a
block at a time, so memory is bounded by the block (``block`` rows of
``n_items`` scores), never by the number of users. The output has one row per
recommendation: ``user_id``, ``rank`` (1 = best), ``item_id``, ``score``. It
is written to a temporary file beside ``path`` and renamed at the end: an
interrupted run leaves no file, and an existing file is replaced only when
asked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec._atomic import atomic_file
from llm4rec.errors import InputError

if TYPE_CHECKING:
    from llm4rec.models.base import Recommender

__all__ = ["FORMATS", "Block", "all_users", "auto_block", "check_output", "histories_from_file", "recommend_block",
           "recommend_to_file", "users_from_file", "write_blocks"]

#: output formats by file suffix
FORMATS = (".parquet", ".csv", ".jsonl")
#: users (or histories) scored at once by default: 1,024 x n_items float32 scores, about 10 bytes per
#: (user, item) with the copy and top-k work space (10 GiB at 1M items: bench/results/scale_curves.json)
BLOCK = 1024
#: the work space :func:`auto_block` keeps a block within
BLOCK_BYTES = 2 * 1024 ** 3


def auto_block(n_items: int) -> int:
    """Users per block for a catalogue of ``n_items``: :data:`BLOCK`, or fewer where a block's scores and top-k
    work space (about 10 bytes per user and item) would pass :data:`BLOCK_BYTES` (past ~200k items; 214 at 1M)."""
    return int(max(1, min(BLOCK, BLOCK_BYTES // (10 * max(int(n_items), 1)))))


@dataclass
class Block:
    """Requests scored together: ``ids`` (str[b], the output's user_id), and either ``users`` (int64[b] user
    indices: their fit histories; -1 for a user the model does not know, who gets the non-personalised
    ranking) or ``histories`` (b lists of item ids, oldest first)."""

    ids: np.ndarray
    users: np.ndarray | None = None
    histories: list[list[str]] | None = None


def all_users(model: Recommender, block: int = BLOCK) -> tuple[int, Iterator[Block]]:
    """(count, blocks) of every user the model was fitted on, in index order. Only ``model.users_`` is read
    (so a driver that does not score can pass anything holding the bundle's user vocabulary)."""
    ids = np.asarray(model.users_.tokens, dtype=object)

    def blocks() -> Iterator[Block]:
        for start in range(0, len(ids), block):
            users = np.arange(start, min(len(ids), start + block), dtype=np.int64)
            yield Block(ids[users], users=users)

    return len(ids), blocks()


def users_from_file(model: Recommender, path: Path, block: int = BLOCK,
                    unknown: str = "error") -> tuple[int, Iterator[Block]]:
    """(count, blocks) of the user ids in ``path``: a text file (one id per line) or a CSV/Parquet file with a
    ``user_id`` column. An id the model does not know is an InputError naming its line, or (``unknown=
    "fallback"``) gets the non-personalised ranking (an empty history). Only ``model.users_`` is read."""
    ids = np.asarray(_read_ids(path), dtype=object)
    index = np.asarray(model.users_.index(ids.tolist(), unknown="missing"), dtype=np.int64).reshape(-1)
    if unknown == "error" and (index < 0).any():
        line = int(np.flatnonzero(index < 0)[0])
        raise InputError("unknown user", path=path, line=line + _header(path) + 1, value=ids[line],
                         expected="a user the model was fitted on",
                         hint="--unknown fallback ranks unknown users by popularity instead")

    def blocks() -> Iterator[Block]:
        for start in range(0, len(ids), block):
            yield Block(ids[start:start + block], users=index[start:start + block])

    return len(ids), blocks()


def _header(path: Path) -> int:
    return 0 if path.suffix.lower() in (".txt", "", ".parquet") else 1


def _read_ids(path: Path) -> list[str]:
    import polars as pl

    if not path.is_file():
        raise InputError("no such file", path=path, expected="a file of user ids")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        frame = pl.read_csv(path, infer_schema=False) if suffix == ".csv" else pl.read_parquet(path)
        if "user_id" not in frame.columns:
            raise InputError("no user_id column", path=path, value=frame.columns, expected="a column named user_id")
        column = frame.get_column("user_id").cast(pl.Utf8)
        if column.null_count():
            line = int(column.is_null().arg_max()) + _header(path) + 1
            raise InputError("empty user_id", path=path, line=line, expected="a user id")
        return column.to_list()
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError("empty line", path=path, line=n, expected="one user id per line")
    return [line.strip() for line in lines]


def histories_from_file(path: Path, block: int = BLOCK) -> tuple[int | None, Iterator[Block]]:
    """(count if known, blocks) of the histories in ``path``: JSON lines ``{"id": ..., "history": [item ids,
    oldest first]}`` (read as it goes) or a Parquet file with columns ``id`` and ``history`` (a list)."""
    if not path.is_file():
        raise InputError("no such file", path=path, expected="a file of histories")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        reader = pq.ParquetFile(path)
        missing = {"id", "history"} - set(reader.schema_arrow.names)
        if missing:
            raise InputError("missing columns", path=path, value=sorted(missing), expected="columns id and history")

        def parquet_blocks() -> Iterator[Block]:
            for batch in reader.iter_batches(batch_size=block, columns=["id", "history"]):
                rows = batch.to_pydict()
                yield Block(np.asarray([str(i) for i in rows["id"]], dtype=object),
                            histories=[[str(x) for x in h or []] for h in rows["history"]])

        return reader.metadata.num_rows, parquet_blocks()

    def jsonl_blocks() -> Iterator[Block]:
        ids: list[str] = []
        lists: list[list[str]] = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"not JSON ({exc.msg})", path=path, line=n, column=exc.colno,
                                     expected='{"id": "...", "history": ["item", ...]}') from None
                if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("history"), list):
                    raise InputError("not a history", path=path, line=n, value=line.strip()[:80],
                                     expected='{"id": "...", "history": ["item", ...]}')
                ids.append(str(row["id"]))
                lists.append([str(x) for x in row["history"]])
                if len(ids) == block:
                    yield Block(np.asarray(ids, dtype=object), histories=lists)
                    ids, lists = [], []
        if ids:
            yield Block(np.asarray(ids, dtype=object), histories=lists)

    return None, jsonl_blocks()


def check_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """``path`` as a Path, once it is known to be writable: a suffix of :data:`FORMATS`, and new unless
    ``overwrite``; an InputError naming it otherwise."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError("unknown output format", path=path, value=path.suffix,
                         expected="a file name ending in " + ", ".join(FORMATS))
    if path.exists() and not overwrite:
        raise InputError("the output file exists", path=path, expected="a new file name",
                         hint="Add --overwrite to replace it.")
    return path


def recommend_block(model: Recommender, b: Block, k: int = 10, *, exclude_seen: bool = True,
                    items: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The top-k of one block of requests as output columns, ``r`` rows (``r <= len(b.ids) * k``: fewer than
    k candidates leave a user fewer rows), best first per request, requests in the block's order:
    ``user_id`` (object[r] of str), ``rank`` (int32[r], 1 = best), ``item_id`` (object[r] of str), ``score``
    (float32[r]). ``items``: ``model.items_.tokens`` as an object array, if the caller has it already.

    Memory: ``len(b.ids) x n_items`` float32 scores, once.
    """
    if items is None:
        items = np.asarray(model.items_.tokens, dtype=object)
    if b.users is not None:
        top, scores = _for_users(model, b.users, k, exclude_seen)
    else:
        recs = model.recommend(histories=b.histories, k=k, exclude_seen=exclude_seen, unknown="skip")
        top = np.full(recs.items.shape, -1, dtype=np.int64)
        found = recs.items != None  # noqa: E711 - an object array, padded with None
        top[found] = model.items_.index(recs.items[found].tolist())
        scores = np.asarray(recs.scores, dtype=np.float32)
    keep = top >= 0  # (b, k): fewer than k candidates pad with -1
    n = len(b.ids)
    return {"user_id": np.repeat(b.ids, k)[keep.ravel()],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep.ravel()],
            "item_id": items[top[keep]], "score": scores[keep].astype(np.float32)}


def write_blocks(blocks: Iterable[tuple[int, dict[str, np.ndarray]]], path: str | Path, *,
                 progress: Callable[[int], None] | None = None) -> int:
    """Write blocks of output columns (as :func:`recommend_block` returns them, each with the number of
    requests it answers) to ``path`` (format by suffix) atomically; returns the rows written.

    Each block is one Parquet row group. An exception from ``blocks`` leaves no file (and no temporary file)
    behind. ``progress(n)`` is called after each block with the requests done so far.
    """
    path = Path(path)
    rows = done = 0
    with atomic_file(path) as tmp, _Writer(tmp, path.suffix.lower()) as out:
        for n, columns in blocks:
            out.write(columns)
            rows += len(columns["rank"])
            done += n
            if progress is not None:
                progress(done)
    return rows


def recommend_to_file(model: Recommender, blocks: Iterator[Block], path: Path, k: int = 10, *,
                      exclude_seen: bool = True, overwrite: bool = False,
                      progress: Callable[[int], None] | None = None) -> int:
    """Write the top-k of every request to ``path`` (format by suffix, :data:`FORMATS`); returns the rows.

    ``progress(n)`` is called after each block with the requests done so far.
    """
    path = check_output(path, overwrite=overwrite)
    items = np.asarray(model.items_.tokens, dtype=object)
    return write_blocks(((len(b.ids), recommend_block(model, b, k, exclude_seen=exclude_seen, items=items))
                         for b in blocks), path, progress=progress)


def _for_users(model: Recommender, users: np.ndarray, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int64[b, k] item indices, float32[b, k] scores) of user indices; -1 users get the ranking of an empty
    history (computed once per block)."""
    known = users >= 0
    if known.all():
        return model.recommend_indices(users, k, exclude_seen=exclude_seen)
    top = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    if known.any():
        top[known], scores[known] = model.recommend_indices(users[known], k, exclude_seen=exclude_seen)
    fallback = model.recommend(histories=[[]], k=k)
    found = fallback.items[0] != None  # noqa: E711 - an object array, padded with None
    top[~known, :found.sum()] = model.items_.index(fallback.items[0][found].tolist())
    scores[~known, :found.sum()] = np.asarray(fallback.scores[0], dtype=np.float32)[found]
    return top, scores


class _Writer:
    """Appends column blocks to a Parquet (one row group each), CSV or JSONL file."""

    def __init__(self, path: Path, suffix: str) -> None:
        self.path, self.suffix = path, suffix
        self._parquet: Any = None
        self._fh: Any = None

    def __enter__(self) -> _Writer:
        if self.suffix != ".parquet":
            self._fh = self.path.open("wb")
        return self

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        table = pa.table({"user_id": pa.array(columns["user_id"], type=pa.string()),
                          "rank": pa.array(columns["rank"], type=pa.int32()),
                          "item_id": pa.array(columns["item_id"], type=pa.string()),
                          "score": pa.array(columns["score"], type=pa.float32())})
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        elif self.suffix == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, self._fh, write_options=pcsv.WriteOptions(include_header=self._fh.tell() == 0))
        else:
            import polars as pl

            pl.from_arrow(table).write_ndjson(self._fh)

    def __exit__(self, *exc: object) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.suffix == ".parquet":  # no request at all: an empty file with the schema
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"user_id": pa.array([], pa.string()), "rank": pa.array([], pa.int32()),
                                     "item_id": pa.array([], pa.string()), "score": pa.array([], pa.float32())}),
                           self.path)
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
