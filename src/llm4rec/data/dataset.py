"""The immutable interaction dataset every layer reads."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from llm4rec.data.vocabulary import Vocabulary
from llm4rec.errors import InputError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["Dataset"]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions plus item/user attribute tables, indexed densely.

    Interaction arrays (all length ``n_interactions``) are sorted in the
    protocols' chronological order: by user, then timestamp, then item index.
    Build one with :meth:`from_frame` (it collapses duplicated pairs and
    re-indexes ids as PROTOCOLS.md says) or with a loader in
    :mod:`llm4rec.data.sources`.

    Attributes:
        name: short dataset name, e.g. ``"ml-100k"``.
        users, items: vocabularies (token <-> index).
        user, item: int32[n] indices.
        timestamp: float64[n]; the position in the file when the source has none.
        rating: float32[n] explicit ratings, or ``None`` for pure implicit data.
        item_attrs: polars frame with one row per item in index order (column
            ``item_id`` first), or ``None``.
        user_attrs: the same for users, or ``None``.
        text_fields: names of the item attribute columns that hold text.
        provenance: where this interaction set comes from: ``{"dataset",
            "dataset_fingerprint", "protocol", "stage", "seed",
            "split_fingerprint"}`` for a protocol stage's fit set (set by
            :mod:`llm4rec.data.splits`), or ``None`` for a whole dataset.
        load_report: what loading changed, e.g. ``{"duplicates_dropped": 3}``.

    The item vocabulary holds every item of the interactions and of the item
    table: an item listed in ``item_attrs`` without any interaction yet (a new
    catalogue entry) is kept, so text models can recommend it.
    ``interacted_items`` are the others: PROTOCOLS.md's catalogue.
    """

    name: str
    users: Vocabulary
    items: Vocabulary
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray | None = None
    item_attrs: pl.DataFrame | None = None
    user_attrs: pl.DataFrame | None = None
    text_fields: tuple[str, ...] = ()
    provenance: dict | None = None
    load_report: dict = field(default_factory=dict, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.user)
        for arr_name in ("item", "timestamp") + (("rating",) if self.rating is not None else ()):
            if len(getattr(self, arr_name)) != n:
                raise InputError(f"interaction column {arr_name!r} has a different length",
                                 value=len(getattr(self, arr_name)), expected=str(n))
        object.__setattr__(self, "user", _frozen(self.user.astype(np.int32, copy=False)))
        object.__setattr__(self, "item", _frozen(self.item.astype(np.int32, copy=False)))
        object.__setattr__(self, "timestamp", _frozen(self.timestamp.astype(np.float64, copy=False)))
        if self.rating is not None:
            object.__setattr__(self, "rating", _frozen(self.rating.astype(np.float32, copy=False)))

    # ------------------------------------------------------------------ build
    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        name: str = "dataset",
        item_attrs: Any = None,
        user_attrs: Any = None,
        text_fields: tuple[str, ...] = (),
        source: str = "<frame>",
        keep_item_table: bool = True,
    ) -> Dataset:
        """Build from a table with columns ``user_id``, ``item_id`` and optionally
        ``timestamp`` and ``rating`` (polars or pandas).

        Rows are read in order. Duplicated (user, item) pairs keep the latest
        row (largest timestamp; the last row among equal timestamps). Without a
        ``timestamp`` column the row number is the timestamp. Items and users are
        re-indexed in ascending token order (numeric when all are integers).
        Attribute tables are keyed by ``item_id`` / ``user_id``. Items of
        ``item_attrs`` without interactions join the item vocabulary
        (``keep_item_table=True``, the default) or are dropped; user attribute
        rows for unknown users are dropped. ``load_report`` counts the dropped
        duplicate rows and the items kept without interactions.
        """
        import polars as pl

        df = _to_polars(frame)
        for col in ("user_id", "item_id"):
            if col not in df.columns:
                raise InputError("missing column", path=source, column=col,
                                 expected=f"columns user_id and item_id (found {df.columns})")
        if df.height == 0:
            raise InputError("the dataset has no interactions", path=source,
                             expected="at least one (user, item) row")
        df = df.with_row_index("_row")
        cols = [pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), pl.col("_row")]
        if "timestamp" in df.columns:
            cols.append(pl.col("timestamp").cast(pl.Float64))
        else:
            cols.append(pl.col("_row").cast(pl.Float64).alias("timestamp"))
        has_rating = "rating" in df.columns
        if has_rating:
            cols.append(pl.col("rating").cast(pl.Float32))
        df = df.select(cols)
        for col in ("user_id", "item_id", "timestamp"):
            nulls = df.get_column(col).is_null()
            if nulls.any():
                row = int(df.filter(nulls).get_column("_row")[0])
                raise InputError("missing value", path=source, line=row + 1, column=col,
                                 expected="a value in every row")
        users = Vocabulary.from_tokens(df.get_column("user_id").unique().to_list(), kind="user")
        item_tokens = set(df.get_column("item_id").unique().to_list())
        n_interacted = len(item_tokens)
        if item_attrs is not None and keep_item_table:
            attrs_df = _to_polars(item_attrs)
            if "item_id" in attrs_df.columns:
                item_tokens |= set(attrs_df.get_column("item_id").cast(pl.Utf8).drop_nulls().to_list())
        items = Vocabulary.from_tokens(item_tokens, kind="item")
        u = _map_tokens(df.get_column("user_id"), users)
        i = _map_tokens(df.get_column("item_id"), items)
        ts = df.get_column("timestamp").to_numpy().astype(np.float64)
        rating = df.get_column("rating").to_numpy() if has_rating else None
        # Keep the latest row of each (user, item) pair: the last after sorting by (u, i, ts, row).
        by_pair = np.lexsort((np.arange(len(u)), ts, i, u))
        pu, pi = u[by_pair], i[by_pair]
        last = np.ones(len(by_pair), dtype=bool)
        last[:-1] = (pu[1:] != pu[:-1]) | (pi[1:] != pi[:-1])
        kept = by_pair[last]
        order = kept[np.lexsort((i[kept], ts[kept], u[kept]))]  # chronological per user
        return cls(
            name=name,
            users=users,
            items=items,
            user=u[order],
            item=i[order],
            timestamp=ts[order],
            rating=None if rating is None else rating[order],
            item_attrs=_align_attrs(item_attrs, items, "item_id"),
            user_attrs=_align_attrs(user_attrs, users, "user_id"),
            text_fields=tuple(text_fields),
            load_report={"rows": len(u), "duplicates_dropped": int(len(u) - len(kept)),
                         "items_without_interactions": len(items) - n_interacted},
        )

    # --------------------------------------------------------------- queries
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.user)

    @property
    def user_offsets(self) -> np.ndarray:
        """int64[n_users + 1]: interactions of user u are rows ``offsets[u]:offsets[u+1]``."""
        if "offsets" not in self._cache:
            counts = np.bincount(self.user, minlength=self.n_users)
            self._cache["offsets"] = _frozen(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        return self._cache["offsets"]

    def matrix(self, values: str = "binary") -> sp.csr_matrix:
        """User x item CSR matrix (n_users, n_items), float32.

        ``values="binary"`` puts 1 for every interaction (implicit feedback);
        ``"rating"`` puts the rating (error if the dataset has none).
        """
        key = ("matrix", values)
        if key not in self._cache:
            if values == "binary":
                data = np.ones(self.n_interactions, dtype=np.float32)
            elif values == "rating":
                if self.rating is None:
                    raise InputError(f"dataset {self.name!r} has no ratings",
                                     expected="explicit ratings for values='rating'")
                data = self.rating
            else:
                raise InputError("unknown matrix values", value=values, expected="'binary' or 'rating'")
            m = sp.csr_matrix((data, (self.user, self.item)), shape=(self.n_users, self.n_items),
                              dtype=np.float32)
            m.sort_indices()
            self._cache[key] = m
        return self._cache[key]

    def sequences(self) -> list[np.ndarray]:
        """Per user, the item indices in chronological order (int32 views)."""
        return np.split(self.item, self.user_offsets[1:-1])

    def recent_items(self, length: int) -> np.ndarray:
        """int64[n_users, length]: each user's last ``length`` items, right-aligned (oldest first), -1 padded."""
        offsets = self.user_offsets
        rank_from_end = offsets[self.user + 1] - 1 - np.arange(self.n_interactions)  # 0 = most recent
        keep = rank_from_end < length
        out = np.full((self.n_users, length), -1, dtype=np.int64)
        out[self.user[keep], length - 1 - rank_from_end[keep]] = self.item[keep]
        return out

    def subset(self, mask: np.ndarray) -> Dataset:
        """The same dataset (vocabularies, attributes) with only the masked interactions."""
        mask = np.asarray(mask, dtype=bool)
        return Dataset(
            name=self.name, users=self.users, items=self.items,
            user=self.user[mask], item=self.item[mask], timestamp=self.timestamp[mask],
            rating=None if self.rating is None else self.rating[mask],
            item_attrs=self.item_attrs, user_attrs=self.user_attrs, text_fields=self.text_fields,
            provenance=self.provenance,
        )

    def with_provenance(self, provenance: dict | None) -> Dataset:
        """The same data labelled with another provenance (see the class docstring)."""
        return dataclasses.replace(self, provenance=provenance, load_report=dict(self.load_report))

    @property
    def interacted_items(self) -> np.ndarray:
        """int64[m]: the items with at least one interaction, ascending (PROTOCOLS.md's catalogue)."""
        if "interacted" not in self._cache:
            self._cache["interacted"] = _frozen(
                np.flatnonzero(np.bincount(self.item, minlength=self.n_items) > 0).astype(np.int64))
        return self._cache["interacted"]

    def without_items(self, items: np.ndarray) -> Dataset:
        """This dataset as if ``items`` (int indices) had never existed: gone from the vocabulary, the
        interactions and the item table. The other items keep their order (their indices shift down)."""
        drop = np.zeros(self.n_items, dtype=bool)
        drop[np.asarray(items, dtype=np.int64)] = True
        new_index = np.cumsum(~drop) - 1  # old index -> new index (for kept items)
        keep_rows = ~drop[self.item]
        attrs = None if self.item_attrs is None else self.item_attrs.filter(~drop)
        return Dataset(
            name=self.name, users=self.users, items=Vocabulary(self.items.tokens[~drop], kind="item"),
            user=self.user[keep_rows], item=new_index[self.item[keep_rows]], timestamp=self.timestamp[keep_rows],
            rating=None if self.rating is None else self.rating[keep_rows],
            item_attrs=attrs, user_attrs=self.user_attrs, text_fields=self.text_fields,
            provenance=None if self.provenance is None else {**self.provenance, "items_removed": int(drop.sum())},
        )

    def item_table(self, items: np.ndarray | None = None) -> pl.DataFrame:
        """The item attribute rows of ``items`` (int indices; all when None), ``item_id`` first."""
        if self.item_attrs is None:
            raise InputError(f"dataset {self.name!r} has no item table", expected="item attributes")
        return self.item_attrs if items is None else self.item_attrs[np.asarray(items, dtype=np.int64)]

    @property
    def item_text_fingerprint(self) -> str:
        """sha256 (16 hex digits) of the item ids and their text fields (what text models read)."""
        if "text_fingerprint" not in self._cache:
            import json

            h = hashlib.sha256()
            h.update("\x1f".join(map(str, self.items.tokens)).encode())
            attrs = self.item_attrs
            columns = [c for c in self.text_fields if attrs is not None and c in attrs.columns]
            for column in columns:
                values = attrs.get_column(column).cast(str).to_list()
                h.update(f"\x1e{column}\x1e".encode())
                h.update(json.dumps(values, ensure_ascii=False).encode())
            self._cache["text_fingerprint"] = h.hexdigest()[:16]
        return self._cache["text_fingerprint"]

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the vocabularies and interaction arrays."""
        if "fingerprint" not in self._cache:
            h = hashlib.sha256()
            for tokens in (self.users.tokens, self.items.tokens):
                h.update("\x1f".join(map(str, tokens)).encode())
                h.update(b"\x1e")
            for arr in (self.user, self.item, self.timestamp):
                h.update(arr.tobytes())
            if self.rating is not None:
                h.update(self.rating.tobytes())
            self._cache["fingerprint"] = h.hexdigest()[:16]
        return self._cache["fingerprint"]

    def describe(self) -> dict:
        """Counts, sparsity and text fields, as printed by ``llm4rec data info``."""
        seq_len = np.diff(self.user_offsets)
        item_pop = np.bincount(self.item, minlength=self.n_items)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "items_without_interactions": int(self.n_items - len(self.interacted_items)),
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "sparsity": 1.0 - self.n_interactions / max(1, self.n_users * self.n_items),
            "interactions_per_user": {"min": int(seq_len.min()), "median": float(np.median(seq_len)),
                                      "max": int(seq_len.max())},
            "interactions_per_item": {"min": int(item_pop.min()), "median": float(np.median(item_pop)),
                                      "max": int(item_pop.max())},
            "ratings": None if self.rating is None else {
                "min": float(self.rating.min()), "max": float(self.rating.max()),
                "mean": float(self.rating.mean())},
            "item_columns": [] if self.item_attrs is None else self.item_attrs.columns[1:],
            "user_columns": [] if self.user_attrs is None else self.user_attrs.columns[1:],
            "text_fields": list(self.text_fields),
        }

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
                f"interactions={self.n_interactions})")


def _to_polars(frame: Any) -> pl.DataFrame:
    import polars as pl

    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if type(frame).__module__.startswith("pandas"):
        return pl.from_pandas(frame)
    raise InputError("unsupported table type", value=type(frame).__name__,
                     expected="a polars or pandas DataFrame")


def _map_tokens(col: pl.Series, vocab: Vocabulary) -> np.ndarray:
    import polars as pl

    mapping = pl.DataFrame({"t": [str(t) for t in vocab.tokens],
                            "i": np.arange(len(vocab), dtype=np.int32)})
    return (pl.DataFrame({"t": col}).join(mapping, on="t", how="left", maintain_order="left")
            .get_column("i").to_numpy())


def _align_attrs(attrs: Any, vocab: Vocabulary, key: str) -> pl.DataFrame | None:
    """One attribute row per vocabulary entry, in index order (nulls where missing)."""
    import polars as pl

    if attrs is None:
        return None
    df = _to_polars(attrs)
    if key not in df.columns:
        raise InputError("attribute table lacks its key column", column=key,
                         expected=f"a {key!r} column (found {df.columns})")
    df = df.with_columns(pl.col(key).cast(pl.Utf8)).unique(subset=[key], keep="first", maintain_order=True)
    base = pl.DataFrame({key: [str(t) for t in vocab.tokens]})
    return base.join(df, on=key, how="left", maintain_order="left")
