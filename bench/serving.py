"""Benchmarks of the recommendation service (issue #11): load, feedback, and the naive alternative.

``load``: for each catalogue size (10k and 1M items by default) an ALS model
with 64 factors on a synthetic clustered log, its item vectors replaced by a
synthetic catalogue (Gaussian clusters, see ``build_registry``) and its user
vectors folded in from the users' histories, published into a registry and served by ``llm4rec serve`` (one worker, SQLite store); the
load generator (bench/_loadgen.py) runs in its own process on the same 2
cores. Per size: the largest throughput (closed loop, 16 connections) and,
open loop at ``--rate`` requests/s, p50/p99 of ``GET
/v1/users/{id}/recommendations?k=10`` for random known users; the ANN
recall@10 the service reports on ``/metrics``. Then the same load against
the simplest alternative a user would write (bench/_naive.py: FastAPI,
exact numpy scoring of every item, no store, no auth), so the gain is a
ratio.

``sweep``: llm4rec alone, open loop at several rates, to find the largest one
whose p99 stays under 20 ms.

``feedback``: ``POST /v1/feedback`` into SQLite and into PostgreSQL (a
throw-away server from tests/serving/pg.py unless ``--postgres URL``), with
durability on (SQLite WAL with synchronous=FULL; PostgreSQL fsync on),
batches of 1 and of 100 events, closed loop with 32 connections:
acknowledged events per second.

    python bench/serving.py load [--sizes 10000,1000000] [--rate 300] [--duration 20] [--repeats 3]
    python bench/serving.py sweep [--sizes 1000000] [--rates 150,200,250]
    python bench/serving.py feedback [--postgres URL]

Writes (merges into) bench/results/serving.json. Needs ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "serving.json"
sys.path.insert(0, str(ROOT))  # tests.serving.pg: the throw-away PostgreSQL server

FACTORS = 64
USERS = 20_000
CLUSTERS = 1_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_log(n_items: int, seed: int = 0):
    """A clustered implicit log (it gives every user a history and every item interactions): users and items in CLUSTERS groups; each item is taken by 2 users of its group
    and each user also takes 5 random items of its group (so every item has interactions)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    items = np.arange(n_items)
    per_cluster = USERS // CLUSTERS
    takers = (items % CLUSTERS)[:, None] + CLUSTERS * rng.integers(0, per_cluster, size=(n_items, 2))
    users = np.arange(USERS)
    extra_items = (users % CLUSTERS)[:, None] + CLUSTERS * rng.integers(0, max(n_items // CLUSTERS, 1), (USERS, 5))
    u = np.concatenate([takers.ravel(), np.repeat(users, 5)])
    i = np.concatenate([np.repeat(items, 2), np.minimum(extra_items.ravel(), n_items - 1)])
    return pl.DataFrame({"user_id": u.astype(np.int64), "item_id": i.astype(np.int64)})


def build_registry(n_items: int, work: Path) -> tuple[Path, float]:
    """An ALS model of ``n_items`` published in a registry under ``work``: (registry, fit seconds)."""
    from llm4rec.data.dataset import Dataset
    from llm4rec.models import create_model
    from llm4rec.serving.registry import ModelRegistry

    registry = work / f"registry-{n_items}"
    if ModelRegistry(registry).current() is not None:
        return registry, float("nan")
    data = Dataset.from_frame(synthetic_log(n_items), name=f"synthetic-{n_items}")
    t0 = time.perf_counter()
    model = create_model("als", {"factors": FACTORS, "iterations": 1}).fit(data)
    fit = time.perf_counter() - t0
    # The catalogue's vectors: Gaussian clusters whose spread equals the spread of their centres (as in
    # serving/index.py). ALS fitted on a log this sparse (2-7 interactions an item) gives the items of a
    # cluster nearly equal vectors, so their top-10 is a tie that no index could reproduce.
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(CLUSTERS, FACTORS))
    items = np.asarray(model.item_ids, dtype=np.int64)
    vectors = centres[items % CLUSTERS] + rng.normal(size=(len(items), FACTORS))
    model.item_factors_ = np.ascontiguousarray(vectors / np.sqrt(FACTORS), dtype=np.float32)
    model.user_factors_ = model._fold_in(model.fit_histories(np.arange(model.n_users_)).matrix())
    bundle = model.save(work / f"als-{n_items}")
    ModelRegistry(registry).publish(bundle)
    return registry, fit


class Process:
    """A server child process on a free loopback port, stopped on exit."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.log = log
        self.env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Process:
        import httpx

        self.proc = subprocess.Popen(self.args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        raise RuntimeError("server not ready in 15 minutes")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen(port: int, key: str, requests: list, work: Path, **options: float | int | None) -> dict:
    """bench/_loadgen.py in its own process; its JSON summary."""
    path = work / f"requests-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(requests))
    args = [sys.executable, str(ROOT / "bench" / "_loadgen.py"), "--port", str(port), "--key", key,
            "--requests", str(path)]
    for name, value in options.items():
        if value is not None:
            args += [f"--{name}", str(value)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    path.unlink()
    return json.loads(done.stdout)


def admin_key(store_url: str) -> str:
    from llm4rec.serving.auth import hash_key, new_key
    from llm4rec.serving.store import EventStore

    key = new_key()
    with EventStore(store_url) as store:
        store.add_key("k_bench_" + uuid.uuid4().hex[:6], "bench", hash_key(key), ["admin"], None)
    return key


def measure(port: int, key: str, requests: list, work: Path, rate: float, duration: float,
            repeats: int) -> dict:
    """Closed-loop peak, then ``repeats`` open-loop runs at ``rate`` (a shared VM's tail latency varies
    between runs: all are kept, the median p99 is reported)."""
    loadgen(port, key, requests, work, duration=3, connections=8)  # warm-up
    peak = loadgen(port, key, requests, work, duration=duration, connections=16)
    paced = [loadgen(port, key, requests, work, rate=rate, duration=duration, connections=64)
             for _ in range(repeats)]
    return {"closed_loop": peak, "open_loop": paced,
            "open_loop_median_p50_ms": float(np.median([r["p50_ms"] for r in paced])),
            "open_loop_median_p99_ms": float(np.median([r["p99_ms"] for r in paced])),
            "open_loop_failed": sum(r["failed"] for r in paced)}


def bench_load(args: argparse.Namespace) -> dict:
    import httpx

    from llm4rec.serving.registry import ModelRegistry

    previous = json.loads(OUT.read_text()).get("load", {}).get("load", {}) if OUT.exists() else {}
    out = dict(previous)  # sizes not run now keep their numbers
    work = Path(args.work or tempfile.mkdtemp(prefix="llm4rec-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    for n_items in [int(x) for x in args.sizes.split(",")]:
        print(f"== {n_items} items", flush=True)
        registry, fit_seconds = build_registry(n_items, work)
        _, model = ModelRegistry(registry).load()
        rng = np.random.default_rng(1)
        users = rng.choice(model.user_ids, size=5000)
        requests = [["GET", f"/v1/users/{u}/recommendations?k=10", None] for u in users]
        store = f"sqlite:///{work}/events-{n_items}-{uuid.uuid4().hex[:6]}.db"
        key = admin_key(store)
        row: dict = {**previous.get(str(n_items), {}), "items": n_items, "users": int(model.n_users_),
                     "factors": FACTORS}
        if not np.isnan(fit_seconds):
            row["fit_seconds"] = round(fit_seconds, 1)
        t0 = time.perf_counter()
        serve = [sys.executable, "-m", "llm4rec", "serve", "--model", str(registry), "--store", store,
                 "--port", "{port}", "--workers", "1", "--log-level", "warning"]
        with Process(serve, work / "serve.log") as server:
            row["start_seconds"] = round(time.perf_counter() - t0, 1)
            metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
            row["ann_recall_at_10"] = float(next(line.split()[-1] for line in metrics.splitlines()
                                                 if line.startswith("llm4rec_ann_recall_at_10")))
            row["llm4rec"] = measure(server.port, key, requests, work, args.rate, args.duration, args.repeats)
            print(json.dumps(row["llm4rec"]), flush=True)
        del model
        if args.skip_naive:  # keep the previous run's numbers of the naive server
            out[str(n_items)] = row
            continue
        naive = [sys.executable, str(ROOT / "bench" / "_naive.py"), "--model", str(registry), "--port", "{port}"]
        with Process(naive, work / "naive.log") as server:
            row["naive"] = measure(server.port, key, requests, work, args.rate, args.duration, args.repeats)
            print(json.dumps(row["naive"]), flush=True)
        out[str(n_items)] = row
    for row in out.values():
        row["throughput_ratio"] = round(row["llm4rec"]["closed_loop"]["throughput"]
                                        / row["naive"]["closed_loop"]["throughput"], 2)
    return {"load": out, "rate": args.rate, "duration": args.duration}


def bench_sweep(args: argparse.Namespace) -> dict:
    """llm4rec alone, open loop at each of ``--rates``: where p99 stays under 20 ms."""
    from llm4rec.serving.registry import ModelRegistry

    work = Path(args.work or tempfile.mkdtemp(prefix="llm4rec-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for n_items in [int(x) for x in args.sizes.split(",")]:
        registry, _ = build_registry(n_items, work)
        _, model = ModelRegistry(registry).load()
        users = np.random.default_rng(1).choice(model.user_ids, size=5000)
        del model
        requests = [["GET", f"/v1/users/{u}/recommendations?k=10", None] for u in users]
        store = f"sqlite:///{work}/events-{n_items}-{uuid.uuid4().hex[:6]}.db"
        key = admin_key(store)
        serve = [sys.executable, "-m", "llm4rec", "serve", "--model", str(registry), "--store", store,
                 "--port", "{port}", "--workers", "1", "--log-level", "warning"]
        with Process(serve, work / "serve.log") as server:
            loadgen(server.port, key, requests, work, duration=3, connections=8)  # warm-up
            out[str(n_items)] = {}
            for rate in [float(x) for x in args.rates.split(",")]:
                r = loadgen(server.port, key, requests, work, rate=rate, duration=args.duration, connections=64)
                out[str(n_items)][str(rate)] = r
                print(n_items, rate, json.dumps(r), flush=True)
    return {"sweep": out, "duration": args.duration}


def feedback_requests(batch: int, n_requests: int, user_ids: np.ndarray, item_ids: np.ndarray) -> list:
    rng = np.random.default_rng(batch)
    reqs = []
    for r in range(n_requests):
        u, i = rng.choice(user_ids, batch), rng.choice(item_ids, batch)
        reqs.append(["POST", "/v1/feedback", {"events": [
            {"event_id": f"b{batch}-{r}-{j}", "type": "click", "user": str(u[j]), "item": str(i[j]),
             "timestamp": 1.7e9 + r} for j in range(batch)]}])
    return reqs


def bench_feedback(args: argparse.Namespace) -> dict:
    from llm4rec.serving.registry import ModelRegistry
    from tests.serving import pg

    work = Path(args.work or tempfile.mkdtemp(prefix="llm4rec-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    registry, _ = build_registry(10_000, work)
    _, model = ModelRegistry(registry).load()
    out = {}
    with contextlib.ExitStack() as stack:
        base = args.postgres or stack.enter_context(pg.temporary_server())
        for backend in ("sqlite", "postgresql"):
            for batch, n_requests in ((1, 40_000), (100, 3_000)):
                if backend == "sqlite":
                    store = f"sqlite:///{work}/feedback-{uuid.uuid4().hex[:6]}.db"
                else:
                    store = pg.create_database(base, "bench_" + uuid.uuid4().hex[:8])
                key = admin_key(store)
                serve = [sys.executable, "-m", "llm4rec", "serve", "--model", str(registry), "--store", store,
                         "--port", "{port}", "--workers", "1", "--log-level", "warning"]
                requests = feedback_requests(batch, n_requests, model.user_ids, model.item_ids)
                with Process(serve, work / "serve.log") as server:
                    r = loadgen(server.port, key, requests, work, duration=args.duration, connections=32)
                r["events_per_second"] = round(r["ok"] * batch / r["seconds"], 1)
                if r["ok"] >= n_requests:
                    r["note"] = "the request list wrapped: later events were duplicates"
                out[f"{backend}/batch{batch}"] = r
                print(backend, batch, json.dumps(r), flush=True)
    return {"feedback": out, "duration": args.duration}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    load = sub.add_parser("load")
    load.add_argument("--sizes", default="10000,1000000")
    load.add_argument("--rate", type=float, default=300.0)
    load.add_argument("--duration", type=float, default=20.0)
    load.add_argument("--skip-naive", action="store_true", help="Keep the naive server's earlier numbers.")
    load.add_argument("--repeats", type=int, default=3, help="Open-loop runs per server.")
    load.add_argument("--work", default=None, help="Keep models here (reused by later runs).")
    sweep = sub.add_parser("sweep")
    sweep.add_argument("--sizes", default="1000000")
    sweep.add_argument("--rates", default="150,200,250")
    sweep.add_argument("--duration", type=float, default=20.0)
    sweep.add_argument("--work", default=None)
    fb = sub.add_parser("feedback")
    fb.add_argument("--postgres", default=None, help="A server URL; default: a throw-away server")
    fb.add_argument("--duration", type=float, default=10.0)
    fb.add_argument("--work", default=None)
    args = ap.parse_args()
    result = {"load": bench_load, "sweep": bench_sweep, "feedback": bench_feedback}[args.what](args)
    result["machine"] = f"{os.cpu_count()} cores"
    result["date"] = time.strftime("%Y-%m-%d")
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    previous[args.what] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(previous, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
