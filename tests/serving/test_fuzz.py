"""Every endpoint fuzzed from the app's own OpenAPI schema (schemathesis): never a 5xx, every 4xx explained."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from llm4rec.serving import EventStore, ServiceSettings, create_app
from llm4rec.serving.auth import hash_key, new_key
from tests.serving import _models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    registry = _models.registry(_models.bundle(root, "semantic-knn"), root / "registry")
    store_url = f"sqlite:///{root}/events.db"
    key = new_key()
    store = EventStore(store_url)
    store.add_key("k_fuzz", "fuzz", hash_key(key), ["admin"], None)
    store.close()
    app = create_app(ServiceSettings.make(model=registry, store=store_url, max_body_bytes=64 * 1024))
    with TestClient(app):  # runs the lifespan: the model is loaded once for every case
        yield app, key


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    app, _ = fuzzed
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzzed):
    _, key = fuzzed
    response = case.call(headers={"Authorization": f"Bearer {key}"})
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.json()["error"]["message"], response.text
