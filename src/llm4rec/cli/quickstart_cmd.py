"""``llm4rec quickstart``: the whole road on built-in data, offline, in a few minutes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import (
    OVERWRITE_HELP,
    StepReporter,
    console,
    data_report_line,
    progress_bar,
)

DEFAULT_MODELS = "pop,itemknn,ease,als,bpr,semantic-knn,llm-two-tower"
#: the files ``quickstart --out`` writes (nothing else in the directory is touched)
QUICKSTART_FILES = ("results.json", "comparison.png")


def quickstart_command(
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="Comma-separated model names to compare."),
    protocol: str = typer.Option("loo", "--protocol", "-p", help="loo, loo100, rand or cold."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the synthetic data, the split and the models."),
    data: Path = typer.Option(None, "--data", "-d", help="Use this dataset instead of the built-in one."),
    out: Path = typer.Option(None, "--out", help="Write results.json and comparison.png into this directory (new "
                                                 "or existing; nothing else in it is touched)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Generate the built-in synthetic dataset, fit baselines and language-model recommenders, compare them.

    Every model is fitted twice on one split: on the validation stage, which
    picks the model to highlight, and on the test stage, which reports its
    numbers (with 95% bootstrap intervals over users in comparison.png).
    """
    from llm4rec._atomic import check_output_files, write_output_files
    from llm4rec.cli._training import TrainingDisplay
    from llm4rec.data import make_split
    from llm4rec.data.splits import PROTOCOLS, check_protocol
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.evaluation.report import (
        comparison_figure,
        comparison_table,
        mean_interval,
        png_bytes,
    )
    from llm4rec.evaluation.significance import paired_test
    from llm4rec.models import model_class

    names = list(dict.fromkeys(m.strip() for m in models.split(",") if m.strip()))
    for name in names:
        model_class(name)  # unknown names fail before any work
    protocol = check_protocol(protocol)
    if out is not None:
        check_output_files(out, QUICKSTART_FILES, overwrite=overwrite, option="--out")
    tune = PROTOCOLS[protocol]["tune"]
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
        runs = {}
        for name in names:
            runs[name] = {stage: run_experiment(ds, name, protocol=protocol, seed=seed, split=split, stage=stage,
                                                data_path=None if data is None else str(Path(data).resolve()),
                                                progress=StepReporter(progress, prefix=f"{name} ({stage}): "),
                                                callbacks=[TrainingDisplay(progress, prefix=f"{name} ({stage}): ")])
                          for stage in ("valid", "test")}
    chosen = max(names, key=lambda n: runs[n]["valid"].record["metrics"][tune])  # the first of equals
    test = runs[chosen]["test"]
    title = f"{ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions"
    console.print(f"[bold]{title}[/bold]")
    console.print(f"{test.result.title}, test stage, seed {seed}, split {split.fingerprint}, "
                  f"{test.result.n_users} users evaluated")
    if line := data_report_line(test.record["data_report"], protocol):
        console.print(line, soft_wrap=True)
    main_metrics = list(test.record["metrics"])
    records, rows = [], []
    for name in names:
        rec = runs[name]["test"].record
        per_user = runs[name]["test"].result.per_user
        intervals = {m: list(mean_interval(per_user[m], seed=seed)) for m in main_metrics}
        records.append({**rec, "valid_metrics": runs[name]["valid"].record["metrics"], "intervals_95": intervals,
                        "chosen_on_valid": name == chosen})
        rows.append({**rec, "label": f"{name} (chosen)" if name == chosen else name, "highlight": name == chosen,
                     "intervals": intervals,
                     "metrics": {f"valid {tune}": runs[name]["valid"].record["metrics"][tune], **rec["metrics"],
                                 **rec["extra_metrics"]}})
    console.print(comparison_table(rows, list(rows[0]["metrics"]),
                                   title=f"valid {tune}: the validation stage; the rest: the test stage"))
    console.print(f"chosen on the validation stage ({tune}): [bold]{chosen}[/bold]; its test {tune} is "
                  f"{test.record['metrics'][tune]:.4f}")
    others = sorted((n for n in names if n != chosen), key=lambda n: -runs[n]["valid"].record["metrics"][tune])
    if others:
        runner_up = others[0]
        paired = paired_test(test.result.per_user[tune], runs[runner_up]["test"].result.per_user[tune], seed=seed)
        console.print(f"{chosen} vs {runner_up} (second on the validation stage), test {tune} paired over "
                      f"{paired.n} users: difference {paired.mean_diff:+.4f}, 95% bootstrap CI "
                      f"[{paired.ci_low:+.4f}, {paired.ci_high:+.4f}], t-test p = {paired.t_pvalue:.2g}")
    console.print("Next: `llm4rec evaluate --data PATH --model ease` on your own data (see --help).")
    if out is not None:
        figure = comparison_figure(
            [{**r, "metrics": {m: r["metrics"][m] for m in main_metrics}} for r in rows], main_metrics,
            title=f"{ds.name}: {test.result.title}, test stage, seed {seed}",
            note=f"error bars: 95% bootstrap intervals over the {test.result.n_users} evaluated users; "
                 f"{chosen} chosen by {tune} on the validation stage")
        written = write_output_files(out, {"results.json": (json.dumps(records, indent=2) + "\n").encode(),
                                           "comparison.png": png_bytes(figure)}, overwrite=overwrite, option="--out")
        console.print(f"wrote {' and '.join(str(p) for p in written)}")
