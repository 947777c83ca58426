"""Bandit benchmark: regret curves on known-answer problems, and ``select`` latency of the linear bandits.

1. Regret. Expected (pseudo-)regret per round, mean and 95% confidence
   interval (Student t over seeds) of the cumulative regret, on
   - a Bernoulli bandit: 20 arms, means drawn once from U(0.1, 0.6), best arm
     lifted to 0.7; k = 1; context-free policies and uniform random;
   - a linear contextual bandit: 50 items with 8-d features V, contexts
     c ~ N(0, I/8) per round, linear expected reward
     r(a, c) = (V_a * c) . w, Gaussian noise 0.1, k = 1; the linear
     bandits (disjoint: context = c; shared: features = V_a * c, "product")
     against epsilon-greedy (context-free) and uniform random.
   The plot is bench/results/bandits_regret.png; numbers in bench/results/bandits.json.
2. Latency of ``select`` for 1,000 candidates (k = 10) after 200 updates, per
   request (median and p99 of single calls), for linucb and lin-thompson,
   disjoint and shared (features "item", "concat", "product"), d = 32 and 384;
   and of ``update`` (a 10-item slate). ``lin-thompson`` is timed with its
   default 100 Monte Carlo propensity samples and with 1 (the cost of the
   decision alone).

    python bench/bandits.py                 # about 3-4 minutes on 2 cores
    python bench/bandits.py --seeds 3 --rounds 2000 --skip-latency
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scipy import stats

from llm4rec.strategies import Feedback, create_policy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"

BERNOULLI = {
    "uniform": ("uniform", {}),
    "epsilon-greedy (1.0, decay 0.02)": ("epsilon-greedy", {"epsilon": 1.0, "decay": 0.02}),
    "ucb1": ("ucb1", {}),
    "thompson": ("thompson", {"propensity_samples": 100}),
    "gaussian-thompson (normal-gamma)": ("gaussian-thompson", {"prior": "normal-gamma", "propensity_samples": 100}),
}
LINEAR = {
    "uniform": ("uniform", {}),
    "epsilon-greedy (context-free)": ("epsilon-greedy", {"epsilon": 1.0, "decay": 0.02}),
    "linucb disjoint": ("linucb", {"context_dim": 8, "alpha": 0.5}),
    "lin-thompson disjoint": ("lin-thompson", {"context_dim": 8, "scale": 0.1, "propensity_samples": 20}),
    "linucb shared (product)": ("linucb", {"model": "shared", "features": "product", "context_dim": 8,
                                           "alpha": 0.5}),
    "lin-thompson shared (product)": ("lin-thompson", {"model": "shared", "features": "product", "context_dim": 8,
                                                       "scale": 0.1, "propensity_samples": 20}),
}


def bernoulli_run(name: str, settings: dict, rounds: int, seed: int) -> np.ndarray:
    """float[rounds] expected regret per round on the seed's 20-arm Bernoulli bandit."""
    env = np.random.default_rng(seed)
    means = env.uniform(0.1, 0.6, size=20)
    means[env.integers(20)] = 0.7
    policy = create_policy(name, 20, seed=seed, **settings)
    cands = np.arange(20)
    regret = np.empty(rounds)
    for t in range(rounds):
        items = policy.select(None, cands, 1).items
        regret[t] = means.max() - means[items[0]]
        policy.update(Feedback(None, items, (env.random(1) < means[items]).astype(float)))
    return regret


def linear_run(name: str, settings: dict, rounds: int, seed: int) -> np.ndarray:
    """float[rounds] expected regret per round on the seed's 50-item linear contextual bandit."""
    env = np.random.default_rng(seed)
    n, d = 50, 8
    v = env.normal(size=(n, d))
    w = env.normal(size=d) / np.sqrt(d)
    if settings.get("model") == "shared":
        settings = {**settings, "item_features": v}
    policy = create_policy(name, n, seed=seed, **settings)
    cands = np.arange(n)
    regret = np.empty(rounds)
    for t in range(rounds):
        c = env.normal(size=d) / np.sqrt(d)
        means = (v * c) @ w
        items = policy.select(c, cands, 1).items
        regret[t] = means.max() - means[items[0]]
        policy.update(Feedback(c, items, means[items] + 0.1 * env.normal(size=1)))
    return regret


def regret_table(problem: str, runs: dict, rounds: int, seeds: int) -> dict:
    run = bernoulli_run if problem == "bernoulli" else linear_run
    out = {}
    for label, (name, settings) in runs.items():
        start = time.perf_counter()
        cum = np.cumsum([run(name, settings, rounds, 100 + s) for s in range(seeds)], axis=1)  # (seeds, T)
        mean = cum.mean(0)
        half = stats.t.ppf(0.975, seeds - 1) * cum.std(0, ddof=1) / np.sqrt(seeds)
        at = np.unique(np.linspace(0, rounds - 1, 60).astype(int))
        out[label] = {"final_mean": float(mean[-1]), "final_ci95": float(half[-1]),
                      "first_half": float(cum[:, rounds // 2 - 1].mean()),
                      "second_half": float((cum[:, -1] - cum[:, rounds // 2 - 1]).mean()),
                      "rounds": (at + 1).tolist(), "mean": mean[at].round(3).tolist(),
                      "ci95": half[at].round(3).tolist(), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{problem:9s} {label:34s} regret {mean[-1]:8.1f} ± {half[-1]:6.1f}  "
              f"(halves {out[label]['first_half']:.1f} / {out[label]['second_half']:.1f})", flush=True)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))  # linear axes; uniform random runs off the top
    for ax, (problem, title) in zip(axes, [("bernoulli", "Bernoulli bandit, 20 arms"),
                                           ("linear", "linear contextual bandit, 50 items, d = 8")]):
        for label, rec in results[problem].items():
            x, m, h = np.array(rec["rounds"]), np.array(rec["mean"]), np.array(rec["ci95"])
            ax.plot(x, m, label=label)
            ax.fill_between(x, m - h, m + h, alpha=0.2)
        top = max(rec["final_mean"] + rec["final_ci95"] for label, rec in results[problem].items()
                  if label != "uniform")
        ax.set(title=title, xlabel="round", ylabel="cumulative expected regret (mean, 95% CI)", ylim=(0, 1.2 * top))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def latency(d: int, name: str, model: str, features: str, samples: int | None, reps: int) -> dict:
    n, k = 1000, 10
    rng = np.random.default_rng(0)
    settings: dict = {"propensity_samples": samples} if samples is not None else {}
    if model == "disjoint":
        settings |= {"context_dim": d}
    else:
        settings |= {"model": "shared", "features": features, "context_dim": 0 if features == "item" else d,
                     "item_features": rng.normal(size=(n, d)) / np.sqrt(d)}
    policy = create_policy(name, n, seed=0, **settings)
    cands = np.arange(n)
    contexts = rng.normal(size=(200 + reps, d)) / np.sqrt(d)
    updates = []
    for c in contexts[:200]:
        items = rng.choice(n, size=k, replace=False)
        start = time.perf_counter()
        policy.update(Feedback(c, items, rng.random(k)))
        updates.append(time.perf_counter() - start)
    policy.select(contexts[0], cands, k)  # warm caches (the Cholesky factor of lin-thompson shared)
    times = []
    for c in contexts[200:]:
        start = time.perf_counter()
        policy.select(c, cands, k)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"d": d, "policy": name, "model": model, "features": features if model == "shared" else "-",
            "propensity_samples": samples, "select_median_ms": round(float(np.median(ms)), 3),
            "select_p99_ms": round(float(np.percentile(ms, 99)), 3),
            "update_median_ms": round(float(np.median(updates) * 1e3), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=300, help="timed select calls per latency row")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "python": platform.python_version(), "numpy": np.__version__,
                     "seeds": args.seeds, "rounds": args.rounds}
    results["bernoulli"] = regret_table("bernoulli", BERNOULLI, args.rounds, args.seeds)
    results["linear"] = regret_table("linear", LINEAR, args.rounds, args.seeds)
    plot(results, OUT / "bandits_regret.png")
    if not args.skip_latency:
        rows = []
        for d in (32, 384):
            for model, features in [("disjoint", "-"), ("shared", "item"), ("shared", "concat"),
                                    ("shared", "product")]:
                for name, samples in [("linucb", None), ("lin-thompson", 100), ("lin-thompson", 1)]:
                    reps = 30 if (model == "disjoint" and d == 384) else args.reps  # 1.2 GB of inverses
                    row = latency(d, name, model, features, samples, reps)
                    rows.append(row)
                    print(f"d={d:3d} {name:12s} {model:8s} {row['features']:7s} samples={samples!s:4s} "
                          f"select {row['select_median_ms']:8.3f} ms (p99 {row['select_p99_ms']:8.3f})  "
                          f"update {row['update_median_ms']:7.3f} ms", flush=True)
        results["latency"] = rows
    (OUT / "bandits.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
