"""What the web app shows about users, items and model versions, read from the served model and the store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.serving.service import item_index
from llm4rec.serving.store import DISMISS

if TYPE_CHECKING:
    from llm4rec.serving.service import RecommendationService

__all__ = ["audience", "find_items", "find_users", "item_detail", "model_versions", "user_history"]

#: users scored per block when looking for an item's audience
AUDIENCE_BLOCK = 1024


def _sorted_ids(vocabulary: Any) -> np.ndarray:
    return np.sort(np.asarray(vocabulary.tokens, dtype=str))


def find_users(service: RecommendationService, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` user ids starting with ``prefix``: the model's users and those with feedback, sorted."""
    loaded = service.loaded
    ids = loaded.cache.get("users")
    if ids is None:
        ids = loaded.cache["users"] = _sorted_ids(loaded.model.users_)
    lo = int(np.searchsorted(ids, prefix, side="left"))
    hi = int(np.searchsorted(ids, prefix + "\U0010ffff", side="right"))
    fit = ids[lo:min(hi, lo + limit)].tolist()
    return sorted(set(fit) | set(service.store.user_ids(prefix, limit)))[:limit]


def find_items(service: RecommendationService, query: str, limit: int) -> list[dict[str, str]]:
    """Up to ``limit`` items whose id starts with ``query`` or whose label contains it (any case)."""
    loaded = service.loaded
    with loaded.lock.read():
        model = loaded.model
        stamp = (model.n_items_, loaded.items_seq)  # changes whenever an item is added or its text replaced
        cached = loaded.cache.get("items")
        if cached is None or cached[0] != stamp:
            labels = np.asarray(model.item_labels_, dtype=str)
            cached = loaded.cache["items"] = (stamp, np.asarray(model.items_.tokens, dtype=str), labels,
                                              np.char.lower(labels))
        _, ids, labels, lowered = cached
        q = query.strip().lower()
        hit = np.char.startswith(ids, query) | (np.char.find(lowered, q) >= 0) if q else np.ones(len(ids), bool)
        rows = np.flatnonzero(hit)[:limit]
        return [{"item": str(ids[r]), "label": str(labels[r])} for r in rows]


def user_history(service: RecommendationService, user: str) -> dict[str, Any]:
    """The user's live history with labels (fit history, then feedback), and what they dismissed."""
    loaded = service.loaded
    store = service.store
    with loaded.lock.read():
        model = loaded.model
        known = user in model.users_ and not store.is_forgotten(user)
        items: list[dict[str, Any]] = []
        if known:
            fit = model.fit_histories(np.asarray(model.users_.index([user]), dtype=np.int64)).items
            items = [{"item": i, "label": str(lab), "source": "fit", "type": None, "timestamp": None}
                     for i, lab in zip(model.items_.token(fit), model.item_labels_[fit])]
        rows = store.user_events(user)
        labels = _labels(model, [item for item, _, _ in rows])
        items += [{"item": item, "label": labels[item], "source": "feedback", "type": kind, "timestamp": ts}
                  for item, ts, kind in rows if kind != DISMISS]
        dismissed = list(dict.fromkeys(item for item, _, kind in rows if kind == DISMISS))
    return {"user": user, "known": bool(known), "items": items, "dismissed": dismissed}


def _labels(model: Any, ids: list[str]) -> dict[str, str]:
    known = [i for i in dict.fromkeys(ids) if i in model.items_]
    out = {i: i for i in ids}
    if known:
        out.update(zip(known, (str(x) for x in model.item_labels_[model.items_.index(known)])))
    return out


def item_detail(service: RecommendationService, item: str, users: int = 20) -> dict[str, Any]:
    """The item's label, text fields, interaction count and some users who interacted with it."""
    loaded = service.loaded
    with loaded.lock.read():
        model = loaded.model
        label = str(model.item_labels_[item_index(model, item)])
    fields = service.store.item_fields(item) or {}
    n, who = service.store.item_activity(item, users)
    text = " · ".join(f"{key}: {value}" for key, value in fields.items()) if fields else label
    return {"item": item, "label": label, "fields": fields, "text": text, "n_interactions": n, "users": who,
            "model_version": loaded.version}


def audience(service: RecommendationService, item: str, k: int, limit: int, max_users: int) -> dict[str, Any]:
    """Users (of the model's first ``max_users``) whose top-k, from their fit history, now holds ``item``.

    Rank = its 0-based place in the user's top-k (``recommend_indices``: seen items left out), computed
    block by block over the users (no per-user loop).
    """
    loaded = service.loaded
    with loaded.lock.read():
        model = loaded.model
        col = item_index(model, item)
        n = min(model.n_users_, max_users)
        found_users, found_ranks = [], []
        for start in range(0, n, AUDIENCE_BLOCK):
            users = np.arange(start, min(n, start + AUDIENCE_BLOCK), dtype=np.int64)
            top, _ = model.recommend_indices(users, k)  # (b, k) best first, seen items left out
            hit, rank = np.nonzero(top == col)
            found_users.append(users[hit])
            found_ranks.append(rank)
        rows = np.concatenate(found_users)
        ranks = np.concatenate(found_ranks)
        order = np.lexsort((rows, ranks))[:limit]
        ids = model.users_.token(rows[order]) if len(order) else []
    return {"item": item, "k": k, "users": [{"user": u, "rank": int(r)} for u, r in zip(ids, ranks[order])],
            "scanned": int(n)}


def model_versions(service: RecommendationService) -> dict[str, Any]:
    """The registry's versions with their bundles' provenance and offline metrics (or the one bundle served)."""
    registry = service.registry
    serving = service.loaded.version
    out: dict[str, Any] = {"registry": registry is not None, "serving": serving, "current": None, "versions": [],
                           "reload_failures": service.reload_failures,
                           "last_reload_error": service.last_reload_error}
    if registry is None:
        return out
    history = registry.history()
    out["current"] = history.get("version")
    for version in reversed(registry.versions()):
        manifest = _manifest(registry.path(version))
        provenance = manifest.get("provenance") or {}
        offline = provenance.get("offline_metrics") or {}
        out["versions"].append({
            "version": version, "published": history.get("published", {}).get(version),
            "current": version == out["current"], "serving": version == serving, "model": manifest.get("model"),
            "created": manifest.get("created"), "n_users": manifest.get("n_users"),
            "n_items": manifest.get("n_items"), "provenance": provenance,
            "metrics": offline.get("metrics"), "protocol": offline.get("protocol") or provenance.get("protocol"),
            "stage": offline.get("stage") or provenance.get("stage")})
    return out


def _manifest(path: Any) -> dict[str, Any]:
    """A version's bundle.json as written (the files are checked when the version is loaded, not here)."""
    from llm4rec.models.bundle import MANIFEST

    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"provenance": {"error": f"unreadable bundle.json: {exc}"}}
