"""Scale data generator (issue #15): ``llm4rec data generate`` wall time and peak memory.

Each size runs the command in a child process (as a user runs it, through
bench/_peak.py, which reports the child's own peak resident memory, VmHWM),
into a temporary directory that is removed afterwards. Recorded per size:
seconds, interactions per second, peak RSS, bytes written, and the reference
accuracies from truth.json (oracle, topic oracle, planted popularity).

    flock /tmp/llm4rec-bench.lock python bench/scale_generate.py [--sizes 1M:100k,10M:1M] [--chunk-users 32k]

Writes (merges into) bench/results/scale_generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "scale_generate.json"


def run_one(interactions: str, items: str, chunk_users: str, seed: int) -> dict:
    from llm4rec.data.scale import read_truth

    work = Path(tempfile.mkdtemp(prefix="llm4rec-scale-"))
    try:
        out = work / "ds"
        cmd = [sys.executable, str(ROOT / "bench" / "_peak.py"), "data", "generate", "--interactions", interactions,
               "--items", items, "--seed", str(seed), "--chunk-users", chunk_users, "--out", str(out)]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        peak = float(re.search(r"peak_rss_mib=([\d.]+)", proc.stdout).group(1))
        truth = read_truth(out)
        sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
        ref = truth["reference"]
        return {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "interactions": truth["n_interactions"], "items": truth["n_items"], "users": truth["n_users"],
            "topics": truth["n_topics"], "chunk_users": chunk_users, "seed": seed,
            "seconds": round(seconds, 1),
            "interactions_per_second": round(truth["n_interactions"] / seconds),
            "peak_rss_mib": round(peak),
            "output_mib": round(sum(sizes.values()) / 2**20, 1),
            "file_mib": {k: round(v / 2**20, 2) for k, v in sizes.items()},
            "reference_ndcg10": {name: round(ref[name]["NDCG@10"], 4)
                                 for name in ("oracle", "topic_oracle", "popularity")},
            "reference_hr10": {name: round(ref[name]["HR@10"], 4) for name in ("oracle", "topic_oracle", "popularity")},
            "in_topic_share": round(truth["in_topic"]["observed_share"], 4),
            "stdout": proc.stdout.strip().splitlines()[0],
            "command": f"python bench/scale_generate.py --sizes {interactions}:{items} --chunk-users {chunk_users}",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M:100k,10M:1M", help="INTERACTIONS:ITEMS pairs, comma separated")
    parser.add_argument("--chunk-users", default="32k")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for pair in args.sizes.split(","):
        interactions, items = pair.split(":")
        record = run_one(interactions, items, args.chunk_users, args.seed)
        results[f"{interactions}x{items}"] = record
        print(json.dumps({k: record[k] for k in ("interactions", "items", "seconds", "interactions_per_second",
                                                 "peak_rss_mib", "output_mib", "reference_ndcg10")}), flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
