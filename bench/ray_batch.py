"""Batch inference on Ray (issue #15): ``llm4rec recommend --all`` single-process vs ``--ray`` on a local cluster.

A model (EASE or ALS, default settings but ``--factors``/``--iterations`` for ALS) is fitted on the whole of
``../shared/data/DATASET`` (default amazon-beauty: 22,363 users, 12,101 items) and saved. Then the same
command scores every user, k=10, twice, each time in a child process (as a user runs it):

- single process: ``llm4rec recommend --all``;
- Ray: ``llm4rec recommend --all --ray ADDRESS --workers W`` against a
  :class:`~llm4rec.distributed.cluster.LocalCluster` of W worker nodes x 1 CPU (started here, before the
  clock; the child is the driver).

Peak resident memory: the child's own VmHWM (bench/_peak.py), and for Ray the
highest VmHWM of each scoring actor process (``ray::MapWorker``), sampled every
0.1 s while it runs (VmHWM is a high-water mark, so a late sample still sees the
peak). The raylet, GCS and object-store processes are not counted. ``seconds``
is the child's wall time (interpreter start, Ray connection and actor start-up
included); ``cli_users_per_second`` is what the command itself reports. Both
outputs are compared byte for byte.

    flock /tmp/llm4rec-bench.lock python bench/ray_batch.py [--model ease|als] [--dataset amazon-beauty]
        [--workers 2] [--block 1024]

Writes (merges into) bench/results/ray_batch.json under ``MODEL-DATASET``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ray_batch.json"
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def fit(model: str, dataset: str, factors: int, iterations: int, work: Path) -> tuple[Path, float, int, int]:
    """(bundle path, fit seconds, users, items) of ``model`` fitted on the whole dataset."""
    from llm4rec.data.sources import load_dataset
    from llm4rec.models import create_model

    data = load_dataset(DATA / dataset)
    t0 = time.perf_counter()
    config = {"factors": factors, "iterations": iterations} if model == "als" else {}
    fitted = create_model(model, config).fit(data)
    seconds = time.perf_counter() - t0
    return fitted.save(work / model), seconds, data.n_users, data.n_items


def run(args: list[str]) -> dict:
    """Run ``llm4rec ARGS`` through bench/_peak.py: wall seconds, peak RSS (MiB), the command's last line."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "_peak.py"), *args], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-3000:])
    lines = done.stdout.strip().splitlines()
    wrote = next(line for line in reversed(lines) if line.startswith("wrote "))
    rate = float(re.search(r"\(([\d,]+) users/s\)", wrote).group(1).replace(",", ""))
    return {"seconds": round(seconds, 1), "cli_users_per_second": rate,
            "driver_peak_rss_mib": round(float(lines[-1].split("=")[1])), "stdout": wrote}


class WorkerPeaks:
    """Samples the VmHWM of every ``ray::MapWorker`` process (the scoring actors) until stopped."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if "MapWorker" not in " ".join(proc.info["cmdline"] or []):
                        continue
                    status = Path(f"/proc/{proc.info['pid']}/status").read_text()
                except (OSError, psutil.Error):
                    continue
                found = re.search(r"VmHWM:\s+(\d+) kB", status)
                if found:
                    mib = int(found.group(1)) / 1024
                    self.peaks[proc.info["pid"]] = max(mib, self.peaks.get(proc.info["pid"], 0.0))
            time.sleep(0.1)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["ease", "als"], default="ease")
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--factors", type=int, default=64, help="ALS only")
    ap.add_argument("--iterations", type=int, default=15, help="ALS only")
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    from llm4rec.distributed.cluster import LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle, fit_s, n_users, n_items = fit(args.model, args.dataset, args.factors, args.iterations, work)
        common = ["recommend", "--model", str(bundle), "--all", "--k", str(args.k), "--block", str(args.block)]
        single = run([*common, "--out", str(work / "single.parquet")])
        t0 = time.perf_counter()
        with LocalCluster(workers=args.workers, cpus_per_worker=1) as cluster:
            start_s = time.perf_counter() - t0
            with WorkerPeaks() as peaks:
                ray = run([*common, "--out", str(work / "ray.parquet"), "--ray", cluster.address,
                           "--workers", str(args.workers)])
        identical = (work / "single.parquet").read_bytes() == (work / "ray.parquet").read_bytes()
    for result in (single, ray):
        result["users_per_second"] = round(n_users / result["seconds"])
    ray["worker_peak_rss_mib"] = sorted(round(v) for v in peaks.peaks.values())
    ray["cluster_start_seconds"] = round(start_s, 1)
    model = f"ALS, {args.factors} factors, {args.iterations} iterations" if args.model == "als" else \
        "EASE (l2=200)"
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model": model, "dataset": args.dataset, "users": n_users, "items": n_items, "k": args.k,
              "block": args.block, "fit_seconds": round(fit_s, 1), "single_process": single,
              "ray": {"cluster": f"LocalCluster: head (0 CPUs) + {args.workers} worker nodes x 1 CPU", **ray},
              "identical_output": identical,
              "command": f"flock /tmp/llm4rec-bench.lock python bench/ray_batch.py --model {args.model} "
                         f"--dataset {args.dataset} --workers {args.workers} --block {args.block}"}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[f"{args.model}-{args.dataset}"] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
