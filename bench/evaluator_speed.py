"""Evaluator speed and memory.

1. Full-ranking P-LOO on ML-100K for a fitted EASE (target: under 1 second).
2. Scale: a random factor model over N_USERS x N_ITEMS (default 10,000 users x
   1,000,000 items), evaluated in memory-bounded batches; reports time, users/s
   and peak RSS, and extrapolates to 100k users. The full score matrix
   (10k x 1M float32 = 40 GB) is never held.

    python bench/evaluator_speed.py [--users 10000 --items 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))


class RandomFactors:
    """score = U[u] . V^T: float32 factors, the cheapest real scorer at scale."""

    name = "random-factors"

    def __init__(self, n_users: int, n_items: int, dim: int = 32, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.u = rng.standard_normal((n_users, dim), dtype=np.float32)
        self.v = rng.standard_normal((n_items, dim), dtype=np.float32)

    def score(self, users, items=None):
        v = self.v if items is None else self.v[items]
        return self.u[users] @ v.T


def ml100k_ease() -> dict:
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation import evaluate
    from llm4rec.models import create_model

    stage = make_split(load_dataset(DATA / "ml-100k"), "loo").stage("test")
    model = create_model("ease", {"l2": 400}).fit(stage.fit)
    evaluate(model, stage)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        evaluate(model, stage)
        times.append(time.perf_counter() - t0)
    return {"ml100k_ease_loo_eval_seconds_median": round(float(np.median(times)), 4),
            "ml100k_ease_loo_eval_seconds_max": round(float(np.max(times)), 4)}


def scale(n_users: int, n_items: int) -> dict:
    from llm4rec.data import Dataset, Stage
    from llm4rec.evaluation import evaluate

    rng = np.random.default_rng(1)
    items = rng.permutation(n_items)  # every item once, so the catalogue has n_items items
    users = np.arange(n_items) % n_users
    fit = Dataset.from_frame(pl.DataFrame({"user_id": users, "item_id": items}))
    model = RandomFactors(n_users, n_items)
    targets = sp.csr_matrix((np.ones(n_users, np.float32), (np.arange(n_users),
                            rng.integers(0, n_items, n_users))), shape=(n_users, n_items))
    stage = Stage("loo", "test", fit, targets, np.arange(n_users, dtype=np.int64))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = evaluate(model, stage, beyond_accuracy=False)
    seconds = time.perf_counter() - t0
    return {"users": n_users, "items": n_items, "seconds": round(seconds, 2),
            "users_per_second": round(n_users / seconds, 1),
            "extrapolated_seconds_100k_users": round(seconds * 100_000 / n_users, 1),
            "peak_rss_mib_before_eval": round(rss0, 1),
            "peak_rss_mib_after_eval": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "full_score_matrix_would_be_gib": round(n_users * n_items * 4 / 2**30, 1),
            "hr10": round(result.metrics["HR@10"], 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    args = ap.parse_args()
    out = {"ml100k": ml100k_ease(), "scale": scale(args.users, args.items)}
    print(json.dumps(out, indent=2))
    path = ROOT / "bench" / "results" / f"evaluator_speed_{args.users}x{args.items}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
