"""Benchmark of off-policy evaluation on the Open Bandit Dataset sample (``../shared/data/obd``).

For each campaign (all, men, women): the value (click rate per impression)
of the Bernoulli Thompson sampling policy ("bts") is estimated from the
uniform-random logs by every estimator (ips, snips, dm, dr, switch-dr, 95%
bootstrap intervals), with bts taken as its time-averaged action distribution
per position in the bts logs (``empirical:DIR``, bts is context-free there).
The truth is bts's on-policy click rate: the mean click of the bts logs.

    python bench/ope.py                     # 1,000 resamples, seed 0
    python bench/ope.py --bootstrap 2000 --seed 1

Writes bench/results/ope.json and bench/results/ope.png, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAMPAIGNS = ("all", "men", "women")


def main() -> None:
    from llm4rec._atomic import atomic_write_text
    from llm4rec.data.logs import load_bandit_logs
    from llm4rec.evaluation.ope import ESTIMATORS, off_policy_evaluation, plot_ope

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records, rows = {}, []
    for campaign in CAMPAIGNS:
        t0 = time.perf_counter()
        logs = load_bandit_logs(DATA / "obd" / "random" / campaign)
        rec = off_policy_evaluation(logs, f"empirical:{DATA / 'obd' / 'bts' / campaign}", ESTIMATORS,
                                    n_bootstrap=args.bootstrap, seed=args.seed)
        truth = rec["on_policy_value"]
        for est in rec["estimates"].values():
            est["relative_error"] = abs(est["value"] - truth) / truth
            est["truth_inside"] = est["ci_low"] <= truth <= est["ci_high"]
        rec |= {"campaign": campaign, "n_clicks": int(logs.reward.sum()), "logged_mean_reward": logs.mean_reward,
                "seconds": round(time.perf_counter() - t0, 2)}
        records[campaign] = rec
        rows += [f"| {campaign} | {name} | {e['value']:.5f} | [{e['ci_low']:.5f}, {e['ci_high']:.5f}] | {truth:.5f} "
                 f"| {e['relative_error']:.1%} | {'yes' if e['truth_inside'] else 'no'} |"
                 for name, e in rec["estimates"].items()]
        print(f"[{campaign}] {rec['seconds']}s, {rec['n_clicks']} clicks in the random logs", flush=True)
    out = ROOT / "bench" / "results"
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "bootstrap": args.bootstrap, "seed": args.seed}
    atomic_write_text(out / "ope.json", json.dumps({**meta, "campaigns": records}, indent=2) + "\n")
    plot_ope({f"{c} (bts from random)": r for c, r in records.items()}, out / "ope.png",
             title="Open Bandit Dataset: off-policy estimates of bts vs its on-policy click rate")
    print("| campaign | estimator | estimate | 95% CI | on-policy truth | rel. error | truth inside |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
