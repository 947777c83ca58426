"""Embedding on Ray (issue #15): one process with 2 threads vs a local cluster of 2 workers x 1 CPU.

The first ``--n`` item texts of ``../shared/data/DATASET`` (default Amazon
Beauty, its default template) are encoded with the packaged MiniLM into an
empty embedding cache, each mode in a child process of its own:

- ``single``: :func:`llm4rec.text.encode_cached` (the ``llm4rec embed`` path), torch on 2 threads;
- ``ray``: :func:`llm4rec.distributed.embed.encode_texts` (the ``llm4rec embed --ray`` path) against a
  :class:`~llm4rec.distributed.cluster.LocalCluster` of ``--workers`` worker nodes x 1 CPU, one encoder
  actor (1 thread) per node; the child is the driver;
- ``parquet``: :func:`llm4rec.distributed.embed.embed_parquet`, the same texts streamed from a Parquet
  file to Parquet files on the same cluster.

``seconds`` is the child's wall time for the call (actor start-up and model loads included for Ray, the
model load included for single; interpreter start and imports excluded), ``items_per_second`` is ``n`` over
it. Peak resident memory: the child's VmHWM, and for Ray the VmHWM of each encoder actor process
(``ray::MapWorker``) started during the run, sampled every 0.1 s (a high-water mark, so a late sample still
sees the peak); raylet, GCS and object-store processes are not counted. The Ray vectors are
compared with the single-process ones.

    flock /tmp/llm4rec-bench.lock python bench/ray_embed.py [--n 3000] [--dataset amazon-beauty] [--workers 2]
        [--chunk 1024] [--modes single,ray,parquet]

Writes (merges into) bench/results/ray_embed.json under ``DATASET-N``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ray_embed.json"
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _vm_hwm_mib(pid: int | str = "self") -> float | None:
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def texts_of(dataset: str, n: int) -> tuple[list[str], str]:
    """The first ``n`` item texts of ``dataset`` and the template id that keys their cache entries."""
    from llm4rec.data.sources import load_dataset
    from llm4rec.text import default_item_template, item_texts

    data = load_dataset(DATA / dataset)
    tpl = default_item_template(data)
    return item_texts(data, tpl)[:n], tpl.id


def child(args: argparse.Namespace) -> None:
    """One mode, in this process: prints a JSON line (seconds, peak RSS), saves the vectors as .npy."""
    import numpy as np

    texts, template_id = texts_of(args.dataset, args.n)
    work = Path(args.work)
    cache = work / f"cache-{args.child}"
    t0 = time.perf_counter()
    if args.child == "single":
        from llm4rec.text import encode_cached, get_encoder

        vectors = encode_cached(get_encoder("minilm", threads=2), texts, cache_dir=cache, template_id=template_id)
    elif args.child == "ray":
        from llm4rec.distributed.embed import encode_texts

        vectors = encode_texts(texts, "minilm", template_id=template_id, cache_dir=cache, chunk_size=args.chunk,
                               workers=args.workers, address=args.address)
    else:
        import pyarrow as pa
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        from llm4rec.distributed.embed import EMBEDDING_COLUMN, embed_parquet

        source = work / "texts.parquet"
        pq.write_table(pa.table({"row": pa.array(range(len(texts)), pa.int64()), "text": texts}), source)
        t0 = time.perf_counter()
        embed_parquet(source, work / "parquet-out", "minilm", text_column="text", template_id=template_id,
                      id_column="row", cache_dir=cache, chunk_size=args.chunk, workers=args.workers,
                      address=args.address)
        table = pads.dataset(str(work / "parquet-out"), format="parquet").to_table().sort_by("row")
        vectors = table.column(EMBEDDING_COLUMN).combine_chunks().flatten().to_numpy().reshape(len(texts), -1)
    seconds = time.perf_counter() - t0
    np.save(work / f"{args.child}.npy", vectors, allow_pickle=False)
    print(json.dumps({"seconds": round(seconds, 1), "items_per_second": round(len(texts) / seconds, 1),
                      "driver_peak_rss_mib": round(_vm_hwm_mib() or 0)}))


class WorkerPeaks:
    """Samples the VmHWM of every ``ray::MapWorker`` process (the encoder actors) started after it, until
    stopped."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        before = {p.pid for p in psutil.process_iter()}  # actors of an earlier run still exiting are not ours
        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if proc.info["pid"] in before or "MapWorker" not in " ".join(proc.info["cmdline"] or []):
                        continue
                except psutil.Error:
                    continue
                mib = _vm_hwm_mib(proc.info["pid"])
                if mib is not None:
                    self.peaks[proc.info["pid"]] = max(mib, self.peaks.get(proc.info["pid"], 0.0))
            time.sleep(0.1)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_child(args: argparse.Namespace, mode: str, work: Path, address: str | None = None) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, __file__, "--child", mode, "--work", str(work), "--n", str(args.n), "--dataset",
               args.dataset, "--workers", str(args.workers), "--chunk", str(args.chunk)]
    if address:
        command += ["--address", address]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--n", type=int, default=3000, help="item texts to encode (the first N)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024, help="texts per pipeline batch")
    ap.add_argument("--modes", default="single,ray,parquet")
    ap.add_argument("--child", choices=["single", "ray", "parquet"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if args.child:
        child(args)
        return
    import numpy as np

    from llm4rec.distributed.cluster import LocalCluster

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n = len(texts_of(args.dataset, args.n)[0])
        if "single" in modes:
            results["single_process"] = {"setup": "one process, torch on 2 threads",
                                         **run_child(args, "single", work)}
        distributed = [m for m in modes if m != "single"]
        if distributed:
            t0 = time.perf_counter()
            with LocalCluster(workers=args.workers, cpus_per_worker=1) as cluster:
                start_s = time.perf_counter() - t0
                for mode in distributed:
                    with WorkerPeaks() as peaks:
                        result = run_child(args, mode, work, cluster.address)
                    result["worker_peak_rss_mib"] = sorted(round(v) for v in peaks.peaks.values())
                    result["setup"] = (f"LocalCluster: head (0 CPUs) + {args.workers} worker nodes x 1 CPU, "
                                       f"{'encode_texts' if mode == 'ray' else 'embed_parquet'}")
                    result["cluster_start_seconds"] = round(start_s, 1)
                    results[mode] = result
        if "single" in modes:
            reference = np.load(work / "single.npy")
            for mode in distributed:
                got = np.load(work / f"{mode}.npy")
                results[mode]["max_abs_diff_vs_single"] = float(np.abs(got - reference).max())
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
              "date": time.strftime("%Y-%m-%d"), "dataset": args.dataset, "items": n, "encoder": "minilm",
              "chunk": args.chunk, **results,
              "command": f"flock /tmp/llm4rec-bench.lock python bench/ray_embed.py --n {args.n} --dataset "
                         f"{args.dataset} --workers {args.workers} --chunk {args.chunk} --modes {args.modes}"}
    merged = json.loads(OUT.read_text()) if OUT.exists() else {}
    merged[f"{args.dataset}-{n}"] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
