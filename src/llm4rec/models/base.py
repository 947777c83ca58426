"""The one Recommender interface every model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError

from llm4rec.errors import InputError
from llm4rec.models.history import Histories, histories_from_ids

__all__ = ["FIT_STATE", "TEXT_MODELS", "ModelConfig", "Recommendations", "Recommender", "share_fit_state"]

#: models that rank items through their text, so new items need no retraining (``add_items``)
TEXT_MODELS = ("semantic-knn", "llm-two-tower", "sasrec-text", "generative")


class ModelConfig(BaseModel):
    """Base of every model's typed config: a misspelt key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommendations(NamedTuple):
    """Top-k lists by external id: ``items`` object[b, k] (None where a list is short), ``scores`` float32[b, k]
    (-inf there)."""

    items: np.ndarray
    scores: np.ndarray

    def to_records(self, users: list[str] | None = None) -> list[dict[str, Any]]:
        """``[{"user"?, "items": [...], "scores": [...]}, ...]`` without the padding (JSON-ready)."""
        out = []
        for r, (ids, vals) in enumerate(zip(self.items, self.scores)):
            keep = [j for j, i in enumerate(ids) if i is not None]
            row = {"items": [ids[j] for j in keep], "scores": [float(vals[j]) for j in keep]}
            out.append(row if users is None else {"user": users[r], **row})
        return out


def item_labels(data: Any) -> np.ndarray:
    """Display names of items (str[n_items]): the title column when there is one, else the id."""
    return labels_from_table(data.item_attrs, np.asarray([str(t) for t in data.items.tokens]))


def labels_from_table(attrs: Any, ids: np.ndarray) -> np.ndarray:
    """str[n]: each row's title (first of title / movie_title / name present and non-empty; PII scrubbed, as
    every text shown or encoded is), else its id."""
    import polars as pl

    from llm4rec.text import scrub_pii

    labels = np.asarray(ids, dtype=str)
    for column in ("title", "movie_title", "name"):
        if attrs is not None and column in attrs.columns:
            titles = np.asarray(scrub_pii(attrs.get_column(column).cast(pl.Utf8).fill_null("").to_list()), dtype=str)
            labels = np.where(titles != "", titles, labels)
            break
    return labels.astype(str)


def _numeric(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.integer, np.floating))


def external_ids(values: Any, vocab: Any, what: str, hint: str = "") -> np.ndarray:
    """int64[n] indices of external ids (str); numbers are refused, never taken as indices."""
    if isinstance(values, (str, np.str_)):
        values = [values]
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    elif not isinstance(values, (list, tuple)):
        raise InputError(f"{what} ids must be a list of external ids", value=type(values).__name__,
                         expected="e.g. ['196', '186']")
    bad = next((v for v in values if _numeric(v)), None)
    if bad is not None:
        raise InputError(f"{what} ids are the data's external ids, given as strings", value=bad,
                         expected=f"e.g. {str(bad)!r}",
                         hint="Dense indices go to score_indices() / recommend_indices(); an integer is never "
                              "taken as an id, so it cannot be silently reinterpreted.")
    try:
        return vocab.index([str(v) for v in values])
    except InputError as exc:
        raise InputError(exc.problem, expected=exc.expected, hint=hint or None) from None


FIT_STATE = ("n_users_", "n_items_", "users_", "items_", "fit_offsets_", "fit_items_", "history_", "popularity_",
             "item_labels_")


def share_fit_state(member: Recommender, owner: Recommender) -> None:
    """Give ``member`` the fit-set state ``owner`` keeps (vocabularies, histories, popularity, labels,
    provenance): a loaded model rebuilds its members this way before their ``_set_state``."""
    for name in FIT_STATE:
        setattr(member, name, getattr(owner, name))
    member.provenance_ = dict(owner.provenance_)


class Recommender(ABC):
    """Fit on a fit set, then score and recommend for known users or for any history, by external id.

    Subclasses set ``name`` and ``Config``, implement ``_fit`` and
    ``_score_histories`` (and may override ``_score_users``, the fast path
    for users known at fit time), and expose their learned arrays through
    ``_state`` / ``_set_state`` (saved as ``.npz`` without pickle). The
    constructor only stores the validated config; all learning happens in
    :meth:`fit`.

    Two front doors:

    * by external id: :meth:`score`, :meth:`recommend`, :meth:`explain` take
      user and item ids as the data spells them (strings), or histories of
      item ids for users the model never saw, and answer in ids;
    * by dense index: :meth:`score_indices`, :meth:`recommend_indices` (the
      evaluator's fast path), in the fit set's index space.

    Scores are float32; higher is better. A user is represented by their
    history only (the fit-set interactions, or the given history). A user
    with an empty history gets the non-personalised fallback: the items'
    fit-set popularity (interaction counts; ties to the smaller index).
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: True when only some items get a real score and the rest a floor value (``generative``):
    #: such scores rank, but are not for averaging
    partial_scores: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        base = {} if config is None else config.model_dump()
        self.config = self.make_config({**base, **overrides})

    @classmethod
    def make_config(cls, values: dict[str, Any]) -> ModelConfig:
        """Validate a config dict; unknown keys and bad values raise InputError."""
        try:
            return cls.Config(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            known = ", ".join(cls.Config.model_fields) or "(none)"
            if err["type"] == "extra_forbidden":
                raise InputError(f"unknown setting {key!r} for model {cls.name!r}", value=values.get(key),
                                 expected=f"one of: {known}") from None
            raise InputError(f"bad value for setting {key!r} of model {cls.name!r}: {err['msg']}",
                             value=err.get("input"), expected=f"a valid {key}") from None

    # ------------------------------------------------------------------ fit
    def fit(self, data: Any, valid: Any = None, *, callbacks: list | None = None) -> Recommender:
        """Learn from a :class:`~llm4rec.data.Dataset` (a fit set); returns ``self``.

        ``valid`` (a protocol's ``valid`` stage built on this fit set) and
        ``callbacks`` (:class:`~llm4rec.training.Callback`) are for neural
        models, which train in epochs; other models refuse ``valid`` and
        have no epochs to report.
        """
        from llm4rec.data import Dataset

        if not isinstance(data, Dataset):
            raise InputError("fit expects a Dataset (e.g. split.stage('test').fit)",
                             value=type(data).__name__, expected="llm4rec.data.Dataset")
        if data.n_interactions == 0:
            raise InputError("cannot fit on an empty fit set", expected="at least one interaction")
        if valid is not None:
            raise InputError(f"model {self.name!r} does not train in epochs, so it takes no validation stage",
                             expected="valid=None (early stopping is for neural models)")
        self._remember(data)
        self._fit(data)
        return self

    def _remember(self, data: Any) -> None:
        """The fit set as every model keeps it: vocabularies, chronological histories, popularity, provenance."""
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self.users_, self.items_ = data.users, data.items
        self.fit_offsets_ = data.user_offsets.copy()
        self.fit_items_ = data.item.astype(np.int32)
        self.history_ = data.matrix().astype(np.float32)
        self.popularity_ = np.bincount(data.item, minlength=data.n_items).astype(np.float32)
        self.item_labels_ = item_labels(data)
        self.provenance_ = {
            **(data.provenance or {"dataset": data.name, "dataset_fingerprint": data.fingerprint,
                                   "protocol": None, "stage": "whole dataset", "seed": None,
                                   "split_fingerprint": None}),
            "fit_fingerprint": data.fingerprint, "item_text_fingerprint": data.item_text_fingerprint,
            "n_interactions": data.n_interactions, "items_added": 0,
        }

    @abstractmethod
    def _fit(self, data: Any) -> None: ...

    # -------------------------------------------------------------- scoring
    @abstractmethod
    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or len(items)] scores of B histories (dense indices)."""

    def _score_users(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """float32[len(users), n_items or len(items)] for known users from their fit histories.

        Override when the model holds learned per-user state (e.g. factors); by
        default a known user is exactly their fit history.
        """
        return self._score_histories(self.fit_histories(users), items)

    def fit_histories(self, users: np.ndarray) -> Histories:
        """The fit-set histories of known users (dense indices, chronological)."""
        return Histories.from_sequences(self.fit_offsets_, self.fit_items_, users, self.n_items_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            raise InputError(f"model {self.name!r} is not fitted", expected="call fit() or load() first")

    def _user_indices(self, users: Any) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users))
        if users.dtype.kind not in "iu":
            raise InputError("dense user indices must be integers", value=users.dtype.name,
                             expected="int indices; external ids go to score() / recommend()")
        users = users.astype(np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.n_users_):
            raise InputError("user index out of range", value=int(users.max() if users.max() >= self.n_users_
                                                                    else users.min()),
                             expected=f"0..{self.n_users_ - 1}")
        return users

    def _item_indices(self, items: Any) -> np.ndarray:
        items = np.atleast_1d(np.asarray(items))
        if items.size and items.dtype.kind not in "iu":
            raise InputError("dense item indices must be integers", value=items.dtype.name,
                             expected="int indices; external ids go to score() / recommend()")
        items = items.astype(np.int64)
        if items.size and (items.min() < 0 or items.max() >= self.n_items_):
            raise InputError("item index out of range", value=int(items.max() if items.max() >= self.n_items_
                                                                    else items.min()),
                             expected=f"0..{self.n_items_ - 1}")
        return items

    def _finish(self, scores: np.ndarray, lengths: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """float32 scores with the popularity fallback in the rows of empty histories."""
        scores = np.asarray(scores, dtype=np.float32)
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            scores = scores.copy() if not scores.flags.writeable else scores
            scores[empty] = self.popularity_ if items is None else self.popularity_[items]
        return scores

    def score_indices(self, users: Any, items: Any = None) -> np.ndarray:
        """Scores float32[len(users), n_items] (or [.., len(items)]) of known users by dense index."""
        self._check_fitted()
        users = self._user_indices(users)
        items = None if items is None else self._item_indices(items)
        lengths = np.diff(self.fit_offsets_)[users]
        return self._finish(self._score_users(users, items), lengths, items)

    def score_histories(self, histories: Histories, items: Any = None) -> np.ndarray:
        """Scores float32[B, n_items] (or [B, len(items)]) of B dense :class:`Histories` (as :meth:`histories`
        builds them), ``items`` dense indices; an empty history gets the popularity fallback.

        The service's path: it builds a user's live history once and scores it against
        a shortlist of candidates.
        """
        self._check_fitted()
        items = None if items is None else self._item_indices(items)
        if histories.n_items != self.n_items_:
            raise InputError("histories built for another catalogue", value=histories.n_items,
                             expected=f"{self.n_items_} items (rebuild them with model.histories())")
        return self._finish(self._score_histories(histories, items), histories.lengths, items)

    def recommend_indices(self, users: Any, k: int = 10, *, exclude_seen: bool = True,
                          items: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of known users by dense index: (int64[b, k] item indices, float32[b, k] scores).

        Ties go to the smaller item index; ``exclude_seen`` masks the user's
        fit-set items; ``items`` restricts the candidates. Fewer than k
        candidates pad with -1 / -inf.
        """
        _check_k(k)
        self._check_fitted()
        users = self._user_indices(users)
        cols = None if items is None else self._item_indices(items)
        scores = self.score_indices(users, cols)
        return self._top(scores, self.history_[users] if exclude_seen else None, k, cols)

    @staticmethod
    def _top(scores: np.ndarray, seen: sp.csr_matrix | None, k: int,
             cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from llm4rec.ranking import mask_seen, topk

        scores = np.array(scores, dtype=np.float32)
        if seen is not None:
            mask_seen(scores, seen, cols)
        top = topk(scores, k)
        top_scores = np.where(top >= 0, np.take_along_axis(scores, np.maximum(top, 0), 1), -np.inf)
        if cols is not None:
            top = np.where(top >= 0, cols[np.maximum(top, 0)], -1)
        return top, top_scores.astype(np.float32)

    # ------------------------------------------------------ by external id
    @property
    def item_ids(self) -> np.ndarray:
        """object[n_items]: the external id of every item, in score-column order."""
        self._check_fitted()
        return self.items_.tokens

    @property
    def user_ids(self) -> np.ndarray:
        """object[n_users]: the external ids of the users known at fit time."""
        self._check_fitted()
        return self.users_.tokens

    def histories(self, users: Any = None, *, histories: Any = None, timestamps: Any = None,
                  unknown: Literal["error", "skip"] = "error") -> Histories:
        """What the model reads for these users and/or histories (external ids), as dense :class:`Histories`.

        ``users`` alone: their fit-set histories. ``histories`` (lists of item
        ids, oldest first; or ordered by ``timestamps``): those histories, for
        users the model never saw or whose history has grown since fit; with
        ``users`` too, row r is user r's new, complete history.
        """
        self._check_fitted()
        hint = "For a user the model never saw, pass their history instead: histories=[[item ids]]."
        if users is None and histories is None:
            raise InputError("nobody to score", expected="users=[ids] and/or histories=[[item ids], ...]")
        user_index = None if users is None else external_ids(users, self.users_, "user", hint)
        if histories is None:
            return self.fit_histories(user_index)
        h = histories_from_ids(histories, self.items_, timestamps=timestamps, users=user_index, unknown=unknown)
        if user_index is not None and len(user_index) != len(h):
            raise InputError("users and histories must pair up", value=(len(user_index), len(h)),
                             expected="one history per user")
        return h

    def score(self, users: Any = None, *, histories: Any = None, items: Any = None, timestamps: Any = None,
              unknown: Literal["error", "skip"] = "error") -> np.ndarray:
        """Scores float32[b, n_items] (columns in :attr:`item_ids` order), or [b, len(items)] for item ids.

        ``users``: external user ids known at fit time; ``histories``: lists of
        external item ids, oldest first (see :meth:`histories`);
        ``unknown="skip"`` leaves out history items the model does not know
        (default: an error naming them). An empty history gets the popularity
        fallback.
        """
        h = self.histories(users, histories=histories, timestamps=timestamps, unknown=unknown)
        cols = None if items is None else external_ids(items, self.items_, "item")
        return self._score_rows(users, histories, h, cols)

    def _score_rows(self, users: Any, histories: Any, h: Histories, cols: np.ndarray | None) -> np.ndarray:
        if histories is None:  # known users as fitted: the fast path
            return self._finish(self._score_users(h.users, cols), h.lengths, cols)
        return self._finish(self._score_histories(h, cols), h.lengths, cols)

    def recommend(self, users: Any = None, *, histories: Any = None, k: int = 10, exclude_seen: bool = True,
                  items: Any = None, timestamps: Any = None,
                  unknown: Literal["error", "skip"] = "error") -> Recommendations:
        """Top-k item ids per user or history: :class:`Recommendations` (``items``, ``scores``).

        Arguments as :meth:`score`; ``exclude_seen`` masks the items of the
        history; ``items`` restricts the candidates (external ids). Ties go to
        the smaller item index.
        """
        _check_k(k)
        h = self.histories(users, histories=histories, timestamps=timestamps, unknown=unknown)
        cols = None if items is None else external_ids(items, self.items_, "item")
        scores = self._score_rows(users, histories, h, cols)
        top, top_scores = self._top(scores, h.matrix() if exclude_seen else None, k, cols)
        ids = np.full(top.shape, None, dtype=object)
        ids[top >= 0] = self.items_.tokens[top[top >= 0]]
        return Recommendations(ids, top_scores)

    def explain(self, user: Any = None, item: Any = None, *, history: Any = None, timestamps: Any = None,
                top: int = 3) -> dict[str, Any]:
        """Why ``item`` (an external id) scores as it does for ``user`` (an id) or for ``history`` (item ids).

        Returns ``{"user", "item", "label", "score", "because": [{"item",
        "label", "weight"}, ...], "text"}`` with external ids, the ``top``
        history items that contributed most (largest first), and a sentence;
        models add their own keys.
        """
        if item is None:
            raise InputError("which item to explain?", expected="item='<item id>'")
        h = self.histories(None if user is None else [user],
                           histories=None if history is None else [history],
                           timestamps=None if timestamps is None else [timestamps])
        index = int(external_ids([item], self.items_, "item")[0])
        out = self._explain(h, index, top)
        out["user"] = None if user is None else str(user)
        out["item"] = str(self.items_.token(index))
        for entry in out.get("because", []) + out.get("history", []):
            entry["item"] = str(self.items_.token(int(entry["item"])))
        return out

    def _explain(self, histories: Histories, item: int, top: int) -> dict[str, Any]:
        """The explanation of one history row and one item index (dense ids in the answer)."""
        raise InputError(f"model {self.name!r} has no explanations",
                         expected="semantic-knn, llm-two-tower, sasrec, sasrec-text, llm-rerank or ensemble")

    # ------------------------------------------------------------ new items
    def add_items(self, table: Any) -> Recommender:
        """Make new items recommendable at once, ranked through their text (no retraining); returns ``self``.

        ``table``: a polars or pandas frame with ``item_id`` and the text
        columns the model's template reads (e.g. ``title``, ``categories``).
        Ids the model already knows get their text replaced. Only models that
        know items by their text can do this (:data:`TEXT_MODELS`).
        """
        raise InputError(f"model {self.name!r} knows items only through their interactions, so it cannot rank "
                         "new items without retraining", value=self.name,
                         expected="a model that reads item text: " + ", ".join(TEXT_MODELS))

    def _grow_items(self, ids: list[str], attrs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Extend the item vocabulary and the per-item arrays every model holds with ``ids``.

        Returns (int64 indices of ``ids`` after growing, bool mask: True where the id is new).
        """
        self._check_fitted()
        new = np.asarray([i not in self.items_ for i in ids], dtype=bool)
        self.items_ = self.items_.extend(ids)
        n_new = len(self.items_) - self.n_items_
        index = np.asarray(self.items_.index(ids), dtype=np.int64)
        if n_new:
            self.n_items_ = len(self.items_)
            self.popularity_ = np.concatenate([self.popularity_, np.zeros(n_new, dtype=np.float32)])
            self.history_ = sp.csr_matrix((self.history_.data, self.history_.indices, self.history_.indptr),
                                          shape=(self.n_users_, self.n_items_))
            self.item_labels_ = np.concatenate([self.item_labels_.astype(object),
                                                np.full(n_new, "", dtype=object)])
        labels = labels_from_table(attrs, np.asarray(ids, dtype=str))
        labels_obj = self.item_labels_.astype(object)
        labels_obj[index] = labels
        self.item_labels_ = labels_obj.astype(str)
        self.provenance_["items_added"] = int(self.provenance_.get("items_added", 0) + new.sum())
        return index, new

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model as a bundle directory (see :mod:`llm4rec.models.bundle`); returns the path.

        ``path`` must be new or empty, or (with ``overwrite=True``) hold a
        bundle: only the bundle's own files are replaced, nothing else there.
        """
        from llm4rec.models.bundle import write_bundle

        self._check_fitted()
        return write_bundle(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a bundle written by :meth:`save` (any registered model when called on the base class).

        Every file is checked (present, complete, unmodified, a known format)
        before anything is built; a bad bundle is an InputError naming the file.
        """
        from llm4rec.models.bundle import read_bundle

        model = read_bundle(Path(path))
        if cls is not Recommender and not isinstance(model, cls):
            raise InputError("saved model has another type", path=path, value=model.name, expected=cls.name)
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError("bad list length k", value=k, expected="an integer >= 1")
