"""The service on Ray Serve: two replicas on the session's cluster, one PostgreSQL store, one registry directory.

Loopback only, bounded request counts; Serve is shut down at the end of the module so the shared cluster
stays usable by the other test files.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from llm4rec.errors import InputError
from tests.serving import _models, pg
from tests.serving._models import add_key
from tests.serving._server import free_port
from tests.serving.conftest import postgres_server  # noqa: F401 - the session's PostgreSQL server fixture

USERS = [str(u) for u in range(1, 31)]


@pytest.fixture(scope="module")
def service(ray_cluster, postgres_server, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The app deployed with 2 replicas: an object with url, key, settings, registry, store_url."""
    from llm4rec.distributed import serve as ray_serve
    from llm4rec.serving import ServiceSettings
    from llm4rec.serving.registry import ModelRegistry

    root = tmp_path_factory.mktemp("ray-serve")
    v1 = _models.bundle(root, "semantic-knn")
    v2 = _models.bundle(root, "semantic-knn", n_items=120)
    registry = ModelRegistry(_models.registry(v1, root / "registry"))
    assert registry.publish(v2, activate=False) == "v000002"
    name = f"llm4rec_serve_{uuid.uuid4().hex[:12]}"
    store_url = pg.create_database(postgres_server, name)
    key = add_key(store_url, ["read", "write"])
    settings = ServiceSettings.make(model=registry.root.resolve(), store=store_url, reload_interval=0.5)
    options = ray_serve.ServeOptions.make(replicas=2, port=free_port(), health_check_period_s=1.0,
                                          graceful_shutdown_timeout_s=5.0)

    class Service:
        pass

    s = Service()
    s.settings, s.options, s.registry, s.store_url, s.key = settings, options, registry, store_url, key
    try:
        s.url = ray_serve.deploy(settings, options)
        assert ray_serve.running_replicas() == 2
        yield s
    finally:
        from ray import serve

        try:
            ray_serve.shutdown()
        finally:
            serve.shutdown()
            pg.drop_database(postgres_server, name)


def client(service, **kw) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.key}"}, timeout=30, **kw)


def answer(r: httpx.Response) -> dict:
    """A recommendation answer without its (per-request) id."""
    assert r.status_code == 200, r.text
    return {k: v for k, v in r.json().items() if k != "recommendation_id"}


def test_two_replicas_answer_as_the_single_process_service(service):
    from fastapi.testclient import TestClient

    from llm4rec.distributed.serve import REPLICA_HEADER
    from llm4rec.serving import create_app

    requests = [("GET", f"/v1/users/{u}/recommendations", {"k": 10}, None) for u in USERS]
    requests += [("POST", "/v1/recommendations", None, {"history": [str(i), str(i + 7)], "k": 5})
                 for i in range(1, 11)]
    requests += [("POST", "/v1/recommendations", None, {"user": "3", "history": ["40"], "k": 8,
                                                         "policy": "greedy"})]
    replicas: set[str] = set()
    with client(service) as c:
        served = []
        for method, path, params, body in requests:
            r = c.request(method, path, params=params, json=body)
            replicas.add(r.headers[REPLICA_HEADER])
            served.append(answer(r))
    with TestClient(create_app(service.settings)) as single:
        single.headers["Authorization"] = f"Bearer {service.key}"
        expected = [answer(single.request(m, p, params=q, json=b)) for m, p, q, b in requests]
    assert served == expected
    assert {a["model_version"] for a in served} == {"v000001"}
    assert all(len(a["items"]) == (10 if i < len(USERS) else 5 if i < len(USERS) + 10 else 8)
               for i, a in enumerate(served))
    assert len(replicas) == 2, "both replicas should have answered"


def test_feedback_through_different_replicas_lands_in_the_one_store_and_counts_everywhere(service):
    from llm4rec.distributed.serve import REPLICA_HEADER
    from llm4rec.serving import EventStore

    posted: list[str] = []
    replicas: set[str] = set()
    with client(service) as c:
        for b in range(30):
            events = [{"event_id": f"fb-{b}-{i}", "type": "click", "user": f"fb-user-{b % 5}",
                       "item": str(1 + (7 * b + i) % 100), "timestamp": float(b * 10 + i)} for i in range(4)]
            r = c.post("/v1/feedback", json={"events": events})
            assert r.status_code == 200 and r.json() == {"accepted": 4, "duplicates": 0}, r.text
            replicas.add(r.headers[REPLICA_HEADER])
            posted += [e["event_id"] for e in events]
        assert len(replicas) == 2
        # a click through one replica leaves the item out of the user's next slates from every replica
        top = c.get("/v1/users/17/recommendations", params={"k": 5}).json()["items"][0]["item"]
        r = c.post("/v1/feedback", json={"events": [{"event_id": "fb-top", "type": "click", "user": "17",
                                                     "item": top, "timestamp": 1e9}]})
        assert r.status_code == 200
        seen: set[str] = set()
        for _ in range(40):
            r = c.get("/v1/users/17/recommendations", params={"k": 5})
            assert top not in [i["item"] for i in r.json()["items"]]
            seen.add(r.headers[REPLICA_HEADER])
            if len(seen) == 2:
                break
        assert len(seen) == 2
    store = EventStore(service.store_url)
    try:
        stored = store.events_frame()["event_id"].to_list()
    finally:
        store.close()
    assert sorted(stored) == sorted(posted + ["fb-top"])


def load(service, *, threads: int, per_thread: int, retry: bool, stop: threading.Event | None = None,
         progress: list | None = None, k: int | None = 5) -> tuple[list[dict], list[Exception | int]]:
    """``threads`` clients sending up to ``per_thread`` recommendation requests each (fewer if ``stop`` is set):
    (the answers, the first attempts that failed: a status >= 500 or a transport error); with ``retry`` a failed
    attempt is sent once more, and a second failure is an answer ``{"failed": status or error}``."""
    from llm4rec.distributed.serve import REPLICA_HEADER

    answers: list[dict] = []
    failures: list[Exception | int] = []
    lock = threading.Lock()

    def one(c: httpx.Client, n: int) -> httpx.Response | Exception:
        try:
            return c.get(f"/v1/users/{USERS[n % len(USERS)]}/recommendations",
                         params={} if k is None else {"k": k})
        except httpx.TransportError as exc:
            return exc

    def run(t: int) -> None:
        with client(service) as c:
            for n in range(per_thread):
                if stop is not None and stop.is_set():
                    return
                r = one(c, t * per_thread + n)
                if isinstance(r, Exception) or r.status_code >= 500:
                    with lock:
                        failures.append(r if isinstance(r, Exception) else r.status_code)
                    if retry:
                        r = one(c, t * per_thread + n)
                if isinstance(r, Exception) or r.status_code != 200:
                    out = {"failed": r if isinstance(r, Exception) else r.status_code}
                else:
                    out = {"version": r.json()["model_version"], "replica": r.headers[REPLICA_HEADER],
                           "size": len(r.json()["items"])}
                with lock:
                    answers.append(out)
                    if progress is not None:
                        progress.append(out)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert not any(w.is_alive() for w in workers), "a load thread hung"
    return answers, failures


@pytest.mark.slow
def test_activating_a_new_version_under_load_fails_no_request(service):
    from llm4rec.distributed.serve import REPLICA_HEADER

    stop, progress = threading.Event(), []
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("answers", "failures"), load(
        service, threads=3, per_thread=150, retry=False, stop=stop, progress=progress))))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while len(progress) < 30 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.05)
        service.registry.activate("v000002")
        activated = len(progress)
        while time.monotonic() < deadline and runner.is_alive():  # until every replica answers from v000002
            if len({a.get("replica") for a in progress[activated:] if a.get("version") == "v000002"}) == 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        runner.join()
    answers, failures = result["answers"], result["failures"]
    assert not failures and all("failed" not in a for a in answers), failures[:5]
    versions = [a["version"] for a in answers]
    assert "v000001" in versions and "v000002" in versions
    with client(service) as c:  # afterwards every replica serves the new version
        after = [c.get("/v1/users/5/recommendations", params={"k": 5}) for _ in range(20)]
    assert {r.json()["model_version"] for r in after} == {"v000002"}
    assert len({r.headers[REPLICA_HEADER] for r in after}) == 2


@pytest.mark.slow
def test_redeploying_new_settings_rolls_the_replicas_under_load_without_a_failed_request(service):
    from llm4rec.distributed import serve as ray_serve

    before = ray_serve.replica_actors()
    stop, progress = threading.Event(), []
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("answers", "failures"), load(
        service, threads=3, per_thread=1000, retry=False, stop=stop, progress=progress, k=None))))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while len(progress) < 30 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.05)
        settings = service.settings.model_copy(update={"default_k": 7})
        ray_serve.deploy(settings, service.options)  # returns once the new replicas run
        assert runner.is_alive(), "the load should outlast the rollout"
        time.sleep(1.0)
    finally:
        stop.set()
        runner.join()
    answers, failures = result["answers"], result["failures"]
    assert not failures and all("failed" not in a for a in answers), failures[:5]
    after = ray_serve.replica_actors()
    assert len(after) == 2 and not set(after) & set(before), (before, after)
    sizes = [a["size"] for a in answers]
    assert sizes[0] == 10 and sizes[-1] == 7 and set(sizes) == {10, 7}
    service.settings = settings


@pytest.mark.slow
def test_killing_a_replica_under_load_fails_only_requests_in_flight_and_serve_replaces_it(service):
    import ray

    from llm4rec.distributed import serve as ray_serve

    before = ray_serve.replica_actors()
    assert len(before) == 2
    victim = before[0]
    threads = 4
    progress: list = []
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("answers", "failures"), load(
        service, threads=threads, per_thread=75, retry=True, progress=progress))))
    runner.start()
    deadline = time.monotonic() + 60
    while len(progress) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    killed_at = len(progress)
    runner.join()
    answers, failures = result["answers"], result["failures"]
    assert killed_at < len(answers) == threads * 75, "the kill should land in the middle of the load"
    assert len(failures) <= threads, f"more failures than requests in flight: {failures}"
    assert all("failed" not in a for a in answers), [a for a in answers if "failed" in a]
    # Serve starts a replacement; once it runs, requests reach it
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = ray_serve.replica_actors()
        if ray_serve.running_replicas() == 2 and len(now) == 2 and victim not in now:
            break
        time.sleep(0.5)
    now = ray_serve.replica_actors()
    assert victim not in now and len(now) == 2 and ray_serve.running_replicas() == 2, now
    new = ray_serve.replica_tag(next(a for a in now if a not in before))
    answered, _ = load(service, threads=1, per_thread=40, retry=False)
    assert new in {a.get("replica") for a in answered}
    assert all("failed" not in a for a in answered)


def test_options_map_to_serve_deployment_options_and_bad_ones_are_input_errors():
    from llm4rec.distributed.serve import ServeOptions

    fixed = ServeOptions.make(replicas=3).deployment_options()
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["runtime_env"]["env_vars"]["OPENBLAS_NUM_THREADS"] == "1"
    scaled = ServeOptions.make(replicas=1, max_replicas=4, target_ongoing_requests=3).deployment_options()
    assert "num_replicas" not in scaled
    assert {k: scaled["autoscaling_config"][k] for k in ("min_replicas", "initial_replicas", "max_replicas",
                                                         "target_ongoing_requests")} == {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}
    with pytest.raises(InputError, match="max_replicas"):
        ServeOptions.make(replicas=3, max_replicas=2)
    with pytest.raises(InputError, match="replica"):
        ServeOptions.make(replica=2)
    with pytest.raises(InputError, match="port"):
        ServeOptions.make(port=70000)


def test_cli_refuses_ray_options_that_do_not_fit(tmp_path, capsys):
    from tests.cli._run import run

    bundle = _models.bundle(tmp_path, "als")
    code, _, err = run(capsys, "serve", "--model", str(bundle), "--store", str(tmp_path / "e.db"),
                       "--max-replicas", "3")
    assert code != 0 and "--max-replicas needs --ray" in err
    code, _, err = run(capsys, "serve", "--model", str(bundle), "--store", str(tmp_path / "e.db"),
                       "--ray", "local", "--workers", "2")
    assert code != 0 and "--workers" in err
    code, _, err = run(capsys, "serve", "--model", str(bundle), "--store", str(tmp_path / "e.db"),
                       "--ray", "nowhere")
    assert code != 0 and "nowhere" in err
