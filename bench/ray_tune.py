"""Tuning on Ray (issue #15): ``tune`` single-process vs ``tune_ray`` on a local cluster of W workers x 1 CPU.

The same search both ways: a grid of 8 ``l2`` values of EASE (default) on
``../shared/data/DATASET`` (default ml-100k), protocol P-LOO, seed 2026, each
into a fresh study directory, then the one test-stage fit of the best. The
dataset is loaded once, before the clocks. The Ray cluster
(:class:`~llm4rec.distributed.cluster.LocalCluster`: a head without CPUs and W
worker nodes of 1 CPU each, separate processes) is started before its clock
too (its start-up is reported apart); ``tune_ray`` runs with concurrency W and
actor reuse (the default), then once more without reuse (a fresh worker
process per trial). ``seconds`` is the wall time of the whole call (trials and
the test fit); ``trial_seconds`` sums each trial's ask-to-tell time. The
trials' valid values are checked equal between the runs.

    flock /tmp/llm4rec-bench.lock python bench/ray_tune.py [--dataset ml-100k] [--model ease] [--workers 2]
        [--ratings-file ratings_first10_per_user.dat]

Writes (merges into) bench/results/ray_tune.json under ``MODEL-DATASET``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ray_tune.json"
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPACES = {"ease": ["l2=[25,50,100,200,400,800,1600,3200]"],
          "itemknn": ["neighbors=[10,20,40,80,160,320,640,1280]"]}


def summary(result, seconds: float) -> dict:
    return {"seconds": round(seconds, 1), "trials": len(result.trials),
            "trial_seconds": round(sum(r["seconds"] for r in result.trials), 1),
            "best_params": result.best_params, "best_valid": round(result.best_value, 6),
            "test_ndcg10": round(result.test.record["metrics"]["NDCG@10"], 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--model", choices=sorted(SPACES), default="ease")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ratings-file", default=None, help="e.g. ratings_first10_per_user.dat for the ml-1m subset")
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    from llm4rec.data.sources import load_dataset
    from llm4rec.distributed.cluster import LocalCluster
    from llm4rec.distributed.tune import tune_ray
    from llm4rec.experiments.tune import tune

    data = load_dataset(DATA / args.dataset, **({"ratings_file": args.ratings_file} if args.ratings_file else {}))
    space = SPACES[args.model]
    runs: dict[str, dict] = {}
    values: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        single = tune(data, args.model, space=space, study_dir=Path(work) / "single")
        runs["single_process"] = summary(single, time.perf_counter() - t0)
        values["single_process"] = {json.dumps(r["params"]): r["value"] for r in single.trials}
        print("single process", runs["single_process"], flush=True)

        t0 = time.perf_counter()
        cluster = LocalCluster(workers=args.workers, cpus_per_worker=1).start()
        cluster_start = time.perf_counter() - t0
        try:
            for name, reuse in (("ray", True), ("ray_no_actor_reuse", False)):
                t0 = time.perf_counter()
                result = tune_ray(data, args.model, space=space, study_dir=Path(work) / name,
                                  concurrency=args.workers, reuse_actors=reuse)
                runs[name] = summary(result, time.perf_counter() - t0)
                values[name] = {json.dumps(r["params"]): r["value"] for r in result.trials}
                print(name, runs[name], flush=True)
        finally:
            cluster.stop()
    same = all(v == values["single_process"] for v in values.values())
    base = runs["single_process"]["seconds"]
    record = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
                                                      f"Python {sys.version.split()[0]}",
        "dataset": args.dataset, "model": args.model, "space": space, "protocol": "loo", "seed": 2026,
        "workers": args.workers, "cpus_per_worker": 1, "cluster_start_seconds": round(cluster_start, 1),
        "runs": runs, "speedup": {k: round(base / v["seconds"], 2) for k, v in runs.items()},
        "same_trial_values": same,
        "command": f"flock /tmp/llm4rec-bench.lock python bench/ray_tune.py --dataset {args.dataset} "
                   f"--model {args.model} --workers {args.workers}"
                   + (f" --ratings-file {args.ratings_file}" if args.ratings_file else ""),
    }
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    previous[f"{args.model}-{args.dataset}"] = record
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(previous, indent=2) + "\n")
    tmp.replace(OUT)
    print(json.dumps(record, indent=2))
    if not same:
        raise SystemExit("the trials' valid values differ between the runs")


if __name__ == "__main__":
    main()
