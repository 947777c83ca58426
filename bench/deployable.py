"""Benchmarks of the deployable-model API (issue #10): fold-in, new items, recommending for new histories.

``fold-in``: ALS and BPR (the settings tuned in bench/baselines.py) on the
P-LOO test stage of ml-100k. The users are cut into 5 folds; for each fold
the model is fitted without those users, and at test time their fit-set
histories are folded in (no refit). Every user is new once, so NDCG@10 over
all users is compared, paired, with a model refitted on everyone; plus the
top-10 overlap of folded-in and learned factors for users the model knows.

``add-items``: each text model on P-COLD (ml-100k by default): the
protocol's own cold evaluation (fit set with the cold items' text), against a
model fitted on a catalogue without the cold items that gets them through
``add_items`` and is evaluated as saved (``llm4rec.evaluation.saved``).
The two catalogues differ in size, so a trained model's random draws (its
initial tables, hence everything after) differ between the two paths even at
one seed: ``--model-seeds`` repeats both under several model seeds to show
the difference against seed noise.

``histories``: the time to recommend (k=10, seen items excluded) for 10,000
histories of users the model never saw (random windows of ml-100k fit
histories), by external id, per model, in batches of 1,000 (``--rerank-users``
histories for ``llm-rerank``, whose LM pass costs seconds per user; its time
is scaled to 10,000).

    python bench/deployable.py fold-in
    python bench/deployable.py add-items --model-seeds 2026,7,11
    python bench/deployable.py histories

Writes (merges into) bench/results/deployable.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "deployable.json"
#: chosen on the P-LOO validation stage of ml-100k (bench/RESULTS.md, baselines)
TUNED = {"als": {"factors": 32, "regularization": 1.0, "alpha": 1.0},
         "bpr": {"factors": 64, "learning_rate": 0.01, "regularization": 0.001},
         "ease": {"l2": 400.0}, "itemknn": {"neighbors": 200, "shrink": 10.0}}
TEXT = ("semantic-knn", "llm-two-tower", "sasrec-text", "generative")
ALL = ("pop", "itemknn", "ease", "als", "bpr", "semantic-knn", "llm-two-tower", "sasrec", "sasrec-text",
       "generative", "ensemble", "llm-rerank")


def load(name: str):
    from llm4rec.data.sources import load_dataset

    return load_dataset(DATA / name)


def merge(section: str, payload: dict) -> None:
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results.setdefault(section, {}).update(payload)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


class FoldedIn:
    """Dense scorer over a dataset: every user is scored from their fit-set history as someone new."""

    def __init__(self, model, fit) -> None:
        self.model, self.fit = model, fit

    def score_indices(self, users, items=None):
        from llm4rec.models import Histories

        h = Histories.from_sequences(self.fit.user_offsets, self.fit.item, np.asarray(users), self.model.n_items_)
        h = Histories(h.items, h.offsets, np.full(len(h), -1), h.n_items)
        return self.model._finish(self.model._score_histories(h, items), h.lengths, items)


def fold_in(args) -> None:
    from llm4rec.data import make_split
    from llm4rec.evaluation import evaluate
    from llm4rec.evaluation.significance import paired_test
    from llm4rec.models import create_model
    from llm4rec.testing.conformance import top10_overlap

    ds = load("ml-100k")
    stage = make_split(ds, "loo").stage("test")
    folds = np.random.default_rng(args.seed).permutation(stage.users) % args.folds  # fold of each user
    fold_of = np.full(ds.n_users, -1)
    fold_of[np.sort(stage.users)] = folds
    out = {}
    for name in ("als", "bpr"):
        refit = create_model(name, TUNED[name]).fit(stage.fit)
        refitted = evaluate(refit, stage).per_user["NDCG@10"]
        folded = np.zeros(len(stage.users))
        fold_s = fit_s = 0.0
        for k in range(args.folds):  # every user is new once: fitted without their fold, folded in at test time
            new = stage.users[fold_of[stage.users] == k]
            t0 = time.perf_counter()
            without = create_model(name, TUNED[name]).fit(stage.fit.subset(fold_of[stage.fit.user] != k))
            t1 = time.perf_counter()
            result = evaluate(FoldedIn(without, stage.fit), dataclasses.replace(stage, users=new))
            fold_s, fit_s = fold_s + time.perf_counter() - t1, fit_s + t1 - t0
            folded[np.searchsorted(stage.users, new)] = result.per_user["NDCG@10"]
        test = paired_test(folded, refitted, seed=args.seed)
        known = [str(t) for t in ds.users.tokens[stage.users]]
        seqs = stage.fit.sequences()
        learned = refit.recommend(known, k=10)
        again = refit.recommend(histories=[ds.items.token(seqs[u].tolist()) for u in stage.users], k=10)
        out[name] = {"settings": TUNED[name], "users": len(stage.users), "folds": args.folds,
                     "ndcg10_fold_in": float(folded.mean()), "ndcg10_refit": float(refitted.mean()),
                     "difference": test.mean_diff, "ci95": [test.ci_low, test.ci_high], "t_pvalue": test.t_pvalue,
                     "known_users_top10_overlap": top10_overlap(learned.items, again.items),
                     "fit_seconds_per_fold": round(fit_s / args.folds, 2),
                     "fold_in_seconds_per_1000_users": round(1000 * fold_s / len(stage.users), 2)}
        print(name, json.dumps(out[name]))
    merge("fold_in", out)


def previous_runs(key: str) -> list[dict]:
    """The add-items runs already in the results file for ``key``, so more seeds add to them."""
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    return list(results.get("add_items", {}).get(key, {}).get("runs", []))


def add_items(args) -> None:
    from llm4rec.data import make_split
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.evaluation.saved import evaluate_saved
    from llm4rec.models import create_model, model_class

    ds = load(args.dataset)
    split = make_split(ds, "cold")
    fit = split.stage("test").fit.without_items(split.cold_items)
    out = {}
    for name in args.models.split(","):
        seeded = "seed" in model_class(name).Config.model_fields
        runs = previous_runs(f"{args.dataset}/{name}")
        for seed in (args.model_seeds if seeded else args.model_seeds[:1]):
            if any(r["model_seed"] == (seed if seeded else None) for r in runs):
                continue  # measured before (kept in the results file)
            settings = {"seed": seed} if seeded else {}
            t0 = time.perf_counter()
            protocol = run_experiment(ds, name, protocol="cold", split=split, settings=settings)
            with tempfile.TemporaryDirectory() as tmp:
                t1 = time.perf_counter()
                path = create_model(name, settings).fit(fit).save(Path(tmp) / name)
                t2 = time.perf_counter()
                added = evaluate_saved(path, ds, protocol="cold")
                t3 = time.perf_counter()
            runs.append({"model_seed": seed if seeded else None, "protocol_cold": protocol.record["metrics"],
                         "add_items": added.record["metrics"], "protocol_seconds": round(t1 - t0, 1),
                         "fit_without_cold_seconds": round(t2 - t1, 1),
                         "add_and_evaluate_seconds": round(t3 - t2, 1)})
            print(name, json.dumps(runs[-1]), flush=True)
        summary = {path: {m: {"mean": float(np.mean([r[path][m] for r in runs])),
                              "sd": float(np.std([r[path][m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0}
                          for m in runs[0][path]} for path in ("protocol_cold", "add_items")}
        out[f"{args.dataset}/{name}"] = {"items_added": len(split.cold_items), "runs": runs, "summary": summary}
    merge("add_items", out)


def histories(args) -> None:
    from llm4rec.data import make_split
    from llm4rec.models import create_model

    ds = load("ml-100k")
    stage = make_split(ds, "loo").stage("test")
    rng = np.random.default_rng(args.seed)
    seqs = stage.fit.sequences()
    tokens = ds.items.tokens
    windows = []
    for u in rng.integers(0, ds.n_users, args.n):  # random windows of real histories, as new users
        seq = seqs[u]
        end = int(rng.integers(1, len(seq) + 1))
        windows.append([str(t) for t in tokens[seq[max(0, end - 50):end]]])
    out = {}
    for name in args.models.split(","):
        model = create_model(name, TUNED.get(name, {})).fit(stage.fit)
        n = args.rerank_users if name == "llm-rerank" else args.n
        t0 = time.perf_counter()
        for start in range(0, n, args.batch):
            rec = model.recommend(histories=windows[start:start + min(args.batch, n - start)], k=10)
        seconds = time.perf_counter() - t0
        assert rec.items.shape[1] == 10
        out[name] = {"histories": n, "seconds": round(seconds, 3),
                     "seconds_per_10000": round(seconds * 10000 / n, 2), "batch": args.batch}
        print(name, json.dumps(out[name]))
    merge("histories_10000", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fold-in")
    f.add_argument("--seed", type=int, default=2026)
    f.add_argument("--folds", type=int, default=5)
    a = sub.add_parser("add-items")
    a.add_argument("--dataset", default="ml-100k")
    a.add_argument("--models", default=",".join(TEXT))
    a.add_argument("--model-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[2026],
                   help="the models' own seeds (the split's stays 2026): trained models differ by seed noise")
    h = sub.add_parser("histories")
    h.add_argument("--models", default=",".join(ALL))
    h.add_argument("--n", type=int, default=10000)
    h.add_argument("--batch", type=int, default=1000)
    h.add_argument("--rerank-users", type=int, default=200)
    h.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    {"fold-in": fold_in, "add-items": add_items, "histories": histories}[args.command](args)


if __name__ == "__main__":
    main()
