"""Benchmark of ``llm-rerank`` (SmolLM2-135M-Instruct) on top of the best first stage, P-LOO.

For each dataset: EASE (ML-100K ``l2=400``, Beauty ``l2=100``, the tuned
baselines of bench/RESULTS.md) is fitted on the test stage's fit set and
evaluated on every user; ``llm-rerank`` re-orders its top ``--candidates``
(20) unseen items per user by the LM's yes/no log-odds.

Which users are re-scored. A user whose test item is not among the first
stage's top 20 has NDCG@10 = HR@10 = 0 under both models (the re-ranked top 10
is drawn from those 20), so only the other users ("hit" users) need the LM; the
all-user numbers below are then exact, not estimates, when every hit user is
re-scored (ML-100K). Where the hit users are too many for a CPU run (Beauty),
``--max-users`` of them are drawn at random (seed 2026); the paired test is run
on those users, and the all-user NDCG@10 of the re-ranker is estimated from
them (first-stage value + share of hit users x mean change), and labelled so.
Speed is the measured users/s of ``score`` on the re-scored users, with the
time a full 943-user (or all-user) run would take. For context, each record
also gives the expected metrics on the re-scored users of a random re-ordering
of the candidates (the test item's place among the 20 uniform).

    python bench/rerank.py                                   # ML-100K (all hit users) + Beauty (300), zero-shot
    python bench/rerank.py --datasets ml-100k --lora         # also a LoRA-tuned run
    python bench/rerank.py --max-users 50 --num-threads 2

Writes bench/results/rerank.json (one record per dataset and variant).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIRST_STAGE = {"ml-100k": {"l2": 400.0}, "amazon-beauty": {"l2": 100.0}}
METRICS = ("NDCG@10", "HR@10", "MRR@10")


def run_dataset(name: str, args: argparse.Namespace) -> list[dict]:
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation import evaluate
    from llm4rec.evaluation.significance import paired_test
    from llm4rec.models import create_model

    ds = load_dataset(DATA / name)
    stage = make_split(ds, "loo", seed=2026).stage("test")
    t0 = time.perf_counter()
    first = create_model("ease", FIRST_STAGE[name]).fit(stage.fit)
    base = evaluate(first, stage, metrics=METRICS + (f"HR@{args.candidates}",), beyond_accuracy=False)
    print(f"[{name}] EASE fitted and evaluated in {time.perf_counter() - t0:.1f}s: "
          f"NDCG@10 {base.metrics['NDCG@10']:.4f}, HR@{args.candidates} {base.metrics[f'HR@{args.candidates}']:.4f}",
          flush=True)
    hit = base.per_user[f"HR@{args.candidates}"] > 0  # (n_eval,) the test item is among the candidates
    hit_users = base.users[hit]
    if len(hit_users) > args.max_users:
        chosen = np.sort(np.random.default_rng(2026).choice(len(hit_users), args.max_users, replace=False))
    else:
        chosen = np.arange(len(hit_users))
    users = hit_users[chosen]
    exact = len(users) == len(hit_users)
    sub = dataclasses.replace(stage, users=users)
    first_sub = evaluate(first, sub, metrics=METRICS, beyond_accuracy=False)

    variants = [("zero-shot", None)]
    if args.lora:
        variants.append(("lora", {"examples": args.lora_examples, "epochs": 1, "rank": 8, "alpha": 16.0,
                                  "lr": 5e-4, "batch_size": 8}))
    records = []
    for label, lora in variants:
        settings = {"first_stage": "ease", "first_stage_settings": FIRST_STAGE[name], "candidates": args.candidates,
                    "history": args.history, "num_threads": args.num_threads, "batch_size": args.batch_size,
                    "lora": lora}
        t0 = time.perf_counter()
        model = create_model("llm-rerank", settings).fit(stage.fit)
        model._runtime()  # load the LM before the clock starts
        fit_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate(model, sub, metrics=METRICS, beyond_accuracy=False)
        seconds = time.perf_counter() - t0
        per_s = len(users) / seconds
        test = paired_test(res.per_user["NDCG@10"], first_sub.per_user["NDCG@10"])
        share = len(hit_users) / len(base.users)
        full = {m: base.metrics[m] + share * float(np.mean(res.per_user[m] - first_sub.per_user[m]))
                for m in METRICS}
        record = {
            "dataset": name, "protocol": "P-LOO", "stage": "test", "seed": 2026, "variant": label,
            "first_stage": {"model": "ease", "config": FIRST_STAGE[name]},
            "config": model.config.model_dump(mode="json"),
            "n_users_evaluated": len(base.users), "n_hit_users": len(hit_users), "n_users_rescored": len(users),
            "rescored_users": "every user whose test item is in the first stage's top "
                              f"{args.candidates}" + ("" if exact else f" (a random {len(users)}, seed 2026)"),
            "all_users": {"exact": exact,
                          "first_stage": {m: base.metrics[m] for m in METRICS},
                          "reranked": full},
            "rescored": {"first_stage": first_sub.metrics, "reranked": res.metrics,
                         "paired_test_ndcg10_reranked_minus_first": test.to_dict()},
            "fit_seconds": round(fit_seconds, 1),
            "score_seconds": round(seconds, 1), "users_per_second": round(per_s, 3),
            "prompts_per_second": round(per_s * args.candidates, 2),
            "extrapolated_seconds_all_users": round(len(base.users) / per_s),
            "num_threads": args.num_threads, "load_average_1min": round(os.getloadavg()[0], 2),
        }
        if lora is not None:
            record["lora_train_losses_first_last"] = [model.train_losses_[0], model.train_losses_[-1]]
        records.append(record)
        print(f"[{name}/{label}] {len(users)} users in {seconds:.0f}s ({per_s:.2f} users/s); NDCG@10 on them: "
              f"EASE {first_sub.metrics['NDCG@10']:.4f} -> re-ranked {res.metrics['NDCG@10']:.4f} "
              f"(diff {test.mean_diff:+.4f}, 95% CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
              f"t p={test.t_pvalue:.3g}); all users{'' if exact else ' (estimate)'}: "
              f"{base.metrics['NDCG@10']:.4f} -> {full['NDCG@10']:.4f}", flush=True)
    return records


def random_reorder_ndcg(candidates: int, k: int = 10) -> dict[str, float]:
    """Expected NDCG@k / HR@k on hit users when their ``candidates`` are shuffled: the target's place is uniform."""
    places = np.arange(min(k, candidates))
    return {f"NDCG@{k}": float((1.0 / np.log2(places + 2)).sum() / candidates),
            f"HR@{k}": float(len(places) / candidates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k,amazon-beauty")
    parser.add_argument("--max-users", type=int, default=300, help="cap on re-scored hit users per dataset")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-threads", type=int, default=1, help="1 is fastest on a busy shared machine")
    parser.add_argument("--lora", action="store_true", help="also run a LoRA-tuned re-ranker")
    parser.add_argument("--lora-examples", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rerank.json")
    args = parser.parse_args()
    records = []
    for name in args.datasets.split(","):
        records += run_dataset(name.strip(), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.exists() else []
    keep = [r for r in old if (r["dataset"], r["variant"]) not in {(r2["dataset"], r2["variant"]) for r2 in records}]
    for record in keep + records:  # context: what a random re-ordering of the candidates would score
        record["rescored"]["random_reorder_expected"] = random_reorder_ndcg(record["config"]["candidates"])
    args.out.write_text(json.dumps(keep + records, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
