"""Histories: what a model reads about a user, for known users and for any new one.

A :class:`Histories` holds B item sequences (dense item indices, oldest
first), flattened CSR-style, and the known user index of each row (-1 for a
user the model never saw). Models score a :class:`Histories` batch
(``Recommender._score_histories``); the public API builds one from external
ids (:func:`histories_from_ids`) or from the fit set of known users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from llm4rec.errors import InputError

__all__ = ["Histories", "histories_from_ids"]


@dataclass(frozen=True, eq=False)
class Histories:
    """B users' histories as dense item indices, oldest first.

    Attributes:
        items: int64[nnz] the histories one after another.
        offsets: int64[B + 1]: row r is ``items[offsets[r]:offsets[r + 1]]``.
        users: int64[B] the known user index of each row, -1 for a user the model never saw.
        n_items: the size of the item index space.

    Each item appears at most once per row (its latest occurrence), as in a
    fit set.
    """

    items: np.ndarray
    offsets: np.ndarray
    users: np.ndarray
    n_items: int
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64[B] items per row."""
        return np.diff(self.offsets)

    @property
    def rows(self) -> np.ndarray:
        """int64[nnz] the row of each entry of ``items``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def matrix(self) -> sp.csr_matrix:
        """CSR (B, n_items) float32 with 1 at every history item (sorted indices)."""
        if "matrix" not in self._cache:
            m = sp.csr_matrix((np.ones(len(self.items), dtype=np.float32), (self.rows, self.items)),
                              shape=(len(self), self.n_items))
            m.sort_indices()
            self._cache["matrix"] = m
        return self._cache["matrix"]

    def recent(self, length: int) -> np.ndarray:
        """int64[B, length]: each row's last ``length`` items, right-aligned (oldest first), -1 padded."""
        rank_from_end = self.offsets[self.rows + 1] - 1 - np.arange(len(self.items))  # 0 = most recent
        keep = rank_from_end < length
        out = np.full((len(self), length), -1, dtype=np.int64)
        out[self.rows[keep], length - 1 - rank_from_end[keep]] = self.items[keep]
        return out

    def row(self, r: int) -> np.ndarray:
        """int64[h] the items of row r, oldest first."""
        return self.items[self.offsets[r]:self.offsets[r + 1]]

    def take(self, rows: np.ndarray) -> Histories:
        """The histories of ``rows`` (int indices), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Histories(self.items[index], offsets, self.users[rows], self.n_items)

    def with_items(self, n_items: int) -> Histories:
        """The same histories in a larger item index space (items added since)."""
        return Histories(self.items, self.offsets, self.users, n_items)

    @classmethod
    def from_sequences(cls, offsets: np.ndarray, items: np.ndarray, users: np.ndarray,
                       n_items: int) -> Histories:
        """The rows ``users`` of stored sequences (``items[offsets[u]:offsets[u + 1]]`` is user u's)."""
        users = np.asarray(users, dtype=np.int64)
        offsets = np.asarray(offsets)
        starts = offsets[users].astype(np.int64)
        lengths = offsets[users + 1].astype(np.int64) - starts
        out = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        index = np.repeat(starts - out[:-1], lengths) + np.arange(out[-1])
        # only the rows asked for are converted: a service asks for one user of millions of interactions
        return cls(np.asarray(np.asarray(items)[index], dtype=np.int64), out, users, n_items)

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]], n_items: int,
                   users: np.ndarray | None = None) -> Histories:
        """From lists of dense item indices (oldest first); a repeated item keeps its last position."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if lengths.sum() \
            else np.zeros(0, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= n_items):
            raise InputError("item index out of range in a history", value=int(flat.max() if flat.max() >= n_items
                                                                            else flat.min()),
                             expected=f"0..{n_items - 1}")
        users = np.full(len(sequences), -1, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
        return _deduplicated(flat, lengths, None, users, n_items)


def _deduplicated(flat: np.ndarray, lengths: np.ndarray, timestamps: np.ndarray | None, users: np.ndarray,
                  n_items: int) -> Histories:
    """Histories with one entry per (row, item): the latest one, rows in chronological order.

    Chronological order is the given order, or ascending (timestamp, item
    index) when ``timestamps`` (float64[nnz]) are given, as PROTOCOLS.md orders
    a fit set; a repeated item keeps its largest timestamp (then its last position).
    """
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    position = np.arange(len(flat), dtype=np.float64)
    time = position if timestamps is None else timestamps
    by_pair = np.lexsort((position, time, flat, rows))  # last of each (row, item) = the latest
    pr, pi = rows[by_pair], flat[by_pair]
    last = np.ones(len(by_pair), dtype=bool)
    last[:-1] = (pr[1:] != pr[:-1]) | (pi[1:] != pi[:-1])
    kept = by_pair[last]
    tie = flat[kept] if timestamps is not None else position[kept]
    kept = kept[np.lexsort((tie, time[kept], rows[kept]))]
    counts = np.bincount(rows[kept], minlength=len(lengths))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Histories(flat[kept], offsets, users, n_items)


def _is_id_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (str, bytes))


def histories_from_ids(histories: Sequence[Sequence[Any]], item_vocab: Any, *,
                       timestamps: Sequence[Sequence[float]] | None = None,
                       users: np.ndarray | None = None,
                       unknown: Literal["error", "skip"] = "error") -> Histories:
    """Histories from external item ids (oldest first, or ordered by ``timestamps``).

    ``item_vocab`` is the model's item :class:`~llm4rec.data.Vocabulary`.
    An unknown item id raises InputError naming it and its row
    (``unknown="error"``), or is left out (``"skip"``).
    """
    if unknown not in ("error", "skip"):
        raise InputError("bad value for unknown", value=unknown, expected="'error' or 'skip'")
    if not _is_id_list(histories):
        raise InputError("histories must be a list of item-id lists", value=type(histories).__name__,
                         expected="e.g. [['50', '181'], []]")
    for r, h in enumerate(histories):
        if not _is_id_list(h):
            raise InputError(f"history {r} is not a list of item ids", value=h,
                             expected="a list of external item ids, oldest first (a string is one id: wrap it "
                                      "in a list)")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    tokens = [str(t) for h in histories for t in h]
    index = item_vocab.index(tokens, unknown="missing") if tokens else np.zeros(0, dtype=np.int64)
    times = None
    if timestamps is not None:
        if not _is_id_list(timestamps) or len(timestamps) != len(histories) or \
                any(len(t) != n for t, n in zip(timestamps, lengths)):
            raise InputError("timestamps must match the histories", expected="one list per history, one "
                                                                             "timestamp per item")
        try:
            times = np.asarray([float(t) for ts in timestamps for t in ts], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("a timestamp is not a number", expected="numbers (e.g. epoch seconds)") from None
    missing = index < 0
    if missing.any():
        if unknown == "error":
            at = int(np.argmax(missing))
            row = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
            raise InputError(f"unknown item {tokens[at]!r} in history {row}",
                             expected=f"one of the model's {len(item_vocab)} items, or unknown='skip' to leave "
                                      "unknown items out")
        rows = np.repeat(np.arange(len(histories)), lengths)
        lengths = np.bincount(rows[~missing], minlength=len(histories)).astype(np.int64)
        index = index[~missing]
        times = None if times is None else times[~missing]
    users = np.full(len(histories), -1, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    return _deduplicated(index, lengths, times, users, len(item_vocab))
