"""Fixtures of the service tests: a PostgreSQL server for the session, a fresh event store URL per test.

``postgres_server`` is the server named by ``LLM4REC_TEST_POSTGRES_URL`` if
set; otherwise a throw-away one started from the PostgreSQL binaries
(:mod:`tests.serving.pg`). Without the binaries the tests that need it fail
(they are not skipped).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import _models, pg
from tests.serving._models import add_key

POSTGRES_URL_VARIABLE = "LLM4REC_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session: its base URL, ``postgresql://postgres@127.0.0.1:PORT/``."""
    given = os.environ.get(POSTGRES_URL_VARIABLE)
    if given:
        yield given
        return
    try:
        server = pg.temporary_server()
        url = server.__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty event store, once per backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    base = request.getfixturevalue("postgres_server")
    name = f"llm4rec_test_{uuid.uuid4().hex[:16]}"
    try:
        yield pg.create_database(base, name)
    finally:
        pg.drop_database(base, name)


@pytest.fixture
def store(store_url: str) -> Iterator:
    """An :class:`~llm4rec.serving.store.EventStore` on ``store_url`` with a fixed secret, closed afterwards."""
    from llm4rec.serving.store import EventStore

    s = EventStore(store_url, secret=b"test-secret")
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            s.close()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Saved semantic-knn and ALS bundles fitted on the small synthetic data."""
    root = tmp_path_factory.mktemp("bundles")
    return {name: _models.bundle(root, name) for name in ("semantic-knn", "als")}


@pytest.fixture
def serve(bundles, store_url, tmp_path):
    """serve(model name, **settings) -> (TestClient with an admin key, the settings); closed after the test."""
    from fastapi.testclient import TestClient

    from llm4rec.serving import ServiceSettings, create_app

    clients = []

    def start(name: str = "semantic-knn", scopes=("admin",), **overrides):
        reg = _models.registry(bundles[name], tmp_path / f"registry-{len(clients)}")
        settings = ServiceSettings.make(model=reg, store=store_url, reload_interval=0.2, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        client.headers["Authorization"] = "Bearer " + add_key(store_url, list(scopes))
        clients.append(client)
        return client, settings

    yield start
    for c in clients:
        c.__exit__(None, None, None)
