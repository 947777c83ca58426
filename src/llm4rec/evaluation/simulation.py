"""Policies compared in the simulator: long-term reward with 95% intervals over seeds, curves, plots.

:func:`run_simulation` runs every policy from scratch, for each seed, for
``episodes`` sessions of a :class:`~llm4rec.strategies.simulator.RecSimEnv`,
learning online after every slate. Each (seed, policy) run resets the
simulator with that seed, so every policy meets the same users in the same
order (common random numbers); comparisons between policies are paired by seed.

Per episode it records the clicks (the reward), the steps, and the myopic
regret: the sum over the episode's steps of ``best_expected - expected``, the
expected clicks of the myopic oracle's slate in the visited state minus those
of the shown slate. That oracle knows the current click probabilities
(fatigue included) and maximises this step's clicks only, so a policy that
plans ahead may accept myopic regret for later reward: the headline number is
the reward (clicks per session), not the regret.

Policies (``--policies``; ``rl`` is an alias of ``slateq``) and how each is set up:

- ``oracle``: the myopic oracle itself, a reference, not a learner.
- ``greedy``: the recommender's top k, every step (the candidates are listed best first).
- ``slateq``: the RL agent (:mod:`llm4rec.strategies.rl`) on the whole observation, with the
  simulator's item vectors.
- ``uniform``: k random candidates.
- ``epsilon-greedy`` (epsilon 0.1), ``ucb1``, ``thompson``, ``gaussian-thompson`` (noise variance
  0.25): context-free, one arm per item.
- ``linucb``, ``lin-thompson``: one shared ridge model over the features v_i * u (item vector times
  the user's taste vector, the first block of the observation).

Sampling policies draw one Monte Carlo sample for propensities (unused here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.errors import InputError
from llm4rec.strategies import Feedback, Policy, create_policy

if TYPE_CHECKING:
    from llm4rec.strategies.simulator import RecSimEnv

__all__ = ["ALIASES", "BANDITS", "SIMULATION_POLICIES", "parse_policies", "plot_simulation", "run_simulation"]

ALIASES = {"rl": "slateq"}
BANDITS = ("epsilon-greedy", "ucb1", "thompson", "gaussian-thompson", "linucb", "lin-thompson")
SIMULATION_POLICIES = ("oracle", "greedy", "slateq", "uniform", *BANDITS)
#: per-policy settings in the simulator, and which part of the observation is the policy's context
_SETUP: dict[str, tuple[dict[str, Any], str | None]] = {
    "greedy": ({}, None),
    "uniform": ({}, None),
    "epsilon-greedy": ({"epsilon": 0.1}, None),
    "ucb1": ({}, None),
    "thompson": ({"propensity_samples": 1}, None),
    "gaussian-thompson": ({"noise_var": 0.25, "propensity_samples": 1}, None),
    "linucb": ({"model": "shared", "features": "product"}, "user"),
    "lin-thompson": ({"model": "shared", "features": "product", "propensity_samples": 1}, "user"),
    "slateq": ({}, "full"),
}


def parse_policies(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"greedy,rl,thompson"`` -> ("greedy", "slateq", "thompson"); InputError names an unknown one."""
    names = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p).strip() for p in text]
    names = [ALIASES.get(n, n) for n in names if n]
    if not names:
        raise InputError("no policy given", expected="comma-separated names from: " + ", ".join(SIMULATION_POLICIES))
    for name in names:
        if name not in SIMULATION_POLICIES:
            raise InputError("unknown policy for the simulator", value=name,
                             expected="one of " + ", ".join(SIMULATION_POLICIES) + " (rl = slateq)")
    return tuple(dict.fromkeys(names))


def _agent(name: str, env: RecSimEnv, seed: int,
           settings: dict[str, Any]) -> tuple[Policy | None, Callable[[np.ndarray], np.ndarray | None]]:
    """(policy or None for the oracle, observation -> the policy's context)."""
    if name == "oracle":
        return None, lambda obs: None
    base, part = _SETUP[name]
    config = {**base, **settings}
    if part == "user":
        config |= {"context_dim": env.dim, "item_features": env.item_vectors}
    elif part == "full":
        config |= {"context_dim": env.observation_space.shape[0], "item_features": env.item_vectors}
    policy = create_policy(name, env.n_items, seed=seed, **config)
    d = env.dim
    if part == "user":
        return policy, lambda obs: obs[:d].astype(np.float64)
    if part == "full":
        return policy, lambda obs: obs.astype(np.float64)
    return policy, lambda obs: None


def run_simulation(env: RecSimEnv, policies: Sequence[str], *, episodes: int, seeds: Sequence[int],
                   policy_settings: dict[str, dict[str, Any]] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run each policy for ``episodes`` sessions per seed; a JSON-ready record (see :func:`summarize`).

    ``policy_settings``: extra settings per policy name; ``progress(step, done, total)`` per episode.
    """
    names = parse_policies(policies)
    if int(episodes) != episodes or episodes < 1:
        raise InputError("bad number of episodes", value=episodes, expected="an integer >= 1")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InputError("no seed given", expected="at least one seed")
    k = env.config.slate_size
    shape = (len(seeds), int(episodes))
    raw = {n: {m: np.zeros(shape) for m in ("clicks", "steps", "expected", "regret")} for n in names}
    for s, seed in enumerate(seeds):
        for name in names:
            policy, context = _agent(name, env, seed, (policy_settings or {}).get(name, {}))
            out = raw[name]
            for e in range(int(episodes)):
                obs, info = env.reset(seed=seed if e == 0 else None)
                done = False
                while not done:
                    cands = info["candidates"]
                    if policy is None:
                        action = env.oracle_action()
                    else:
                        ctx = context(obs)
                        slate = policy.select(ctx, cands, k)
                        order = np.argsort(cands)
                        action = order[np.searchsorted(cands, slate.items, sorter=order)]  # (k,) positions
                    obs, reward, terminated, truncated, info = env.step(action)
                    if policy is not None:
                        policy.update(Feedback(ctx, slate.items, info["clicks"]))
                    out["clicks"][s, e] += reward
                    out["steps"][s, e] += 1
                    out["expected"][s, e] += info["expected"]
                    out["regret"][s, e] += info["best_expected"] - info["expected"]
                    done = terminated or truncated
                if policy is not None and hasattr(policy, "end_episode"):
                    policy.end_episode()
                if progress is not None:
                    progress(f"seed {seed} · {name}", e + 1, int(episodes))
    return summarize(raw, seeds=seeds, slate_size=k)


def _interval(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over axis 0 (seeds): Student-t 95% interval; NaN bounds for one seed."""
    from scipy.stats import t

    n = x.shape[0]
    mean = x.mean(axis=0)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    half = t.ppf(0.975, n - 1) * x.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def _stat(x: np.ndarray) -> dict[str, float | None]:
    mean, low, high = _interval(x)
    return {"mean": float(mean), "ci_low": None if np.isnan(low) else float(low),
            "ci_high": None if np.isnan(high) else float(high)}


def summarize(raw: dict[str, dict[str, np.ndarray]], *, seeds: Sequence[int], slate_size: int) -> dict:
    """Per policy: reward per episode (all, last quarter), CTR, session length, myopic regret; comparisons.

    ``raw[name][metric]``: float[seeds, episodes]. Numbers are means over seeds with 95% intervals.
    """
    record: dict[str, Any] = {"seeds": list(seeds), "episodes": int(next(iter(raw.values()))["clicks"].shape[1]),
                              "slate_size": int(slate_size), "policies": {}}
    for name, r in raw.items():
        episodes = r["clicks"].shape[1]
        tail = slice(episodes - max(1, episodes // 4), None)
        cum_mean, cum_low, cum_high = _interval(np.cumsum(r["clicks"], axis=1))
        reg_mean, reg_low, reg_high = _interval(np.cumsum(r["regret"], axis=1))
        record["policies"][name] = {
            "reward_per_episode": _stat(r["clicks"].mean(axis=1)),
            "reward_last_quarter": _stat(r["clicks"][:, tail].mean(axis=1)),
            "ctr": _stat(r["clicks"].sum(axis=1) / (r["steps"].sum(axis=1) * slate_size)),
            "session_length": _stat(r["steps"].mean(axis=1)),
            "regret_per_episode": _stat(r["regret"].mean(axis=1)),
            "per_seed_reward": r["clicks"].mean(axis=1).round(4).tolist(),
            "curves": {"cumulative_reward": _rounded(cum_mean, cum_low, cum_high),
                       "cumulative_regret": _rounded(reg_mean, reg_low, reg_high),
                       "reward": r["clicks"].mean(axis=0).round(4).tolist()},
        }
    record["comparisons"] = _comparisons(raw)
    return record


def _rounded(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, list]:
    def plain(a: np.ndarray) -> list:
        return [None if np.isnan(v) else v for v in a.round(3).tolist()]

    return {"mean": plain(mean), "ci_low": plain(low), "ci_high": plain(high)}


def _comparisons(raw: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The best learner, and slateq against greedy and the best bandit (paired by seed)."""
    means = {n: float(r["clicks"].mean()) for n, r in raw.items() if n != "oracle"}
    out: dict[str, Any] = {}
    if means:
        out["best_policy"] = max(means, key=means.get)
    bandits = {n: v for n, v in means.items() if n in BANDITS}
    if bandits:
        out["best_bandit"] = max(bandits, key=bandits.get)
    if "slateq" in raw:
        for label, other in (("slateq_vs_greedy", "greedy" if "greedy" in raw else None),
                             ("slateq_vs_best_bandit", out.get("best_bandit"))):
            if other is None:
                continue
            diff = raw["slateq"]["clicks"].mean(axis=1) - raw[other]["clicks"].mean(axis=1)  # (seeds,)
            stat = _stat(diff)
            low, high = stat["ci_low"], stat["ci_high"]
            verdict = ("slateq wins" if low is not None and low > 0 else
                       f"{other} wins" if high is not None and high < 0 else
                       "no clear winner (the interval holds 0)" if low is not None else
                       "one seed: no interval")
            out[label] = {"other": other, "difference": stat, "verdict": verdict}
    return out


def plot_simulation(record: dict, path: str | Path, *, title: str = "") -> Path:
    """Cumulative reward, reward per episode (moving average) and cumulative myopic regret per policy (PNG).

    Bands are the 95% intervals over seeds, cut at zero (clicks and myopic regret are never negative).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from llm4rec.evaluation.report import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    episodes = np.arange(1, record["episodes"] + 1)
    window = max(1, record["episodes"] // 20)
    colors = plt.get_cmap("tab10" if len(record["policies"]) <= 10 else "tab20").colors
    for i, (name, rec) in enumerate(record["policies"].items()):
        style = {"color": colors[i % len(colors)], "label": name, "linestyle": "--" if name == "oracle" else "-"}
        for ax, key in ((axes[0], "cumulative_reward"), (axes[2], "cumulative_regret")):
            curve = rec["curves"][key]
            ax.plot(episodes, curve["mean"], **style)
            if curve["ci_low"][0] is not None:
                ax.fill_between(episodes, np.maximum(curve["ci_low"], 0.0), curve["ci_high"], color=style["color"],
                                alpha=0.15, linewidth=0)
        smooth = np.convolve(rec["curves"]["reward"], np.ones(window) / window, mode="valid")
        axes[1].plot(episodes[window - 1:], smooth, **style)
    for ax, label in zip(axes, ("cumulative clicks", f"clicks per session (moving average of {window})",
                                "cumulative myopic regret (clicks)"), strict=True):
        ax.set_xlabel("episode (session)")
        ax.set_ylabel(label)
        ax.set_xlim(1, max(2, record["episodes"]))
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    n_seeds = len(record["seeds"])
    fig.suptitle(title or "policies in the simulator: "
                 + (f"mean over {n_seeds} seeds, 95% band" if n_seeds > 1 else "one seed (no band)"))
    return save_figure(fig, path, dpi=110)
