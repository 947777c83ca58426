"""``llm4rec simulate``: policies in a simulator built from a dataset, long-term reward with 95% intervals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from llm4rec.cli._common import (
    OVERWRITE_HELP,
    StepReporter,
    console,
    parse_settings,
    progress_bar,
)
from llm4rec.cli.data_cmd import FORMAT_HELP, load_with_spinner

DEFAULT_POLICIES = "oracle,greedy,slateq,uniform,thompson,linucb"
#: the files ``simulate --out`` writes (nothing else in the directory is touched)
SIMULATE_FILES = ("results.json", "curves.png")


def simulate_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset file or directory (the simulated users)."),
    policies: str = typer.Option(DEFAULT_POLICIES, "--policies",
                                 help="Comma-separated: oracle, greedy, slateq (alias rl), uniform, epsilon-greedy, "
                                      "ucb1, thompson, gaussian-thompson, linucb, lin-thompson."),
    steps: int = typer.Option(20, "--steps", help="Slates per session (the episode length)."),
    episodes: int = typer.Option(200, "--episodes", help="Sessions per seed; policies learn across them."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0, 1, ...): the 95% intervals are over them."),
    model: str = typer.Option("ease", "--model", "-m", help="The recommender whose calibrated scores are the users' "
                                                            "taste."),
    settings: list[str] = typer.Option(None, "--set", help="Model setting KEY=VALUE (repeatable), e.g. l2=400."),
    sim: list[str] = typer.Option(None, "--sim", help="Simulator setting KEY=VALUE (repeatable): slate_size, "
                                                      "n_candidates, position_bias, fatigue, recovery, "
                                                      "similarity_power, leave_base, leave_boredom, min_history."),
    vectors: str = typer.Option("svd", "--vectors", help="Item vectors of fatigue and observations: svd, model or "
                                                         "text."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Write results.json and curves.png into this directory (new "
                                                      "or existing; nothing else in it is touched)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Run POLICIES for EPISODES sessions of STEPS slates in a simulator of DATA's users; compare their reward.

    The simulator (llm4rec.strategies.simulator) turns MODEL's scores into click
    probabilities (Platt scaling on held-out interactions), with position bias,
    fatigue from repeated similar items, and users who leave when bored.
    """
    from rich.table import Table

    from llm4rec._atomic import atomic_write_text, check_output_files
    from llm4rec._runinfo import PeakMemory, environment
    from llm4rec.errors import InputError
    from llm4rec.evaluation.simulation import (
        parse_policies,
        plot_simulation,
        run_simulation,
    )
    from llm4rec.models import create_model
    from llm4rec.strategies.simulator import RecSimEnv, SimConfig, fit_response_model

    names = parse_policies(policies)  # fail fast, before loading anything
    for option, value in (("--steps", steps), ("--episodes", episodes), ("--seeds", seeds)):
        if value < 1:
            raise InputError(f"bad value for {option}", value=value, expected="an integer >= 1")
    if vectors not in ("svd", "model", "text"):
        raise InputError("unknown item vectors", value=vectors, expected="svd, model or text")
    config = SimConfig.parse({**parse_settings(sim), "session_length": steps})
    parsed = parse_settings(settings)
    create_model(model, parsed)
    check_output_files(out, SIMULATE_FILES, overwrite=overwrite, option="--out")
    ds = load_with_spinner(data, fmt)
    start = time.perf_counter()
    with PeakMemory() as peak:
        with progress_bar() as progress:
            progress.add_task(f"fitting and calibrating {model}", total=None)
            env = RecSimEnv(fit_response_model(ds, model, settings=parsed, vectors=vectors), config)
        with progress_bar() as progress:
            record = run_simulation(env, names, episodes=episodes, seeds=range(seeds),
                                    progress=StepReporter(progress, prefix="simulate: "))
    record = {"dataset": ds.name, "data": str(data.resolve()), "dataset_fingerprint": ds.fingerprint,
              "model": model, "settings": parsed, "vectors": vectors,
              "simulator": config.model_dump(), "calibration": env.response.diagnostics,
              "seconds": round(time.perf_counter() - start, 1), "peak_memory_mib": peak.mib,
              "environment": environment(), **record}
    cal = env.response.diagnostics
    console.print(f"[bold]{ds.name}[/bold] · {model} link AUC {cal['auc']:.3f} · {len(env.users)} users · "
                  f"{config.n_candidates} candidates · slates of {config.slate_size} · sessions of <= {steps} · "
                  f"{episodes} sessions x {seeds} seeds")
    table = Table()
    for column in ("policy", "clicks/session", "last 25%", "CTR", "session length", "myopic regret/session"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    best = record["comparisons"].get("best_policy")
    for name, rec in record["policies"].items():
        label = f"[bold]{name}[/bold] (best)" if name == best else name + (" (reference)" if name == "oracle" else "")
        table.add_row(label, *(_cell(rec[key]) for key in ("reward_per_episode", "reward_last_quarter", "ctr",
                                                            "session_length", "regret_per_episode")))
    console.print(table)
    for key, comp in record["comparisons"].items():
        if key.startswith("slateq_vs"):
            diff = comp["difference"]
            console.print(f"slateq - {comp['other']}: {_cell(diff)} clicks/session → {comp['verdict']}")
    check_output_files(out, SIMULATE_FILES, overwrite=overwrite, option="--out")  # again, after the work
    atomic_write_text(out / "results.json", json.dumps(record, indent=2) + "\n")
    plot_simulation(record, out / "curves.png", title=f"{ds.name}: {model} simulator, "
                    + (f"mean over {seeds} seeds, 95% band" if seeds > 1 else "one seed (no band)"))
    console.print(f"wrote {out / 'results.json'} and {out / 'curves.png'}")


def _cell(stat: dict) -> str:
    """``mean ± half-width`` (the mean alone for one seed)."""
    if stat["ci_low"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {(stat['ci_high'] - stat['ci_low']) / 2:.3f}"
