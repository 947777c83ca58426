"""Text-encoder speed against the machine's arithmetic limit, and int8 against fp32 (issue #14).

On Amazon Beauty's item texts (default template, PII scrubbed, as ``llm4rec
embed`` encodes them), batch 64, at 1 and 2 threads:

1. ``minilm`` (fp32, token-length batches, straight through transformers'
   AutoModel) and ``minilm-qint8`` (int8 linear layers on onnxruntime's
   integer kernels) encode every text. The texts are cut into ``--chunks``
   chunks and the two encoders alternate chunk by chunk, each chunk after a
   fresh measure of the fp32 matmul peak (torch, 2048 x 2048 x 2048, best of
   ``--matmul-reps``), so that a neighbour's load lands on all of them alike.
2. Achieved GFLOP/s: the exact FLOPs of all-MiniLM-L6-v2 on each text's real
   tokens (padding not counted), over the wall time. Per text of T tokens, L
   layers, hidden H, feed-forward F (L=6, H=384, F=1536)::

       FLOPs(T) = L * (2 * T * (4 * H * H + 2 * H * F)   # Q, K, V, output; FFN in and out (multiply-adds x 2)
                       + 4 * T * T * H)                  # Q K^T and attention x V over all heads

   = 0.645 GFLOP at T = 30 (embeddings, layer norms, softmax and GELU are
   O(T * H) and left out). The ratio to the matmul peak of the same run is
   how close the encoder gets to what the cores can do.
3. int8 against fp32: speed-up (ratio of items/s), cosine of every pair of
   vectors (mean, 1st percentile, min).
4. A reference on the first ``--reference`` texts at 1 thread, interleaved:
   the previous fp32 path (``SentenceTransformer.encode`` on batches cut by
   character length, as ``minilm`` ran before this change) and the packaged
   ``minilm-int8`` ONNX model (weights dequantised on load).
5. P-COLD Recall@20 of ``semantic-knn`` on ml-100k with fp32 and with int8
   embeddings (a fresh embedding cache), paired over test users
   (``llm4rec.evaluation.significance.paired_test``).

    python bench/encoder_speed.py [--chunks 4] [--threads 1,2]

Writes bench/results/encoder_speed.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "encoder_speed.json"
LAYERS, HIDDEN, FFN = 6, 384, 1536
BATCH = 64


def minilm_flops(tokens: np.ndarray) -> np.ndarray:
    """FLOPs of all-MiniLM-L6-v2 on texts of ``tokens`` real tokens each (float64[n]); see the module docstring."""
    t = tokens.astype(np.float64)
    return LAYERS * (2 * t * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) + 4 * t * t * HIDDEN)


def matmul_peak(threads: int, reps: int, n: int = 2048) -> float:
    """Best fp32 GFLOP/s of an n x n x n torch matmul over ``reps`` runs at ``threads`` threads."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    torch.set_num_threads(saved)
    return best


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    cos = np.sum(a * b, axis=1)
    return {"mean": round(float(cos.mean()), 5), "p1": round(float(np.percentile(cos, 1)), 5),
            "min": round(float(cos.min()), 5)}


def speed(args, texts: list[str], tokens: np.ndarray) -> tuple[dict, dict]:
    """Interleaved fp32 / int8 runs at each thread count; returns the record and the 1-thread vectors."""
    from llm4rec.text import get_encoder

    flops = minilm_flops(tokens)
    chunks = np.array_split(np.arange(len(texts)), args.chunks)
    record, vectors = {}, {}
    for threads in args.threads:
        encoders, load_seconds = {}, {}
        for name in ("minilm", "minilm-qint8"):
            t0 = time.perf_counter()
            encoders[name] = get_encoder(name, threads=threads).load()
            encoders[name].encode(texts[:BATCH])  # warm-up
            load_seconds[name] = round(time.perf_counter() - t0, 2)  # with the warm-up batch
        wall = dict.fromkeys(encoders, 0.0)
        out = {name: np.empty((len(texts), 384), np.float32) for name in encoders}
        peaks = []
        for rows in chunks:
            peaks.append(matmul_peak(threads, args.matmul_reps))
            part = [texts[i] for i in rows]
            for name, encoder in encoders.items():
                t0 = time.perf_counter()
                out[name][rows] = encoder.encode(part, batch_size=BATCH)
                wall[name] += time.perf_counter() - t0
            print(f"threads={threads} chunk of {len(rows)}: peak {peaks[-1]:.0f} GFLOP/s, "
                  f"seconds so far {({k: round(v, 1) for k, v in wall.items()})}", flush=True)
        peak = max(peaks)
        runs = {}
        for name in encoders:
            gflops = flops.sum() / wall[name] / 1e9
            runs[name] = {"seconds": round(wall[name], 1), "items_per_second": round(len(texts) / wall[name], 1),
                          "achieved_gflops": round(gflops, 1), "ratio_to_matmul_peak": round(gflops / peak, 3),
                          "load_seconds": load_seconds[name]}
        runs["int8_speedup"] = round(wall["minilm"] / wall["minilm-qint8"], 3)
        runs["matmul_peak_gflops"] = {"max": round(peak, 1), "median": round(float(np.median(peaks)), 1),
                                      "per_chunk": [round(p, 1) for p in peaks]}
        runs["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        record[f"threads_{threads}"] = runs
        print(json.dumps({f"threads_{threads}": runs}), flush=True)
        if threads == args.threads[0]:
            vectors = out
        else:  # the same vectors whatever the thread count
            record[f"threads_{threads}"][f"max_abs_diff_to_threads_{args.threads[0]}"] = {
                name: float(np.abs(out[name] - vectors[name]).max()) for name in out}
    return record, vectors


def reference(args, texts: list[str]) -> dict:
    """items/s of the previous fp32 path and the packaged ONNX int8 model against the new ones, 1 thread."""
    import torch
    from sentence_transformers import SentenceTransformer

    from llm4rec.text import get_encoder
    from llm4rec.text.encoders import _minilm_path

    sample = texts[:args.reference]
    torch.set_num_threads(1)
    old = SentenceTransformer(str(_minilm_path()), device="cpu")
    runs = {"sentence-transformers encode (before)": lambda part: [
                old.encode(part[i:i + BATCH], batch_size=BATCH, show_progress_bar=False)
                for i in range(0, len(part), BATCH)],  # char-length sorted batches, as TextEncoder fed it
            "minilm": get_encoder("minilm", threads=1).load().encode,
            "minilm-qint8": get_encoder("minilm-qint8", threads=1).load().encode,
            "minilm-int8 (packaged ONNX)": get_encoder("minilm-int8", num_threads=1).load().encode}
    order = sorted(range(len(sample)), key=lambda i: -len(sample[i]))
    by_chars = [sample[i] for i in order]
    for run in runs.values():
        run(sample[:BATCH])  # warm-up
    wall = dict.fromkeys(runs, 0.0)
    for part in np.array_split(np.arange(len(sample)), 2):
        for name, run in runs.items():
            texts_part = [by_chars[i] for i in part] if "before" in name else [sample[i] for i in part]
            t0 = time.perf_counter()
            run(texts_part)
            wall[name] += time.perf_counter() - t0
    return {"items": len(sample), "threads": 1,
            "items_per_second": {name: round(len(sample) / s, 1) for name, s in wall.items()},
            "speedup_vs_before": {name: round(wall["sentence-transformers encode (before)"] / s, 2)
                                  for name, s in wall.items()}}


def pcold(args) -> dict:
    """P-COLD Recall@20 of semantic-knn on ml-100k, fp32 against int8 embeddings, paired over users."""
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation import evaluate
    from llm4rec.evaluation.significance import paired_test
    from llm4rec.models import create_model

    ds = load_dataset(DATA / "ml-100k")
    stage = make_split(ds, "cold").stage("test")
    per_user = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LLM4REC_CACHE"] = cache
        for encoder in ("minilm", "minilm-qint8"):
            model = create_model("semantic-knn", {"encoder": encoder}).fit(stage.fit)
            per_user[encoder] = evaluate(model, stage).per_user["Recall@20"]
    test = paired_test(per_user["minilm-qint8"], per_user["minilm"])
    return {"dataset": ds.name, "protocol": "P-COLD", "users": len(per_user["minilm"]),
            "recall20_fp32": round(float(per_user["minilm"].mean()), 4),
            "recall20_int8": round(float(per_user["minilm-qint8"].mean()), 4),
            "paired_int8_minus_fp32": test.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=4, help="fp32 and int8 alternate over this many chunks")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--matmul-reps", type=int, default=3)
    parser.add_argument("--reference", type=int, default=1000, help="texts for the before/after reference")
    parser.add_argument("--items", type=int, default=0, help="only the first N texts (a quick check); 0 = all")
    parser.add_argument("--skip-pcold", action="store_true")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON record")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]

    from llm4rec.data.sources import load_dataset
    from llm4rec.text import default_item_template, get_encoder, item_texts

    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    ds = load_dataset(DATA / "amazon-beauty")
    texts = item_texts(ds)[:args.items or None]
    tokenizer = get_encoder("minilm").load().tokenizer_
    tokens = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]])
    record = {
        "command": _command(args),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "dataset": ds.name, "items": len(texts), "template": default_item_template(ds).text,
        "tokens": {"mean": round(float(tokens.mean()), 2), "median": float(np.median(tokens)),
                   "max": int(tokens.max())},
        "flops_per_item_gflop": {"mean": round(float(minilm_flops(tokens).mean() / 1e9), 4),
                                 "at_30_tokens": round(float(minilm_flops(np.array([30]))[0] / 1e9), 4)},
        "batch_size": BATCH, "chunks": args.chunks,
    }
    speed_record, vectors = speed(args, texts, tokens)
    record.update(speed_record)
    record["int8_vs_fp32_cosine"] = cosine_stats(vectors["minilm"], vectors["minilm-qint8"])
    if not args.skip_reference:
        record["reference_first_texts"] = reference(args, texts)
        print(json.dumps(record["reference_first_texts"]), flush=True)
    if not args.skip_pcold:
        record["pcold_semantic_knn"] = pcold(args)
        print(json.dumps(record["pcold_semantic_knn"]), flush=True)
    record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name(),
                         "python": platform.python_version(), "load_average_before": load_before,
                         "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    record["versions"] = {p: version(p) for p in ("torch", "transformers", "onnxruntime", "onnx", "tokenizers")}
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


def _command(args) -> str:
    """The command line that reproduces this run (every option spelt out)."""
    parts = ["python bench/encoder_speed.py"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not False:
            parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
