"""The recommendation service without HTTP: live histories, retrieval, policies, feedback, hot reload.

A request flows ``live history -> candidates -> policy -> logged slate``:

- The live history of a user is their fit-time history (unless they were
  forgotten) followed by their interaction events in the store (clicks,
  purchases, ratings, dwells) and any items the request adds. It is read
  from the store on every request, so feedback counts at once, in every
  worker, without retraining.
- Candidates: the model's top ``settings.candidates`` for that history, seen
  items left out. Small catalogues are scored exactly by the model; above
  ``settings.ann_threshold`` items a faiss index over the model's vector view
  (:func:`llm4rec.models.vectors.vector_view`) shortlists them, and the
  shortlist is re-scored exactly. An empty history gets the non-personalised
  ranking (fit-set popularity). A free-text query is encoded with the model's
  encoder and fused with the history's ranking by reciprocal-rank fusion.
- The policy (:mod:`llm4rec.strategies`; greedy by default) picks the slate
  from the candidates, best first, with the propensity of every shown item;
  the slate is logged in the store, so the service's own logs are input for
  ``llm4rec ope``. Items the user dismissed are never candidates again.
- During an experiment (:mod:`llm4rec.serving.experiments`) a user's arm
  decides the policy and/or the model version, and the slate is logged with
  the probability each other arm would have shown the same items.
- Feedback is stored durably (idempotent by event id); the first batch that
  mentions a slate teaches its policy (clicks and purchases are reward 1, the
  other shown items 0).

The served model lives in a :class:`_Loaded` snapshot that requests take a
reference to; a new registry version is loaded beside it and swapped in, so
in-flight requests finish on the old one. A version that fails validation is
refused and the running one keeps serving.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.errors import InputError
from llm4rec.models.base import Recommender
from llm4rec.models.history import Histories
from llm4rec.serving.settings import ServiceSettings
from llm4rec.serving.store import DISMISS

__all__ = ["RecommendationService", "ServiceError", "item_index"]

log = logging.getLogger("llm4rec.serving")

#: reciprocal-rank fusion constant (Cormack et al. 2009)
RRF_K = 60
#: sampled histories for the ANN recall measured at load
RECALL_SAMPLE = 200
#: how many times the slate size an approximate vector view asks the index for, before the model re-scores
SHORTLIST_FACTOR = 10
#: slates remembered as already learned from (per worker)
LEARNED_MEMORY = 100_000
#: words of a query whose part in each recommendation is measured (explain=true)
MAX_QUERY_WORDS = 16


class ServiceError(InputError):
    """Bad request with an HTTP status: 404 unknown ids, 409 conflicts, 422 what the model cannot do."""

    def __init__(self, status: int, problem: str, **kwargs: Any) -> None:
        self.status = status
        super().__init__(problem, **kwargs)


class _ReadWriteLock:
    """Many readers (requests) or one writer (adding items to the model in place)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    def read(self) -> _Held:
        return _Held(self, write=False)

    def write(self) -> _Held:
        return _Held(self, write=True)


class _Held:
    def __init__(self, lock: _ReadWriteLock, *, write: bool) -> None:
        self.lock, self.write = lock, write

    def __enter__(self) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                c.wait_for(lambda: not self.lock._writing and self.lock._readers == 0)
                self.lock._writing = True
            else:
                c.wait_for(lambda: not self.lock._writing)
                self.lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                self.lock._writing = False
            else:
                self.lock._readers -= 1
            c.notify_all()


@dataclass
class _Loaded:
    """One served model version and everything derived from it."""

    version: str
    model: Recommender
    view: Any  # llm4rec.models.vectors.VectorView | None
    retriever: Any  # llm4rec.serving.index.Retriever | None (None: the model scores exactly)
    popular: np.ndarray  # int64[n_items] item indices by fit-set popularity, ties to the smaller index
    ann_recall: float | None
    items_seq: int = 0
    policies: dict[str, Any] = field(default_factory=dict)
    policy_locks: dict[str, threading.Lock] = field(default_factory=dict)
    lock: _ReadWriteLock = field(default_factory=_ReadWriteLock)
    cache: dict[str, Any] = field(default_factory=dict)  # what the web app's lookups derive once (browse.py)

    @property
    def n_items(self) -> int:
        return self.model.n_items_


@dataclass
class _Candidates:
    """What a model proposes for one request: int64[c] item indices best first, float32[c] their scores."""

    idx: np.ndarray
    scores: np.ndarray
    histories: Histories  # the live history (one row)
    fallback: bool  # nothing personal known: the non-personalised ranking


class RecommendationService:
    """The service's state: settings, store, registry and the served model (see the module docstring)."""

    def __init__(self, settings: ServiceSettings, store: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._loaded: _Loaded | None = None
        self._stamp: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._learned: OrderedDict[str, None] = OrderedDict()
        self._learned_lock = threading.Lock()
        self._pending: dict[str, Future] = {}  # recommendation id -> its log's commit, until committed
        self._versions: dict[str, _Loaded] = {}  # model versions an experiment serves beside the current one
        self._versions_lock = threading.Lock()
        self.experiment: dict | None = None  # the running experiment (refresh_experiment)
        self.reload_failures = 0
        self.last_reload_error: str | None = None
        self.metrics: Any = None  # llm4rec.serving.metrics.ServiceMetrics, set by the app

    # ------------------------------------------------------------ lifecycle
    @property
    def store(self) -> Any:
        if self._store is None:
            from llm4rec.serving.store import EventStore

            self._store = EventStore(self.settings.store)
        return self._store

    @property
    def registry(self) -> Any:
        """The model registry, or None when serving one bundle (no hot reload)."""
        from llm4rec.serving.registry import ModelRegistry

        root = Path(self.settings.model)
        if (root / "CURRENT.json").is_file() or (root / "versions").is_dir():
            return ModelRegistry(root)
        return None

    def start(self, *, watch: bool = True) -> None:
        """Load the current model (an InputError if it cannot be served) and watch for new versions and items."""
        registry = self.registry
        if registry is None:
            model = Recommender.load(self.settings.model)
            self._swap(self._prepare("bundle", model))
        else:
            self._stamp = registry.stamp()
            current = registry.current()
            if current is None:
                raise InputError("the model registry has no published version", path=self.settings.model,
                                 expected="llm4rec publish BUNDLE --registry " + str(self.settings.model))
            version, model = registry.load()
            self._swap(self._prepare(version, model))
        self.refresh_experiment()
        if watch:
            self._watcher = threading.Thread(target=self._watch, name="llm4rec-watch", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        if self._store is not None:
            self._store.close()

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def loaded(self) -> _Loaded:
        if self._loaded is None:
            raise ServiceError(503, "no model loaded yet", expected="wait for /readyz")
        return self._loaded

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            try:
                self.check_reload()
                self.sync_items()
                self.refresh_experiment()
            except Exception as exc:  # noqa: BLE001 - the watcher must survive anything and keep serving
                log.warning("watcher: %s: %s", type(exc).__name__, exc)

    def check_reload(self) -> bool:
        """Load and swap in the registry's current version when it changed; True if swapped.

        A version that fails validation is refused: the running one keeps serving,
        ``reload_failures`` counts it and ``last_reload_error`` says why.
        """
        registry = self.registry
        if registry is None:
            return False
        stamp = registry.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            version, model = registry.load()
            if self._loaded is not None and version == self._loaded.version:
                return False
            loaded = self._prepare(version, model)
        except Exception as exc:  # noqa: BLE001 - any failure to load leaves the old version serving
            self.reload_failures += 1
            self.last_reload_error = f"{type(exc).__name__}: {exc}"
            if self.metrics is not None:
                self.metrics.reload_failures.inc()
            log.error("model version refused, the running one keeps serving: %s", self.last_reload_error)
            return False
        self._swap(loaded)
        log.info("serving model version %s (%d items)", loaded.version, loaded.n_items)
        return True

    def _swap(self, loaded: _Loaded) -> None:
        self._loaded = loaded
        if self.metrics is not None:
            self.metrics.model_loaded(loaded.version, loaded.n_items, loaded.ann_recall)

    def _prepare(self, version: str, model: Recommender) -> _Loaded:
        """A snapshot ready to serve: the store's added items applied, the vector view and index built."""
        from llm4rec.models.vectors import vector_view

        popular = np.lexsort((np.arange(model.n_items_), -model.popularity_)).astype(np.int64)
        loaded = _Loaded(version, model, None, None, popular, None)
        self._apply_items(loaded, self.store.items_since(0), strict=False)
        loaded.view = vector_view(model)
        self._index(loaded)
        return loaded

    def _index(self, loaded: _Loaded) -> None:
        """Build the ANN index when the catalogue is large enough and the model has a vector view."""
        model, view = loaded.model, loaded.view
        if view is None or model.n_items_ <= self.settings.ann_threshold:
            loaded.retriever, loaded.ann_recall = None, None
            return
        from llm4rec.serving.index import Retriever

        loaded.retriever = Retriever(view.items, ann_threshold=self.settings.ann_threshold,
                                     threads=self.settings.threads)
        rng = np.random.default_rng(self.settings.seed)
        users = rng.choice(model.n_users_, size=min(RECALL_SAMPLE, model.n_users_), replace=False)
        queries = view.query(model.fit_histories(np.sort(users)))
        loaded.ann_recall = float(loaded.retriever.recall_at(queries, k=10))

    # ------------------------------------------------------------ histories
    def live_history(self, loaded: _Loaded, user: str | None,
                     extra: list[str] | None = None) -> tuple[Histories, bool, np.ndarray]:
        """(the user's live history as one dense row, True when it is exactly their fit history, int64[d] the
        indices of the items they dismissed)."""
        model = loaded.model
        known = user is not None and user in model.users_ and not self.store.is_forgotten(user)
        rows = [] if user is None else self.store.user_events(user)
        events = [item for item, _, kind in rows if kind != DISMISS]
        gone = [item for item, _, kind in rows if kind == DISMISS and item in model.items_]
        dismissed = np.asarray(model.items_.index(gone) if gone else [], dtype=np.int64)
        extra = list(extra or [])
        if known:
            index = int(model.users_.index([user])[0])
            if not events and not extra:
                return model.fit_histories(np.asarray([index])), True, dismissed
            fit = model.fit_histories(np.asarray([index]))
            ids = model.items_.token(fit.items) + events + extra
            return model.histories(users=[user], histories=[ids], unknown="skip"), False, dismissed
        return model.histories(histories=[events + extra], unknown="skip"), False, dismissed

    # -------------------------------------------------------------- ranking
    def _ranked(self, loaded: _Loaded, h: Histories, fit_only: bool, n: int,
                seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's best n for one history, ``seen`` (int64 indices) left out: (int64[c] item indices,
        float32[c] scores), c <= n."""
        from llm4rec.ranking import topk

        model = loaded.model
        if h.lengths[0] == 0:  # nothing personal known: the non-personalised ranking
            order = loaded.popular[~np.isin(loaded.popular, seen)][:n]
            return order, model.popularity_[order].astype(np.float32)
        if loaded.retriever is None:
            if fit_only:
                scores = model.score_indices(h.users)
            else:
                scores = model.score_histories(h)
            scores = np.array(scores, dtype=np.float32)
            scores[0, seen] = -np.inf
            top = topk(scores, n)[0]
            top = top[top >= 0]
            return top, scores[0, top]
        # an approximate view (semantic-knn's mean of history vectors) only shortlists: the model re-scores
        shortlist = n if loaded.view.exact else min(model.n_items_, SHORTLIST_FACTOR * n)
        idx, s = loaded.retriever.search(loaded.view.query(h), max(shortlist, 1), exclude=[seen])
        idx, s = idx[0], s[0]
        keep = idx >= 0
        idx, s = idx[keep], s[keep]
        if not loaded.view.exact and len(idx):
            s = model.score_histories(h, idx)[0]
            order = np.lexsort((idx, -s))
            idx, s = idx[order], s[order]
        return idx[:n], s[:n].astype(np.float32)

    def _query_ranked(self, loaded: _Loaded, query: str, n: int, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items ranked by the cosine of their text embedding with the query's (the model's encoder)."""
        from llm4rec.ranking import topk
        from llm4rec.text import text_encoder

        table = _text_table(loaded.model)
        if table is None:
            raise ServiceError(422, f"model {loaded.model.name!r} has no text encoder, so it cannot read a query",
                               expected="a request without 'query', or a model that reads item text "
                                        "(semantic-knn)")
        encoder, items = table
        q = np.asarray(text_encoder(encoder).encode([query]), dtype=np.float32)  # (1, d)
        scores = (q @ items.T).astype(np.float32)  # (1, n_items)
        scores[0, seen] = -np.inf
        top = topk(scores, n)[0]
        top = top[top >= 0]
        return top, scores[0, top]

    def recommend(self, **request: Any) -> dict[str, Any]:
        """One slate, once its log is durable: ``{"recommendation_id", "user", "policy", "model_version",
        "fallback", "items": [...]}`` (arguments: :meth:`slate`)."""
        out, logged = self.slate(**request)
        logged.result()
        return out

    def slate(self, *, user: str | None = None, history: list[str] | None = None, query: str | None = None,
              k: int | None = None, policy: str | None = None, explain: bool = False,
              exclude_seen: bool = True) -> tuple[dict[str, Any], Future]:
        """One slate (as :meth:`recommend`) and the Future of its log's commit, not waited for.

        The app answers without waiting: the log is committed a few milliseconds later with the next
        group, so a request never waits on the disk (the store's WAL checkpoints made the tail latency
        ten times the median, bench/serving.py). What this costs: a crash loses the slates of the last
        uncommitted group (their later clicks still count as events). Learning and forgetting wait for the
        slates they need (:meth:`flush`).

        A request that names no policy, from a user, during an experiment, is served by the user's arm.
        """
        cfg = self.settings
        k = cfg.default_k if k is None else k
        if not 1 <= k <= cfg.max_k:
            raise ServiceError(422, "k out of range", value=k, expected=f"1..{cfg.max_k}")
        if policy is not None and policy not in cfg.policies:
            raise ServiceError(422, "unknown policy", value=policy, expected="one of " + ", ".join(cfg.policies))
        experiment = self.experiment if policy is None and user is not None else None
        arm = None
        if experiment is not None:
            from llm4rec.serving.experiments import assign

            arm = assign(experiment["name"], experiment["arms"], user)
        loaded = self._serving(arm)
        policy = (arm or {}).get("policy") or policy or cfg.policy
        request = {"user": user, "history": history, "query": query, "exclude_seen": exclude_seen,
                   "n": max(cfg.candidates, k)}
        with loaded.lock.read():
            model = loaded.model
            found = self._candidates(loaded, **request)
            idx, h = found.idx, found.histories
            slate = self._select(loaded, policy, idx, min(k, len(idx)))
            by_item = dict(zip(idx.tolist(), np.asarray(found.scores, dtype=np.float64).tolist()))
            ids = model.items_.token(slate.items)  # not .tokens: that copies the whole vocabulary
            labels = [str(x) for x in model.item_labels_[slate.items]]
            explanations = [self._explain(model, h, item) for item in ids] if explain else [None] * len(ids)
            if explain and query:
                for e, words in zip(explanations, self._query_words(loaded, query, slate.items)):
                    e["query_words"] = words
            shadow = None
            if arm is not None:
                shadow = {other["name"]: self._shadow(other, loaded, found, ids, request)
                          for other in experiment["arms"] if other["name"] != arm["name"]}
            rec_id = uuid.uuid4().hex
            logged = self.store.log_recommendations([{
                "recommendation_id": rec_id, "user_id": user, "policy": policy, "model_version": loaded.version,
                "items": ids, "actions": [int(a) for a in slate.items],
                "propensities": [float(p) for p in slate.propensities], "timestamp": time.time(),
                "experiment": None if arm is None else experiment["name"],
                "arm": None if arm is None else arm["name"], "shadow": shadow}], wait=False)
        if self.metrics is not None:
            self.metrics.slate_served(policy, len(ids))
        items = [{"item": i, "label": lab, "score": by_item[int(a)], "position": j, "propensity": float(p),
                  "explanation": e}
                 for j, (i, lab, a, p, e) in enumerate(zip(ids, labels, slate.items, slate.propensities,
                                                           explanations))]
        self._pending[rec_id] = logged
        logged.add_done_callback(functools.partial(self._logged, rec_id))
        return {"recommendation_id": rec_id, "user": user, "policy": policy, "model_version": loaded.version,
                "fallback": found.fallback, "experiment": None if arm is None else experiment["name"],
                "arm": None if arm is None else arm["name"], "items": items}, logged

    def _candidates(self, loaded: _Loaded, *, user: str | None, history: list[str] | None, query: str | None,
                    exclude_seen: bool, n: int) -> _Candidates:
        """The model's n best for the user's live history (and the query), seen and dismissed items left out;
        call with ``loaded.lock`` held for reading."""
        h, fit_only, dismissed = self.live_history(loaded, user, history)
        seen = np.concatenate([h.items if exclude_seen else np.zeros(0, np.int64), dismissed])
        idx, scores = self._ranked(loaded, h, fit_only, n, seen)
        if query:
            q_idx, q_scores = self._query_ranked(loaded, query, n, seen)
            if h.lengths[0] == 0:
                idx, scores = q_idx, q_scores
            else:
                idx, scores = _fuse(idx, q_idx, n)
        if len(idx) == 0:
            raise ServiceError(409, "no item left to recommend", expected="a history that leaves some item unseen")
        return _Candidates(idx, scores, h, bool(h.lengths[0] == 0 and not query))

    def _shadow(self, arm: dict, served: _Loaded, found: _Candidates, ids: list[str],
                request: dict[str, Any]) -> list[float]:
        """P(ids[j] at position j) under ``arm`` for the same request: float per shown position."""
        loaded = self._serving(arm)
        name = arm.get("policy") or self.settings.policy
        if loaded is served:
            cands, index = found.idx, np.asarray(served.model.items_.index(ids), dtype=np.int64)
        else:
            with loaded.lock.read():
                cands = self._candidates(loaded, **request).idx
                known = [i for i in ids if i in loaded.model.items_]
                lookup = dict(zip(known, loaded.model.items_.index(known))) if known else {}
                index = np.asarray([lookup.get(i, -1) for i in ids], dtype=np.int64)
        k = min(len(ids), len(cands))
        policy, lock = self._policy(loaded, name)
        with lock:
            marginals = policy.marginals(cands, k)  # (c, k)
        match = cands[:, None] == index[None, :]  # (c, shown): where each shown item is among the candidates
        position = np.arange(len(index))
        probs = marginals[match.argmax(axis=0), np.minimum(position, k - 1)]
        return np.where(match.any(axis=0) & (position < k), probs, 0.0).tolist()

    def _serving(self, arm: dict | None) -> _Loaded:
        """The loaded model an arm serves: its model version (loaded once, kept while needed), else the current."""
        version = None if arm is None else arm.get("model_version")
        current = self.loaded
        if version is None or version == current.version:
            return current
        loaded = self._versions.get(version)
        if loaded is None:
            with self._versions_lock:
                loaded = self._versions.get(version)
                if loaded is None:
                    registry = self.registry
                    if registry is None:
                        raise ServiceError(409, "an experiment arm names a model version, but no registry is "
                                                "served", value=version, expected="llm4rec serve --model REGISTRY")
                    _, model = registry.load(version)
                    loaded = self._versions[version] = self._prepare(version, model)
        return loaded

    def refresh_experiment(self) -> None:
        """Read the running experiment from the store (every worker serves the same one)."""
        running = [x for x in self.store.experiments() if x["active"]]
        self.experiment = running[0] if running else None
        needed = {a["model_version"] for a in (self.experiment or {"arms": []})["arms"]}
        for version in [v for v in self._versions if v not in needed]:
            self._versions.pop(version, None)

    def _by_version(self, version: str) -> _Loaded | None:
        loaded = self._loaded
        if loaded is not None and loaded.version == version:
            return loaded
        return self._versions.get(version)

    def _query_words(self, loaded: _Loaded, query: str, items: np.ndarray) -> list[list[dict[str, Any]]]:
        """Per item of int64[n]: [{"word", "weight"}] in the query's order; weight = the drop of the item's
        cosine with the query when the word is left out (positive: the word drew the item)."""
        from llm4rec.text import text_encoder

        encoder, table = _text_table(loaded.model)  # a query was ranked, so the model has one
        tokens = query.split()
        words = list(dict.fromkeys(tokens))[:MAX_QUERY_WORDS]
        texts = [query] + [" ".join(t for t in tokens if t != w) or "." for w in words]
        e = np.asarray(text_encoder(encoder).encode(texts), dtype=np.float32)  # (1 + w, d)
        sims = e @ table[np.asarray(items, dtype=np.int64)].T  # (1 + w, n)
        drop = sims[0][None, :] - sims[1:]  # (w, n)
        return [[{"word": w, "weight": float(drop[i, j])} for i, w in enumerate(words)] for j in range(len(items))]

    def _logged(self, rec_id: str, future: Future) -> None:
        self._pending.pop(rec_id, None)
        if future.exception() is not None:
            if self.metrics is not None:
                self.metrics.log_failures.inc()
            log.error("a served slate could not be logged: %s", future.exception())

    def _explain(self, model: Recommender, h: Histories, item: str) -> dict[str, Any]:
        history = model.items_.token(h.items)
        try:
            out = model.explain(history=history, item=item)
        except InputError as exc:
            raise ServiceError(422, str(exc.problem), expected=exc.expected) from None
        return {key: _plain(value) for key, value in out.items()}

    def _select(self, loaded: _Loaded, name: str, candidates: np.ndarray, k: int) -> Any:
        policy, lock = self._policy(loaded, name)
        with lock:
            return policy.select(None, candidates, k)

    def _policy(self, loaded: _Loaded, name: str) -> tuple[Any, threading.Lock]:
        from llm4rec.strategies.policy import create_policy

        with loaded.lock.read():
            n_actions = loaded.n_items
        policy = loaded.policies.get(name)
        if policy is None or policy.n_actions != n_actions:
            lock = loaded.policy_locks.setdefault(name, threading.Lock())
            with lock:
                policy = loaded.policies.get(name)
                if policy is None or policy.n_actions != n_actions:
                    grown = create_policy(name, n_actions, seed=self.settings.seed,
                                          **self.settings.policies[name])
                    if policy is not None:  # the catalogue grew: keep what was learned about the old items
                        grown._set_state(_padded(policy._state(), policy.n_actions, n_actions))
                        grown.rng = policy.rng
                    loaded.policies[name] = policy = grown
        return policy, loaded.policy_locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------- similar
    def similar(self, item: str, k: int | None = None) -> dict[str, Any]:
        """The k nearest items by embedding (cosine), or by the model's score of a one-item history."""
        from llm4rec.ranking import topk

        cfg = self.settings
        k = cfg.default_k if k is None else k
        if not 1 <= k <= cfg.max_k:
            raise ServiceError(422, "k out of range", value=k, expected=f"1..{cfg.max_k}")
        loaded = self.loaded
        with loaded.lock.read():
            model = loaded.model
            index = item_index(model, item)
            table = _text_table(model)
            vectors = table[1] if table is not None else None if loaded.view is None else loaded.view.items
            if vectors is not None:
                unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                scores = (unit @ unit[index])[None, :].astype(np.float32)
            else:
                scores = np.array(model.score_histories(model.histories(histories=[[item]])), dtype=np.float32)
            scores[0, index] = -np.inf
            top = topk(scores, k)[0]
            top = top[top >= 0]
            out = [{"item": model.items_.token(int(i)), "label": str(model.item_labels_[i]),
                    "score": float(scores[0, i])} for i in top]
        return {"item": item, "model_version": loaded.version, "items": out}

    # ------------------------------------------------------------ feedback
    def feedback(self, events: list[dict[str, Any]]) -> tuple[int, int]:
        """Store events durably (idempotent by event id), then let the slates' policies learn; (new, duplicates)."""
        new, dup = self.store.add_events(events)
        self.learn(events)
        return new, dup

    def learn(self, events: list[dict[str, Any]]) -> None:
        """After ``events`` are stored: count them and let the policies of the slates they name learn (each
        slate once, from the first batch that names it)."""
        if self.metrics is not None:
            self.metrics.events_ingested(events)
        from llm4rec.serving.store import REWARDING
        from llm4rec.strategies.policy import Feedback

        rewards: dict[str, set[int]] = {}
        for e in events:
            rid = e.get("recommendation_id")
            if rid:
                positions = rewards.setdefault(rid, set())
                if e["type"] in REWARDING and e.get("position") is not None:
                    positions.add(int(e["position"]))
        for rid, clicked in rewards.items():
            with self._learned_lock:
                if rid in self._learned:
                    continue
                self._learned[rid] = None
                while len(self._learned) > LEARNED_MEMORY:
                    self._learned.popitem(last=False)
            pending = self._pending.get(rid)
            if pending is not None:  # served here a moment ago: its log may still be on its way
                with contextlib.suppress(Exception):
                    pending.result(30.0)
            rec = self.store.recommendation(rid)
            loaded = None if rec is None else self._by_version(rec["model_version"])
            if loaded is None or rec["policy"] not in self.settings.policies:
                continue
            actions = np.asarray(rec["actions"], dtype=np.int64)
            reward = np.asarray([1.0 if j in clicked else 0.0 for j in range(len(actions))])
            policy, lock = self._policy(loaded, rec["policy"])
            with lock:
                policy.update(Feedback(None, actions, reward))

    # ------------------------------------------------------- items, users
    def put_item(self, item: str, fields: dict[str, str]) -> dict[str, Any]:
        """Add or update an item with its text; recommendable at once (``add_items``), kept in the store."""
        loaded = self.loaded
        created = item not in loaded.model.items_
        self._apply_items(loaded, [(0, item, fields)], strict=True)
        self.store.upsert_item(item, fields)
        for other in list(self._versions.values()):  # an experiment's other model versions
            self._apply_items(other, [(0, item, fields)], strict=False)
        return {"item": item, "created": created, "model_version": loaded.version, "n_items": loaded.n_items}

    def sync_items(self) -> None:
        """Apply items other workers added since this one last looked."""
        for loaded in [self._loaded, *list(self._versions.values())]:
            if loaded is not None:
                rows = self.store.items_since(loaded.items_seq)
                if rows:
                    self._apply_items(loaded, rows, strict=False)

    def _apply_items(self, loaded: _Loaded, rows: list[tuple[int, str, dict]], *, strict: bool) -> None:
        import polars as pl

        from llm4rec.models.base import TEXT_MODELS

        if not rows:
            return
        model = loaded.model
        if model.name not in TEXT_MODELS:
            if strict:
                raise ServiceError(422, f"model {model.name!r} knows items only through their interactions, so "
                                        "it cannot take new items without retraining",
                                   expected="a model that reads item text: " + ", ".join(TEXT_MODELS))
            return
        columns = sorted({c for _, _, f in rows for c in f})
        table = pl.DataFrame({"item_id": [i for _, i, _ in rows],
                              **{c: [f.get(c, "") for _, _, f in rows] for c in columns}})
        with loaded.lock.write():
            before = model.n_items_
            try:
                model.add_items(table)
            except InputError as exc:
                if strict:
                    raise ServiceError(422, exc.problem, expected=exc.expected, column=exc.column) from None
                log.warning("stored items not applied to model %s: %s", loaded.version, exc)
                return
            finally:
                loaded.items_seq = max([loaded.items_seq] + [s for s, _, _ in rows])
            if loaded.view is not None or loaded.retriever is not None:
                from llm4rec.models.vectors import vector_view

                loaded.view = vector_view(model)
                if loaded.retriever is not None:
                    index = np.asarray(model.items_.index([i for _, i, _ in rows]), dtype=np.int64)
                    loaded.retriever.add(loaded.view.items[index], index)
            loaded.popular = np.concatenate([loaded.popular, np.arange(before, model.n_items_, dtype=np.int64)])
        if self.metrics is not None:
            self.metrics.model_loaded(loaded.version, loaded.n_items, loaded.ann_recall)

    def forget_user(self, user: str, actor: str) -> dict[str, int]:
        """Delete the user's events and logged slates; from now on their fit history is not used either.

        Slates still on their way to the store are waited for first (and the store drops any slate of a
        forgotten user that reaches it later, e.g. from another worker)."""
        self.flush()
        return self.store.forget_user(user, actor)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every slate this process served so far is in the store."""
        for future in list(self._pending.values()):
            with contextlib.suppress(Exception):  # a failed log was reported when it failed
                future.result(timeout)


def item_index(model: Recommender, item: str) -> int:
    """The model's dense index of an item id; ServiceError 404 for an id it does not know."""
    if item not in model.items_:
        raise ServiceError(404, "unknown item", value=item, expected="one of the model's items")
    return int(model.items_.index([item])[0])


def _fuse(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of two rankings of item indices: (int64[c] fused order, float32[c] fused scores)."""
    scores: dict[int, float] = {}
    for ranking in (a, b):
        for r, item in enumerate(ranking.tolist()):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + r + 1)
    order = sorted(scores, key=lambda i: (-scores[i], i))[:n]
    return np.asarray(order, dtype=np.int64), np.asarray([scores[i] for i in order], dtype=np.float32)


def _text_table(model: Recommender) -> tuple[str, np.ndarray] | None:
    """(encoder name, float32[n_items, d] unit item text embeddings) of a model that keeps them, else None."""
    emb = getattr(model, "item_embeddings_", None)
    encoder = getattr(model.config, "encoder", None)
    if emb is None or not isinstance(encoder, str):
        return None
    return encoder, np.asarray(emb, dtype=np.float32)


def _padded(state: dict[str, np.ndarray], old: int, new: int) -> dict[str, np.ndarray]:
    """A policy's arrays with their per-action first axis grown from ``old`` to ``new`` (zeros)."""
    out = {}
    for key, value in state.items():
        value = np.asarray(value)
        if value.ndim and value.shape[0] == old:
            value = np.concatenate([value, np.zeros((new - old,) + value.shape[1:], value.dtype)])
        out[key] = value
    return out


def _plain(value: Any) -> Any:
    """JSON-ready values of an explanation."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
