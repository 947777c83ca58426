"""``llm4rec evaluate``: fit a model under a protocol and report its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import (
    OVERWRITE_HELP,
    StepReporter,
    check_output_file,
    console,
    data_report_line,
    parse_settings,
    progress_bar,
)
from llm4rec.cli.data_cmd import FORMAT_HELP, LoadOptions, load_with_spinner


def evaluate_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset file or directory."),
    model: str = typer.Option(None, "--model", "-m", help="Model name, e.g. ease, sasrec, llm-two-tower; or give "
                                                          "--model-path."),
    protocol: str = typer.Option("loo", "--protocol", "-p", help="loo, loo100, rand or cold (PROTOCOLS.md)."),
    seed: int = typer.Option(2026, "--seed", help="Seed of every random draw of the protocol (and the model)."),
    settings: list[str] = typer.Option(None, "--set", help="Model setting KEY=VALUE (repeatable), e.g. l2=400; "
                                                           "a dotted key sets a nested setting, e.g. lora.rank=8 "
                                                           "or first_stage_settings.l2=400."),
    stage: str = typer.Option("test", "--stage", help="test (report) or valid (tuning only)."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    json_out: Path = typer.Option(None, "--json", help="Also write the result record as JSON to this file."),
    save_model: Path = typer.Option(None, "--save-model", help="Save the fitted model (a bundle) into this "
                                                               "directory: new, or existing (only the bundle's "
                                                               "own files are written)."),
    model_path: Path = typer.Option(None, "--model-path", help="A saved model to evaluate as it is, without "
                                                               "refitting (a stage whose targets it may have seen "
                                                               "is refused); with --set epochs=N a saved "
                                                               "sasrec-text model is fine-tuned on DATA instead "
                                                               "(transfer through item text)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP + " For --json and --save-model."),
    ray_address: str = typer.Option(None, "--ray", metavar="ADDRESS",
                                    help="Train a neural model (sasrec, sasrec-text, llm-two-tower...) data-parallel "
                                         "on a Ray cluster: auto (the one `ray start` runs here), local (one "
                                         "started for this command) or the head's host:port; --set workers=N "
                                         "(default 2), cpus_per_worker=N, max_failures=N. A killed worker resumes "
                                         "from the last epoch's checkpoint. Other models ignore it."),
    separator: str = LoadOptions.separator, user_col: str = LoadOptions.user_col,
    item_col: str = LoadOptions.item_col, timestamp_col: str = LoadOptions.timestamp_col,
    rating_col: str = LoadOptions.rating_col, items_path: Path = LoadOptions.items_path,
    item_key: str = LoadOptions.item_key, users_path: Path = LoadOptions.users_path,
    user_key: str = LoadOptions.user_key, text_columns: str = LoadOptions.text_columns,
    ratings_file: str = LoadOptions.ratings_file, encoding: str = LoadOptions.encoding,
    tags: bool = LoadOptions.tags,
) -> None:
    """Fit MODEL on the protocol's fit set and report its metrics (full ranking by default).

    With --model-path alone, a saved model is scored on the stage as it is.
    With --model-path and --set (e.g. epochs=2), a saved sasrec-text model is
    applied to DATA's items and histories and fine-tuned there (its ID
    embeddings stay behind; --set epochs=0 is zero-shot).
    """
    from llm4rec._atomic import atomic_write_text, check_output_files
    from llm4rec.cli._training import TrainingDisplay
    from llm4rec.data.splits import check_protocol
    from llm4rec.errors import InputError
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.evaluation.report import comparison_table
    from llm4rec.models import create_model, transfer_settings
    from llm4rec.models.bundle import BUNDLE_FILES, read_manifest

    parsed = parse_settings(settings)
    ray_options = {k: parsed.pop(k) for k in RAY_SETTINGS if k in parsed} if ray_address is not None else {}
    protocol = check_protocol(protocol)
    if stage not in ("test", "valid"):
        raise InputError("unknown stage", value=stage, expected="test or valid")
    as_saved = model_path is not None and not parsed  # evaluate the bundle itself, no refit
    if as_saved:
        saved = read_manifest(model_path)["model"]
        if model is not None and model != saved:
            raise InputError("--model and --model-path disagree", value=model, expected=saved)
        if save_model is not None:
            raise InputError("--save-model has nothing to save: --model-path alone evaluates the saved model as it "
                             "is", expected="no --save-model, or --set epochs=N to fine-tune a sasrec-text model")
        model = saved
    elif model_path is not None:
        saved, base = transfer_settings(model_path)
        if model is not None and model != saved:
            raise InputError("--model and --model-path disagree", value=model, expected=saved)
        model, parsed = saved, {**base, **parsed}
    elif model is None:
        raise InputError("no model given", expected="--model NAME or --model-path DIR")
    if not as_saved:
        create_model(model, parsed)  # fail fast on a bad model or setting, before loading data
    distributed_fit = None
    if ray_address is not None:
        distributed_fit = _ray_fit(model, ray_address, ray_options, as_saved)
    check_output_file(json_out, overwrite=overwrite, option="--json")
    if save_model is not None:
        check_output_files(save_model, BUNDLE_FILES, overwrite=overwrite, option="--save-model")
    ds = load_with_spinner(data, fmt, separator=separator, user_col=user_col, item_col=item_col,
                           timestamp_col=timestamp_col, rating_col=rating_col, items_path=items_path,
                           item_key=item_key, users_path=users_path, user_key=user_key, text_columns=text_columns,
                           ratings_file=ratings_file, encoding=encoding, tags=tags)
    with progress_bar() as progress:
        if as_saved:
            from llm4rec.evaluation.saved import evaluate_saved

            exp = evaluate_saved(model_path, ds, protocol=protocol, seed=seed, stage=stage,
                                 data_path=str(data.resolve()), progress=StepReporter(progress, prefix=f"{model}: "))
        else:
            exp = run_experiment(ds, model, protocol=protocol, seed=seed, settings=parsed, stage=stage,
                                 data_path=str(data.resolve()), progress=StepReporter(progress, prefix=f"{model}: "),
                                 callbacks=[TrainingDisplay(progress, prefix=f"{model}: ")], fit=distributed_fit)
    rec = exp.record
    console.print(f"[bold]{ds.name}[/bold] · {exp.result.title} · stage {stage} · seed {seed} · "
                  f"split {rec['split_fingerprint']} · {rec['n_users_evaluated']} users")
    if as_saved:
        console.print(f"{rec.get('evaluated_as', 'saved model, no refit')}: {model_path}")
    if line := data_report_line(rec["data_report"], protocol):
        console.print(line, soft_wrap=True)
    metrics = list(rec["metrics"]) + list(rec["extra_metrics"])
    row = {**rec, "metrics": {**rec["metrics"], **rec["extra_metrics"]}}
    console.print(comparison_table([row], metrics))
    if stage == "valid":
        console.print("[yellow]validation stage: use these numbers for tuning only[/yellow]")
    if json_out is not None:
        check_output_file(json_out, overwrite=overwrite, option="--json")  # again: the fit may have taken hours
        atomic_write_text(json_out, json.dumps(rec, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if save_model is not None:
        exp.model.save(save_model, overwrite=overwrite)
        console.print(f"saved the model to {save_model}")


#: ``--set`` keys that configure ``--ray`` training rather than the model
RAY_SETTINGS = ("workers", "cpus_per_worker", "max_failures")


def _ray_fit(model: str, address: str, options: dict, as_saved: bool):
    """The ``fit`` of :func:`run_experiment` that trains on Ray, or None (with a note) when ``model`` does not
    train in epochs or is evaluated as saved."""
    from llm4rec.errors import InputError
    from llm4rec.models import model_class
    from llm4rec.models.neural import NeuralRecommender

    if as_saved or not issubclass(model_class(model), NeuralRecommender):
        why = "a saved model is evaluated as it is" if as_saved else f"{model} trains in one process"
        console.print(f"note: --ray is ignored: {why}")
        return None
    kwargs = {}
    for key, value in options.items():
        try:
            kwargs[key] = int(value)
        except (TypeError, ValueError):
            raise InputError(f"bad --set {key} for --ray", value=value, expected="an integer") from None

    def fit(recommender, fit_set, callbacks):
        from llm4rec.distributed.train import fit_distributed

        return fit_distributed(recommender, fit_set, address=address, callbacks=callbacks, **kwargs)

    return fit
