"""Batch inference on Ray Data: ``llm4rec recommend --ray``, the same file as the single-process run.

The driver reads the requests as :mod:`llm4rec.batch` does (every user of the
model, a file of user ids, or a file of histories; a bad line is an InputError
before any scoring) and cuts them into the same blocks of ``block`` requests.
Each block becomes one Ray Data block (one row per request: ``block``, ``id``
and ``user`` or ``history``), put in the object store by the driver, so a lost
worker never loses input. ``map_batches`` sends them, one block per call, to
a pool of ``workers`` actors (one CPU each) that load the bundle **once** and
score a block with :func:`llm4rec.batch.recommend_block`: a worker holds the
model and one block of ``block x n_items`` float32 scores, never all users.

The driver consumes the results in order (``preserve_order``), checks that
block ``0, 1, 2, ...`` each arrive exactly once, and writes them with
:func:`llm4rec.batch.write_blocks`, one block at a time, to a temporary file
beside the output that is renamed only at the end: the file is byte for byte
what ``recommend_to_file`` writes (the same blocks scored by the same code, the
same rows, order, row groups and format), and a failed run leaves nothing.

Faults: the actors run with ``max_restarts`` and ``max_task_retries``
(``retries``), so when a worker node dies mid-run its actor is restarted (on
any node with a free CPU) and the blocks it held are scored again; lost output
blocks are rebuilt from lineage. Output is idempotent per block, so a retry
cannot duplicate rows.

Where the bundle lives: actors load it from ``bundle`` **by path**. Every node
of a :class:`~llm4rec.distributed.cluster.LocalCluster` (or a cluster whose
nodes share a file system) can read it; on a cluster of several machines the
bundle must be on shared storage at the same path (or be copied there first,
e.g. by putting its files' bytes in the object store and writing them out on
each node). Each actor checks that the ``bundle.json`` it reads is the one the
driver checked, so a different or half-copied bundle is an error, not a
silently different answer.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llm4rec import batch
from llm4rec.errors import InputError

__all__ = ["Requests", "recommend_ray"]

#: output columns, in file order
_COLUMNS = ("user_id", "rank", "item_id", "score")


@dataclass(frozen=True)
class Requests:
    """Whom to recommend for: ``Requests("all")`` (every user the model was fitted on),
    ``Requests("users", path, unknown)`` (ids in a file, see :func:`llm4rec.batch.users_from_file`) or
    ``Requests("histories", path)`` (see :func:`llm4rec.batch.histories_from_file`)."""

    kind: Literal["all", "users", "histories"] = "all"
    path: Path | None = None
    unknown: Literal["error", "fallback"] = "error"

    def __post_init__(self) -> None:
        if self.kind not in ("all", "users", "histories"):
            raise InputError("unknown kind of requests", value=self.kind, expected="all, users or histories")
        if (self.path is None) != (self.kind == "all"):
            raise InputError("a file of requests goes with users or histories only", value=self.path,
                             expected="Requests('all'), Requests('users', path) or Requests('histories', path)")
        if self.unknown not in ("error", "fallback"):
            raise InputError("bad unknown", value=self.unknown, expected="error or fallback")


class _Users:
    """What :func:`llm4rec.batch.all_users` and :func:`~llm4rec.batch.users_from_file` read of a model: its
    user vocabulary (the driver never loads the weights)."""

    def __init__(self, bundle: Path) -> None:
        from llm4rec.data.vocabulary import Vocabulary

        self.users_ = Vocabulary.from_json(json.loads((bundle / "users.json").read_text(encoding="utf-8")))


def _blocks(bundle: Path, requests: Requests, block: int) -> tuple[int | None, Iterator[batch.Block]]:
    if requests.kind == "histories":
        return batch.histories_from_file(Path(requests.path), block)
    users = _Users(bundle)
    if requests.kind == "all":
        return batch.all_users(users, block)  # type: ignore[arg-type]
    return batch.users_from_file(users, Path(requests.path), block, requests.unknown)  # type: ignore[arg-type]


def _table(number: int, b: batch.Block) -> Any:
    """One block of requests as a Ray Data block: int32 ``block`` (= number), str ``id``, and int64 ``user``
    (-1: unknown, the fallback ranking) or list<str> ``history``; one row per request."""
    import pyarrow as pa

    columns = {"block": pa.array(np.full(len(b.ids), number, dtype=np.int32)),
               "id": pa.array(b.ids, type=pa.string())}
    if b.users is not None:
        columns["user"] = pa.array(np.asarray(b.users, dtype=np.int64))
    else:
        columns["history"] = pa.array(b.histories, type=pa.list_(pa.string()))
    return pa.table(columns)


class _Scorer:
    """A Ray Data actor: loads the bundle once, then turns request blocks into recommendation rows."""

    def __init__(self, bundle: str, manifest_sha256: str, k: int, exclude_seen: bool) -> None:
        self.k, self.exclude_seen = k, exclude_seen
        self.error: InputError | None = None
        try:
            self.model = self._load(Path(bundle), manifest_sha256)
        except InputError as exc:  # sent to the driver as a row (Ray would keep only the traceback's text)
            self.error = exc
            return
        self.items = np.asarray(self.model.items_.tokens, dtype=object)

    @staticmethod
    def _load(bundle: Path, manifest_sha256: str) -> Any:
        from llm4rec.models import Recommender

        try:
            found = hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest()
        except OSError:
            found = None
        if found != manifest_sha256:
            raise InputError("a Ray worker reads another bundle (or none) at the model's path", path=bundle,
                             expected="the same bundle on every node: put it on storage they all share")
        return Recommender.load(bundle)

    def __call__(self, table: Any) -> Any:
        """Requests (a pyarrow Table of whole blocks, see :func:`_table`) -> rows: int32 ``block``, then the
        output columns of :func:`llm4rec.batch.recommend_block`. A block with no rows at all is one row of
        rank 0 (and nulls), so the driver can see that it was done; an actor that could not load the bundle
        answers one row of rank -1 with the InputError's message as user_id."""
        import pyarrow as pa

        numbers = table.column("block").to_numpy()
        if self.error is not None:
            return pa.table({"block": pa.array(numbers[:1]), "user_id": pa.array([str(self.error)], pa.string()),
                             "rank": pa.array([-1], pa.int32()), "item_id": pa.array([None], pa.string()),
                             "score": pa.array([None], pa.float32())})
        cuts = [0, *(np.flatnonzero(np.diff(numbers)) + 1).tolist(), len(numbers)]
        parts = []
        for start, stop in zip(cuts[:-1], cuts[1:]):  # one iteration per block (usually one per call)
            rows = table.slice(start, stop - start)
            ids = np.asarray(rows.column("id").to_pylist(), dtype=object)
            if "user" in rows.column_names:
                b = batch.Block(ids, users=rows.column("user").to_numpy())
            else:
                b = batch.Block(ids, histories=rows.column("history").to_pylist())
            out = batch.recommend_block(self.model, b, self.k, exclude_seen=self.exclude_seen, items=self.items)
            n = len(out["rank"])
            parts.append(pa.table({
                "block": pa.array(np.full(max(n, 1), numbers[start], dtype=np.int32)),
                "user_id": pa.array(out["user_id"] if n else [None], type=pa.string()),
                "rank": pa.array(out["rank"] if n else [0], type=pa.int32()),
                "item_id": pa.array(out["item_id"] if n else [None], type=pa.string()),
                "score": pa.array(out["score"] if n else [None], type=pa.float32())}))
        return pa.concat_tables(parts)


def _in_order(results: Iterable[Any], sizes: list[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(requests, output columns) of block 0, 1, ... from result tables in block order (a block's rows may
    span tables); a RuntimeError if a block is missing, repeated or out of order (never a partial file), the
    InputError of a worker that could not load the bundle."""
    pending: list[Any] = []
    current = 0

    def flush() -> tuple[int, dict[str, np.ndarray]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = pa.concat_tables(pending)
        rows = rows.filter(pc.greater(rows.column("rank"), 0))
        return sizes[current], {c: rows.column(c).to_numpy(zero_copy_only=False) for c in _COLUMNS}

    for table in results:
        if not table.num_rows:
            continue
        ranks = table.column("rank").to_numpy()
        if ranks.min() < 0:
            raise InputError(table.column("user_id")[int(np.argmin(ranks))].as_py())
        numbers = table.column("block").to_numpy()
        cuts = [0, *(np.flatnonzero(np.diff(numbers)) + 1).tolist(), len(numbers)]
        for start, stop in zip(cuts[:-1], cuts[1:]):
            number = int(numbers[start])
            if pending and number != current:
                yield flush()
                pending, current = [], current + 1
            if number != current:
                raise RuntimeError(f"Ray returned block {number} where block {current} was due")
            pending.append(table.slice(start, stop - start))
    if pending:
        yield flush()
        current += 1
    if current != len(sizes):
        raise RuntimeError(f"Ray returned {current} of {len(sizes)} blocks")


def recommend_ray(model_dir: str | Path, requests: Requests | str, out_path: str | Path, k: int = 10, *,
                  exclude_seen: bool = True, workers: int | None = None, block: int = batch.BLOCK,
                  address: str = "auto", overwrite: bool = False, retries: int = 3,
                  progress: Callable[[int], None] | None = None) -> int:
    """Write the top-k of ``requests`` to ``out_path`` as :func:`llm4rec.batch.recommend_to_file` would, the
    scoring spread over ``workers`` Ray actors; returns the rows written.

    Args:
        model_dir: a saved bundle directory that every Ray node can read at this path (see the module
            docstring); it is checked here before anything runs.
        requests: :class:`Requests` (or ``"all"``).
        out_path: ``.parquet``, ``.csv`` or ``.jsonl``; new unless ``overwrite``.
        workers: actors (one CPU each; default: the cluster's CPUs).
        block: requests per block; a worker's scores are ``block x n_items`` float32 at a time.
        address: ``auto``, ``local`` or ``host:port`` (see :func:`~llm4rec.distributed.cluster.connect`);
            a driver already connected to Ray uses that cluster.
        retries: restarts of each actor after its process or node dies; the blocks it held are retried for
            as long as it can restart (an exception in the scoring itself is never retried).
        progress: called with the requests done so far after each block is written.
    """
    from llm4rec.distributed.cluster import check_address, session
    from llm4rec.models.bundle import read_manifest

    if isinstance(requests, str):
        requests = Requests(requests)  # type: ignore[arg-type]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError("bad k", value=k, expected="an integer >= 1")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise InputError("bad block", value=block, expected="an integer >= 1")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError("bad number of workers", value=workers, expected="an integer >= 1")
    out_path = batch.check_output(out_path, overwrite=overwrite)
    bundle = Path(model_dir).resolve()
    read_manifest(bundle)  # every file present and unmodified, or an InputError naming it
    manifest_sha256 = hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest()
    _, blocks = _blocks(bundle, requests, block)  # a bad user id file fails here, before Ray
    check_address(address, probe=False)
    with session(address, num_cpus=workers if address == "local" else None) as ray:
        from ray.data import DataContext

        refs, sizes = [], []
        for number, b in enumerate(blocks):  # a bad history line fails here, before any scoring
            refs.append(ray.put(_table(number, b)))
            sizes.append(len(b.ids))
        if not refs:
            return batch.write_blocks(iter(()), out_path, progress=progress)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers is None:
            workers = max(1, cpus)
        elif workers > cpus:  # the pool would wait for CPUs that never come
            raise InputError(f"the Ray cluster has {cpus} CPUs", value=workers,
                             expected=f"at most {cpus} workers (one CPU each)")
        context = DataContext.get_current()
        was = context.execution_options.preserve_order
        context.execution_options.preserve_order = True
        try:
            with warnings.catch_warnings():  # ray 2.60 takes max_restarts only as a (deprecated) remote arg
                warnings.simplefilter("ignore", DeprecationWarning)
                results = ray.data.from_arrow_refs(refs).map_batches(
                    _Scorer, fn_constructor_kwargs={"bundle": str(bundle), "manifest_sha256": manifest_sha256,
                                                    "k": k, "exclude_seen": exclude_seen},
                    batch_size=None, batch_format="pyarrow", zero_copy_batch=True,
                    compute=ray.data.ActorPoolStrategy(size=min(workers, len(refs))), num_cpus=1,
                    max_restarts=retries, max_task_retries=-1)  # a block is retried while its actor can restart
            del refs  # the dataset holds them now; freed as blocks are done
            stream = results.iter_batches(batch_size=None, batch_format="pyarrow")
            return batch.write_blocks(_in_order(stream, sizes), out_path, progress=progress)
        finally:
            context.execution_options.preserve_order = was

