"""Scale curves (issue #15): time and peak memory against data size, one process against Ray with 2 workers.

Sizes (``--sizes``, generated once by :func:`llm4rec.data.scale.generate_scale` into ``--work``, default
/tmp/llm4rec-scale, reused when there): 1M interactions x 100k items, 10M x 1M, 30M x 1M. Every step runs
in a fresh child process (``--child STEP``) under a wall-clock ``--timeout`` (default 900 s):

=================  ====================================================================================
step               what is timed (``seconds``); load and split in the same child are reported apart
=================  ====================================================================================
load               ``load_dataset`` + ``make_split(loo)`` + its test stage
als                ALS (implicit, 64 factors, 3 iterations) fitted on the test stage's fit set; saved
eval               full-ranking P-LOO test evaluation of that ALS on a seeded sample of ``--eval-users``
batch-single       top-10 of ``--batch-users`` sampled users: ``llm4rec.batch.recommend_to_file``
batch-ray          the same with ``recommend_ray`` on a LocalCluster (head + 2 worker nodes x 1 CPU)
embed-single       MiniLM on ``--embed-n`` sampled item texts: ``encode_cached`` (torch on 2 threads)
embed-ray          the same with ``distributed.embed.encode_texts`` on the LocalCluster (2 actors x 1 CPU)
sasrec-single      one epoch of sasrec (sampled softmax, 256 negatives; no validation), torch on 2 threads
sasrec-ray         the same epoch with ``fit_distributed`` (Ray Train, 2 workers x 1 CPU, gloo); with
                   ``--sasrec-users N`` both fit the first N users only (the whole item table) and the
                   epoch is extrapolated to all users
split-single       the sharded P-LOO split (``llm4rec.data.shards.split_to_shards``, ``--shards``) in one process
split-ray          the same with ``llm4rec.distributed.split.split_ray`` on the LocalCluster; byte-compared
ease               EASE at ``--ease-items`` item counts (1M interactions each) to anchor its memory
                   formula; it is *not run* where the predicted peak exceeds the machine's memory
=================  ====================================================================================

Ray steps start their own LocalCluster inside the child (``cluster_start_seconds``, not in ``seconds``).

Memory. ``peak_mib`` of a single-process step is the child's VmHWM (the kernel's high-water mark). For a
Ray step the parent polls every process of the child's tree (driver, GCS, raylets, object store and the
``ray::`` worker processes) every 0.25 s: ``peak_mib`` is the largest sum of their PSS seen (proportional
set size, so the shared object-store pages are not counted twice; a sampled value), ``worker_peak_mib``
the VmHWM of each ``ray::`` worker process (exact per process) and ``driver_peak_mib`` the child's VmHWM.
A child is also stopped when the machine's available memory drops under ``--min-free`` (the machine is
shared): status ``oom-guard``.

Memory caps (``--cap-gib C``): a single-process step runs inside a memory cgroup (v1) of C GiB, a Ray step
puts each worker node (its raylet and every process it starts) in a cgroup of its own of C GiB while the
driver and the head stay outside: "machines" of C GiB. Results are stored as ``STEP-capC``; a child the
kernel kills there is reported ``killed (SIGKILL: out of memory?)`` with the cgroup's ``failcnt``. Needs root.

Embedding is measured on a sample and extrapolated linearly to the whole catalogue
(``extrapolated_full_seconds``, marked ``extrapolated``). EASE's memory and time at 100k and 1M items
are predicted from the anchors (peak = a + b I^2, time = c I^3) and marked ``predicted``.

    flock /tmp/llm4rec-bench.lock python bench/scale_curves.py [--sizes 1M,10M,30M] [--steps all]

Writes (merges into) bench/results/scale_curves.json and draws bench/results/scale_curves.png.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "scale_curves.json"
PNG = ROOT / "bench" / "results" / "scale_curves.png"
SIZES = {"1M": (1_000_000, 100_000), "10M": (10_000_000, 1_000_000), "30M": (30_000_000, 1_000_000)}
STEPS = ("load", "als", "eval", "batch-single", "batch-ray", "embed-single", "embed-ray", "sasrec-single",
         "sasrec-ray", "split-single", "split-ray")
CGROUPS = Path("/sys/fs/cgroup/memory")
EASE_INTERACTIONS = 1_000_000
ALS = {"factors": 64, "iterations": 3, "seed": 2026}
SASREC = {"epochs": 1, "valid": "none", "loss": "softmax", "negatives": 256, "seed": 2026}
SEED = 2026
MIB = 2 ** 20


# =========================================================================== children
def _hwm_mib(pid: int | str = "self") -> float | None:
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def _split(data_dir: Path) -> tuple[object, object, dict]:
    from llm4rec.data import load_dataset, make_split

    t0 = time.perf_counter()
    data = load_dataset(data_dir)
    t1 = time.perf_counter()
    stage = make_split(data, "loo", seed=SEED).stage("test")
    t2 = time.perf_counter()
    return data, stage, {"load_seconds": round(t1 - t0, 2), "split_seconds": round(t2 - t1, 2)}


def _cluster(cap_gib: float | None = None):
    from llm4rec.distributed.cluster import LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(workers=2, cpus_per_worker=1).start()
    if cap_gib:
        cap_nodes(cluster, cap_gib)
    return cluster, round(time.perf_counter() - t0, 2)


def cgroup(name: str, cap_gib: float) -> Path:
    """A memory cgroup (v1) of ``cap_gib`` GiB (created, or reset when it exists)."""
    path = CGROUPS / name
    path.mkdir(exist_ok=True)
    try:
        (path / "memory.move_charge_at_immigrate").write_text("3")  # what a moved process holds moves too
    except OSError:
        pass  # not on this kernel: a moved raylet's earlier pages stay charged outside (small: moved at start)
    (path / "memory.limit_in_bytes").write_text(str(int(cap_gib * 2 ** 30)))
    for counter in ("memory.max_usage_in_bytes", "memory.failcnt"):
        (path / counter).write_text("0")
    return path


def cap_nodes(cluster, cap_gib: float) -> None:
    """Move each worker node's raylet and its descendants into a cgroup of its own (``llm4rec-bench-nodeK``);
    the processes it starts later are born there."""
    import psutil

    for k, node in enumerate(cluster._nodes):
        path = cgroup(f"llm4rec-bench-node{k}", cap_gib)
        for info in node.all_processes.get("raylet", []):
            root = psutil.Process(info.process.pid)
            for proc in [root, *root.children(recursive=True)]:
                (path / "cgroup.procs").write_text(str(proc.pid))


def cgroup_report(names: list[str]) -> dict:
    out = {}
    for name in names:
        path = CGROUPS / name
        if path.exists():
            out[name] = {"max_usage_mib": round(int((path / "memory.max_usage_in_bytes").read_text()) / MIB),
                         "failcnt": int((path / "memory.failcnt").read_text())}
    return out


def _texts(data_dir: Path, n: int) -> list[str]:
    """``n`` seeded-sample item texts rendered as the default template of this dataset's columns renders them."""
    import numpy as np
    import polars as pl

    from llm4rec.text import table_texts

    items = pl.read_parquet(data_dir / "items.parquet")
    rows = np.sort(np.random.default_rng(SEED).choice(items.height, size=min(n, items.height), replace=False))
    return table_texts(items[rows], "{title}. Category: {category}. {description}")


def child(args: argparse.Namespace) -> dict:
    import numpy as np

    step, data_dir, work = args.child, Path(args.data), Path(args.step_work)
    out: dict = {}
    if step == "load":
        t0 = time.perf_counter()
        data, stage, out = _split(data_dir)
        out.update(seconds=round(time.perf_counter() - t0, 2), users=data.n_users, items=data.n_items,
                   interactions=data.n_interactions, eval_users=len(stage.users))
    elif step in ("als", "ease"):
        from llm4rec.models import create_model

        data, stage, out = _split(data_dir)
        t0 = time.perf_counter()
        model = create_model(step, ALS if step == "als" else {}).fit(stage.fit)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        if step == "als":
            target = work / "als"
            shutil.rmtree(target, ignore_errors=True)
            model.save(target)
            users = np.asarray(model.users_.tokens, dtype=object)
            pick = np.sort(np.random.default_rng(SEED).choice(len(users), min(args.batch_users, len(users)),
                                                              replace=False))
            (work / "users.txt").write_text("\n".join(users[pick]) + "\n")
        out["items"] = data.n_items
    elif step == "eval":
        import dataclasses

        from llm4rec.evaluation.evaluator import evaluate
        from llm4rec.models import Recommender

        data, stage, out = _split(data_dir)
        model = Recommender.load(work / "als")
        users = np.sort(np.random.default_rng(SEED).choice(stage.users, min(args.eval_users, len(stage.users)),
                                                           replace=False))
        sample = dataclasses.replace(stage, users=users)
        t0 = time.perf_counter()
        result = evaluate(model, sample)
        out.update(seconds=round(time.perf_counter() - t0, 2), users_evaluated=len(users),
                   users_per_second=round(len(users) / (time.perf_counter() - t0), 1),
                   ndcg10=round(result.metrics["NDCG@10"], 5), hr10=round(result.metrics["HR@10"], 5))
        truth = json.loads((data_dir / "truth.json").read_text())["reference"]
        out["reference_ndcg10"] = {k: round(truth[k]["NDCG@10"], 4) for k in ("oracle", "popularity")}
    elif step.startswith("batch-"):
        from llm4rec import batch
        from llm4rec.models import Recommender

        users_file = work / "users.txt"
        dest = work / (f"{step}.parquet" if args.batch_block == "1024" else f"{step}-block{args.batch_block}.parquet")
        block = int(args.batch_block) if args.batch_block != "auto" else batch.auto_block(
            json.loads((data_dir / "truth.json").read_text())["n_items"])
        out["block_used"] = block
        dest.unlink(missing_ok=True)
        t0 = time.perf_counter()
        if step == "batch-single":
            model = Recommender.load(work / "als")
            n, blocks = batch.users_from_file(model, users_file, block)
            rows = batch.recommend_to_file(model, blocks, dest, k=10)
            seconds = time.perf_counter() - t0
        else:
            from llm4rec.distributed.batch import Requests, recommend_ray

            cluster, out["cluster_start_seconds"] = _cluster()
            try:
                t0 = time.perf_counter()
                rows = recommend_ray(work / "als", Requests("users", users_file), dest, 10, workers=2,
                                     block=block, address=cluster.address)
                seconds = time.perf_counter() - t0
            finally:
                cluster.stop()
            n = rows // 10
        out.update(seconds=round(seconds, 2), requests=n, rows=rows)
        other = dest.with_name(dest.name.replace("batch-ray", "batch-single"))
        if step == "batch-ray" and other.exists():
            out["identical_to_single"] = other.read_bytes() == dest.read_bytes()
    elif step.startswith("embed-"):
        texts = _texts(data_dir, args.embed_n)
        cache = work / f"cache-{step}"
        shutil.rmtree(cache, ignore_errors=True)
        if step == "embed-single":
            from llm4rec.text import encode_cached, get_encoder

            t0 = time.perf_counter()
            vectors = encode_cached(get_encoder("minilm", threads=2), texts, cache_dir=cache)
            out["seconds"] = round(time.perf_counter() - t0, 2)
        else:
            from llm4rec.distributed.embed import encode_texts

            cluster, out["cluster_start_seconds"] = _cluster()
            try:
                t0 = time.perf_counter()
                vectors = encode_texts(texts, "minilm", cache_dir=cache, workers=2, address=cluster.address)
                out["seconds"] = round(time.perf_counter() - t0, 2)
            finally:
                cluster.stop()
        np.save(work / f"{step}.npy", vectors)
        other = work / "embed-single.npy"
        if step == "embed-ray" and other.exists():
            out["max_abs_diff_vs_single"] = float(np.abs(np.load(other) - vectors).max())
        shutil.rmtree(cache, ignore_errors=True)
        out["texts"] = len(texts)
        out["items_per_second"] = round(len(texts) / out["seconds"], 1)
    elif step.startswith("sasrec-"):
        from llm4rec.models import create_model

        data, stage, out = _split(data_dir)
        fit = stage.fit
        if args.sasrec_users:  # the first N users, the whole item table: steps at full catalogue size
            fit = fit.subset(fit.user < args.sasrec_users)
            out.update(users_fitted=int(min(args.sasrec_users, fit.n_users)), users_all=int(stage.fit.n_users))
        if step == "sasrec-single":
            t0 = time.perf_counter()
            model = create_model("sasrec", {**SASREC, "threads": 2}).fit(fit)
            out["seconds"] = round(time.perf_counter() - t0, 2)
        else:
            from llm4rec.distributed.train import fit_distributed

            os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
            cluster, out["cluster_start_seconds"] = _cluster()
            try:
                t0 = time.perf_counter()
                model = fit_distributed(create_model("sasrec", SASREC), fit, workers=2, address=cluster.address)
                out["seconds"] = round(time.perf_counter() - t0, 2)
            finally:
                cluster.stop()
        out["epoch_seconds"] = round(sum(r["seconds"] for r in model.training_history_), 2)
        if args.sasrec_users:
            out["extrapolated_epoch_seconds"] = round(out["epoch_seconds"] * out["users_all"] / out["users_fitted"])
            out["extrapolated"] = "epoch x all users / users fitted (steps are linear in users)"
    elif step.startswith("split-"):
        dest = work / (f"shards-{step}" + (f"-cap{args.cap_gib:g}" if args.cap_gib else ""))
        shutil.rmtree(dest, ignore_errors=True)
        if step == "split-single":
            from llm4rec.data.shards import split_to_shards

            t0 = time.perf_counter()
            manifest = split_to_shards(data_dir, dest, args.shards)
            out["seconds"] = round(time.perf_counter() - t0, 2)
        else:
            from llm4rec.distributed.split import split_ray

            cluster, out["cluster_start_seconds"] = _cluster(args.cap_gib)
            try:
                t0 = time.perf_counter()
                manifest = split_ray(data_dir, dest, args.shards, address=cluster.address)
                out["seconds"] = round(time.perf_counter() - t0, 2)
            finally:
                cluster.stop()
            out["node_cgroups"] = cgroup_report(["llm4rec-bench-node0", "llm4rec-bench-node1"]) \
                if args.cap_gib else None
            others = sorted(work.glob("shards-split-single*"))
            if others:
                names = [f"shard-{s:05d}.parquet" for s in range(args.shards)] + ["items.parquet"]
                out["identical_to_single"] = all((others[0] / n).read_bytes() == (dest / n).read_bytes()
                                                 for n in names)
                out["compared_with"] = others[0].name
        from llm4rec.data.shards import open_source

        out.update(shards=args.shards, reads=len(open_source(data_dir).reads), total=manifest["total"])
    else:
        raise SystemExit(f"unknown step {step}")
    out["driver_peak_mib"] = round(_hwm_mib() or 0)
    return out


# =========================================================================== parent: run and measure a child
class TreeMonitor:
    """Polls a process and its descendants: VmHWM per process, the largest PSS sum of the tree, and the
    machine's available memory (stops the tree when it drops under ``min_free``)."""

    def __init__(self, pid: int, min_free_bytes: int, interval: float = 0.25) -> None:
        self.pid, self.min_free, self.interval = pid, min_free_bytes, interval
        self.hwm: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.pss_peak = 0.0
        self.pids: set[int] = set()
        self.guard_tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0.0
            for p in procs:
                self.pids.add(p.pid)
                try:
                    name = " ".join(p.cmdline())[:80]  # idle workers rename themselves when they get work
                    known = self.names.get(p.pid, "")
                    if name and (not known.startswith("ray::") or known.startswith("ray::IDLE")):
                        self.names[p.pid] = name
                    total += p.memory_full_info().pss / MIB
                except psutil.Error:
                    continue
                mib = _hwm_mib(p.pid)
                if mib is not None:
                    self.hwm[p.pid] = max(mib, self.hwm.get(p.pid, 0.0))
            self.pss_peak = max(self.pss_peak, total)
            if psutil.virtual_memory().available < self.min_free:
                self.guard_tripped = True
                kill_tree(self.pids)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def workers(self) -> tuple[list[int], list[list]]:
        """(VmHWM of the worker processes that did work, [name, VmHWM] of every ``ray::`` process)."""
        ray = sorted(([self.names[p].split()[0], round(v)] for p, v in self.hwm.items()
                      if self.names.get(p, "").startswith("ray::")), key=lambda x: -x[1])
        busy = [mib for name, mib in ray if name not in ("ray::IDLE",) and "Agent" not in name]
        return busy, ray


def kill_tree(pids: set[int]) -> None:
    """SIGKILL these processes (this run's child and the processes it started), one id at a time."""
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def run_step(step: str, data_dir: Path, step_work: Path, args: argparse.Namespace, timeout: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, __file__, "--child", step, "--data", str(data_dir), "--step-work", str(step_work),
               "--eval-users", str(args.eval_users), "--batch-users", str(args.batch_users),
               "--embed-n", str(args.embed_n), "--batch-block", str(args.batch_block), "--shards", str(args.shards),
               "--sasrec-users", str(args.sasrec_users or 0)]
    ray_step = step.endswith("-ray")
    capped = None
    if args.cap_gib:
        command += ["--cap-gib", str(args.cap_gib)]
        if not ray_step:  # the child joins its cgroup, then becomes python (same pid)
            capped = cgroup("llm4rec-bench-child", args.cap_gib)
            command = ["sh", "-c", f'echo $$ > {capped}/cgroup.procs && exec "$0" "$@"', *command]
    step_work.mkdir(parents=True, exist_ok=True)
    log = step_work / f"{step}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {data_dir.name} {step} ...", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as stream:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stream, text=True, env=env,
                                start_new_session=True)
        with TreeMonitor(proc.pid, int(args.min_free * 2 ** 30)) as monitor:
            try:
                stdout, _ = proc.communicate(timeout=timeout)
                status = "ok" if proc.returncode == 0 else "error"
            except subprocess.TimeoutExpired:
                kill_tree(monitor.pids | {proc.pid})
                stdout, _ = proc.communicate()
                status = "timeout"
    wall = time.perf_counter() - t0
    if monitor.guard_tripped:
        status = "oom-guard"
    elif status == "error" and proc.returncode in (-9, 137):
        status = "killed (SIGKILL: out of memory?)"
    result: dict = {"status": status, "wall_seconds": round(wall, 1)}
    if status == "ok":
        result.update(json.loads(stdout.strip().splitlines()[-1]))
    else:
        result["error"] = log.read_text()[-1500:]
        if status == "timeout":
            result["seconds"] = None
    if capped is not None:
        result["cgroup"] = cgroup_report(["llm4rec-bench-child"])["llm4rec-bench-child"]
    result["peak_mib"] = round(monitor.pss_peak) if ray_step else round(
        max(result.get("driver_peak_mib") or 0, monitor.hwm.get(proc.pid, 0.0)))
    if ray_step:
        result["worker_peak_mib"], result["ray_process_peaks_mib"] = monitor.workers()
        result["peak_how"] = "largest sampled PSS sum of the child's process tree (driver + cluster), 0.25 s"
        result["driver_peak_mib"] = round(max(result.get("driver_peak_mib") or 0, monitor.hwm.get(proc.pid, 0.0)))
    else:
        result["peak_how"] = "VmHWM of the child"
    print(f"    {status} seconds={result.get('seconds')} peak={result['peak_mib']} MiB "
          f"(wall {wall:.0f} s)", flush=True)
    return result


# =========================================================================== parent: sizes, EASE, plot
def dataset_dir(work: Path, interactions: int, items: int) -> tuple[Path, dict]:
    from llm4rec.data.scale import generate_scale

    path = work / f"ds-{interactions}x{items}"
    if (path / "truth.json").exists():
        return path, {"reused": True}
    t0 = time.perf_counter()
    generate_scale(path, interactions, items, progress=False, overwrite=path.exists())
    return path, {"reused": False, "seconds": round(time.perf_counter() - t0, 1)}


def ease_part(args: argparse.Namespace, work: Path, machine_gib: float, previous: dict) -> dict:
    import numpy as np

    anchors = [a for a in previous.get("anchors", []) if a.get("status") == "ok"] if args.reuse_ease else []
    done = {a["items"] for a in anchors}
    for items in [int(x) for x in args.ease_items.split(",") if x]:
        if items in done:
            continue
        ok = [a for a in anchors if a.get("status") == "ok"]
        if ok:  # skip a size whose predicted time or memory will not fit
            biggest = max(ok, key=lambda a: a["items"])
            t_pred = biggest["seconds"] * (items / biggest["items"]) ** 3
            m_pred = biggest["peak_mib"] * (items / biggest["items"]) ** 2 / 1024
            if t_pred > args.timeout or m_pred > machine_gib - args.min_free:
                anchors.append({"items": items, "status": "skipped", "predicted_seconds": round(t_pred),
                                "predicted_gib": round(m_pred, 1)})
                continue
        path, gen = dataset_dir(work, EASE_INTERACTIONS, items)
        r = run_step("ease", path, work / "steps" / path.name, args, args.timeout)
        anchors.append({"items": items, "interactions": EASE_INTERACTIONS, **r})
    ok = sorted((a for a in anchors if a.get("status") == "ok"), key=lambda a: a["items"])
    out: dict = {"anchors": anchors, "settings": "EASE l2=200, fit on the P-LOO test stage's fit set of a generated "
                                                "set of 1M interactions"}
    if len(ok) >= 2:
        i = np.array([a["items"] for a in ok], float)
        peak = np.array([a["peak_mib"] for a in ok], float)
        secs = np.array([a["seconds"] for a in ok], float)
        b, a0 = np.polyfit(i ** 2, peak, 1)  # peak MiB = a0 + b I^2
        c = float(np.exp(np.mean(np.log(secs / i ** 3))))  # seconds = c I^3 (the Cholesky inverse)
        out["fit"] = {"peak_mib": f"{a0:.0f} + {b * 1e6:.3f}e-6 * items^2 (least squares on the anchors)",
                      "bytes_per_item_pair": round(b * MIB, 2), "seconds": f"{c * 1e12:.3f}e-12 * items^3"}
        out["predicted"] = {}
        for items in (100_000, 1_000_000):
            gib = (a0 + b * items ** 2) / 1024
            out["predicted"][str(items)] = {
                "items": items, "predicted_gib": round(gib, 1), "predicted_hours": round(c * items ** 3 / 3600, 1),
                "status": f"predicted {gib:,.0f} GiB > {machine_gib:.0f} GiB: out of memory (not run)"
                if gib > machine_gib else "fits"}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results["sizes"].values(), key=lambda s: s["interactions"])
    fig, axes = plt.subplots(1, 3, figsize=(19, 6.2))
    styles = {"single": "-", "ray": "--"}
    colors = {"load": "tab:gray", "als": "tab:blue", "eval": "tab:orange", "batch": "tab:green",
              "embed": "tab:purple", "sasrec": "tab:red", "split": "tab:olive"}
    extra = sorted({k for s in sizes for k in s["steps"] if k not in STEPS and "-cap" not in k})  # caps: a table
    for step in STEPS + tuple(extra) + ("embed-full-single", "embed-full-ray"):
        family = step.split("-")[0]
        mode = "ray" if "-ray" in step else "single"
        variant = step.split("-")[2] if step.count("-") >= 2 and not step.startswith("embed-full") else ""
        for ax, key in ((axes[0], "seconds"), (axes[1], "peak_mib")):
            xs, ys, bad = [], [], []
            for s in sizes:
                if step.startswith("embed-full"):
                    r = s["steps"].get(f"embed-{mode}")
                    if r is None or r.get("status") != "ok":
                        continue
                    if key == "peak_mib":
                        continue
                    xs.append(s["interactions"])
                    ys.append(r["extrapolated_full_seconds"])
                    continue
                r = s["steps"].get(step)
                if r is None or r.get("status", "").startswith("not run"):
                    continue
                if r.get("status") == "ok":
                    xs.append(s["interactions"])
                    ys.append(r["extrapolated_epoch_seconds"] if key == "seconds" and "-users" in step else r[key])
                else:
                    bad.append((s["interactions"], r))
            if not xs and not bad:
                continue
            label = (f"{family} {mode}" + (" (extrapolated to the full catalogue)" if step.startswith("embed-full")
                                          else f" ({results['settings']['embed_n']} texts)" if family == "embed"
                                          else ""))
            style = ":" if step.startswith("embed-full") else styles[mode]
            if variant:
                label += f" ({variant}: epoch extrapolated)" if variant.startswith("users") else f" ({variant})"
            if xs:
                ax.plot(xs, ys, style, marker="s" if variant else "o", color=colors[family], label=label,
                        alpha=0.6 if variant else 1.0)
            for x, r in bad:
                y = (r.get("wall_seconds") or results["settings"]["timeout"]) if key == "seconds" else r.get("peak_mib")
                if not y:
                    continue
                ax.plot([x], [y], marker="X", markersize=12, color=colors[family], linestyle="none")
                ax.annotate(r["status"].split(" ")[0], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes[0].axhline(results["settings"]["timeout"], color="k", lw=0.6, ls=":")
    axes[0].text(sizes[0]["interactions"], results["settings"]["timeout"] * 1.1, "timeout", fontsize=8)
    machine_mib = results["machine_memory_gib"] * 1024
    for ax in axes[1:]:
        ax.axhline(machine_mib, color="k", lw=0.8, ls=":")
        ax.text(1.05e3 if ax is axes[2] else sizes[0]["interactions"], machine_mib * 1.1,
                f"machine memory {results['machine_memory_gib']:.0f} GiB", fontsize=8)
    labels = ", ".join(f"{s['interactions'] / 1e6:.0f}M x {s['items'] / 1e3:.0f}k items" for s in sizes)
    axes[0].set(xscale="log", yscale="log", xlabel=f"interactions ({labels})", ylabel="seconds",
                title="time (x = timeout or failure)")
    axes[1].set(xscale="log", yscale="log", xlabel="interactions", ylabel="peak MiB",
                title="peak memory (Ray: whole local cluster, PSS sum)")
    ease = results.get("ease", {})
    ok = [a for a in ease.get("anchors", []) if a.get("status") == "ok"]
    if ok:
        axes[2].plot([a["items"] for a in ok], [a["peak_mib"] for a in ok], "-o", color="tab:brown",
                     label="EASE fit peak, measured (1M interactions)")
        pred = list(ease.get("predicted", {}).values())
        if pred:
            xs = [ok[-1]["items"], *[p["items"] for p in pred]]
            ys = [ok[-1]["peak_mib"], *[p["predicted_gib"] * 1024 for p in pred]]
            axes[2].plot(xs, ys, ":", color="tab:brown")
            axes[2].plot(xs[1:], ys[1:], "X", markersize=10, color="tab:brown",
                         label="EASE predicted (a + b items^2): out of memory, not run")
        ax2 = axes[2].twinx()
        ax2.plot([a["items"] for a in ok], [a["seconds"] for a in ok], "-s", color="tab:cyan",
                 label="EASE fit seconds (right axis)")
        ax2.set(yscale="log", ylabel="EASE fit seconds")
        ax2.legend(loc="lower right", fontsize=8)
    axes[2].set(xscale="log", yscale="log", xlabel="items", ylabel="peak MiB", title="EASE (single process only)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"llm4rec scale curves: {results['machine']}, {results['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,10M,30M", help=f"comma list of {', '.join(SIZES)}")
    ap.add_argument("--steps", default="all", help=f"comma list of {', '.join(STEPS)}, ease (or all)")
    ap.add_argument("--sasrec-sizes", default="1M,10M", help="sizes where sasrec runs (elsewhere: predicted)")
    ap.add_argument("--work", default="/tmp/llm4rec-scale")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per child")
    ap.add_argument("--sasrec-timeout", type=int, default=600,
                    help="seconds per sasrec child above the smallest size (the run must fit ~50 min)")
    ap.add_argument("--min-free", type=float, default=1.5, help="GiB the machine must keep available")
    ap.add_argument("--eval-users", type=int, default=10_000)
    ap.add_argument("--batch-users", type=int, default=10_000)
    ap.add_argument("--embed-n", type=int, default=2_000)
    ap.add_argument("--batch-block", default="1024", help="users scored at once (batch steps), or 'auto' for "
                                                          "llm4rec.batch.auto_block(items) (the CLI's default); "
                                                          "results of a value other than 1024 are stored as "
                                                          "STEP-blockN")
    ap.add_argument("--ease-items", default="5000,10000,20000")
    ap.add_argument("--shards", type=int, default=16, help="shards of the split steps")
    ap.add_argument("--sasrec-users", type=int, default=0, help="fit sasrec on the first N users only (the whole "
                                                                "item table) and extrapolate the epoch; results "
                                                                "STEP-usersN")
    ap.add_argument("--cap-gib", type=float, default=None, help="memory cap of each single-process child or Ray "
                                                                "worker node (cgroup v1; root); results STEP-capC")
    ap.add_argument("--reuse-ease", action="store_true", help="keep EASE anchors already in the JSON")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--step-work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    import psutil

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.plot_only:
        plot(results, PNG)
        return
    machine_gib = psutil.virtual_memory().total / 2 ** 30
    steps = list(STEPS) + ["ease"] if args.steps == "all" else [s.strip() for s in args.steps.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    command = "flock /tmp/llm4rec-bench.lock python bench/scale_curves.py " + " ".join(sys.argv[1:])
    results["commands"] = [*[c for c in results.get("commands", []) if c != command], command]
    results.update({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {machine_gib:.1f} GiB RAM (shared with other "
                   f"jobs), Python {sys.version.split()[0]}",
        "machine_memory_gib": round(machine_gib, 1), "date": time.strftime("%Y-%m-%d"),
        "command": results.get("command") or command,
        "settings": {**results.get("settings", {}), "timeout": args.timeout, "eval_users": args.eval_users, "batch_users": args.batch_users,
                     "embed_n": args.embed_n, "als": ALS, "sasrec": SASREC, "k": 10, "protocol": "loo",
                     "ray": "LocalCluster: head (0 CPUs) + 2 worker nodes x 1 CPU, started inside the child",
                     "min_free_gib": args.min_free}})
    results.setdefault("sizes", {})
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]

    def save() -> None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")

    def size_steps(name: str, todo: list[str]) -> None:
        interactions, items = SIZES[name]
        path, gen = dataset_dir(work, interactions, items)
        entry = results["sizes"].setdefault(name, {})
        entry.update({"interactions": interactions, "items": items, "data": str(path)})
        entry.setdefault("generate", gen)
        entry.setdefault("steps", {})
        step_work = work / "steps" / path.name
        for step in todo:
            if step.startswith("sasrec") and name not in args.sasrec_sizes.split(","):
                entry["steps"][step] = {"status": "not run (see --sasrec-sizes)", "seconds": None}
                continue
            if step in ("eval", "batch-single", "batch-ray") and not (step_work / "als").exists():
                entry["steps"][step] = {"status": "skipped: no ALS model", "seconds": None}
                continue
            if step == "sasrec-ray" and not args.sasrec_users:  # predicted from this size's single run and the ray/single ratio below it
                single = entry["steps"].get("sasrec-single", {})
                lower = [results["sizes"][n]["steps"] for n in list(SIZES)[: list(SIZES).index(name)]
                         if results["sizes"].get(n, {}).get("steps", {}).get("sasrec-ray", {}).get("status") == "ok"]
                if single.get("status") == "ok" and lower:
                    ratio = lower[-1]["sasrec-ray"]["seconds"] / lower[-1]["sasrec-single"]["seconds"]
                    predicted = single["seconds"] * ratio
                    if predicted > timeout_of(step, name):
                        entry["steps"][step] = {
                            "status": f"predicted {predicted:.0f} s > {timeout_of(step, name)} s timeout: not run",
                            "seconds": None, "predicted_seconds": round(predicted),
                            "predicted_how": f"this size's single-process epoch x the ray/single ratio "
                                             f"{ratio:.2f} of the size below"}
                        save()
                        continue
            r = run_step(step, path, step_work, args, timeout_of(step, name))
            if step == "load" and r.get("status") == "ok":
                entry["users"] = r["users"]
            if step.startswith("embed") and r.get("status") == "ok":
                rate = r["texts"] / r["seconds"]
                r["extrapolated_full_seconds"] = round(items / rate)
                r["extrapolated"] = f"{items:,} items / {rate:.1f} items/s (linear in items)"
            key = f"{step}-block{args.batch_block}" if step.startswith("batch") and args.batch_block != "1024" else step
            key += f"-cap{args.cap_gib:g}" if args.cap_gib else ""
            key += f"-users{args.sasrec_users}" if args.sasrec_users and step.startswith("sasrec") else ""
            r["block"] = args.batch_block if step.startswith("batch") else None
            entry["steps"][key] = r
            save()

    def timeout_of(step: str, name: str) -> int:
        return min(args.timeout, args.sasrec_timeout) if step.startswith("sasrec") and name != list(SIZES)[0] \
            else args.timeout

    for name in names:
        size_steps(name, [s for s in steps if s != "ease" and not s.startswith("sasrec")])
    if "ease" in steps:
        results["ease"] = ease_part(args, work, machine_gib, results.get("ease", {}))
        save()
    for name in names:
        size_steps(name, [s for s in steps if s.startswith("sasrec")])
    results["settings"]["sasrec_timeout"] = args.sasrec_timeout
    save()
    plot(results, PNG)
    print(json.dumps({k: results[k] for k in ("machine", "date", "command")}, indent=2))


if __name__ == "__main__":
    main()
