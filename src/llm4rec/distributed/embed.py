"""Encoding a catalogue's texts across a Ray cluster, through the same embedding cache as one process.

Two front doors over one Ray Data pipeline:

- :func:`embed_parquet` streams a Parquet file (or folder) of items to a folder
  of Parquet files: ``(id, embedding float32[dim])`` per row, written to a
  temporary sibling of ``out`` and renamed into place when every row is there.
- :func:`encode_texts` is :func:`~llm4rec.text.encode_cached` spread over the
  cluster (texts in, ``float32[n, dim]`` out, in input order);
  :func:`embed_dataset` encodes a :class:`~llm4rec.data.Dataset`'s item texts
  with it. ``llm4rec embed --ray`` uses them, so its files are the ones the
  single-process command writes.

The pipeline is ``map_batches`` over an actor pool (one actor per CPU by
default): each actor loads the encoder once and, per batch of ``chunk_size``
rows, hashes the texts exactly as :mod:`llm4rec.text.cache` does (sha256 of
each text, under the encoder's fingerprint and the template id), looks them up
in the :class:`~llm4rec.text.EmbeddingCache`, encodes only the misses with
:meth:`~llm4rec.text.TextEncoder.encode` (sorted by token length into batches
of ``batch_size``, each padded to its own longest text), and stores the new
vectors as one cache shard (shards have unique names, so actors never collide).
A run after this one, distributed or not, encodes nothing the cache holds.

Faults: the actors restart when their process or node dies
(``max_restarts``) and the batches they held are retried (``max_task_retries``),
on the surviving workers or on the restarted actor; a batch stored in the cache
before its actor died is not encoded again. Nothing reaches ``out`` unless
every input row is in the output.

Paths (source, output, cache) must be readable and writable by every Ray
worker: one machine, or a shared filesystem. Reading and writing Parquet are
light tasks scheduled without a CPU reservation, so that an actor pool holding
every CPU cannot starve them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.distributed.cluster import check_address, require_ray, session
from llm4rec.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

    from llm4rec.data.dataset import Dataset
    from llm4rec.text import Template, TextEncoder

__all__ = ["EMBEDDING_COLUMN", "META_FILE", "EmbedSummary", "embed_dataset", "embed_parquet", "encode_texts",
           "quiet_ray_data"]

#: the output column that holds each row's vector (``fixed_size_list<float32>[dim]``)
EMBEDDING_COLUMN = "embedding"
#: what :func:`embed_parquet` writes beside its Parquet files (Parquet readers skip names starting with ``_``)
META_FILE = "_embedding.json"
#: rows per pipeline batch: one cache lookup and at most one cache shard each
CHUNK_SIZE = 1024


@dataclass(frozen=True)
class EmbedSummary:
    """What :func:`embed_parquet` wrote (also saved as :data:`META_FILE` in the output folder)."""

    out: str
    rows: int
    dim: int
    encoder: str
    fingerprint: str
    template_id: str
    template: str | None
    text_column: str | None
    id_column: str
    workers: int
    seconds: float


# --------------------------------------------------------------------------- the actor
class _EncodeBatches:
    """Ray Data actor: one encoder per actor; a batch of rows in, ``(id, embedding)`` rows out.

    Args:
        encoder: a name or path for :func:`~llm4rec.text.get_encoder`, or an (unloaded) encoder instance.
        encoder_options: constructor options for :func:`~llm4rec.text.get_encoder`.
        threads: the CPUs this actor holds; the encoder's thread count when it was left unset.
        cache_root: the embedding cache root.
        template_id: the cache key's template part.
        template: a template string rendered over each batch's columns, or None to read ``text_column``.
        text_column, id_column: the input columns.
        batch_size: texts per encoder batch.
        scrub: scrub PII from rendered texts (template mode only, as :func:`~llm4rec.text.item_texts` does).
        source: the input's name for error messages.
        fingerprint: the encoder's fingerprint on the driver; a worker whose weights differ refuses to start.
    """

    def __init__(self, encoder: Any, encoder_options: dict[str, Any], threads: int, cache_root: str,
                 template_id: str, template: str | None, text_column: str | None, id_column: str,
                 batch_size: int, scrub: bool, source: str, fingerprint: str) -> None:
        import socket

        from llm4rec.text import EmbeddingCache, Template, get_encoder

        enc = get_encoder(encoder, **encoder_options)
        if enc.fingerprint != fingerprint:  # other weights on this machine: other vectors, another cache folder
            raise InputError(f"the encoder {enc.name!r} differs on Ray worker {socket.gethostname()}",
                             value=enc.fingerprint, expected=f"the driver's weights (fingerprint {fingerprint})",
                             hint="Install the same encoder package or model files on every node")
        for option in ("threads", "num_threads"):  # one CPU slot, one thread: no oversubscription
            if getattr(enc, option, 0) is None:
                setattr(enc, option, threads)
        self.encoder = enc.load()
        self.cache = EmbeddingCache(cache_root, enc.fingerprint, template_id)
        self.meta = {"name": enc.name, "backend": enc.backend, "dim": int(enc.dim)}
        self.template = None if template is None else Template(template)
        self.text_column, self.id_column = text_column, id_column
        self.batch_size, self.scrub, self.source = batch_size, scrub, source

    def _texts(self, batch: pa.Table) -> pa.Array:
        """The batch's texts as one string array (n,)."""
        import pyarrow as pa

        if self.template is None:
            return batch.column(self.text_column).combine_chunks().cast(pa.string())
        import polars as pl

        from llm4rec.text import table_texts

        frame = pl.from_arrow(batch).with_columns(pl.col(self.id_column).alias("item_id"))
        return pa.array(table_texts(frame, self.template, scrub=self.scrub, source=self.source), pa.string())

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``batch`` (n rows) -> a table of its ids and float32[n, dim] vectors as a fixed-size-list column."""
        import pyarrow as pa

        texts = self._texts(batch)
        _check_blank(texts, batch.column(self.id_column), self.source,
                     self.text_column or f"text of template {self.template}")
        vectors = _encode_through_cache(self.encoder, self.cache, texts, self.batch_size, self.meta)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])
        return pa.table({self.id_column: batch.column(self.id_column), EMBEDDING_COLUMN: embedding})


def _as_void(keys: np.ndarray) -> np.ndarray:
    """uint8[n, 32] -> (n,) 32-byte scalars that sort and compare as wholes."""
    return np.ascontiguousarray(keys).view(np.dtype((np.void, 32))).ravel()


def _encode_through_cache(encoder: TextEncoder, cache: Any, texts: pa.Array, batch_size: int,
                          meta: dict[str, Any]) -> np.ndarray:
    """float32[n, dim] for the string array ``texts`` (n,): cached rows looked up, the rest encoded and stored.

    Keys are :func:`~llm4rec.text.cache.text_keys` (sha256 of each text), duplicates encoded once, as
    :func:`~llm4rec.text.encode_cached` does.
    """
    import pyarrow as pa

    from llm4rec.text.cache import text_keys

    keys = text_keys(texts.to_pylist())  # (n, 32)
    _, first, inverse = np.unique(_as_void(keys), return_index=True, return_inverse=True)  # (u,), (u,), (n,)
    inverse = inverse.ravel()
    cached, found = cache.lookup(keys[first])  # (u, dim or 0), (u,)
    out = np.zeros((len(first), encoder.dim), dtype=np.float32)  # (u, dim)
    if found.any():
        out[found] = cached[found]
    missing = np.flatnonzero(~found)  # (m,) positions in the distinct texts
    if len(missing):
        todo = texts.take(pa.array(first[missing])).to_pylist()
        out[missing] = encoder.encode(todo, batch_size=batch_size)  # sorted by token length inside
        cache.store(keys[first[missing]], out[missing], meta=meta)
    return out[inverse]


def _check_blank(texts: pa.Array, ids: Any, source: str, column: str) -> None:
    """InputError naming the first row whose text is null, empty or blank (the encoder would refuse it)."""
    import pyarrow.compute as pc

    blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), True)
    if pc.any(blank).as_py():
        row = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
        raise InputError("empty text", path=source, column=column, value=texts[row].as_py(),
                         expected=f"non-blank text for every row (the row with id {ids[row].as_py()!r} has none)")


# --------------------------------------------------------------------------- the pipeline
@contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data's per-run notices (execution plans, log paths, progress bars off) hidden for the block; errors
    still show. For commands whose output is their own report."""
    import logging

    require_ray()
    import ray.data  # noqa: F401 - it configures its logger on import; set the level after that

    logger = logging.getLogger("ray.data")
    was = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(was)


def _pool_size(ray: Any, workers: int | None, cpus_per_worker: int) -> int:
    """Actors in the pool: ``workers``, or as many as the cluster's CPUs hold; an InputError if they cannot fit."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    fits = cpus // cpus_per_worker
    if fits < 1:
        raise InputError(f"the Ray cluster has {cpus} CPUs", value=cpus_per_worker,
                         expected="a cluster with at least one CPU per encoder actor")
    if workers is None:
        return fits
    if workers > fits:  # the pool would wait for CPUs that never come
        raise InputError(f"the Ray cluster has {cpus} CPUs, room for {fits} encoder actors of {cpus_per_worker} "
                         f"CPU(s)", value=workers, expected=f"at most {fits} workers")
    return workers


def _chunk_rows(rows: int, chunk_size: int, pool: int, batch_size: int) -> int:
    """Rows per pipeline batch: ``chunk_size``, made smaller so each of the ``pool`` actors gets about four
    batches (an even share of the work to the end), but not under one encoder batch."""
    return max(1, min(chunk_size, max(batch_size, math.ceil(rows / (4 * pool)))))


def _check_positive(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"bad {name}", value=value, expected="an integer >= 1")


def _encode_map(ray: Any, ds: Any, encoder: Any, encoder_options: dict[str, Any], *, fingerprint: str,
                workers: int, cpus_per_worker: int, cache_root: Path, template_id: str, template: str | None,
                text_column: str | None, id_column: str, batch_size: int, chunk_size: int, scrub: bool,
                source: str) -> Any:
    """``ds`` mapped through an actor pool of :class:`_EncodeBatches` (lazy: nothing runs yet)."""
    with warnings.catch_warnings():  # ray 2.60 takes max_restarts only as a (deprecated) remote arg
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            _EncodeBatches,
            fn_constructor_kwargs={"encoder": encoder, "encoder_options": encoder_options,
                                   "threads": cpus_per_worker, "cache_root": str(cache_root),
                                   "template_id": template_id, "template": template, "text_column": text_column,
                                   "id_column": id_column, "batch_size": batch_size, "scrub": scrub,
                                   "source": source, "fingerprint": fingerprint},
            batch_size=chunk_size, batch_format="pyarrow", zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
            max_restarts=-1, max_task_retries=-1)  # a dead actor restarts; its batches are retried


def _input_error(exc: BaseException) -> InputError | None:
    """The InputError a Ray task raised, found in the chain of errors Ray wrapped it in (``exc`` itself when
    it is a plain InputError raised in this process)."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, InputError) and not isinstance(err, RayError):  # not RayTaskError(InputError)
            return err
        cause = getattr(err, "cause", None)
        todo += [err.__context__, err.__cause__, cause if isinstance(cause, BaseException) else None]
    return None


@contextmanager
def _running(ray: Any) -> Iterator[None]:
    """Ray Data settings for the block; an InputError raised by an actor re-raised as itself (its message,
    no Ray traceback)."""
    context = ray.data.DataContext.get_current()
    saved = context.raise_original_map_exception, context.use_datasource_v2
    context.raise_original_map_exception = True  # the actor's InputError, not a UserCodeException about it
    context.use_datasource_v2 = False  # v2 lists files in a task that needs a CPU the actors may all hold
    try:
        yield
    except Exception as exc:
        found = _input_error(exc)
        if found is None or found is exc:
            raise
        raise found from None
    finally:
        context.raise_original_map_exception, context.use_datasource_v2 = saved


def _resolve_encoder(encoder: str | Path | TextEncoder, options: dict[str, Any] | None) -> TextEncoder:
    from llm4rec.text import get_encoder

    enc = get_encoder(encoder, **(options or {}))  # a bad name or path fails here, before Ray
    enc.fingerprint  # noqa: B018 - hashes the weights: a missing file fails here too
    return enc


# --------------------------------------------------------------------------- Parquet to Parquet
def embed_parquet(source: str | Path, out: str | Path, encoder: str | Path | TextEncoder = "minilm", *,
                  text_column: str | None = None, template: str | Template | None = None,
                  template_id: str | None = None, id_column: str = "item_id",
                  cache_dir: str | Path | None = None, batch_size: int = 64, chunk_size: int = CHUNK_SIZE,
                  workers: int | None = None, cpus_per_worker: int = 1, address: str | None = None,
                  encoder_options: dict[str, Any] | None = None, scrub: bool = True,
                  overwrite: bool = False) -> EmbedSummary:
    """Encode every row of a Parquet items table on a Ray cluster; write ``(id, embedding)`` rows to ``out``.

    ``out`` becomes a folder of Parquet files with two columns, ``id_column``
    (as read) and :data:`EMBEDDING_COLUMN` (``fixed_size_list<float32>[dim]``,
    L2-normalised), one row per input row, in no particular order (join on the
    id), and :data:`META_FILE` describing the run. It is written in a
    temporary sibling and renamed into place only when complete: a failed or
    interrupted run leaves no ``out``.

    Args:
        source: a Parquet file or a folder of them.
        out: the output folder (new or empty; with ``overwrite``, an earlier output of this function).
        encoder: a name or path for :func:`~llm4rec.text.get_encoder`, or an unloaded encoder.
        text_column: the column holding each row's text (cache template id ``"raw"``, as
            :func:`~llm4rec.text.encode_cached` uses by default). Exactly one of this and ``template``.
        template: a :class:`~llm4rec.text.Template` over the table's columns, rendered per batch as
            :func:`~llm4rec.text.table_texts` does (the row's id when every field is missing, PII scrubbed
            unless ``scrub=False``); its id keys the cache.
        template_id: the cache key's template part, when the texts in ``text_column`` were rendered elsewhere
            with a template (its :attr:`~llm4rec.text.Template.id`).
        id_column: the column naming each row.
        cache_dir: the embedding-cache root (default :func:`~llm4rec.text.default_cache_dir`).
        batch_size: texts per encoder batch.
        chunk_size: the most rows per pipeline batch (one cache lookup and at most one shard each); smaller
            when that gives each actor about four batches (no less than ``batch_size``).
        workers: encoder actors (default: as many as the cluster's CPUs hold).
        cpus_per_worker: CPUs (and encoder threads) per actor.
        address: the Ray cluster (``auto``, ``local``, ``host:port``); None: the one this process is
            connected to, else ``auto``.
        encoder_options: options for :func:`~llm4rec.text.get_encoder`.
        scrub: scrub PII from template-rendered texts.
        overwrite: replace an earlier output of this function at ``out``.
    """
    import pyarrow.dataset as pads

    from llm4rec._atomic import atomic_dir
    from llm4rec.text import Template, default_cache_dir

    source, out = Path(source), Path(out)
    if (text_column is None) == (template is None):
        raise InputError("give either a text column or a template", value={"text_column": text_column,
                                                                          "template": template},
                         expected="exactly one of text_column and template")
    tpl = None if template is None else (template if isinstance(template, Template) else Template(template))
    if tpl is not None and template_id is not None:
        raise InputError("template_id is taken from the template", value=template_id,
                         expected="template_id only with text_column")
    for name, value in (("batch size", batch_size), ("chunk size", chunk_size), ("number of workers", workers),
                        ("CPUs per worker", cpus_per_worker)):
        _check_positive(name, value)
    if address is not None:
        check_address(address, probe=False)
    if not source.exists():
        raise InputError("Parquet items not found", path=source, expected="a Parquet file or a folder of them")
    _check_out(out, overwrite)
    try:
        table = pads.dataset(str(source), format="parquet")
        schema, rows = table.schema, table.count_rows()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read Parquet: {str(exc).splitlines()[0]}", path=source,
                         expected="a Parquet file or a folder of them") from None
    if rows == 0:
        raise InputError("the Parquet items table has no rows", path=source, expected="at least one item")
    needed = [id_column] + ([text_column] if tpl is None else [f for f in tpl.fields if f != "item_id"])
    for column in needed:
        if column not in schema.names:
            raise InputError("no such column", path=source, column=column,
                             expected=f"one of the columns {schema.names}")
    enc = _resolve_encoder(encoder, encoder_options)
    cache_root = Path(default_cache_dir() if cache_dir is None else cache_dir).expanduser().resolve()
    key_template = tpl.id if tpl is not None else (template_id or "raw")
    started = time.perf_counter()
    with session(address) as ray, _running(ray):
        pool = _pool_size(ray, workers, cpus_per_worker)
        chunk_size = _chunk_rows(rows, chunk_size, pool, batch_size)
        ds = ray.data.read_parquet(str(source.resolve()), num_cpus=0)
        mapped = _encode_map(ray, ds, encoder if not isinstance(encoder, Path) else str(encoder),
                             dict(encoder_options or {}), fingerprint=enc.fingerprint, workers=pool,
                             cpus_per_worker=cpus_per_worker, cache_root=cache_root, template_id=key_template,
                             template=None if tpl is None else tpl.text, text_column=text_column,
                             id_column=id_column, batch_size=batch_size, chunk_size=chunk_size, scrub=scrub,
                             source=str(source))
        with atomic_dir(out, replace=overwrite) as tmp:
            mapped.write_parquet(str(tmp), ray_remote_args={"num_cpus": 0})
            written = pads.dataset(str(tmp), format="parquet")
            if written.count_rows() != rows:  # never rename an incomplete output into place
                raise RuntimeError(f"the pipeline wrote {written.count_rows()} rows of {rows}")
            dim = written.schema.field(EMBEDDING_COLUMN).type.list_size
            summary = EmbedSummary(out=str(out), rows=rows, dim=int(dim), encoder=enc.name,
                                   fingerprint=enc.fingerprint, template_id=key_template,
                                   template=None if tpl is None else tpl.text, text_column=text_column,
                                   id_column=id_column, workers=pool,
                                   seconds=round(time.perf_counter() - started, 3))
            (tmp / META_FILE).write_text(json.dumps({**asdict(summary), "source": str(source.resolve()),
                                                     "backend": enc.backend}, indent=2) + "\n",
                                         encoding="utf-8")
    return summary


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` is new or an empty folder, or (with ``overwrite``) an earlier output of :func:`embed_parquet`."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if overwrite and out.is_dir() and (out / META_FILE).is_file():
        return
    raise InputError("the output exists", path=out,
                     expected="a new or empty folder" + ("" if overwrite else ", or overwrite=True to replace an "
                                                         "earlier embedding output"))


# --------------------------------------------------------------------------- texts in, matrix out
def encode_texts(texts: Sequence[str], encoder: str | Path | TextEncoder = "minilm", *,
                 template_id: str = "raw", cache_dir: str | Path | None = None, batch_size: int = 64,
                 chunk_size: int = CHUNK_SIZE, workers: int | None = None, cpus_per_worker: int = 1,
                 address: str | None = None, encoder_options: dict[str, Any] | None = None,
                 on_lookup: Callable[[int, int], None] | None = None) -> np.ndarray:
    """:func:`~llm4rec.text.encode_cached` on a Ray cluster: float32[len(texts), dim], rows in input order.

    The same cache (keys, shards) as the single-process function, so either
    finds what the other stored. Distinct texts not in the cache are sorted
    longest first (as the single-process function does) and sent to the
    cluster in batches of ``chunk_size`` (each actor looks them up again, in
    case another run stored them meanwhile); the vectors come back to this
    process, which also stores any the workers' cache did not get (workers on
    other machines without a shared cache folder). ``on_lookup(cached, to_encode)`` as in
    :func:`~llm4rec.text.encode_cached`. Other arguments as in
    :func:`embed_parquet`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from llm4rec.text import EmbeddingCache, default_cache_dir
    from llm4rec.text.cache import text_keys

    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string", value=texts,
                         expected="a list such as [text]")
    for name, value in (("batch size", batch_size), ("chunk size", chunk_size), ("number of workers", workers),
                        ("CPUs per worker", cpus_per_worker)):
        _check_positive(name, value)
    if address is not None:
        check_address(address, probe=False)
    try:
        array = pa.array(list(texts), pa.string())  # (n,)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"texts must be strings ({str(exc).splitlines()[0]})", expected="a list of str") from None
    _check_blank(array, pa.array(np.arange(len(array))), "texts", "text")
    enc = _resolve_encoder(encoder, encoder_options)
    cache_root = Path(default_cache_dir() if cache_dir is None else cache_dir).expanduser().resolve()
    cache = EmbeddingCache(cache_root, enc.fingerprint, template_id)
    keys = text_keys(array.to_pylist())  # (n, 32)
    _, first, inverse = np.unique(_as_void(keys), return_index=True, return_inverse=True)  # (u,), (u,), (n,)
    inverse = inverse.ravel()
    cached, found = cache.lookup(keys[first])  # (u, dim or 0), (u,)
    missing = np.flatnonzero(~found)  # (m,)
    if on_lookup is not None:
        on_lookup(int(found.sum()), len(missing))
    if len(missing) == 0:
        return cached[inverse] if len(first) else np.zeros((0, enc.dim), np.float32)
    # longest first, as encode_cached does: each chunk then holds texts of similar length (little padding)
    lengths = pc.utf8_length(array.take(pa.array(first[missing]))).to_numpy()  # (m,)
    missing = missing[np.argsort(-lengths, kind="stable")]
    todo = pa.table({"row": pa.array(missing, pa.int64()), "text": array.take(pa.array(first[missing]))})
    with session(address) as ray, _running(ray):
        pool = _pool_size(ray, workers, cpus_per_worker)
        chunk_size = _chunk_rows(todo.num_rows, chunk_size, pool, batch_size)
        # blocks of chunk_size rows, so that every actor gets work (one table would be one block)
        blocks = [todo.slice(start, chunk_size) for start in range(0, todo.num_rows, chunk_size)]
        ds = ray.data.from_arrow(blocks)
        mapped = _encode_map(ray, ds, encoder if not isinstance(encoder, Path) else str(encoder),
                             dict(encoder_options or {}), fingerprint=enc.fingerprint,
                             workers=min(pool, len(blocks)), cpus_per_worker=cpus_per_worker,
                             cache_root=cache_root, template_id=template_id,
                             template=None, text_column="text", id_column="row", batch_size=batch_size,
                             chunk_size=chunk_size, scrub=False, source="texts")
        vectors: np.ndarray | None = None
        done = np.zeros(len(first), dtype=bool)  # (u,)
        for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = batch.column("row").to_numpy()  # (b,) positions in the distinct texts
            column = batch.column(EMBEDDING_COLUMN).combine_chunks()
            if vectors is None:
                vectors = np.zeros((len(first), column.type.list_size), dtype=np.float32)
                if found.any():
                    vectors[found] = cached[found]
            vectors[rows] = column.flatten().to_numpy().reshape(len(rows), -1)
            done[rows] = True
    if vectors is None or not done[missing].all():
        raise RuntimeError(f"the Ray pipeline returned {int(done.sum())} of {len(missing)} vectors")
    # actors on other machines stored into their own disks: keep what this machine's cache lacks
    _, stored = cache.lookup(keys[first[missing]])
    if not stored.all():
        rest = missing[~stored]
        cache.store(keys[first[rest]], vectors[rest], meta={"name": enc.name, "backend": enc.backend,
                                                            "dim": int(vectors.shape[1])})
    return vectors[inverse]


def embed_dataset(dataset: Dataset, template: str | Template | None = None,
                  encoder: str | Path | TextEncoder = "minilm", *, address: str | None = None,
                  **options: Any) -> np.ndarray:
    """float32[n_items, dim]: every item's text (:func:`~llm4rec.text.item_texts`) encoded on a Ray cluster.

    The vectors and cache entries of ``encode_cached(encoder, item_texts(dataset, template),
    template_id=template.id)``, the single-process ``llm4rec embed``. ``options`` go to
    :func:`encode_texts`.
    """
    from llm4rec.text import Template, default_item_template, item_texts

    tpl = (template if isinstance(template, Template) else Template(template)) if template is not None \
        else default_item_template(dataset)
    return encode_texts(item_texts(dataset, tpl), encoder, template_id=tpl.id, address=address, **options)
