"""Benchmark of a neural model (``llm-two-tower``, ``sasrec``, ``generative``) with its default settings.

For each (dataset, protocol): fit on the ``valid`` stage and evaluate there
(the number the defaults were chosen on), then fit on the ``test`` stage and
evaluate there (the reported number), with the fit time, the time per epoch
and the epoch early stopping kept, and the inference (scoring + ranking) time
per 1,000 users. For ``llm-two-tower``, ``--ratings`` adds the rating mode
(``loss=mse``) on ml-100k P-RAND: RMSE / MAE of the test ratings, beside the
global mean and a regularised user + item bias baseline. ``--dp`` adds a
DP-SGD run (noise multiplier 1) on ml-100k P-LOO with its spent epsilon, and the same small model
without DP.
``--variant KEY=VALUE`` (repeatable) benchmarks other settings, valid stage
only unless ``--test`` is given (tuning never looks at the test stage).
``--decode KEY=V1,V2,...`` re-evaluates the model fitted on the valid stage
with each value of a setting read at scoring time (``generative``'s
``temperature``): the same weights decoded otherwise, e.g. the
accuracy/diversity trade-off (ILD, coverage in ``extra_metrics``).

    python bench/neural.py                                      # llm-two-tower, about 40 min on 2 cores
    python bench/neural.py --datasets ml-100k --protocols loo --ratings
    python bench/neural.py --datasets amazon-beauty --protocols cold --variant history=others
    python bench/neural.py --model sasrec --protocols loo
    python bench/neural.py --model generative --protocols loo --decode temperature=0.5,1,2

Writes (merges into) bench/results/MODEL.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
TWO_TOWER = "llm-two-tower"


def run(model: str, ds, split, protocol: str, stage: str, settings: dict, decode: str | None = None) -> list:
    """The record of one fit, then (``decode``) one per re-decoding of the fitted model."""
    from llm4rec.evaluation import evaluate
    from llm4rec.evaluation.experiment import run_experiment

    exp = run_experiment(ds, model, protocol=protocol, settings=settings, stage=stage, split=split)
    record = exp.record
    record.update(settings=settings, training=exp.model.train_summary_)
    records = [record]
    if decode:
        key, _, values = decode.partition("=")
        fitted = exp.model
        for value in values.split(","):
            fitted.config = fitted.make_config({**fitted.config.model_dump(), key: value})
            result = evaluate(fitted, split.stage(stage))
            records.append({**record, "config": fitted.config.model_dump(mode="json"),
                            "settings": {**settings, key: getattr(fitted.config, key)}, "metrics": result.metrics,
                            "extra_metrics": result.extra, "eval_seconds": round(result.eval_seconds, 4),
                            "decoded": "weights fitted with " + (json.dumps(settings) if settings else "defaults")})
    return records


def bias_baseline(fit, users, items, l2: float = 10.0, sweeps: int = 10) -> np.ndarray:
    """mu + b_u + b_i by alternating regularised least squares (Koren's baseline predictor)."""
    mu = float(fit.rating.mean())
    bu, bi = np.zeros(fit.n_users), np.zeros(fit.n_items)
    for _ in range(sweeps):
        r = fit.rating - mu - bu[fit.user]
        bi = np.bincount(fit.item, r, fit.n_items) / (np.bincount(fit.item, minlength=fit.n_items) + l2)
        r = fit.rating - mu - bi[fit.item]
        bu = np.bincount(fit.user, r, fit.n_users) / (np.bincount(fit.user, minlength=fit.n_users) + l2)
    return mu + bu[users] + bi[items]


def ratings(ds, settings: dict) -> dict:
    """Rating mode on P-RAND (test stage): RMSE / MAE against two simple baselines."""
    from llm4rec.data import make_split
    from llm4rec.models import create_model

    stage = make_split(ds, "rand").stage("test")
    users, items = stage.targets.nonzero()
    truth = np.asarray(ds.matrix("rating")[users, items]).ravel()
    t0 = time.perf_counter()
    model = create_model(TWO_TOWER, {"loss": "mse", **settings}).fit(stage.fit)
    fit_seconds = time.perf_counter() - t0
    preds = {"llm-two-tower (mse)": np.clip(model.predict(users, items), 1, 5),
             "global mean": np.full(len(truth), stage.fit.rating.mean()),
             "user + item biases": np.clip(bias_baseline(stage.fit, users, items), 1, 5)}
    return {"dataset": ds.name, "protocol": "P-RAND", "stage": "test", "task": "rating", "n_ratings": len(truth),
            "settings": {"loss": "mse", **settings}, "fit_seconds": round(fit_seconds, 1),
            "training": model.train_summary_,
            "metrics": {name: {"RMSE": float(np.sqrt(np.mean((p - truth) ** 2))),
                               "MAE": float(np.mean(np.abs(p - truth)))} for name, p in preds.items()}}


def parse_variant(model: str, pairs: list[str]) -> dict:
    from llm4rec.models import model_class

    raw = dict(p.split("=", 1) for p in pairs)
    return model_class(model).make_config(raw).model_dump(include=set(raw))


def main() -> None:
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=TWO_TOWER)
    ap.add_argument("--datasets", default="ml-100k,amazon-beauty")
    ap.add_argument("--protocols", default="loo,cold")
    ap.add_argument("--stages", default="valid,test")
    ap.add_argument("--variant", action="append", default=[], help="KEY=VALUE setting (repeatable)")
    ap.add_argument("--test", action="store_true", help="run a variant on the test stage too")
    ap.add_argument("--decode", help="KEY=V1,V2,...: re-evaluate the valid-stage model at each value")
    ap.add_argument("--ratings", action="store_true", help="rating mode (MSE) on ml-100k P-RAND (llm-two-tower)")
    ap.add_argument("--dp", action="store_true", help="DP-SGD run on ml-100k P-LOO (llm-two-tower)")
    ap.add_argument("--out", help="results file (default bench/results/MODEL.json)")
    args = ap.parse_args()
    if (args.ratings or args.dp) and args.model != TWO_TOWER:
        ap.error("--ratings and --dp are benchmarks of llm-two-tower")
    settings = parse_variant(args.model, args.variant)
    stages = args.stages.split(",") if not settings or args.test else ["valid"]
    out = Path(args.out or ROOT / "bench" / "results" / f"{args.model}.json")

    def keep(record: dict) -> None:
        """Merge into the file as it is now (another run may have written it meanwhile)."""
        key = ("task", "dataset", "protocol", "stage", "settings")
        results = json.loads(out.read_text()) if out.exists() else []
        results = [r for r in results if tuple(r.get(k) for k in key) != tuple(record.get(k) for k in key)]
        results.append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    for name in args.datasets.split(","):
        if not args.protocols:
            break
        ds = load_dataset(DATA / name)
        for protocol in args.protocols.split(","):
            split = make_split(ds, protocol)
            for stage in stages:
                for record in run(args.model, ds, split, protocol, stage, settings,
                                  args.decode if stage == "valid" else None):
                    record["task"] = "ranking"
                    keep(record)
                    tr = record["training"]
                    print(f"{args.model} {name:14s} {record['protocol']:7s} {stage:5s} "
                          f"{record['settings'] or 'defaults'} -> "
                          + ", ".join(f"{k} {v:.4f}" for k, v in {**record["metrics"],
                                                                  **record["extra_metrics"]}.items())
                          + f" | fit {record['fit_seconds']:.0f}s, {tr['seconds_per_epoch']:.1f}s/epoch, "
                            f"best epoch {tr['best_epoch']} of {tr['epochs_run']}, inference "
                            f"{1000 * record['eval_seconds'] / record['n_users_evaluated']:.2f}s/1k users",
                          flush=True)
    if args.ratings:
        record = ratings(load_dataset(DATA / "ml-100k"), settings)
        keep(record)
        for model, m in record["metrics"].items():
            print(f"ml-100k P-RAND ratings {model:22s} RMSE {m['RMSE']:.4f} MAE {m['MAE']:.4f}", flush=True)
    if args.dp:
        ds = load_dataset(DATA / "ml-100k")
        # per-example negatives and tower passes under DP: a small tower keeps it to minutes
        small = {**settings, "dim": 64, "hidden": 0, "negatives": 50, "epochs": 5}
        split = make_split(ds, "loo")
        for noise in (1.0, 0.0):  # the same small model with and without DP: the accuracy cost
            dp = {**small, "dp_noise_multiplier": noise, "dp_max_grad_norm": 1.0}
            record = run(TWO_TOWER, ds, split, "loo", "test", dp)
            record["task"] = "ranking"
            keep(record)
            eps = record["training"]["epsilon"]
            print(f"ml-100k P-LOO test {dp} -> {record['metrics']}, epsilon "
                  + ("inf (no DP)" if eps is None else f"{eps:.2f} at delta {record['training']['delta']}"), flush=True)


if __name__ == "__main__":
    main()
