"""``llm4rec ope``: estimate a policy's value from logged bandit feedback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from llm4rec.cli._common import StepReporter, check_output_file, console, progress_bar
from llm4rec.errors import InputError


#: a --logs path with one of these endings is a service's SQLite event store
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def ope_command(
    logs: str = typer.Option(..., "--logs", help="Logged feedback with propensities: an Open Bandit Dataset "
                                                 "campaign directory (e.g. obd/random/all), a CSV/Parquet file "
                                                 "with action, position, reward, propensity columns (e.g. `llm4rec "
                                                 "events export --what impressions`), or a service's event store "
                                                 "(sqlite:///FILE, postgresql://USER@HOST/DB)."),
    logged_policy: str = typer.Option(None, "--logged-policy", help="With a store: only the slates this policy "
                                                                    "served (default: all)."),
    n_actions: int = typer.Option(None, "--n-actions", min=1, help="The size of the action set (default: the "
                                                                   "dataset's; for a store or a file, the largest "
                                                                   "logged action + 1)."),
    policy: str = typer.Option(..., "--policy", help="The policy to evaluate: uniform, empirical:DIR (the action "
                                                     "frequencies in the logs at DIR, whose mean reward is the "
                                                     "on-policy truth) or a saved policy directory."),
    estimators: str = typer.Option("ips,snips,dm,dr,switch-dr", "--estimators", "-e",
                                   help="Comma-separated: ips, snips, dm, dr, switch-dr."),
    seed: int = typer.Option(0, "--seed", help="Seed of the reward model's folds and of the bootstrap."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples of the 95% intervals; 0: "
                                                                    "no intervals (none printed, null in --json)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the result as JSON to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --json file if it exists."),
) -> None:
    """Estimate POLICY's reward per impression from LOGS (IPS, SNIPS, DM, DR, switch-DR), with 95% intervals."""
    from rich.table import Table

    from llm4rec._atomic import atomic_write_text
    from llm4rec._runinfo import PeakMemory, environment
    from llm4rec.data.logs import load_bandit_logs
    from llm4rec.evaluation.ope import off_policy_evaluation, parse_estimators

    names = parse_estimators(estimators)  # fail fast, before reading anything
    check_output_file(json_out, overwrite=overwrite, option="--json")
    with progress_bar() as progress:
        progress.add_task(f"loading {logs}", total=None)
        if "://" in logs or logs.endswith(STORE_SUFFIXES):  # a service's event store
            from llm4rec.serving.store import EventStore

            store = EventStore(logs)
            try:
                data = store.bandit_logs(policy=logged_policy, n_actions=n_actions)
            finally:
                store.close()
        else:
            if logged_policy is not None:
                raise InputError("--logged-policy filters a service's event store", value=logged_policy,
                                 expected="--logs FILE.db, sqlite:///FILE or postgresql://..., or no --logged-policy")
            data = load_bandit_logs(Path(logs), n_actions=n_actions)
    start = time.perf_counter()
    with PeakMemory() as peak, progress_bar() as progress:
        record = off_policy_evaluation(data, policy, names, n_bootstrap=bootstrap, seed=seed,
                                       progress=StepReporter(progress, prefix="ope: "))
    record.update(seconds=round(time.perf_counter() - start, 2), peak_memory_mib=peak.mib, environment=environment())
    truth = record.get("on_policy_value")
    intervals = bootstrap > 0
    if not intervals:  # the library's zero-width interval is no interval
        for est in record["estimates"].values():
            est["ci_low"] = est["ci_high"] = None
    console.print(f"[bold]{data.name}[/bold] · policy {policy} · {data.n_rounds} rounds · {data.n_actions} actions "
                  f"· {data.n_positions} positions · logged mean reward {data.mean_reward:.5f}"
                  + ("" if truth is None else f" · on-policy value {truth:.5f}"))
    table = Table()
    columns = ("estimator", "value") + (("95% CI",) if intervals else ()) + \
        (() if truth is None else ("rel. error",) + (("truth inside",) if intervals else ()))
    for column in columns:
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, est in record["estimates"].items():
        cells = [name, f"{est['value']:.5f}"]
        if intervals:
            cells.append(f"[{est['ci_low']:.5f}, {est['ci_high']:.5f}]")
        if truth is not None:
            cells.append(f"{abs(est['value'] - truth) / truth:.1%}" if truth else "-")
            if intervals:
                cells.append("yes" if est["ci_low"] <= truth <= est["ci_high"] else "[red]no[/red]")
        table.add_row(*cells)
    console.print(table)
    if not intervals:
        console.print("no intervals: --bootstrap 0 skips the bootstrap")
    if json_out is not None:
        check_output_file(json_out, overwrite=overwrite, option="--json")
        atomic_write_text(json_out, json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {json_out}")
