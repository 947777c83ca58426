"""``llm4rec quickstart``: the whole road on built-in data, offline, in about two minutes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import StepReporter, console, progress_bar

DEFAULT_MODELS = "pop,itemknn,ease,als,bpr,semantic-knn,llm-two-tower"


def quickstart_command(
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="Comma-separated model names to compare."),
    protocol: str = typer.Option("loo", "--protocol", "-p", help="loo, loo100, rand or cold."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the synthetic data, the split and the models."),
    data: Path = typer.Option(None, "--data", "-d", help="Use this dataset instead of the built-in one."),
    out: Path = typer.Option(None, "--out", help="Write results.json and comparison.png to this directory."),
) -> None:
    """Generate the built-in synthetic dataset, fit baselines and language-model recommenders, compare them."""
    from llm4rec._atomic import atomic_dir
    from llm4rec.data import make_split
    from llm4rec.data.splits import PROTOCOLS, check_protocol
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.evaluation.report import comparison_table, plot_comparison
    from llm4rec.evaluation.significance import paired_test
    from llm4rec.models import model_class

    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        model_class(name)  # unknown names fail before any work
    protocol = check_protocol(protocol)
    with progress_bar() as progress:
        task = progress.add_task("preparing data", total=None)
        if data is None:
            from llm4rec.data.synthetic import make_synthetic

            ds = make_synthetic(seed=seed)
        else:
            from llm4rec.data.sources import load_dataset

            ds = load_dataset(data)
        split = make_split(ds, protocol, seed=seed)
        progress.update(task, total=1, completed=1)
        records, per_user = [], {}
        for name in names:
            exp = run_experiment(ds, name, protocol=protocol, seed=seed, split=split,
                                 progress=StepReporter(progress, prefix=f"{name}: "))
            records.append(exp.record)
            per_user[name] = exp.result.per_user
    title = f"{ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions"
    console.print(f"[bold]{title}[/bold]")
    console.print(f"{exp.result.title}, test stage, seed {seed}, split {split.fingerprint}, "
                  f"{exp.result.n_users} users evaluated")
    metrics = list(records[0]["metrics"]) + list(records[0]["extra_metrics"])
    rows = [{**r, "metrics": {**r["metrics"], **r["extra_metrics"]}} for r in records]
    console.print(comparison_table(rows, metrics))
    tune = PROTOCOLS[protocol]["tune"]
    ranked = sorted(records, key=lambda r: r["metrics"][tune], reverse=True)
    console.print(f"best by {tune}: [bold]{ranked[0]['model']}[/bold]")
    if len(ranked) > 1:
        a, b = ranked[0]["model"], ranked[1]["model"]
        test = paired_test(per_user[a][tune], per_user[b][tune], seed=seed)
        console.print(f"{a} vs {b} on {tune}, paired over {test.n} users: difference {test.mean_diff:+.4f}, "
                      f"95% bootstrap CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
                      f"t-test p = {test.t_pvalue:.2g}")
    console.print("Next: `llm4rec evaluate --data PATH --model ease` on your own data (see --help).")
    if out is not None:
        with atomic_dir(out) as tmp:
            (tmp / "results.json").write_text(json.dumps(records, indent=2) + "\n")
            plot_comparison(rows, list(records[0]["metrics"]), tmp / "comparison.png", title=title)
        console.print(f"wrote {out / 'results.json'} and {out / 'comparison.png'}")
