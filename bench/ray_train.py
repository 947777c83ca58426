"""Data-parallel training on Ray (issue #15): ``sasrec`` single-process (2 threads) vs ``fit_distributed``
on a local cluster of W workers x 1 CPU.

The same fit both ways: ``sasrec`` with its defaults except ``epochs`` (few,
``patience=0`` so every epoch runs) on ``../shared/data/DATASET`` (default
amazon-beauty), protocol P-LOO, seed 2026, fitted on the test stage's fit set
and evaluated on its targets (full ranking). The dataset is loaded and split
once, before the clocks. The Ray cluster (:class:`~llm4rec.distributed.cluster.LocalCluster`:
a head without CPUs and W worker nodes of 1 CPU each, separate processes) is
started before its clock too (its start-up is reported apart).
``epochs_per_second`` counts the epochs' own time (training and validation,
the ``seconds`` of each history record); ``fit_seconds`` is the whole call,
Ray's worker start-up and checkpoints included.

    flock /tmp/llm4rec-bench.lock python bench/ray_train.py [--dataset amazon-beauty] [--epochs 4] [--workers 2]

Writes (merges into) bench/results/ray_train.json under ``sasrec-DATASET``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ray_train.json"
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def summary(model, stage, seconds: float) -> dict:
    from llm4rec.evaluation.evaluator import evaluate

    history = model.training_history_
    epoch_seconds = sum(r["seconds"] for r in history)
    metrics = evaluate(model, stage).metrics
    return {"fit_seconds": round(seconds, 1), "epochs": len(history), "epoch_seconds": round(epoch_seconds, 1),
            "epochs_per_second": round(len(history) / epoch_seconds, 4),
            "last_valid_ndcg10": round(history[-1]["valid_NDCG@10"], 6),
            "test_ndcg10": round(metrics["NDCG@10"], 6), "test_hr10": round(metrics["HR@10"], 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.distributed.cluster import LocalCluster
    from llm4rec.distributed.train import fit_distributed
    from llm4rec.models import create_model

    data = load_dataset(DATA / args.dataset)
    stage = make_split(data, "loo", seed=2026).stage("test")
    settings = {"epochs": args.epochs, "patience": 0, "seed": 2026}
    runs: dict[str, dict] = {}

    t0 = time.perf_counter()
    single = create_model("sasrec", {**settings, "threads": 2}).fit(stage.fit)
    runs["single_process_2_threads"] = summary(single, stage, time.perf_counter() - t0)
    print("single process", runs["single_process_2_threads"], flush=True)

    t0 = time.perf_counter()
    cluster = LocalCluster(workers=args.workers, cpus_per_worker=1).start()
    cluster_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        model = fit_distributed(create_model("sasrec", settings), stage.fit, workers=args.workers)
        runs[f"ray_{args.workers}_workers_x_1_cpu"] = summary(model, stage, time.perf_counter() - t0)
        print("ray", runs[f"ray_{args.workers}_workers_x_1_cpu"], flush=True)
    finally:
        cluster.stop()
    base = runs["single_process_2_threads"]
    record = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
                                                      f"Python {sys.version.split()[0]}",
        "dataset": args.dataset, "model": "sasrec", "settings": settings, "protocol": "loo", "seed": 2026,
        "n_users": data.n_users, "n_items": data.n_items, "n_interactions": data.n_interactions,
        "workers": args.workers, "cpus_per_worker": 1, "cluster_start_seconds": round(cluster_start, 1),
        "runs": runs,
        "epoch_speedup": {k: round(v["epochs_per_second"] / base["epochs_per_second"], 2) for k, v in runs.items()},
        "command": f"flock /tmp/llm4rec-bench.lock python bench/ray_train.py --dataset {args.dataset} "
                   f"--epochs {args.epochs} --workers {args.workers}",
    }
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    previous[f"sasrec-{args.dataset}"] = record
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(previous, indent=2) + "\n")
    tmp.replace(OUT)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
