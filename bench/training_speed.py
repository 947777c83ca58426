"""Training speed of ``sasrec`` and ``llm-two-tower`` on Amazon Beauty (issue #14): seconds per epoch before
and after the change, in one run, and the test accuracy after the same number of epochs.

For each model, two fits on the fit set of P-LOO's test stage, with the default settings but ``epochs=K``
(early stopping as configured), each in its own process:

- ``before``: this checkout's ``src`` with the files the change touched (:data:`CHANGED`) as they are at
  ``--before`` (a git revision: the last commit without the change; HEAD while it is uncommitted);
- ``after``: this checkout's ``src``.

Reported per model and version: seconds per epoch of training and of validation (NDCG@10 of every user's
last fit item, with the early-stopping bookkeeping), wall clock and process CPU time (CPU time is less
disturbed by other programs on the machine), epochs per second, where a training epoch's time goes (batch
building with negative sampling, forward + loss, backward, optimiser step, the rest) and a validation's
(scoring, ranking), and the test NDCG@10 / HR@10 of the fitted model with the paired test over users
(:func:`llm4rec.evaluation.significance.paired_test`, after - before). Bundle check: the model fitted by
the ``before`` code is saved, loaded by the current code and evaluated again (the test metrics, and the
largest score difference over the first 1,000 test users).

    flock /tmp/llm4rec-bench.lock python bench/training_speed.py          # about 20 minutes on 2 loaded cores
    flock /tmp/llm4rec-bench.lock python bench/training_speed.py --models sasrec --epochs sasrec=3

Writes bench/results/training_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "training_speed.json"

#: the files of the change (training speed, issue #14); ``before`` takes them from ``--before``
CHANGED = ("src/llm4rec/models/sasrec.py", "src/llm4rec/nn/__init__.py", "src/llm4rec/nn/losses.py",
           "src/llm4rec/nn/two_tower_net.py", "src/llm4rec/training/loop.py")
#: test users whose score rows the bundle check compares
CHECK_USERS = 1000


# ------------------------------------------------------------------------------------------- the worker
def worker(spec: dict) -> dict:
    """One fit (``spec["model"]``, ``spec["epochs"]``) and its test evaluation with the llm4rec on the path, or
    (``spec["load"]``) the evaluation of a saved model; per-user metrics go to ``spec["out"]``."""
    import torch

    import llm4rec
    import llm4rec.models.sasrec as sasrec
    import llm4rec.models.two_tower as two_tower
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation import evaluate
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.models import Recommender
    from llm4rec.training import Callback

    ds = load_dataset(DATA / "amazon-beauty")
    split = make_split(ds, "loo")
    out = Path(spec["out"])
    if spec.get("load"):
        model = Recommender.load(spec["load"])
        result = evaluate(model, split.stage("test"))
        _keep(out, result, model.score_indices(result.users[:CHECK_USERS]))
        return {"metrics": _metrics(result), "llm4rec": llm4rec.__file__}

    split_now: dict[str, float] = {}

    def timed(name, fn):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                split_now[name] = split_now.get(name, 0.0) + time.perf_counter() - start
        return wrapped

    for module in (sasrec, two_tower):
        module._Task.batch = timed("batch", module._Task.batch)
        module._Task.loss = timed("forward_loss", module._Task.loss)
        module._Task.score = timed("valid_scoring", module._Task.score)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.optim.Adam.step = timed("optimizer", torch.optim.Adam.step)

    class Clock(Callback):
        """Per epoch: wall and CPU seconds of training (to the last batch) and of validation (the rest)."""

        def on_train_begin(self, state):
            self.mark, self.steps, self.rows = _now(), 0, []
            split_now.clear()

        def on_batch_end(self, state, loss):
            self.steps += 1
            if self.steps == state.batches_per_epoch:
                self.trained = _now()
                self.split = dict(split_now)
                split_now.clear()

        def on_epoch_end(self, state, record):
            now = _now()
            train = [b - a for a, b in zip(self.mark, self.trained)]
            split = {k: round(v, 3) for k, v in self.split.items()}
            split["other"] = round(train[0] - sum(self.split.values()), 3)
            split["valid_scoring"] = round(split_now.pop("valid_scoring", 0.0), 3)
            split["valid_ranking"] = round(now[0] - self.trained[0] - split["valid_scoring"], 3)
            self.rows.append({**{k: v for k, v in record.items() if k != "seconds"},
                              "train_seconds": round(train[0], 3), "valid_seconds": round(now[0] - self.trained[0], 3),
                              "train_cpu_seconds": round(train[1], 3),
                              "valid_cpu_seconds": round(now[1] - self.trained[1], 3), "split_seconds": split})
            self.mark, self.steps = now, 0
            split_now.clear()
            return False

    clock = Clock()
    exp = run_experiment(ds, spec["model"], protocol="loo", settings={"epochs": spec["epochs"]}, stage="test",
                         split=split, callbacks=[clock])
    model, result = exp.model, exp.result
    _keep(out, result, model.score_indices(result.users[:CHECK_USERS]))
    if spec.get("save"):
        model.save(spec["save"])
    summary = model.train_summary_
    return {"metrics": _metrics(result), "fit_seconds": exp.record["fit_seconds"],
            "eval_seconds": exp.record["eval_seconds"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "epochs": clock.rows, "llm4rec": llm4rec.__file__,
            "torch": torch.__version__, "torch_threads_training": 1}


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _metrics(result) -> dict[str, float]:
    return {k: round(float(result.metrics[k]), 6) for k in ("NDCG@10", "HR@10")}


def _keep(out: Path, result, scores: np.ndarray) -> None:
    np.savez(out, users=result.users, ndcg=result.per_user["NDCG@10"], hr=result.per_user["HR@10"],
             scores=scores)


# ------------------------------------------------------------------------------------------- the driver
def before_tree(rev: str, where: Path) -> Path:
    """``src`` as it was before the change: this checkout's, with :data:`CHANGED` taken from ``rev``."""
    src = where / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    same = True
    for path in CHANGED:
        old = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
        same &= old == (ROOT / path).read_bytes()
        (where / path).write_bytes(old)
    if same:
        raise SystemExit(f"the changed files are the same at {rev} as in the checkout: pass --before with the "
                         "last commit without the change")
    return src


def run_worker(src: Path, spec: dict) -> dict:
    """:func:`worker` in a fresh process with ``src`` first on the path; the load averages around it."""
    env = {**os.environ, "PYTHONPATH": str(src), "OPENBLAS_NUM_THREADS": "1"}
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"worker {spec} failed:\n{proc.stderr[-4000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**record, "wall_seconds": round(time.perf_counter() - start, 1), "load_average_before": load,
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def summarise(record: dict) -> dict:
    """Per-epoch means (and medians) of one fit's clock rows."""
    rows = record["epochs"]

    def mean(key):
        return round(statistics.fmean(r[key] for r in rows), 3)

    out = {key: mean(key) for key in ("train_seconds", "valid_seconds", "train_cpu_seconds", "valid_cpu_seconds")}
    out["median_train_seconds"] = round(statistics.median(r["train_seconds"] for r in rows), 3)
    out["epochs_per_second"] = round(1 / (out["train_seconds"] + out["valid_seconds"]), 5)
    out["epochs_per_second_cpu"] = round(1 / (out["train_cpu_seconds"] + out["valid_cpu_seconds"]), 5)
    out["split_seconds"] = {k: round(statistics.fmean(r["split_seconds"][k] for r in rows), 3)
                            for k in rows[0]["split_seconds"]}
    return out


def compare(model: str, epochs: int, src: dict[str, Path], work: Path) -> dict:
    """Both fits of ``model``, the paired test of their test metrics and the bundle check."""
    from llm4rec.evaluation.significance import paired_test

    runs = {}
    for version in ("before", "after"):
        spec = {"model": model, "epochs": epochs, "out": str(work / f"{model}-{version}.npz")}
        if version == "before":
            spec["save"] = str(work / f"{model}-before-model")
        runs[version] = run_worker(src[version], spec)
        print(f"{model} {version}: {summarise(runs[version])} {runs[version]['metrics']}", flush=True)
    check = run_worker(src["after"], {"load": str(work / f"{model}-before-model"),
                                      "out": str(work / f"{model}-loaded.npz")})
    per_user = {v: np.load(work / f"{model}-{v}.npz") for v in ("before", "after", "loaded")}
    assert all(np.array_equal(per_user["before"]["users"], per_user[v]["users"]) for v in ("after", "loaded"))
    tests = {}
    for key, name in (("ndcg", "NDCG@10"), ("hr", "HR@10")):
        t = paired_test(per_user["after"][key], per_user["before"][key])
        tests[name] = {"n_users": t.n, "before": round(t.mean_b, 6), "after": round(t.mean_a, 6),
                       "diff": round(t.mean_diff, 6), "relative": round(t.mean_diff / t.mean_b, 4),
                       "ci95": [round(t.ci_low, 6), round(t.ci_high, 6)], "t_p": round(t.t_pvalue, 4),
                       "wilcoxon_p": round(t.wilcoxon_pvalue, 4), "ci_excludes_0": bool(t.ci_low > 0 or t.ci_high < 0)}
    before, after = summarise(runs["before"]), summarise(runs["after"])
    speedup = {key: round(before[key] / after[key], 2) for key in
               ("train_seconds", "valid_seconds", "train_cpu_seconds", "valid_cpu_seconds")}
    speedup["epoch"] = round(after["epochs_per_second"] / before["epochs_per_second"], 2)
    speedup["epoch_cpu"] = round(after["epochs_per_second_cpu"] / before["epochs_per_second_cpu"], 2)
    diff = np.abs(per_user["loaded"]["scores"] - per_user["before"]["scores"])
    bundle = {"metrics_saved_before": runs["before"]["metrics"], "metrics_loaded_now": check["metrics"],
              "same_metrics": runs["before"]["metrics"] == check["metrics"],
              "per_user_ndcg_equal": bool(np.array_equal(per_user["loaded"]["ndcg"], per_user["before"]["ndcg"])),
              "max_abs_score_diff": float(diff.max()),
              "max_abs_score": float(np.abs(per_user["before"]["scores"]).max())}
    return {"epochs": epochs, "before": {**before, **runs["before"]}, "after": {**after, **runs["after"]},
            "speedup": speedup, "paired_test": tests, "bundle_check": bundle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="sasrec,llm-two-tower")
    ap.add_argument("--epochs", default="sasrec=10,llm-two-tower=3", help="MODEL=K,... epochs of each fit")
    ap.add_argument("--before", default="HEAD", help="git revision of the code before the change")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    epochs = {k: int(v) for k, v in (p.split("=") for p in args.epochs.split(","))}
    rev = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {"date": date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
               "before_revision": rev, "changed_files": list(CHANGED), "dataset": "amazon-beauty",
               "protocol": "P-LOO, test stage (fit on its fit set, early stopping on its last items)",
               "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
               "uptime_start": uptime, "models": {}}
    with tempfile.TemporaryDirectory(prefix="training-speed-") as tmp:
        work = Path(tmp)
        src = {"before": before_tree(rev, work / "before"), "after": ROOT / "src"}
        for model in args.models.split(","):
            results["models"][model] = compare(model, epochs[model], src, work)
            print(json.dumps({model: {k: results["models"][model][k] for k in ("speedup", "paired_test",
                                                                                "bundle_check")}}, indent=1),
                  flush=True)
    results["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
