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

  With ``rescore`` (a shortlist size), each pq table also keeps its int8 rows
  (``rf8__<key>``, ``rf8range__<key>``), and :func:`attach_rescoring` makes
  the loaded model score in two stages: the product-quantised table ranks
  every item, then the ``rescore`` best of each row are scored again with the
  int8 rows (every value within ``s / 2`` of the original) and placed above
  the rest, whose order is kept. On disk the item rows then take
  ``1 + 1 / pq_dims`` bytes per value, more than int8 alone: re-scoring buys
  back the accuracy of a coarse code (large ``pq_dims``), not bytes.

Decoding needs numpy only (no faiss). Small arrays (biases, norms, the
transformer's layers) stay float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llm4rec.errors import InputError

__all__ = ["CODECS", "MIN_SIZE", "PQ_MIN_ROWS", "attach_rescoring", "decode_arrays", "encode_arrays", "narrow_ints",
           "refined_arrays"]

CODECS = ("int8", "pq")
#: a float table of fewer values than this stays float32
MIN_SIZE = 16384
#: k-means of 256 centroids per sub-vector needs this many rows to train on
PQ_MIN_ROWS = 2048
_INT8, _SCALE, _PQ, _CENTROIDS = "q8__", "q8range__", "pq__", "pqcent__"
_REFINE, _REFINE_SCALE = "rf8__", "rf8range__"


def encode_arrays(arrays: dict[str, np.ndarray], method: str, *, n_items: int, pq_dims: int = 2,
                  rescore: bool = False, seed: int = 2026) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(``arrays`` with their large ``state_*`` tables encoded by ``method``, a summary of what was encoded).

    ``rescore``: pq tables keep their int8 rows too (for :func:`attach_rescoring`).
    The summary: ``{name (the key without state_): {"codec": "int8"|"pq", "shape": [n, d], "bytes_before",
    "bytes_after"}}`` (``bytes_after`` counts the int8 rows of a re-scored table).
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
            if rescore:
                q, scale = _int8_encode(table)
                out[_REFINE + key], out[_REFINE_SCALE + key] = q, scale
                after += q.nbytes + scale.nbytes
        else:
            q, scale = _int8_encode(table)
            out[_INT8 + key], out[_SCALE + key] = q, scale
            codec, after = "int8", q.nbytes + scale.nbytes
        summary[key.removeprefix("state_")] = {"codec": codec, "shape": [n, d], "bytes_before": int(value.nbytes),
                                               "bytes_after": int(after)}
    return out, summary


def narrow_ints(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Non-negative integer arrays in the narrowest unsigned type that holds them (uint8/16/32; the reader
    widens them again): a compressed bundle's histories take half the bytes or less."""
    out = {}
    for key, value in arrays.items():
        top = int(value.max()) if value.size else 0
        if value.dtype.kind not in "iu" or (value.size and value.min() < 0):
            out[key] = value
            continue
        dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if top <= np.iinfo(t).max)
        out[key] = value.astype(dtype)
    return out


def decode_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every encoded table back as float32 under its own key (a plain bundle's arrays pass
    through). Raises ValueError for a code without its scales or centroids, or of the wrong shape."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key.startswith(_INT8):
            name = key[len(_INT8):]
            out[name] = _int8_decode(name, value, arrays.get(_SCALE + name))
        elif key.startswith(_PQ):
            name = key[len(_PQ):]
            centroids = arrays.get(_CENTROIDS + name)
            if centroids is None or value.ndim != 2 or centroids.ndim != 3 or centroids.shape[0] != value.shape[1]:
                raise ValueError(f"product-quantised table {name!r} has no matching centroids")
            out[name] = _pq_decode(value, centroids)
        elif not key.startswith((_SCALE, _CENTROIDS, _REFINE, _REFINE_SCALE)):
            out[key] = value
    return out


def refined_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The ``state_*`` tables that have int8 rows for re-scoring, decoded from those rows (float32); None when
    there are none. Raises ValueError for rows without their ranges."""
    names = [k[len(_REFINE):] for k in arrays if k.startswith(_REFINE)]
    if not names:
        return None
    return {name: _int8_decode(name, arrays[_REFINE + name], arrays.get(_REFINE_SCALE + name)) for name in names}


def attach_rescoring(model: Any, exact: Any, shortlist: int) -> None:
    """Make ``model`` score in two stages: its own tables rank every candidate, then the ``shortlist`` best of
    each row are scored by ``exact`` (the same model with finer tables) and placed above the rest.

    Both scoring entry points of the model (``_score_users``, ``_score_histories``) are wrapped on this
    instance, so every path that scores (evaluation, the service, explanations, ensembles) re-scores.
    """
    if shortlist < 1:
        raise ValueError(f"the re-scoring shortlist must hold at least one item, not {shortlist}")
    approx_users, approx_histories = model._score_users, model._score_histories

    def score_users(users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return _two_stage(approx_users(users, items), lambda cols: exact._score_users(users, cols), items, shortlist)

    def score_histories(histories: Any, items: np.ndarray | None) -> np.ndarray:
        return _two_stage(approx_histories(histories, items), lambda cols: exact._score_histories(histories, cols),
                          items, shortlist)

    model._score_users, model._score_histories = score_users, score_histories
    model.rescore_shortlist_ = int(shortlist)


def _two_stage(approx: np.ndarray, exact_fn: Any, items: np.ndarray | None, shortlist: int) -> np.ndarray:
    """float32[B, C]: ``approx`` (B rows over C candidates) with each row's ``shortlist`` best replaced by
    ``exact_fn(item indices)`` (float32[B, len(item indices)]) and every other entry shifted below them."""
    approx = np.array(approx, dtype=np.float32)
    b, c = approx.shape
    if b == 0 or c == 0:
        return approx
    if c <= shortlist:
        return np.asarray(exact_fn(items if items is not None else np.arange(c)), dtype=np.float32)
    short = np.argpartition(-approx, shortlist - 1, axis=1)[:, :shortlist]  # (B, S) candidate positions
    union = np.unique(short)  # the candidates any row shortlists
    exact = np.asarray(exact_fn(union if items is None else items[union]), dtype=np.float32)  # (B, U)
    exact_short = np.take_along_axis(exact, np.searchsorted(union, short), 1)  # (B, S)
    rest = approx.copy()
    np.put_along_axis(rest, short, -np.inf, 1)
    rest_max = rest.max(axis=1)  # (B,)
    low = np.where(np.isfinite(exact_short), exact_short, np.inf).min(axis=1)  # (B,)
    gap = np.where(np.isfinite(rest_max) & np.isfinite(low),
                   np.maximum(rest_max - low, 0) + 1e-6 * np.maximum(np.abs(low), 1), 0).astype(np.float32)
    out = approx - gap[:, None]
    np.put_along_axis(out, short, exact_short, 1)
    return out


def _int8_decode(name: str, codes: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """float32[n, d] from uint8[n, d] codes and float32[n, 2] (lo, step) rows."""
    if ranges is None or codes.ndim != 2 or ranges.shape != (codes.shape[0], 2):
        raise ValueError(f"int8 table {name!r} has no matching per-row ranges")
    lo, step = ranges[:, :1].astype(np.float32), ranges[:, 1:].astype(np.float32)
    return codes.astype(np.float32) * step + lo


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
