"""The service as a real server process: SIGKILL mid-burst, reload under load, a corrupt version refused.

Loopback only, a bounded number of requests, and every server is stopped by the test.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from llm4rec.serving import EventStore
from llm4rec.serving.registry import ModelRegistry
from tests.serving import _models
from tests.serving._models import add_key
from tests.serving._server import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("server-bundles")
    return _models.bundle(root, "semantic-knn"), _models.bundle(root, "semantic-knn", n_items=120)


def test_sigkill_mid_burst_loses_no_acknowledged_event_and_retries_make_no_duplicates(bundle_dirs, store_url,
                                                                                       tmp_path):
    reg = _models.registry(bundle_dirs[0], tmp_path / "registry")
    key = add_key(store_url, ["write"])
    server = Server(reg, store_url, tmp_path / "server.log").start()
    batches = [[{"event_id": f"b{b}-e{i}", "type": "click", "user": f"u{b % 17}", "item": str(1 + (b * 7 + i) % 100),
                 "timestamp": float(b * 100 + i)} for i in range(20)] for b in range(400)]
    acked: set[str] = set()
    lock = threading.Lock()

    def client(which: list[list[dict]]) -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as c:
            for batch in which:
                try:
                    r = c.post("/v1/feedback", json={"events": batch})
                except httpx.TransportError:
                    return  # the server died under us: this batch was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.update(e["event_id"] for e in batch)

    threads = [threading.Thread(target=client, args=(batches[t::4],)) for t in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 1000:
        time.sleep(0.005)
    server.kill(signal.SIGKILL)
    for t in threads:
        t.join()
    assert 1000 <= len(acked) < 8000, "the kill should land in the middle of the burst"

    store = EventStore(store_url)
    stored = set(store.events_frame()["event_id"].to_list())
    store.close()
    assert acked <= stored, f"{len(acked - stored)} acknowledged events lost"

    server.start()  # the same store, a new process; clients retry everything with the same event ids
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as c:
            dup = sum(c.post("/v1/feedback", json={"events": b}).json()["duplicates"] for b in batches)
    finally:
        server.kill(signal.SIGTERM)
    store = EventStore(store_url)
    ids = store.events_frame()["event_id"].to_list()
    store.close()
    assert len(ids) == len(set(ids)) == 8000
    assert dup == len(stored)


def test_reload_under_load_drops_no_request_and_a_corrupt_version_is_refused(bundle_dirs, tmp_path):
    store_url = f"sqlite:///{tmp_path}/events.db"
    reg_dir = _models.registry(bundle_dirs[0], tmp_path / "registry")
    registry = ModelRegistry(reg_dir)
    key = add_key(store_url, ["read"])
    server = Server(reg_dir, store_url, tmp_path / "server.log").start()
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as c:
            n = 0
            while not stop.is_set() and n < 5000:
                r = c.get(f"/v1/users/{1 + n % 50}/recommendations", params={"k": 5})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["model_version"])
                n += 1

    try:
        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        assert registry.publish(bundle_dirs[1]) == "v000002"
        deadline = time.monotonic() + 60
        while "v000002" not in versions[-10:] and time.monotonic() < deadline:
            time.sleep(0.1)
        # a version that went bad on disk after publishing: the service refuses it and keeps serving v000002
        bad = _models.corrupt_copy(bundle_dirs[0], tmp_path / "bad")
        (reg_dir / "versions" / "v000003").mkdir()
        for f in bad.iterdir():
            (reg_dir / "versions" / "v000003" / f.name).write_bytes(f.read_bytes())
        current = (reg_dir / "CURRENT.json").read_text()
        (reg_dir / "CURRENT.json").write_text(current.replace('"v000002"', '"v000003"', 1))
        time.sleep(3.0)
        stop.set()
        for w in workers:
            w.join()
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        stop.set()
        server.kill(signal.SIGTERM)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert "v000001" in versions and versions[-1] == "v000002"
    assert "v000003" not in versions
    assert "llm4rec_reload_failures_total 1.0" in metrics
