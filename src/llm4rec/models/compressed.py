"""Compressed weights in a bundle: int8 rows and product quantisation (faiss) of the model's tables.

A bundle written with ``compression`` (see :func:`~llm4rec.models.bundle.write_bundle`)
stores each large float table of the model's state (a 2-D ``state_*`` array
of at least :data:`MIN_SIZE` values) in a compact code, and
:func:`decode_arrays` turns the codes back into float32 tables when the
bundle is read, so every model loads and scores as before:

* ``int8``: 8 bits per value, asymmetric, one range per row
  (``q = round((x - lo) / s)`` in 0..255, ``s = (max - min of the row) / 255``):
  ``q8__<key>`` uint8[n, d] and ``q8range__<key>`` float32[n, 2] (``lo``, ``s``).
  About 4x smaller; every value within ``s / 2``. (Symmetric rows,
  ``s = max|row| / 127``, cost llm-two-tower 0.8% of its NDCG@10 on Amazon
  Beauty, through its ID embeddings; asymmetric rows cost nothing measurable.)
* ``pq``: the item tables (rows = the items, or the items plus a padding
  row) by faiss product quantisation, ``M = d / pq_dims`` sub-vectors of
  ``pq_dims`` values, each replaced by the index of its nearest of 256
  centroids (k-means on the table's own rows): ``pq__<key>`` uint8[n, M] and
  ``pqcent__<key>`` float32[M, 256, pq_dims]; other large tables as int8.
  ``4 * pq_dims`` times smaller per item row. A table too short to train 256
  centroids per sub-vector (fewer than :data:`PQ_MIN_ROWS` rows) or whose
  width ``pq_dims`` does not divide stays int8.

Decoding needs numpy only (no faiss). Small arrays (biases, norms, the
transformer's layers) stay float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llm4rec.errors import InputError

__all__ = ["CODECS", "MIN_SIZE", "PQ_MIN_ROWS", "decode_arrays", "encode_arrays"]

CODECS = ("int8", "pq")
#: a float table of fewer values than this stays float32
MIN_SIZE = 16384
#: k-means of 256 centroids per sub-vector needs this many rows to train on
PQ_MIN_ROWS = 2048
_INT8, _SCALE, _PQ, _CENTROIDS = "q8__", "q8range__", "pq__", "pqcent__"


def encode_arrays(arrays: dict[str, np.ndarray], method: str, *, n_items: int, pq_dims: int = 2,
                  seed: int = 2026) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(``arrays`` with their large ``state_*`` tables encoded by ``method``, a summary of what was encoded).

    The summary: ``{name (the key without state_): {"codec": "int8"|"pq", "shape": [n, d], "bytes_before", "bytes_after"}}``.
    """
    if method not in CODECS:
        raise InputError("unknown table compression", value=method, expected=" or ".join(CODECS))
    if pq_dims < 1:
        raise InputError("pq_dims must be a positive number of values per sub-vector", value=pq_dims,
                         expected="e.g. 4 (a 64-wide table gets 16 one-byte codes per row)")
    out: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    for key, value in arrays.items():
        if not (key.startswith("state_") and value.ndim == 2 and value.dtype.kind == "f" and value.size >= MIN_SIZE):
            out[key] = value
            continue
        table = np.ascontiguousarray(value, dtype=np.float32)
        n, d = table.shape
        is_item_table = n in (n_items, n_items + 1)
        if method == "pq" and is_item_table and n >= PQ_MIN_ROWS and d % pq_dims == 0 and d > pq_dims:
            codes, centroids = _pq_encode(table, pq_dims, seed)
            out[_PQ + key], out[_CENTROIDS + key] = codes, centroids
            codec, after = "pq", codes.nbytes + centroids.nbytes
        else:
            q, scale = _int8_encode(table)
            out[_INT8 + key], out[_SCALE + key] = q, scale
            codec, after = "int8", q.nbytes + scale.nbytes
        summary[key.removeprefix("state_")] = {"codec": codec, "shape": [n, d], "bytes_before": int(value.nbytes),
                                               "bytes_after": int(after)}
    return out, summary


def decode_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every encoded table back as float32 under its own key (a plain bundle's arrays pass
    through). Raises ValueError for a code without its scales or centroids, or of the wrong shape."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key.startswith(_INT8):
            name = key[len(_INT8):]
            ranges = arrays.get(_SCALE + name)
            if ranges is None or value.ndim != 2 or ranges.shape != (value.shape[0], 2):
                raise ValueError(f"int8 table {name!r} has no matching per-row ranges")
            lo, step = ranges[:, :1].astype(np.float32), ranges[:, 1:].astype(np.float32)
            out[name] = value.astype(np.float32) * step + lo
        elif key.startswith(_PQ):
            name = key[len(_PQ):]
            centroids = arrays.get(_CENTROIDS + name)
            if centroids is None or value.ndim != 2 or centroids.ndim != 3 or centroids.shape[0] != value.shape[1]:
                raise ValueError(f"product-quantised table {name!r} has no matching centroids")
            out[name] = _pq_decode(value, centroids)
        elif not key.startswith((_SCALE, _CENTROIDS)):
            out[key] = value
    return out


def _int8_encode(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8[n, d] codes, float32[n, 2] rows of (lo, step)) with ``table ~= codes * step + lo``."""
    lo, hi = table.min(axis=1), table.max(axis=1)  # (n,)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((table - lo[:, None]) / step[:, None]), 0, 255).astype(np.uint8)
    return codes, np.column_stack([lo, step]).astype(np.float32)


def _pq_encode(table: np.ndarray, pq_dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8[n, M] codes, float32[M, 256, pq_dims] centroids) of faiss's ProductQuantizer, M = d / pq_dims."""
    import faiss

    n, d = table.shape
    pq = faiss.ProductQuantizer(d, d // pq_dims, 8)
    pq.cp.seed = seed
    pq.cp.max_points_per_centroid = max(256, -(-n // 256))  # train on every row (no subsampling)
    pq.cp.min_points_per_centroid = max(1, min(39, n // 256))  # faiss warns below 39 rows a centroid
    pq.train(table)
    codes = pq.compute_codes(table)  # (n, M) uint8
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).astype(np.float32)
    return np.ascontiguousarray(codes, dtype=np.uint8), centroids


def _pq_decode(codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """float32[n, M * dsub]: each row's centroids, side by side (faiss's ``decode``)."""
    n, m = codes.shape
    return centroids[np.arange(m)[None, :], codes.astype(np.int64)].reshape(n, -1).astype(np.float32)
