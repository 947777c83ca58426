"""The HTTP app: ``create_app(settings)`` (FastAPI), run by uvicorn; no module-level state.

Every ``/v1`` route needs an API key (``Authorization: Bearer KEY`` or
``X-API-Key: KEY``) with its scope: ``read`` to recommend, ``write`` to send
feedback, ``admin`` to change items and forget users. Keys are stored
hashed, rate-limited per key (429 with Retry-After), and checked against the
store at most every ``key_cache_seconds``. ``/healthz``, ``/readyz`` and
``/metrics`` answer without a key (``metrics_key=True`` puts ``/metrics``
behind a read key). Access logs name the route template, never a raw path,
so no user or item id reaches a log line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm4rec.errors import InputError
from llm4rec.serving.schemas import (
    ErrorBody,
    FeedbackAck,
    FeedbackBatch,
    Health,
    ItemBody,
    ItemPut,
    RecommendationRequest,
    Recommendations,
    Similar,
    UserForgotten,
)
from llm4rec.serving.service import RecommendationService, ServiceError
from llm4rec.serving.settings import ServiceSettings

__all__ = ["app_from_environment", "create_app"]

access_log = logging.getLogger("llm4rec.serving.access")
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 429)}
ID_PATH = {"min_length": 1, "max_length": 128}


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, expected: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.expected, self.headers = status, message, expected, headers or {}


def _error(status: int, message: str, expected: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if expected:
        body["expected"] = expected
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class _Keys:
    """API-key checks: hash, look up (cached briefly), scope, rate."""

    def __init__(self, service: RecommendationService) -> None:
        from llm4rec.serving.auth import RateLimiter

        self.service = service
        self.limiter = RateLimiter()
        self._cache: dict[str, tuple[dict | None, float]] = {}
        self._lock = threading.Lock()

    async def check(self, request: Request, scope: str) -> dict:
        import anyio

        from llm4rec.serving.auth import allows, hash_key

        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise _ApiError(401, "missing API key", expected="an 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                                                             "header (llm4rec keys create)",
                            headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or cached[1] < now:
            record = await anyio.to_thread.run_sync(self.service.store.find_key, digest)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (record, now + self.service.settings.key_cache_seconds)
        else:
            record = cached[0]
        if record is None:
            raise _ApiError(401, "unknown or revoked API key", expected="a key from llm4rec keys create",
                            headers={"WWW-Authenticate": "Bearer"})
        if not allows(record["scopes"], scope):
            raise _ApiError(403, f"this key lacks the {scope!r} scope", expected=f"a key with scope {scope}")
        wait = self.limiter.take(record["key_id"], record.get("rate_per_minute"))
        if wait is not None:
            raise _ApiError(429, "rate limit exceeded", expected=f"at most {record['rate_per_minute']} requests "
                                                                 "per minute for this key",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return record


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "request body too large", f"at most {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, "request body too large", f"at most {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


class _Observe:
    """ASGI middleware: request count and latency per route template, and a privacy-safe access log."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or \
                ("/static" if scope["path"].startswith("/static/") else "(unmatched)")
            seconds = time.perf_counter() - start
            self.metrics.observe(route, scope["method"], status[0], seconds)
            access_log.info("%s %s %d %.1fms", scope["method"], route, status[0], seconds * 1000)


def create_app(settings: ServiceSettings, *, service: RecommendationService | None = None) -> FastAPI:
    """The service's FastAPI app. The model is loaded when the app starts (lifespan)."""
    from llm4rec.serving.metrics import ServiceMetrics

    service = service or RecommendationService(settings)
    metrics = ServiceMetrics(ctr=lambda: service.store.policy_ctr())
    service.metrics = metrics
    keys = _Keys(service)
    limiter: list[Any] = []  # the compute threads' CapacityLimiter, made in the event loop on first use

    async def compute(fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on one of ``settings.compute_threads`` threads (the GIL makes more slower).

        A plain slate (no query to encode, no explanation) takes about a millisecond: it runs in the event
        loop instead, since a hop to a thread and back costs more than it and doubles the tail latency
        (bench/serving.py).
        """
        import anyio

        if not limiter:
            limiter.append(anyio.CapacityLimiter(settings.compute_threads))
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=limiter[0])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio

        await anyio.to_thread.run_sync(service.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.stop)

    app = FastAPI(title="llm4rec", version="1", lifespan=lifespan,
                  description="Recommendations from a trained llm4rec model, feedback that counts at once, "
                              "items added live. Every /v1 route needs an API key.")
    app.state.service = service
    app.state.metrics = metrics
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_Observe, metrics=metrics)

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.expected, exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return _error(getattr(exc, "status", 400), str(exc), None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return _error(400, "malformed JSON body", "a JSON object as in the OpenAPI schema (/docs)")
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid')}" + (f" (and {len(errors) - 1} more)"
                                                                        if len(errors) > 1 else ""),
                      "a request as in the OpenAPI schema (/docs)")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("llm4rec.serving").exception("unexpected error on %s", request.scope.get("route"))
        return _error(500, f"internal error ({type(exc).__name__})", None)

    def need(scope: str):
        async def dependency(request: Request) -> dict:
            return await keys.check(request, scope)
        return Depends(dependency)

    max_k = settings.max_k
    k_query = Query(None, ge=1, le=max_k, description=f"List length, 1..{max_k} (default {settings.default_k}).")

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, responses=ERRORS,
             tags=["recommendations"])
    async def user_recommendations(user_id: str = Path(..., **ID_PATH), k: int | None = k_query,
                             policy: str | None = Query(None, max_length=64, description="A served policy."),
                             explain: bool = Query(False, description="Add why each item was chosen."),
                             key: dict = need("read")) -> dict:
        """Top-k items for a user, from their live history (fit history plus feedback since); unknown users
        get the non-personalised ranking."""
        if explain:
            out, _ = await compute(service.slate, user=user_id, k=k, policy=policy, explain=True)
        else:  # fast: in the loop (see compute)
            out, _ = service.slate(user=user_id, k=k, policy=policy)
        return out  # its log is committed with the next group (RecommendationService.slate)

    @app.post("/v1/recommendations", response_model=Recommendations, responses=ERRORS, tags=["recommendations"])
    async def body_recommendations(body: RecommendationRequest, key: dict = need("read")) -> dict:
        """Top-k items for a history and/or a free-text query (and optionally a user whose live history it
        extends)."""
        if body.k is not None and body.k > max_k:
            raise ServiceError(422, "k out of range", value=body.k, expected=f"1..{max_k}")
        if len(body.history) > settings.max_history:
            raise ServiceError(422, "history too long", value=len(body.history),
                               expected=f"at most {settings.max_history} items")
        if body.query is not None and len(body.query) > settings.max_query_chars:
            raise ServiceError(422, "query too long", value=len(body.query),
                               expected=f"at most {settings.max_query_chars} characters")
        request = {"user": body.user, "history": body.history, "query": body.query, "k": body.k,
                   "policy": body.policy, "explain": body.explain, "exclude_seen": body.exclude_seen}
        if body.query is not None or body.explain:
            out, _ = await compute(service.slate, **request)
        else:  # fast: in the loop (see compute)
            out, _ = service.slate(**request)
        return out

    @app.get("/v1/items/{item_id}/similar", response_model=Similar, responses=ERRORS, tags=["items"])
    async def similar(item_id: str = Path(..., **ID_PATH), k: int | None = k_query, key: dict = need("read")) -> dict:
        """The nearest items by embedding."""
        return await compute(service.similar, item_id, k)

    @app.post("/v1/feedback", response_model=FeedbackAck, responses=ERRORS, tags=["feedback"])
    async def feedback(body: FeedbackBatch, key: dict = need("write")) -> dict:
        """Store a batch of events; acknowledged only once durable; a retried event id is stored once."""
        if len(body.events) > settings.max_events:
            raise ServiceError(413, "too many events in one batch", value=len(body.events),
                               expected=f"at most {settings.max_events}")
        events = [{"event_id": e.event_id, "type": e.type, "user_id": e.user, "item_id": e.item,
                   "timestamp": e.timestamp, "recommendation_id": e.recommendation_id, "position": e.position,
                   "value": e.value} for e in body.events]
        stored = await compute(service.store.add_events, events, wait=False)  # checked; queued for commit
        new, dup = await asyncio.wrap_future(stored)  # acknowledged only once durable
        await compute(service.learn, events)
        return {"accepted": new, "duplicates": dup}

    @app.put("/v1/items/{item_id}", response_model=ItemBody, responses=ERRORS, tags=["admin"])
    async def put_item(body: ItemPut, item_id: str = Path(..., **ID_PATH), key: dict = need("admin")) -> dict:
        """Add or update an item with its text: recommendable at once (text models only)."""
        return await compute(service.put_item, item_id, body.fields)

    @app.delete("/v1/users/{user_id}", response_model=UserForgotten, responses=ERRORS, tags=["admin"])
    async def forget_user(user_id: str = Path(..., **ID_PATH), key: dict = need("admin")) -> dict:
        """Forget a user: their events and logged slates are deleted, their fit history no longer used; the
        audit record holds no personal data."""
        return await compute(service.forget_user, user_id, actor=key["key_id"])

    from llm4rec.serving.admin import add_web_routes

    add_web_routes(app, service, need, compute, ERRORS)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}}, tags=["operations"])
    def readyz() -> Any:
        """A model is loaded and the store answers."""
        if not service.ready:
            return _error(503, "no model loaded yet")
        loaded = service.loaded
        service.store.count_events()
        return {"status": "ready", "model_version": loaded.version, "n_items": loaded.n_items}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """Prometheus text format."""
        import anyio

        if settings.metrics_key:
            await keys.check(request, "read")
        body, content_type = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=content_type)

    return app


def app_from_environment() -> FastAPI:
    """The app for uvicorn's worker processes (``--workers N``): settings from the environment."""
    return create_app(ServiceSettings.from_environment())
