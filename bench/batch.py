"""Batch inference (issue #13): ``llm4rec recommend --all`` on a synthetic factor model, users/s and peak memory.

The model is ALS with 64 factors fitted (one iteration) on a synthetic log of
``--users`` users with 3 interactions each over ``--items`` items; its factors
are then replaced by clustered Gaussian vectors (as in bench/serving.py), so
the scores are not a tie. The command runs in a child process (as a user runs
it); its peak resident memory is read from the kernel (``ru_maxrss`` of the
children). The alternative it replaces, scoring every user at once, would need
users x items x 4 bytes.

    python bench/batch.py [--users 1000000] [--items 100000] [--block 1024]
    python bench/batch.py --sasrec amazon-beauty [--epochs 2]    # sasrec over a real dataset's users

With ``--sasrec NAME``, a ``sasrec`` (default settings) is fitted for ``--epochs`` epochs on the whole of
``../shared/data/NAME`` (speed does not depend on how long it trained) and ``recommend --all`` scores every
user from their history.

Writes (merges into) bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "batch.json"
FACTORS = 64
CLUSTERS = 1000


def build(n_users: int, n_items: int, work: Path) -> tuple[Path, float]:
    """A saved ALS bundle over ``n_users`` x ``n_items``: (its path, seconds to build)."""
    import polars as pl

    from llm4rec.data.dataset import Dataset
    from llm4rec.models import create_model

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(n_users), 3)
    items = rng.integers(0, n_items, size=len(users))
    n_first = min(n_items, len(items))
    items[:n_first] = np.arange(n_first)  # every item appears (when the log is long enough)
    log = pl.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str),
                        "timestamp": np.arange(len(users), dtype=np.int64)})
    data = Dataset.from_frame(log, name=f"synthetic-{n_users}x{n_items}")
    model = create_model("als", {"factors": FACTORS, "iterations": 1}).fit(data)
    centres = rng.normal(size=(CLUSTERS, FACTORS))
    item_ids = np.asarray(model.item_ids, dtype=np.int64)
    model.item_factors_ = np.ascontiguousarray(
        (centres[item_ids % CLUSTERS] + rng.normal(size=(len(item_ids), FACTORS))) / np.sqrt(FACTORS), np.float32)
    model.user_factors_ = np.ascontiguousarray(rng.normal(size=(model.n_users_, FACTORS)), np.float32)
    path = model.save(work / "als")
    return path, time.perf_counter() - t0


def build_sasrec(name: str, epochs: int, work: Path) -> tuple[Path, float, int, int]:
    """A saved sasrec fitted on the whole of dataset ``name``: (path, seconds, users, items)."""
    from llm4rec.data.sources import load_dataset
    from llm4rec.models import create_model

    t0 = time.perf_counter()
    data = load_dataset(ROOT.parent / "shared" / "data" / name if "LLM4REC_SHARED_DATA" not in os.environ
                        else Path(os.environ["LLM4REC_SHARED_DATA"]) / name)
    model = create_model("sasrec", {"epochs": epochs, "valid": "none"}).fit(data)
    return model.save(work / "sasrec"), time.perf_counter() - t0, data.n_users, data.n_items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--sasrec", metavar="DATASET", help="benchmark sasrec on this dataset's users instead")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.sasrec:
            bundle, build_s, args.users, args.items = build_sasrec(args.sasrec, args.epochs, work)
        else:
            bundle, build_s = build(args.users, args.items, work)
        out = work / "recs.parquet"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "llm4rec", "recommend", "--model", str(bundle), "--all",
                               "--k", "10", "--out", str(out), "--block", str(args.block)],
                              capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
        size = out.stat().st_size
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model": f"sasrec (defaults), {args.epochs} epochs on {args.sasrec}" if args.sasrec else
              f"ALS, {FACTORS} factors (synthetic clustered factors)", "users": args.users,
              "items": args.items, "k": 10, "block": args.block, "build_seconds": round(build_s, 1),
              "seconds": round(seconds, 1), "users_per_second": round(args.users / seconds),
              "peak_rss_mib": round(peak), "output_mib": round(size / 2**20, 1),
              "all_at_once_scores_gib": round(args.users * args.items * 4 / 2**30, 1),
              "stdout": done.stdout.strip().splitlines()[-1],
              "command": f"python bench/batch.py --sasrec {args.sasrec} --epochs {args.epochs} --block {args.block}"
              if args.sasrec else
              f"python bench/batch.py --users {args.users} --items {args.items} --block {args.block}"}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[f"sasrec-{args.sasrec}" if args.sasrec else f"als-{args.users}x{args.items}"] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
