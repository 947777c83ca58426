"""``llm4rec evaluate``: fit a model under a protocol and report its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import StepReporter, console, parse_settings, progress_bar
from llm4rec.cli.data_cmd import FORMAT_HELP, load_with_spinner


def evaluate_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset file or directory."),
    model: str = typer.Option(None, "--model", "-m", help="Model name, e.g. ease, sasrec, llm-two-tower; or give "
                                                          "--model-path."),
    protocol: str = typer.Option("loo", "--protocol", "-p", help="loo, loo100, rand or cold (PROTOCOLS.md)."),
    seed: int = typer.Option(2026, "--seed", help="Seed of every random draw of the protocol (and the model)."),
    settings: list[str] = typer.Option(None, "--set", help="Model setting KEY=VALUE (repeatable), e.g. l2=400."),
    stage: str = typer.Option("test", "--stage", help="test (report) or valid (tuning only)."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    json_out: Path = typer.Option(None, "--json", help="Also write the result record as JSON here."),
    save_model: Path = typer.Option(None, "--save-model", help="Save the fitted model to this directory."),
    model_path: Path = typer.Option(None, "--model-path", help="A saved sasrec-text model to apply to DATA "
                                                               "(transfer through item text): zero-shot, or "
                                                               "fine-tuned briefly with --set epochs=N."),
) -> None:
    """Fit MODEL on the protocol's fit set and report its metrics (full ranking by default).

    With --model-path, a model trained on another dataset is applied to
    DATA's items and histories instead (its ID embeddings stay behind).
    """
    from llm4rec._atomic import atomic_write_text
    from llm4rec.data.splits import check_protocol
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.evaluation.report import comparison_table
    from llm4rec.errors import InputError
    from llm4rec.models import create_model, transfer_settings

    parsed = parse_settings(settings)
    if model_path is not None:
        saved, base = transfer_settings(model_path)
        if model is not None and model != saved:
            raise InputError("--model and --model-path disagree", value=model, expected=saved)
        model, parsed = saved, {**base, **parsed}
    elif model is None:
        raise InputError("no model given", expected="--model NAME or --model-path DIR")
    protocol = check_protocol(protocol)
    create_model(model, parsed)  # fail fast on a bad model or setting, before loading data
    ds = load_with_spinner(data, fmt)
    with progress_bar() as progress:
        exp = run_experiment(ds, model, protocol=protocol, seed=seed, settings=parsed, stage=stage,
                             progress=StepReporter(progress, prefix=f"{model}: "))
    rec = exp.record
    console.print(f"[bold]{ds.name}[/bold] · {exp.result.title} · stage {stage} · seed {seed} · "
                  f"split {rec['split_fingerprint']} · {rec['n_users_evaluated']} users")
    metrics = list(rec["metrics"]) + list(rec["extra_metrics"])
    row = {**rec, "metrics": {**rec["metrics"], **rec["extra_metrics"]}}
    console.print(comparison_table([row], metrics))
    if stage == "valid":
        console.print("[yellow]validation stage: use these numbers for tuning only[/yellow]")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rec, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if save_model is not None:
        exp.model.save(save_model)
        console.print(f"saved the model to {save_model}")
