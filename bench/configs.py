"""Rerun every shipped experiment file (``configs/*.toml``) and compare with the numbers recorded for it.

Each file runs through the real command (``llm4rec run FILE --out DIR``) in its
own process; its ``records.jsonl`` is compared, model by model, with the values
of ``bench/RESULTS.md`` that the file's comments quote (``RECORDED`` below: to
the 4 decimals of the tables). A model matches when every metric rounds to
the recorded value.

    python bench/configs.py                                # every file (about 15 min on 2 cores)
    python bench/configs.py --only ml100k-baselines-loo

Writes (merges into) bench/results/configs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "configs.json"

#: config stem -> label -> the recorded metrics (bench/RESULTS.md, as the file's comments quote them)
RECORDED: dict[str, dict[str, dict[str, float]]] = {
    "ml100k-baselines-loo": {
        "pop": {"HR@10": 0.0498, "NDCG@10": 0.0253, "MRR@10": 0.0179},
        "itemknn": {"HR@10": 0.0604, "NDCG@10": 0.0283, "MRR@10": 0.0188},
        "ease": {"HR@10": 0.0870, "NDCG@10": 0.0409, "MRR@10": 0.0271},
        "als": {"HR@10": 0.0880, "NDCG@10": 0.0390, "MRR@10": 0.0243},
        "bpr": {"HR@10": 0.1039, "NDCG@10": 0.0487, "MRR@10": 0.0320}},
    "ml100k-baselines-rand": {
        "pop": {"Recall@20": 0.1726, "NDCG@20": 0.2191},
        "itemknn": {"Recall@20": 0.2979, "NDCG@20": 0.3655},
        "ease": {"Recall@20": 0.3680, "NDCG@20": 0.4454},
        "als": {"Recall@20": 0.3516, "NDCG@20": 0.4159},
        "bpr": {"Recall@20": 0.2551, "NDCG@20": 0.2983}},
    "beauty-baselines-loo": {
        "pop": {"HR@10": 0.0137, "NDCG@10": 0.0061, "MRR@10": 0.0039},
        "itemknn": {"HR@10": 0.0722, "NDCG@10": 0.0407, "MRR@10": 0.0312},
        "ease": {"HR@10": 0.0782, "NDCG@10": 0.0445, "MRR@10": 0.0342},
        "als": {"HR@10": 0.0593, "NDCG@10": 0.0312, "MRR@10": 0.0227},
        "bpr": {"HR@10": 0.0375, "NDCG@10": 0.0204, "MRR@10": 0.0152}},
    "ml100k-sequential-loo": {
        "ease": {"NDCG@10": 0.0409},
        "sasrec": {"HR@10": 0.1495, "NDCG@10": 0.0775},
        "sasrec-text": {"HR@10": 0.1559, "NDCG@10": 0.0803}},
    "ml100k-text-cold": {
        "pop": {"Recall@20": 0.1419, "NDCG@20": 0.2034},
        "semantic-knn": {"Recall@20": 0.1585, "NDCG@20": 0.1337},
        "llm-two-tower": {"Recall@20": 0.2366, "NDCG@20": 0.2016},
        "sasrec-text": {"Recall@20": 0.2548, "NDCG@20": 0.2154}},
    "ml100k-tune-ease": {
        "ease-400": {"HR@10": 0.0870, "NDCG@10": 0.0409, "MRR@10": 0.0271},
        "ease-tuned": {"HR@10": 0.0912, "NDCG@10": 0.0419}},
}


def run(stem: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "llm4rec", "run", str(ROOT / "configs" / f"{stem}.toml"), "--out", str(out)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{stem}: {done.stderr[-3000:]}")
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    got = {r["label"]: r["metrics"] for r in records}
    models = {}
    for label, recorded in RECORDED[stem].items():
        values = {m: round(got[label][m], 6) for m in recorded}
        models[label] = {"recorded": recorded, "rerun": values,
                         "match": all(round(values[m], 4) == v for m, v in recorded.items())}
    blas = records[0]["environment"]["threads"].get("blas") or [{}]
    return {"models": models, "all_match": all(m["match"] for m in models.values()),
            "seconds": round(seconds, 1), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "blas_kernel": blas[0].get("architecture"), "date": time.strftime("%Y-%m-%d"),
            "command": f"llm4rec run configs/{stem}.toml"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated config stems: " + ", ".join(RECORDED))
    args = ap.parse_args()
    for stem in args.only.split(",") if args.only else RECORDED:
        result = run(stem)
        results = json.loads(OUT.read_text()) if OUT.exists() else {}
        results[stem] = result
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(stem, "all match" if result["all_match"] else "DIFFERS",
              {k: v["rerun"] for k, v in result["models"].items() if not v["match"]}, f"{result['seconds']} s",
              flush=True)


if __name__ == "__main__":
    main()
