"""On-disk embedding cache keyed by (encoder fingerprint, template id, text hash).

Layout::

    <root>/<encoder fingerprint>/<template id>/
        encoder.json                      what wrote it (name, backend, dim), for people
        shard-<ns>-<pid>-<random>.npz     keys: uint8[n, 32] sha256 of each text
                                          vectors: float32[n, dim]

Every write is a new shard with a unique name, written to a temporary file
and renamed into place (:mod:`llm4rec._atomic`): readers see whole shards or
none, and concurrent writers never touch each other's files. A reader loads
every shard (later duplicates of a key are ignored). When a directory holds
more than :data:`COMPACT_AFTER` shards, a writer merges the ones it read into
one new shard before deleting them, so nothing is lost if another process
writes meanwhile. No pickle: ``np.load(..., allow_pickle=False)``; an
unreadable shard is skipped with a warning and its texts are encoded again.

:func:`encode_cached` stores its work as it goes, a shard every
:data:`STORE_EVERY` texts or more (at most about :data:`COMPACT_AFTER` shards
per call), so an interrupted run (Ctrl-C, a crash) loses at most one shard's
worth and a rerun encodes only what is still missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from llm4rec._atomic import atomic_write_bytes, atomic_write_text
from llm4rec.errors import InputError
from llm4rec.text.encoders import TextEncoder, _check_texts, progress_reporter

__all__ = ["COMPACT_AFTER", "STORE_EVERY", "EmbeddingCache", "default_cache_dir", "encode_cached", "text_keys"]

#: shards per directory above which a writer merges them
COMPACT_AFTER = 32
#: fewest texts :func:`encode_cached` encodes between two stores (rounded up to whole batches)
STORE_EVERY = 2048


def default_cache_dir() -> Path:
    """``$LLM4REC_CACHE/embeddings``, else ``~/.cache/llm4rec/embeddings``."""
    base = os.environ.get("LLM4REC_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "llm4rec") / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """uint8[n, 32]: the sha256 of each text's UTF-8 bytes."""
    digest = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts)
    return np.frombuffer(digest, dtype=np.uint8).reshape(len(texts), 32)


def _as_void(keys: np.ndarray) -> np.ndarray:
    """uint8[n, 32] -> a 1-d array of 32-byte scalars that sort and compare as wholes."""
    return np.ascontiguousarray(keys).view(np.dtype((np.void, 32))).ravel()


class EmbeddingCache:
    """The vectors of one (encoder, template) pair under ``root``.

    Args:
        root: the cache root (see :func:`default_cache_dir`).
        fingerprint: the encoder's :attr:`~llm4rec.text.TextEncoder.fingerprint`.
        template_id: the text template's id (``"raw"`` for texts from elsewhere).
    """

    def __init__(self, root: str | Path, fingerprint: str, template_id: str = "raw") -> None:
        self.root = Path(root).expanduser()
        self.fingerprint = fingerprint
        self.template_id = template_id

    @property
    def directory(self) -> Path:
        return self.root / self.fingerprint / self.template_id

    def shards(self) -> list[Path]:
        """The complete shard files now present (temporary files excluded)."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("shard-*.npz"))

    def _read(self) -> tuple[np.ndarray, np.ndarray, list[Path]]:
        """(sorted void keys[m], float32[m, dim] vectors in that order, shards read)."""
        for _ in range(3):  # a shard merged away while we read: its rows are in a newer shard, read again
            keys, vectors, read, vanished = [], [], [], False
            for shard in self.shards():
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        k, v = data["keys"], data["vectors"]
                except FileNotFoundError:
                    vanished = True
                    continue
                except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                    warnings.warn(f"skipping unreadable embedding-cache shard {shard}: {exc}", stacklevel=3)
                    continue
                if k.ndim != 2 or k.shape[1] != 32 or v.ndim != 2 or len(k) != len(v) or (
                        vectors and v.shape[1] != vectors[0].shape[1]):
                    warnings.warn(f"skipping malformed embedding-cache shard {shard}", stacklevel=3)
                    continue
                keys.append(k)
                vectors.append(v.astype(np.float32, copy=False))
                read.append(shard)
            if not vanished:
                break
        if not keys:
            return _as_void(np.zeros((0, 32), np.uint8)), np.zeros((0, 0), np.float32), read
        all_keys = _as_void(np.concatenate(keys))
        uniq, first = np.unique(all_keys, return_index=True)  # sorted; the first copy of each key
        return uniq, np.concatenate(vectors)[first], read

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For uint8[n, 32] keys: (float32[n, dim] with found rows filled, bool[n] found)."""
        stored, vectors, _ = self._read()
        wanted = _as_void(keys)
        pos = np.searchsorted(stored, wanted)
        found = pos < len(stored)
        found[found] = stored[pos[found]] == wanted[found]
        out = np.zeros((len(wanted), vectors.shape[1] if len(stored) else 0), dtype=np.float32)
        out[found] = vectors[pos[found]]
        return out, found

    def store(self, keys: np.ndarray, vectors: np.ndarray, *, meta: dict | None = None) -> Path | None:
        """Write one new shard atomically; compact when there are many. Returns its path (None if empty)."""
        if len(keys) == 0:
            return None
        buf = io.BytesIO()
        np.savez(buf, keys=np.ascontiguousarray(keys, dtype=np.uint8),
                 vectors=np.ascontiguousarray(vectors, dtype=np.float32))
        path = self.directory / f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.npz"
        atomic_write_bytes(path, buf.getvalue())
        info = self.root / self.fingerprint / "encoder.json"
        if meta is not None and not info.exists():
            atomic_write_text(info, json.dumps(meta, indent=2) + "\n")
        if len(self.shards()) > COMPACT_AFTER:
            self.compact()
        return path

    def compact(self) -> None:
        """Merge the shards present into one; delete only the shards that were merged."""
        keys, vectors, read = self._read()
        if len(read) < 2:
            return
        raw = np.frombuffer(keys.tobytes(), dtype=np.uint8).reshape(len(keys), 32)
        buf = io.BytesIO()
        np.savez(buf, keys=raw, vectors=vectors)
        atomic_write_bytes(self.directory / f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.npz",
                           buf.getvalue())
        for shard in read:
            shard.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._read()[0])


def encode_cached(encoder: TextEncoder, texts: Sequence[str], *, cache_dir: str | Path | None = None,
                  template_id: str = "raw", batch_size: int = 64, progress: bool = False,
                  on_lookup: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``encoder.encode(texts)`` through the cache: only texts not cached yet are encoded.

    Duplicated texts are encoded once. Returns float32[len(texts), dim],
    L2-normalised rows in input order. ``cache_dir=None`` uses
    :func:`default_cache_dir`.

    The missing texts are encoded longest first in batches of ``batch_size``
    (similar lengths, less padding) and stored in chunks of at least
    :data:`STORE_EVERY` texts, each chunk a new shard as soon as it is done:
    an interrupted call keeps every finished chunk, and calling again encodes
    only the rest. ``progress=True`` shows one bar over all the missing texts.
    ``on_lookup(cached, to_encode)`` is called with the counts of distinct
    texts found in the cache and left to encode, before any encoding.
    """
    texts = _check_texts(texts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError("bad batch size", value=batch_size, expected="an integer >= 1")
    cache = EmbeddingCache(default_cache_dir() if cache_dir is None else cache_dir, encoder.fingerprint,
                           template_id)
    keys = text_keys(texts)
    uniq, first, inverse = np.unique(_as_void(keys), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    cached, found = cache.lookup(keys[first])  # (n_uniq, dim or 0), (n_uniq,)
    missing = np.flatnonzero(~found)
    if on_lookup is not None:
        on_lookup(int(found.sum()), len(missing))
    if len(missing) == 0 and len(uniq):
        return cached[inverse]
    out = np.zeros((len(uniq), encoder.dim), dtype=np.float32)
    if found.any():  # an empty cache gives (n_uniq, 0)
        out[found] = cached[found]
    missing = missing[np.argsort([-len(texts[first[i]]) for i in missing], kind="stable")]
    # A chunk is whole batches (a resumed run then batches the rest as an uninterrupted one would), at least
    # STORE_EVERY texts, and large enough that this call writes at most about COMPACT_AFTER shards.
    least = max(STORE_EVERY, math.ceil(len(missing) / COMPACT_AFTER))
    chunk = batch_size * math.ceil(least / batch_size)
    meta = {"name": encoder.name, "backend": encoder.backend, "dim": int(out.shape[1])}
    with progress_reporter(progress, len(missing), f"encoding ({encoder.name})") as advance:
        for start in range(0, len(missing), chunk):
            rows = missing[start:start + chunk]
            for b in range(0, len(rows), batch_size):
                batch = rows[b:b + batch_size]
                out[batch] = encoder.encode([texts[first[i]] for i in batch], batch_size=batch_size)
                advance(len(batch))
            cache.store(keys[first[rows]], out[rows], meta=meta)
    return out[inverse]
