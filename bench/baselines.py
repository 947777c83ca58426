"""Benchmark of the classic baselines, tuned on the validation stage only.

For each (dataset, protocol): grid-search every model on the protocol's
``valid`` stage (tuning metric of PROTOCOLS.md), then run the chosen
configuration once on the ``test`` stage through the real CLI
(``llm4rec evaluate --json``) in a child process, recording its metrics, fit
and evaluation time and peak resident memory. P-LOO-100 reuses the P-LOO
choice (the protocol has no tuning of its own), and so does P-COLD for these
ID-only baselines (they have no signal for items without interactions).

    python bench/baselines.py                       # everything (about 30 min on 2 cores)
    python bench/baselines.py --datasets ml-100k --models ease,pop

Writes bench/results/baselines.json; `python bench/report.py` renders the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))

DATASETS = {
    "ml-100k": ("ml-100k", ["loo", "loo100", "rand"]),
    "amazon-beauty": ("amazon-beauty", ["loo", "cold"]),
}

GRIDS: dict[str, dict[str, list]] = {
    "pop": {},
    "itemknn": {"neighbors": [20, 50, 100, 200], "shrink": [0.0, 10.0, 50.0]},
    "ease": {"l2": [10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0]},
    "als": {"factors": [32, 64, 128], "regularization": [0.01, 0.1, 1.0], "alpha": [1.0, 5.0]},
    "bpr": {"factors": [32, 64, 128], "learning_rate": [0.01, 0.05], "regularization": [0.001, 0.01]},
}


def grid(model: str) -> list[dict]:
    spec = GRIDS[model]
    return [dict(zip(spec, values)) for values in itertools.product(*spec.values())] or [{}]


def tune(ds, protocol: str, model: str) -> tuple[dict, float, int]:
    """Best settings on the valid stage: (settings, valid metric, n configs tried)."""
    from llm4rec.data import PROTOCOLS, make_split
    from llm4rec.evaluation.experiment import run_experiment

    split = make_split(ds, protocol)
    metric = PROTOCOLS[protocol]["tune"]
    best, best_value = {}, -1.0
    configs = grid(model)
    for settings in configs:
        exp = run_experiment(ds, model, protocol=protocol, settings=settings, stage="valid", split=split)
        value = exp.record["metrics"][metric]
        if value > best_value:
            best, best_value = settings, value
    return best, best_value, len(configs)


def run_test(path: Path, protocol: str, model: str, settings: dict) -> dict:
    """Run `llm4rec evaluate` in a child process; add its peak RSS (VmHWM, MiB) to the record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(ROOT / "bench" / "_peak.py"), "evaluate", "--data", str(path), "--model", model,
               "--protocol", protocol, "--json", str(out)]
        for k, v in settings.items():
            cmd += ["--set", f"{k}={v}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr}")
        record = json.loads(out.read_text())
    record["peak_rss_mib"] = float(proc.stdout.strip().splitlines()[-1].split("=")[1])
    record["wall_seconds"] = round(wall, 2)
    return record


def main() -> None:
    from llm4rec.data import PROTOCOLS
    from llm4rec.data.sources import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--models", default=",".join(GRIDS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "baselines.json"))
    ap.add_argument("--reuse-choice", action="store_true",
                    help="skip tuning where the results file already holds a choice (re-measure the test run)")
    args = ap.parse_args()
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else []
    for name in args.datasets.split(","):
        folder, protocols = DATASETS[name]
        path = DATA / folder
        ds = load_dataset(path)
        for model in args.models.split(","):
            chosen: dict[str, tuple] = {}
            for protocol in protocols:
                t0 = time.perf_counter()
                previous = [r for r in results if r["dataset"] == ds.name and r["model"] == model
                            and r["protocol"] == PROTOCOLS[protocol]["title"]]
                if args.reuse_choice and previous:
                    p = previous[0]
                    settings, valid_value, tried = p["chosen_settings"], p["valid_metric"], p["configs_tried"]
                    chosen[protocol] = (settings, valid_value, tried)
                elif protocol == "loo100" or (protocol == "cold" and "loo" in chosen):
                    # loo100 has no tuning of its own; on P-COLD these ID-only models have no signal for
                    # items without interactions, so the P-LOO validation choice is reused.
                    settings, valid_value, tried = chosen["loo"]
                else:
                    settings, valid_value, tried = tune(ds, protocol, model)
                    chosen[protocol] = (settings, valid_value, tried)
                tune_seconds = time.perf_counter() - t0
                record = run_test(path, protocol, model, settings)
                record.update(valid_metric=valid_value, configs_tried=tried, chosen_settings=settings,
                              tune_seconds=previous[0]["tune_seconds"] if args.reuse_choice and previous
                              else round(tune_seconds, 1))
                results = [r for r in results if not (r["dataset"] == record["dataset"] and
                                                      r["protocol"] == record["protocol"] and
                                                      r["model"] == model)]
                results.append(record)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=2) + "\n")
                print(f"{name:14s} {protocol:7s} {model:8s} {settings} -> "
                      + ", ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items())
                      + f" | fit {record['fit_seconds']:.1f}s eval {record['eval_seconds']:.2f}s "
                        f"rss {record['peak_rss_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
