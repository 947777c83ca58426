"""The recommendation route on Ray Serve (2 replicas) against the single-process service, on loopback (issue #15).

The model is bench/serving.py's: ALS with 64 factors over a synthetic clustered
catalogue of ``--items`` items (10,000 by default) and 20,000 users, published
in a registry; the event store is one throw-away PostgreSQL server
(tests/serving/pg.py) shared by every target, so each request reads the user's
live history from PostgreSQL as in production. Targets, one after the other:

- ``single``: ``llm4rec serve`` (uvicorn, one worker process), as users run it;
- ``workers2``: ``llm4rec serve --workers 2`` (for scale: two processes, no Ray);
- ``ray2``: the same app on Ray Serve with 2 replicas (``llm4rec.distributed.serve``)
  on a local cluster of a head node (no CPUs; Serve's controller and HTTP proxy)
  and 2 worker nodes of 1 CPU each (one replica each).

Load: ``GET /v1/users/{id}/recommendations?k=10`` for random known users, a
fixed number of requests (``--requests``) at a fixed concurrency
(``--concurrency`` keep-alive connections, closed loop), after a warm-up; a
client in its own process (raw HTTP/1.1 on asyncio, as bench/_loadgen.py).
Reported per target and repeat: requests/s, p50/p95/p99/max latency (ms),
failed requests; the median over repeats.

    flock /tmp/llm4rec-bench.lock .venv/bin/python bench/ray_serve.py [--items 10000] [--requests 3000]
        [--concurrency 16] [--repeats 3] [--only single,ray2] [--out FILE]

Writes (merges into) bench/results/ray_serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ray_serve.json"
sys.path.insert(0, str(ROOT))  # tests.serving.pg: the throw-away PostgreSQL server
sys.path.insert(0, str(ROOT / "bench"))  # serving.py, _loadgen.py

TARGETS = ("single", "workers2", "ray2")


# ---------------------------------------------------------------- the client (its own process)
async def _fixed_load(port: int, raw: list[bytes], n: int, concurrency: int) -> dict:
    from _loadgen import _answer

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0
    next_index = 0

    async def client() -> None:
        nonlocal failed, next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < n:
                i, next_index = next_index, next_index + 1
                t0 = time.perf_counter()
                try:
                    writer.write(raw[i % len(raw)])
                    status = await _answer(reader)
                except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                    failed += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    failed += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return {"requests": n, "concurrency": concurrency, "failed": failed,
            "statuses": {str(s): c for s, c in sorted(statuses.items())}, "seconds": round(seconds, 2),
            "requests_per_s": round(len(latencies) / seconds, 1),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
            "max_ms": round(float(ms.max()), 2)}


def _client_main(argv: list[str]) -> None:
    from _loadgen import _request

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--paths", required=True, help="JSON list of GET paths")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    args = ap.parse_args(argv)
    raw = [_request("GET", p, None, args.key) for p in json.loads(Path(args.paths).read_text())]
    print(json.dumps(asyncio.run(_fixed_load(args.port, raw, args.n, args.concurrency))))


def client(port: int, key: str, paths_file: Path, n: int, concurrency: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "_client", "--port", str(port), "--key", key, "--paths",
                           str(paths_file), "--n", str(n), "--concurrency", str(concurrency)],
                          check=True, capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    return json.loads(done.stdout)


# ---------------------------------------------------------------- the targets
def measure(port: int, key: str, paths_file: Path, args: argparse.Namespace) -> dict:
    client(port, key, paths_file, min(500, args.requests), args.concurrency)  # warm-up
    runs = [client(port, key, paths_file, args.requests, args.concurrency) for _ in range(args.repeats)]
    summary = {k: float(np.median([r[k] for r in runs])) for k in ("requests_per_s", "p50_ms", "p95_ms",
                                                                  "p99_ms")}
    return {"median": summary, "failed": sum(r["failed"] for r in runs), "runs": runs}


def bench_uvicorn(registry: Path, store: str, key: str, paths_file: Path, work: Path, workers: int,
                  args: argparse.Namespace) -> dict:
    from serving import Process

    command = [sys.executable, "-m", "llm4rec", "serve", "--model", str(registry), "--store", store,
               "--port", "{port}", "--workers", str(workers), "--log-level", "warning"]
    with Process(command, work / f"uvicorn-{workers}.log") as server:
        return measure(server.port, key, paths_file, args)


def bench_ray(registry: Path, store: str, key: str, paths_file: Path, args: argparse.Namespace) -> dict:
    from serving import free_port

    from llm4rec.distributed import serve as ray_serve
    from llm4rec.distributed.cluster import LocalCluster
    from llm4rec.serving import ServiceSettings

    settings = ServiceSettings.make(model=registry, store=store)
    options = ray_serve.ServeOptions.make(replicas=2, port=free_port())
    with LocalCluster(workers=2, cpus_per_worker=1):
        t0 = time.perf_counter()
        ray_serve.deploy(settings, options)
        started = time.perf_counter() - t0
        try:
            out = measure(options.port, key, paths_file, args)
        finally:
            ray_serve.shutdown()
    return {**out, "deploy_seconds": round(started, 1)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        _client_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    only = [t for t in args.only.split(",") if t]
    unknown = set(only) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; expected some of {', '.join(TARGETS)}")

    from serving import admin_key, build_registry

    from llm4rec.serving.registry import ModelRegistry
    from tests.serving import pg

    work = args.work or Path(tempfile.mkdtemp(prefix="llm4rec-bench-ray-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    registry, _ = build_registry(args.items, work)
    registry = registry.resolve()
    _, model = ModelRegistry(registry).load()
    users = np.random.default_rng(1).choice(model.user_ids, size=5000)
    paths_file = work / "paths.json"
    paths_file.write_text(json.dumps([f"/v1/users/{u}/recommendations?k=10" for u in users]))

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    targets = dict(results.get("targets", {}))
    with pg.temporary_server() as base:
        for target in only:
            name = f"llm4rec_bench_{uuid.uuid4().hex[:8]}"
            store = pg.create_database(base, name)
            key = admin_key(store)
            print(f"== {target}", flush=True)
            if target == "ray2":
                targets[target] = bench_ray(registry, store, key, paths_file, args)
            else:
                targets[target] = bench_uvicorn(registry, store, key, paths_file, work,
                                                1 if target == "single" else 2, args)
            targets[target]["load_average"] = round(os.getloadavg()[0], 2)
            print(json.dumps({target: targets[target]["median"], "failed": targets[target]["failed"]}), flush=True)
            pg.drop_database(base, name)
    import ray

    results.update({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(), "ray": ray.__version__,
        "command": "flock /tmp/llm4rec-bench.lock .venv/bin/python bench/ray_serve.py " + " ".join(sys.argv[1:]),
        "model": f"als, 64 factors, {args.items} items, {int(model.n_users_)} users (bench/serving.py's)",
        "store": "PostgreSQL (throw-away server on loopback, fsync on), one database per target",
        "route": "GET /v1/users/{id}/recommendations?k=10, random known users",
        "load": {"requests": args.requests, "concurrency": args.concurrency, "repeats": args.repeats,
                 "kind": "closed loop, keep-alive connections, client in its own process"},
        "targets": targets})
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
