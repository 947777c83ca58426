"""Every endpoint fuzzed from the app's own OpenAPI schema (schemathesis): never a 5xx, every 4xx explained."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

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
    with TestClient(app) as client:  # runs the lifespan: the model is loaded once for every case
        yield app, key, client


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(fuzzed, mode):
    """Valid and deliberately invalid requests for every operation: a 4xx with a message, never a 5xx."""
    app, key, client = fuzzed
    schema = schemathesis.openapi.from_dict(app.openapi())  # not from_asgi: that would run the lifespan again
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /v1/users/{user_id}/recommendations",
                                               "POST /v1/recommendations", "POST /v1/feedback"}
    statuses: dict[str, set[int]] = {}
    for op in operations:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            request = case.as_transport_kwargs(base_url="http://testserver",
                                               headers={"Authorization": f"Bearer {key}"})
            if not request.get("cookies"):
                request.pop("cookies", None)
            if isinstance(request.get("data"), bytes):  # raw bodies: httpx calls them content
                request["content"] = request.pop("data")
            response = client.request(**request)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:500])
            if response.status_code >= 400:
                assert response.json()["error"]["message"], response.text

        try:
            check()
        except Unsatisfiable:  # nothing to break: no parameter and no body (e.g. GET /healthz)
            assert mode is GenerationMode.NEGATIVE and not op.path_parameters and not op.body, op.label
    called = {op.label for op in operations if op.path_parameters or op.body or op.query}
    assert called <= set(statuses)  # every operation that takes input was called
    if mode is GenerationMode.NEGATIVE:  # broken input was really sent, and refused
        assert all(max(statuses[label]) >= 400 for label in called), statuses
