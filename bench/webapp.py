"""Benchmarks of the web app and the API behind it (issue #12).

``api``: in process (FastAPI's TestClient, no network), semantic-knn on
MovieLens 100K (943 users, 1,682 items), SQLite store:

- the latency of ``GET /v1/users/{id}/recommendations`` outside an
  experiment, in a two-policy experiment (greedy vs epsilon-greedy: each
  slate also logs what the other arm would have shown) and in a two-version
  experiment (the other model ranks the request too);
- the dashboard's reads with ``--slates`` logged slates of 10 items in the
  store (half of them in an experiment, 5% of impressions clicked):
  ``/v1/admin/online``, the experiment readout, ``/v1/admin/live``, an
  item's audience over every user, and the page's user history.

``browser``: a real ``llm4rec serve`` process and headless Chromium (Debian's)
driven by Selenium: the recommendation page's load until the list shows,
and the time from a click on "like" until the re-ranked list is on screen.

    python bench/webapp.py api [--slates 100000] [--repeats 50]
    python bench/webapp.py browser [--clicks 20]

Writes (merges into) bench/results/webapp.json. Needs ``pip install -e '.[test]'`` and the shared data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "webapp.json"
sys.path.insert(0, str(ROOT))


def merge(section: str, payload: dict) -> None:
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[section] = payload
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


def machine() -> dict:
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def registry(work: Path) -> Path:
    """semantic-knn fitted on all of ml-100k, published twice (v000001 current, v000002 beside it)."""
    from llm4rec.data.sources import load_dataset
    from llm4rec.models import create_model
    from llm4rec.serving.registry import ModelRegistry

    data = load_dataset(DATA / "ml-100k")
    bundle = create_model("semantic-knn").fit(data).save(work / "bundle")
    reg = ModelRegistry(work / "registry")
    reg.publish(bundle)
    reg.publish(bundle, activate=False)
    return reg.root


def timed(client, method: str, url: str, repeats: int, **kwargs) -> dict:
    """p50/p99 of ``repeats`` calls after one warm-up call (loading an encoder, filling caches)."""
    client.request(method, url, **kwargs)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = client.request(method, url, **kwargs)
        seconds.append(time.perf_counter() - t0)
        assert r.status_code < 300, (url, r.status_code, r.text[:300])
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "n": repeats}


def fill(store, n_slates: int, n_items: int, seed: int = 0) -> None:
    """``n_slates`` logged slates of 10 items over the last hour, half in experiment "logged"; 5% clicked."""
    rng = np.random.default_rng(seed)
    now = time.time()
    rows, clicks = [], []
    for s in range(n_slates):
        rid = uuid.uuid4().hex
        actions = rng.choice(n_items, size=10, replace=False)
        arm = None if s % 2 else ("A" if s % 4 == 0 else "B")
        rows.append({"recommendation_id": rid, "user_id": f"u{s % 5000}", "policy": "epsilon-greedy",
                     "model_version": "v000001", "items": [str(a + 1) for a in actions],
                     "actions": actions.tolist(), "propensities": [0.5] * 10, "timestamp": now - rng.random() * 3500,
                     "experiment": None if arm is None else "logged", "arm": arm,
                     "shadow": None if arm is None else {"B" if arm == "A" else "A": rng.random(10).tolist()}})
        for j in np.flatnonzero(rng.random(10) < 0.05):
            clicks.append({"event_id": uuid.uuid4().hex, "type": "click", "user_id": f"u{s % 5000}",
                           "item_id": str(actions[j] + 1), "timestamp": now, "recommendation_id": rid,
                           "position": int(j), "value": None})
        if len(rows) == 5000:
            store.log_recommendations(rows)
            rows = []
    if rows:
        store.log_recommendations(rows)
    for start in range(0, len(clicks), 5000):
        store.add_events(clicks[start:start + 5000])


def bench_api(args: argparse.Namespace) -> dict:
    from fastapi.testclient import TestClient

    from llm4rec.cli.serve_cmd import _create_key
    from llm4rec.serving import EventStore, ServiceSettings, create_app

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reg = registry(work)
        url = f"sqlite:///{work}/events.db"
        store = EventStore(url)
        key = _create_key(store, "bench", ["admin"], None)
        store.add_experiment("logged", [{"name": "A", "policy": "greedy", "model_version": None, "share": 0.5},
                                        {"name": "B", "policy": "epsilon-greedy", "model_version": None,
                                         "share": 0.5}])
        store.stop_experiment("logged")
        t0 = time.perf_counter()
        fill(store, args.slates, 1682)
        fill_s = time.perf_counter() - t0
        store.close()
        settings = ServiceSettings.make(model=reg, store=url, policies={"greedy": {}, "epsilon-greedy":
                                                                          {"epsilon": 0.1}})
        out: dict = {**machine(), "model": "semantic-knn on ml-100k (943 users, 1,682 items)", "store": "SQLite",
                     "slates_in_store": args.slates, "impressions_in_store": args.slates * 10,
                     "fill_seconds": round(fill_s, 1), "command": f"python bench/webapp.py api --slates {args.slates}"}
        with TestClient(create_app(settings)) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            users = [str(u) for u in range(1, 944)]

            def slates(label: str) -> None:
                seconds = []
                for i in range(args.repeats * 4):
                    t0 = time.perf_counter()
                    r = client.get(f"/v1/users/{users[i % len(users)]}/recommendations", params={"k": 10})
                    seconds.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                ms = np.asarray(seconds[args.repeats:]) * 1000  # the first quarter warms up
                out[label] = {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                              "p99_ms": round(float(np.percentile(ms, 99)), 2), "n": len(ms)}

            slates("slate_no_experiment")
            arms = [{"name": "greedy", "policy": "greedy"}, {"name": "explore", "policy": "epsilon-greedy"}]
            assert client.post("/v1/admin/experiments", json={"name": "policies", "arms": arms}).status_code == 201
            slates("slate_policy_experiment")
            client.post("/v1/admin/experiments/policies/stop")
            arms = [{"name": "v1", "model_version": "v000001"}, {"name": "v2", "model_version": "v000002"}]
            assert client.post("/v1/admin/experiments", json={"name": "versions", "arms": arms}).status_code == 201
            slates("slate_version_experiment")
            client.post("/v1/admin/experiments/versions/stop")
            client.app.state.service.flush()
            n = args.repeats
            out["online_1h"] = timed(client, "GET", "/v1/admin/online", max(3, n // 10), params={"bucket": 300})
            out["readout"] = timed(client, "GET", "/v1/admin/experiments/logged", max(3, n // 10))
            out["live"] = timed(client, "GET", "/v1/admin/live", n)
            out["audience_943_users"] = timed(client, "GET", "/v1/admin/items/50/audience", max(3, n // 10))
            out["history"] = timed(client, "GET", "/v1/users/13/history", n)
            out["item"] = timed(client, "GET", "/v1/items/50", n)
            out["similar"] = timed(client, "GET", "/v1/items/50/similar", n)
            out["query_explained"] = timed(client, "POST", "/v1/recommendations", max(3, n // 5),
                                           json={"user": "13", "query": "a funny space adventure", "k": 10,
                                                 "explain": True})
    merge("api", out)
    return out


#: in the page: click "like" on the first row, resolve with the ms until the list is drawn again (the POST to
#: /v1/feedback, then the new recommendations and history, then the rows updated)
CLICK_TO_LIST = """
const done = arguments[arguments.length - 1];
const list = document.getElementById("recs");
const before = list.getAttribute("data-render");
const t0 = performance.now();
new MutationObserver((changes, observer) => {
  if (list.getAttribute("data-render") !== before && list.getAttribute("aria-busy") === "false") {
    observer.disconnect();
    done(performance.now() - t0);
  }
}).observe(list, {attributes: true});
document.querySelector('[data-testid="rec-item"] [data-testid="rec-like"]').click();
"""
#: in the page: ms from navigation start until the first list is drawn
FIRST_LIST = """
const done = arguments[arguments.length - 1];
const check = () => {
  const list = document.getElementById("recs");
  if (list && Number(list.getAttribute("data-render") || 0) > 0 && list.getAttribute("aria-busy") === "false")
    done(performance.now());
  else setTimeout(check, 5);
};
check();
"""
#: in the dashboard: ms from navigation start until the live tiles show a model version
DASHBOARD_LIVE = """
const done = arguments[arguments.length - 1];
const check = () => {
  const tile = document.getElementById("tile-version");
  if (tile && tile.textContent.startsWith("v")) done(performance.now()); else setTimeout(check, 5);
};
check();
"""


def bench_browser(args: argparse.Namespace) -> dict:
    from tests.serving._server import Server, create_key
    from tests.serving.browser import make_driver

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reg = registry(work)
        store = f"sqlite:///{work}/events.db"
        writer, admin = create_key(store, "read,write"), create_key(store, "admin")
        server = Server(reg, store, work / "server.log").start()
        driver = make_driver(work)
        driver.set_script_timeout(60)
        try:
            loads, clicks, dashboards = [], [], []
            for i in range(args.loads):
                driver.get(f"{server.url}/?key={writer}&user={100 + i}")
                loads.append(driver.execute_async_script(FIRST_LIST))
            driver.get(f"{server.url}/?key={writer}&user=13")
            driver.execute_async_script(FIRST_LIST)
            for _ in range(args.clicks):
                clicks.append(driver.execute_async_script(CLICK_TO_LIST))
            for _ in range(args.loads):
                driver.get(f"{server.url}/dashboard?key={admin}#live")
                dashboards.append(driver.execute_async_script(DASHBOARD_LIVE))
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        finally:
            driver.quit()
            server.stop()

    def summary(ms: list[float]) -> dict:
        return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "max_ms": round(float(np.max(ms)), 1),
                "n": len(ms)}

    out = {**machine(), "browser": "Debian Chromium, headless, Selenium", "server": "llm4rec serve, 1 worker, "
           "SQLite; semantic-knn on ml-100k", "page_load_to_first_list": summary(loads),
           "like_to_reranked_list": summary(clicks), "dashboard_load_to_live_tiles": summary(dashboards),
           "console_errors": len(severe),
           "command": f"python bench/webapp.py browser --clicks {args.clicks} --loads {args.loads}"}
    merge("browser", out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    api = sub.add_parser("api")
    api.add_argument("--slates", type=int, default=100_000)
    api.add_argument("--repeats", type=int, default=50)
    br = sub.add_parser("browser")
    br.add_argument("--clicks", type=int, default=20)
    br.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    result = bench_api(args) if args.what == "api" else bench_browser(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
