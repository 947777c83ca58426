"""The routes behind the web app: browsing (read key), the operator's dashboard (admin key), the pages.

``add_web_routes(app, ...)`` adds to the app of :func:`llm4rec.serving.app.create_app`:

- ``/v1/me``, ``/v1/users``, ``/v1/users/{user}/history``, ``/v1/items``,
  ``/v1/items/{item}`` (read scope): what the recommendation page shows;
- ``/v1/admin/...`` (admin scope): live traffic, online CTR and conversion,
  experiments and their readouts, an item's audience, the model registry
  (publish, activate, roll back) and offline report files;
- ``/`` (the recommendation page), ``/dashboard`` and ``/static/...``: the
  web app's files, shipped in the package (:mod:`llm4rec.serving.web`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Path as PathParam, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from llm4rec.errors import InputError
from llm4rec.serving import browse
from llm4rec.serving.schemas import (
    Audience,
    Experiment,
    ExperimentCreate,
    ExperimentList,
    ItemDetail,
    ItemList,
    LiveStats,
    Me,
    ModelList,
    OnlineStats,
    Published,
    PublishRequest,
    Readout,
    Report,
    ReportList,
    UserHistory,
    UserList,
)
from llm4rec.serving.service import ServiceError

if TYPE_CHECKING:
    from llm4rec.serving.service import RecommendationService

__all__ = ["WEB_DIR", "add_web_routes"]

WEB_DIR = Path(__file__).parent / "web"
ID_PATH = {"min_length": 1, "max_length": 128}


def add_web_routes(app: FastAPI, service: RecommendationService, need: Any, compute: Any, errors: dict) -> None:
    """Add the web app's routes (see the module docstring); ``need(scope)`` is the key check dependency,
    ``compute(fn, ...)`` runs ``fn`` on the service's compute threads."""
    settings = service.settings

    # ---------------------------------------------------------------- browsing
    @app.get("/v1/me", response_model=Me, responses=errors, tags=["browse"])
    async def me(key: dict = need("read")) -> dict:
        """The calling key: its id, name and scopes (the page shows admin tools only to admin keys)."""
        return {"key_id": key["key_id"], "name": key["name"], "scopes": list(key["scopes"])}

    @app.get("/v1/users", response_model=UserList, responses=errors, tags=["browse"])
    async def users(prefix: str = Query("", max_length=128), limit: int = Query(20, ge=1, le=200),
                    key: dict = need("read")) -> dict:
        """User ids starting with ``prefix``."""
        return {"users": await compute(browse.find_users, service, prefix, limit)}

    @app.get("/v1/users/{user_id}/history", response_model=UserHistory, responses=errors, tags=["browse"])
    async def history(user_id: str = PathParam(..., **ID_PATH), key: dict = need("read")) -> dict:
        """The user's live history with titles, oldest first, and the items they dismissed."""
        return await compute(browse.user_history, service, user_id)

    @app.get("/v1/items", response_model=ItemList, responses=errors, tags=["browse"])
    async def items(q: str = Query("", max_length=200, description="An id prefix or words of the title."),
                    limit: int = Query(20, ge=1, le=200), key: dict = need("read")) -> dict:
        """Items whose id starts with ``q`` or whose title contains it."""
        return {"items": await compute(browse.find_items, service, q, limit)}

    @app.get("/v1/items/{item_id}", response_model=ItemDetail, responses=errors, tags=["browse"])
    async def item(item_id: str = PathParam(..., **ID_PATH), key: dict = need("read")) -> dict:
        """An item: its title, text fields, and who interacted with it."""
        return await compute(browse.item_detail, service, item_id)

    # ---------------------------------------------------------------- live and online
    @app.get("/v1/admin/live", response_model=LiveStats, responses=errors, tags=["dashboard"])
    async def live(minutes: float = Query(60, gt=0, le=60), key: dict = need("admin")) -> dict:
        """This worker's traffic over the last ``minutes`` in 10-second buckets."""
        loaded = service.loaded
        return {**service.metrics.timeline.series(minutes), "model_version": loaded.version,
                "n_items": loaded.n_items}

    @app.get("/v1/admin/online", response_model=OnlineStats, responses=errors, tags=["dashboard"])
    async def online(bucket: int = Query(300, ge=10, le=86_400), since: float | None = Query(None, ge=0),
                     key: dict = need("admin")) -> dict:
        """CTR and conversion per time bucket, model version, policy and arm (all workers, from the store)."""
        from llm4rec.serving.experiments import online_series

        start = time.time() - 3600 if since is None else since
        return online_series(await compute(service.store.online_counts, start, bucket), bucket)

    # ---------------------------------------------------------------- experiments
    def create_experiment(body: ExperimentCreate, actor: str) -> dict:
        from llm4rec.serving.experiments import check_arms

        registry = service.registry
        try:
            arms = check_arms([a.model_dump() for a in body.arms], list(settings.policies),
                              None if registry is None else registry.versions())
            for arm in arms:  # load the arms' model versions now: a bad one is refused before any user sees it
                service._serving(arm)
        except InputError as exc:
            raise ServiceError(422, str(exc.problem), value=exc.value, expected=exc.expected) from None
        created = service.store.add_experiment(body.name, arms)
        service.store.audit("start_experiment", actor, {"name": body.name, "arms": arms})
        service.refresh_experiment()
        return created

    @app.post("/v1/admin/experiments", response_model=Experiment, status_code=201, responses=errors,
              tags=["dashboard"])
    async def start_experiment(body: ExperimentCreate, key: dict = need("admin")) -> dict:
        """Start splitting users between arms by a hash of their id (one experiment at a time)."""
        return await compute(create_experiment, body, key["key_id"])

    @app.get("/v1/admin/experiments", response_model=ExperimentList, responses=errors, tags=["dashboard"])
    async def list_experiments(key: dict = need("admin")) -> dict:
        """Every experiment, newest first."""
        return {"experiments": await compute(service.store.experiments)}

    def experiment_readout(name: str) -> dict:
        from llm4rec.serving.experiments import readout

        found = service.store.experiment(name)
        if found is None:
            raise ServiceError(404, "no such experiment", value=name, expected="a name from GET /v1/admin/experiments")
        return readout(found, service.store.experiment_impressions(name))

    @app.get("/v1/admin/experiments/{name}", response_model=Readout, responses=errors, tags=["dashboard"])
    async def read_experiment(name: str = PathParam(..., **ID_PATH), key: dict = need("admin")) -> dict:
        """Each arm's online CTR with its interval, a significance test, and off-policy estimates of each arm
        on the others' traffic."""
        return await compute(experiment_readout, name)

    def stop(name: str, actor: str) -> dict:
        found = service.store.stop_experiment(name)
        if found is None:
            raise ServiceError(404, "no such experiment", value=name, expected="a name from GET /v1/admin/experiments")
        service.store.audit("stop_experiment", actor, {"name": name})
        service.refresh_experiment()
        return found

    @app.post("/v1/admin/experiments/{name}/stop", response_model=Experiment, responses=errors, tags=["dashboard"])
    async def stop_experiment(name: str = PathParam(..., **ID_PATH), key: dict = need("admin")) -> dict:
        """Stop an experiment: everyone gets the default policy and the current model again."""
        return await compute(stop, name, key["key_id"])

    # ---------------------------------------------------------------- catalogue
    @app.get("/v1/admin/items/{item_id}/audience", response_model=Audience, responses=errors, tags=["dashboard"])
    async def item_audience(item_id: str = PathParam(..., **ID_PATH), k: int = Query(10, ge=1, le=100),
                            limit: int = Query(20, ge=1, le=200), key: dict = need("admin")) -> dict:
        """The users whose top-k (from their training history) now holds the item, best rank first."""
        return await compute(browse.audience, service, item_id, k, limit, settings.audience_users)

    # ---------------------------------------------------------------- models
    @app.get("/v1/admin/models", response_model=ModelList, responses=errors, tags=["dashboard"])
    async def models(key: dict = need("admin")) -> dict:
        """The registry's versions, newest first, with provenance and offline metrics."""
        return await compute(browse.model_versions, service)

    def change(action: str, actor: str, bundle: str | None = None, version: str | None = None) -> dict:
        registry = service.registry
        if registry is None:
            raise ServiceError(409, "one bundle is served, not a registry", value=str(settings.model),
                               expected="llm4rec serve --model REGISTRY (see llm4rec publish)")
        try:
            if action == "publish":
                version = registry.publish(bundle)
            elif action == "activate":
                registry.activate(version)
            else:
                version = registry.rollback()
        except InputError as exc:
            status = 404 if action == "activate" and "no such model version" in exc.problem else 422
            raise ServiceError(status, exc.problem, path=exc.path, value=exc.value, expected=exc.expected,
                               hint=exc.hint) from None
        service.store.audit(action, actor, {"version": version} | ({"bundle": bundle} if bundle else {}))
        service.check_reload()
        return {"version": version, "current": registry.history().get("version")}

    @app.post("/v1/admin/models", response_model=Published, status_code=201, responses=errors, tags=["dashboard"])
    async def publish(body: PublishRequest, key: dict = need("admin")) -> dict:
        """Publish a bundle directory on the server as the next version and serve it (it is checked first:
        a corrupt bundle is refused with the reason, and the running version keeps serving)."""
        return await compute(change, "publish", key["key_id"], bundle=body.bundle)

    @app.post("/v1/admin/models/{version}/activate", response_model=Published, responses=errors,
              tags=["dashboard"])
    async def activate(version: str = PathParam(..., **ID_PATH), key: dict = need("admin")) -> dict:
        """Serve an existing version."""
        return await compute(change, "activate", key["key_id"], version=version)

    @app.post("/v1/admin/models/rollback", response_model=Published, responses=errors, tags=["dashboard"])
    async def rollback(key: dict = need("admin")) -> dict:
        """Serve the previous version again."""
        return await compute(change, "rollback", key["key_id"])

    # ---------------------------------------------------------------- reports
    def reports_dir() -> Path:
        if settings.reports is None:
            raise ServiceError(404, "no reports directory", expected="llm4rec serve --reports DIR")
        return settings.reports

    @app.get("/v1/admin/reports", response_model=ReportList, responses=errors, tags=["dashboard"])
    async def reports(key: dict = need("admin")) -> dict:
        """The JSON result files (evaluate --json, simulate, ope) in the reports directory."""
        from llm4rec.serving.reports import list_reports

        if settings.reports is None:
            return {"reports": []}
        return {"reports": await compute(list_reports, settings.reports)}

    @app.get("/v1/admin/reports/{name}", response_model=Report, responses=errors, tags=["dashboard"])
    async def report(name: str = PathParam(..., min_length=1, max_length=255), key: dict = need("admin")) -> dict:
        """One result file, with its kind."""
        from llm4rec.serving.reports import read_report

        return await compute(read_report, reports_dir(), name)

    # ---------------------------------------------------------------- pages
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(WEB_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})
