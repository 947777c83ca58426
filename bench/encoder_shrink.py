"""Pruned and distilled all-MiniLM-L6-v2 against the teacher on Amazon Beauty's item texts (issue #14).

On Amazon Beauty's 12,101 item texts (default template, PII scrubbed, as
``llm4rec embed`` encodes them), in one run:

1. Train, on all the texts (the catalogue the encoder will embed): the
   teacher pruned to half its attention heads and FFN neurons
   (``prune_encoder``, ``--recovery-epochs``) and distilled to 3 of its 6
   layers (``distill_encoder``, ``--distill-epochs``), at ``--train-threads`` (1).
2. Speed at each of ``--threads`` (2): the teacher (``minilm``, fp32), the pruned and
   the distilled encoder, loaded with ``get_encoder`` from their folders,
   encode every text in batches of 64. The texts are cut into ``--chunks``
   chunks and the three alternate chunk by chunk, so that a neighbour's load
   lands on all of them alike. FLOPs per text from each model's real shapes
   (per layer: ``2 T (4 H h d + 2 H F) + 4 T^2 h d`` for T tokens, h heads of d
   dims, FFN width F), so the measured speed-up can be read against the
   arithmetic one.
3. Cosine of every text's vector to the teacher's (mean, 1st percentile, min),
   parameters, bytes of ``model.safetensors``, training seconds.

Run it alone (timings must not overlap with other benchmarks)::

    flock /tmp/llm4rec-bench.lock .venv/bin/python bench/encoder_shrink.py

Writes bench/results/encoder_shrink.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "encoder_shrink.json"
BATCH = 64


def flops(tokens: np.ndarray, shape) -> np.ndarray:
    """FLOPs (float64[n]) of a BERT of ``shape`` (a BertShape) on texts of ``tokens`` real tokens each."""
    t = tokens.astype(np.float64)[:, None]  # (n, 1)
    h = np.array(shape.heads, dtype=np.float64) * shape.head_dim  # (L,) attention width per layer
    f = np.array(shape.ffn, dtype=np.float64)  # (L,)
    return (2 * t * (4 * shape.hidden * h + 2 * shape.hidden * f) + 4 * t * t * h).sum(1)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    cos = np.sum(a * b, axis=1)
    return {"mean": round(float(cos.mean()), 5), "p1": round(float(np.percentile(cos, 1)), 5),
            "min": round(float(cos.min()), 5)}


def train(args, texts: list[str], work: Path) -> tuple[dict, dict[str, Path]]:
    """Reports and folders of the pruned and distilled encoders; with ``--reuse``, those already in ``work``."""
    from llm4rec.text import get_encoder
    from llm4rec.text.shrink import distill_encoder, prune_encoder

    folders = {"pruned": work / "pruned", "distilled": work / "distilled"}
    if args.reuse:
        return {name: json.loads((f / "training.json").read_text()) for name, f in folders.items()}, folders
    teacher = get_encoder("minilm", threads=args.train_threads).load()
    reports = {}
    t0 = time.perf_counter()
    reports["pruned"] = prune_encoder(teacher, texts, folders["pruned"], sparsity=args.sparsity,
                                      recovery_epochs=args.recovery_epochs, scoring_texts=args.scoring_texts,
                                      batch_size=BATCH, threads=args.train_threads, progress=args.progress)
    reports["pruned"]["seconds"]["wall_with_teacher_vectors"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"pruned": reports["pruned"]}), flush=True)
    t0 = time.perf_counter()
    reports["distilled"] = distill_encoder(teacher, texts, folders["distilled"], layers=args.layers,
                                           epochs=args.distill_epochs, batch_size=BATCH, threads=args.train_threads,
                                           progress=args.progress)
    reports["distilled"]["seconds"]["wall_with_teacher_vectors"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"distilled": reports["distilled"]}), flush=True)
    return reports, folders


def speed(args, threads: int, texts: list[str], tokens: np.ndarray, folders: dict[str, Path]) -> tuple[dict, dict]:
    """Interleaved runs of the three encoders at ``threads``; the record and every text's vectors per encoder."""
    from llm4rec.text import get_encoder
    from llm4rec.text.bert import read_folder
    from llm4rec.text.shrink import _teacher

    shapes = {"teacher": _teacher("minilm").net.shape} | {name: read_folder(f)[0].shape for name, f in folders.items()}
    encoders, load_seconds = {}, {}
    for name, source in {"teacher": "minilm", **{k: str(v) for k, v in folders.items()}}.items():
        t0 = time.perf_counter()
        encoders[name] = get_encoder(source, threads=threads).load()
        encoders[name].encode(texts[:BATCH])  # warm-up
        load_seconds[name] = round(time.perf_counter() - t0, 2)
    chunks = {name: [] for name in encoders}  # seconds per chunk
    out = {name: np.empty((len(texts), 384), np.float32) for name in encoders}
    for rows in np.array_split(np.arange(len(texts)), args.chunks):
        part = [texts[i] for i in rows]
        for name, encoder in encoders.items():
            t0 = time.perf_counter()
            out[name][rows] = encoder.encode(part, batch_size=BATCH)
            chunks[name].append(round(time.perf_counter() - t0, 2))
        print(f"threads={threads} chunk of {len(rows)}: seconds {chunks}", flush=True)
    wall = {name: sum(c) for name, c in chunks.items()}
    record = {"load_average_after": [round(x, 2) for x in os.getloadavg()]}
    for name in encoders:
        gflop = flops(tokens, shapes[name]).sum() / 1e9
        record[name] = {"seconds": round(wall[name], 1), "seconds_per_chunk": chunks[name],
                        "items_per_second": round(len(texts) / wall[name], 1),
                        "speedup_vs_teacher": round(wall["teacher"] / wall[name], 3),
                        "gflop_per_item": round(gflop / len(texts), 4),
                        "flop_ratio_to_teacher": round(gflop / (flops(tokens, shapes["teacher"]).sum() / 1e9), 3),
                        "achieved_gflops": round(gflop / wall[name], 1), "load_seconds": load_seconds[name]}
    return record, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2", help="torch threads of the speed runs, comma-separated")
    parser.add_argument("--train-threads", type=int, default=1,
                        help="torch threads for training (1: on a shared 2-core machine a 2-thread pool waits on "
                             "descheduled workers)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--recovery-epochs", type=int, default=1)
    parser.add_argument("--scoring-texts", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--distill-epochs", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=4, help="the three encoders alternate over this many chunks")
    parser.add_argument("--items", type=int, default=0, help="only the first N texts (a quick check); 0 = all")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the trained folders here (default: a temporary folder, removed after)")
    parser.add_argument("--reuse", action="store_true", help="skip training: time the folders already in --work")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON record")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.reuse and args.work is None:
        parser.error("--reuse needs --work")

    from llm4rec.data.sources import load_dataset
    from llm4rec.text import default_item_template, get_encoder, item_texts

    load_before = _uptime()
    started = time.perf_counter()
    ds = load_dataset(DATA / "amazon-beauty")
    texts = item_texts(ds)[:args.items or None]
    tokenizer = get_encoder("minilm").load().tokenizer_
    tokens = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]])
    record = {"command": _command(args), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "dataset": ds.name, "items": len(texts), "template": default_item_template(ds).text,
              "tokens": {"mean": round(float(tokens.mean()), 2), "max": int(tokens.max())},
              "threads": {"speed": args.threads, "training": args.train_threads}, "batch_size": BATCH}
    with tempfile.TemporaryDirectory(prefix="encoder-shrink-") as tmp:
        reports, folders = train(args, texts, args.work or Path(tmp))
        load_before_speed = _uptime()
        record["speed"], vectors = {}, None
        for threads in args.threads:
            record["speed"][f"threads_{threads}"], out = speed(args, threads, texts, tokens, folders)
            vectors = out if vectors is None else vectors  # cosines from the first thread count
        sizes = {name: (folder / "model.safetensors").stat().st_size for name, folder in folders.items()}
    from llm4rec.text.encoders import _minilm_path

    sizes["teacher"] = (_minilm_path() / "model.safetensors").stat().st_size
    record["encoders"] = {}
    for name in ("teacher", "pruned", "distilled"):
        entry = {"items_per_second": {t: run[name]["items_per_second"] for t, run in record["speed"].items()},
                 "speedup_vs_teacher": {t: run[name]["speedup_vs_teacher"] for t, run in record["speed"].items()},
                 "flop_ratio_to_teacher": record["speed"][f"threads_{args.threads[0]}"][name]["flop_ratio_to_teacher"],
                 "weights_mb": round(sizes[name] / 1e6, 1)}
        if name == "teacher":
            entry["parameters"] = reports["pruned"]["parameters"]["teacher"]
        else:
            report = reports[name]
            entry |= {"parameters": report["parameters"]["student"],
                      "cosine_to_teacher": cosine_stats(vectors[name], vectors["teacher"]),
                      "heads": report["heads"], "ffn": report["ffn"], "loss": report["loss"],
                      "training_cosine": report["cosine_to_teacher"], "seconds": report["seconds"]}
        record["encoders"][name] = entry
    record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name(),
                         "python": platform.python_version(), "uptime_before": load_before,
                         "uptime_before_speed": load_before_speed, "uptime_after": _uptime()}
    record["versions"] = {p: version(p) for p in ("torch", "transformers", "tokenizers", "safetensors")}
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["encoders"]))
    print(f"wrote {args.out}")


def _uptime() -> str:
    """``uptime``'s line (the load averages), or the load averages alone where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _command(args) -> str:
    """The command line that reproduces this run (every option spelt out)."""
    parts = ["flock /tmp/llm4rec-bench.lock python bench/encoder_shrink.py"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not False and value is not None:
            parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
