"""The one Recommender interface every model implements."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError

from llm4rec._atomic import atomic_dir
from llm4rec.errors import InputError

__all__ = ["ModelConfig", "Recommender"]

FORMAT_VERSION = 1


class ModelConfig(BaseModel):
    """Base of every model's typed config: a misspelt key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def item_labels(data: Any) -> np.ndarray:
    """Display names of items (str[n_items]): the title column when there is one, else the id."""
    import polars as pl

    labels = np.asarray([str(t) for t in data.items.tokens])
    attrs = data.item_attrs
    for column in ("title", "movie_title", "name"):
        if attrs is not None and column in attrs.columns:
            titles = attrs.get_column(column).cast(pl.Utf8).fill_null("").to_numpy().astype(str)
            labels = np.where(titles != "", titles, labels)
            break
    return labels.astype(str)


class Recommender(ABC):
    """Fit on a fit set, score users against items, recommend, save, load.

    Subclasses set ``name`` and ``Config``, implement ``_fit`` and
    ``_score_all``, and expose their learned arrays through ``_state`` /
    ``_set_state`` (saved as ``.npz`` without pickle). The constructor only
    stores the validated config; all learning happens in :meth:`fit`.

    Scores are float32[b, n]; higher is better. At scoring time a model uses
    only the user's fit-set interactions (``history_``).
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
    def fit(self, data: Any) -> Recommender:
        """Learn from a :class:`~llm4rec.data.Dataset` (a fit set); returns ``self``."""
        from llm4rec.data import Dataset

        if not isinstance(data, Dataset):
            raise InputError("fit expects a Dataset (e.g. split.stage('test').fit)",
                             value=type(data).__name__, expected="llm4rec.data.Dataset")
        if data.n_interactions == 0:
            raise InputError("cannot fit on an empty fit set", expected="at least one interaction")
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self.history_ = data.matrix().astype(np.float32)
        self.item_labels_ = item_labels(data)
        self._fit(data)
        return self

    @abstractmethod
    def _fit(self, data: Any) -> None: ...

    @abstractmethod
    def _score_all(self, users: np.ndarray) -> np.ndarray:
        """float32[len(users), n_items] scores for all items."""

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32[len(users), len(items)]; override to avoid scoring every item."""
        return self._score_all(users)[:, items]

    # -------------------------------------------------------------- scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            raise InputError(f"model {self.name!r} is not fitted", expected="call fit() or load() first")

    def _users(self, users: Any) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        if users.size and (users.min() < 0 or users.max() >= self.n_users_):
            raise InputError("user index out of range", value=int(users.max() if users.max() >= self.n_users_
                                                                    else users.min()),
                             expected=f"0..{self.n_users_ - 1}")
        return users

    def score(self, users: Any, items: Any = None) -> np.ndarray:
        """Scores float32[len(users), n_items], or [len(users), len(items)] for given items."""
        self._check_fitted()
        users = self._users(users)
        if items is None:
            return np.asarray(self._score_all(users), dtype=np.float32)
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= self.n_items_):
            raise InputError("item index out of range", value=int(items.max() if items.max() >= self.n_items_
                                                                    else items.min()),
                             expected=f"0..{self.n_items_ - 1}")
        return np.asarray(self._score_items(users, items), dtype=np.float32)

    def recommend(self, users: Any, k: int = 10, *, exclude_seen: bool = True,
                  items: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per user: (int64[b, k] item indices, float32[b, k] scores).

        Ties go to the smaller item index; ``exclude_seen`` masks the user's
        fit-set items; ``items`` restricts the candidates. Fewer than k
        candidates pad with -1 / -inf.
        """
        from llm4rec.ranking import topk

        users = self._users(users)
        scores = self.score(users, items)
        if exclude_seen:
            seen = self.history_[users]
            if items is None:
                scores[seen.nonzero()] = -np.inf
            else:
                scores[seen[:, np.asarray(items, dtype=np.int64)].toarray() > 0] = -np.inf
        top = topk(scores, k)
        top_scores = np.where(top >= 0, np.take_along_axis(scores, np.maximum(top, 0), 1), -np.inf)
        if items is not None:
            top = np.where(top >= 0, np.asarray(items, dtype=np.int64)[np.maximum(top, 0)], -1)
        return top, top_scores.astype(np.float32)

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``arrays.npz`` (no pickle) into directory ``path``."""
        self._check_fitted()
        path = Path(path)
        h = self.history_
        arrays = {"history_indptr": h.indptr, "history_indices": h.indices, "history_data": h.data,
                  "item_labels": self.item_labels_,
                  **{f"state_{k}": np.asarray(v) for k, v in self._state().items()}}
        meta = {"model": self.name, "config": self.config.model_dump(mode="json"),
                "n_users": self.n_users_, "n_items": self.n_items_, "format_version": FORMAT_VERSION}
        with atomic_dir(path) as tmp:
            np.savez(tmp / "arrays.npz", **arrays)
            (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by :meth:`save` (any registered model when called on the base)."""
        from llm4rec.models.registry import model_class

        path = Path(path)
        meta_path = path / "config.json"
        if not meta_path.exists():
            raise InputError("not a saved model directory", path=path, expected="config.json and arrays.npz")
        meta = json.loads(meta_path.read_text())
        klass = model_class(meta["model"])
        if cls is not Recommender and not issubclass(klass, cls):
            raise InputError("saved model has another type", path=meta_path, value=meta["model"],
                             expected=cls.name)
        model = klass(klass.make_config(meta["config"]))
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        model.n_users_, model.n_items_ = int(meta["n_users"]), int(meta["n_items"])
        model.history_ = sp.csr_matrix(
            (arrays["history_data"], arrays["history_indices"], arrays["history_indptr"]),
            shape=(model.n_users_, model.n_items_))
        model.item_labels_ = arrays["item_labels"]
        model._set_state({k[len("state_"):]: v for k, v in arrays.items() if k.startswith("state_")})
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
