"""``llm4rec compress`` on Amazon Beauty (issue #14): every method against the uncompressed model, same run.

Fits and saves (P-LOO, seed 2026, the models' defaults unless said) into
``--work``, reusing bundles already there:

* ``llm-two-tower`` (defaults: early stopping on the hold-out),
* ``sasrec`` with ``--sasrec-epochs`` epochs (its full fit takes 30 minutes
  here; compression is judged against the model as fitted, whatever its
  accuracy),
* ``semantic-knn`` (no training: the text encoder is the whole model).

then runs :func:`llm4rec.experiments.compress.compress_bundle` for each
``(model, method, options)`` of :data:`RUNS` and keeps its report: sizes,
peak memory (load + evaluate, each bundle in a fresh process), latency of one
request (200 random test users, one at a time) and of encoding 1,000 item
texts, NDCG@10 / Recall@20 on the test stage with the paired test over its
22,363 users.

    flock /tmp/llm4rec-bench.lock python bench/compress.py [--work /tmp/llm4rec-compress] [--only int8,pq]
    python bench/compress.py --resize     # bundle sizes of the bundles in --work as the current code writes them

Writes bench/results/compress.json (``--out``); the run's uptime load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data")) / "amazon-beauty"
OUT = ROOT / "bench" / "results" / "compress.json"

#: (model, method, options)
RUNS = [
    ("llm-two-tower", "int8", {}),
    ("llm-two-tower", "int8", {"linears": True}),
    ("llm-two-tower", "pq", {"pq_dims": 2}),
    ("llm-two-tower", "pq", {"pq_dims": 4}),
    ("llm-two-tower", "pq", {"pq_dims": 4, "rescore": 100}),
    ("llm-two-tower", "prune", {"sparsity": 0.5}),
    ("llm-two-tower", "distill", {"layers": 3}),
    ("sasrec", "int8", {}),
    ("sasrec", "int8", {"linears": True}),
    ("sasrec", "pq", {"pq_dims": 2}),
    ("sasrec", "pq", {"pq_dims": 4}),
    ("sasrec", "pq", {"pq_dims": 4, "rescore": 100}),
    ("semantic-knn", "int8", {}),
    ("semantic-knn", "pq", {"pq_dims": 2}),
    ("semantic-knn", "prune", {"sparsity": 0.5}),
    ("semantic-knn", "distill", {"layers": 3}),
]


def fit_bundle(name: str, data, work: Path, sasrec_epochs: int) -> Path:
    """The saved model ``name`` fitted on the P-LOO test stage's fit set (reused when already in ``work``)."""
    from llm4rec.data import make_split
    from llm4rec.models import create_model

    path = work / name
    if (path / "bundle.json").is_file():
        return path
    settings = {"sasrec": {"epochs": sasrec_epochs}}.get(name, {})
    t0 = time.perf_counter()
    model = create_model(name, settings).fit(make_split(data, "loo", seed=2026).stage("test").fit)
    model.save(path)
    print(f"fitted {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def row(report: dict) -> dict:
    """The numbers of one report that RESULTS.md quotes."""
    b, a, c = report["before"], report["after"], report["comparison"]
    tests = c["paired_tests"]
    return {
        "model": report["model"], "method": report["method"], "options": report["options"],
        "bundle_mb": [round(b["bundle_bytes"] / 1e6, 2), round(a["bundle_bytes"] / 1e6, 2)],
        "weights_mb": [round(b["weights_bytes"] / 1e6, 2), round(a["weights_bytes"] / 1e6, 2)],
        "encoder_mb": [None if x["encoder_bytes"] is None else round(x["encoder_bytes"] / 1e6, 2) for x in (b, a)],
        "bundle_smaller": c["bundle_smaller"], "weights_smaller": c["weights_smaller"],
        "encoder_smaller": c["encoder_smaller"],
        "peak_memory_mib": [b["peak_memory_mib"], a["peak_memory_mib"]],
        "request_ms_p50": [b["request_ms"]["p50"], a["request_ms"]["p50"]],
        "request_ms_p95": [b["request_ms"]["p95"], a["request_ms"]["p95"]],
        "seconds_per_1k_items": [b["seconds_per_1k_items"], a["seconds_per_1k_items"]],
        **{m: {"before": round(t["mean_b"], 5), "after": round(t["mean_a"], 5),
               "relative_change": t["relative_change"], "ci": [round(t["ci_low"], 5), round(t["ci_high"], 5)],
               "t_pvalue": t["t_pvalue"], "wilcoxon_pvalue": t["wilcoxon_pvalue"]} for m, t in tests.items()},
        "compress_seconds": report["compress_seconds"], "notes": report["notes"],
        "encoder_training": {k: v for k, v in (report.get("encoder_training") or {}).items()
                             if not isinstance(v, (list, dict))},
    }


def resize(results: dict, work: Path) -> None:
    """Re-measure ``bundle_mb`` / ``bundle_smaller`` of the bundles already in ``work`` as the current code writes
    them (a compressed bundle's arrays zip-deflated; added after the first run), without recompressing."""
    import io

    import numpy as np

    for entry in results["runs"]:
        target = work / target_name(entry["model"], entry["method"], entry["options"])
        if not (target / "compression.json").is_file():
            continue
        with np.load(target / "arrays.npz") as z:
            buf = io.BytesIO()
            np.savez_compressed(buf, **{k: z[k] for k in z.files})
        size = len(buf.getvalue()) + sum((target / n).stat().st_size for n in ("config.json", "users.json",
                                                                              "items.json", "bundle.json"))
        size += sum(p.stat().st_size for p in (target / "encoder").rglob("*") if p.is_file()) \
            if (target / "encoder").is_dir() else 0
        before = entry["bundle_mb"][0]
        entry["bundle_mb"] = [before, round(size / 1e6, 2)]
        entry["bundle_smaller"] = round(before * 1e6 / size, 3)
        entry["bundle_resized"] = True


def target_name(model: str, method: str, options: dict) -> str:
    return f"{model}-{method}-{'-'.join(f'{k}{v}' for k, v in options.items()) or 'default'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/llm4rec-compress"))
    parser.add_argument("--sasrec-epochs", type=int, default=10)
    parser.add_argument("--only", default=None, help="comma-separated methods to run (default: all)")
    parser.add_argument("--models", default=None, help="comma-separated models to run (default: all)")
    parser.add_argument("--rescored", action="store_true", help="only the runs that re-score a shortlist")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resize", action="store_true", help="only re-measure the bundle sizes in --work")
    args = parser.parse_args()
    if args.resize:
        results = json.loads(args.out.read_text())
        resize(results, args.work)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from llm4rec._runinfo import environment
    from llm4rec.data import load_dataset
    from llm4rec.experiments.compress import compress_bundle

    data = load_dataset(DATA)
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    runs = [r for r in RUNS if (args.only is None or r[1] in args.only.split(","))
            and (args.models is None or r[0] in args.models.split(","))
            and (not args.rescored or "rescore" in r[2])]
    for name, method, options in runs:
        source = fit_bundle(name, data, args.work, args.sasrec_epochs)
        target = args.work / target_name(name, method, options)
        shutil.rmtree(target, ignore_errors=True)  # the bench's own output from an earlier run
        t0 = time.perf_counter()
        report = compress_bundle(source, target, method, data, options=options, data_path=str(DATA))
        entry = {**row(report), "seconds": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}
        print(json.dumps({k: entry[k] for k in ("model", "method", "options", "weights_smaller", "NDCG@10")}),
              flush=True)
        results["runs"] = [r for r in results["runs"] if (r["model"], r["method"], r["options"]) !=
                           (name, method, options)] + [entry]
        results.update(dataset="amazon-beauty", protocol="P-LOO, full ranking, test stage, seed 2026",
                       machine=platform.processor() or platform.machine(), date=time.strftime("%Y-%m-%d"),
                       command="flock /tmp/llm4rec-bench.lock python bench/compress.py",
                       sasrec_epochs=args.sasrec_epochs, environment=environment("cpu"))
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
