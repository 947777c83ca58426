"""``llm4rec compress``: a compressed bundle of a saved model, and the report of what it costs."""

from __future__ import annotations

from pathlib import Path

import typer

from llm4rec.cli._common import console, err_console, parse_settings
from llm4rec.cli.data_cmd import FORMAT_HELP, LoadOptions, load_with_spinner
from llm4rec.errors import InputError

METHOD_HELP = ("int8 (tables as 8-bit rows, the int8 text encoder), pq (item tables by product quantisation), "
               "prune (attention heads and FFN neurons of the text encoder, with a recovery fine-tune) or distill "
               "(a smaller student text encoder).")
SET_HELP = ("Method option KEY=VALUE (repeatable): linears=true (int8: also run the per-request linear layers on "
            "int8 kernels), pq_dims=2 (pq: values per one-byte code), rescore=100 (pq: re-score each "
            "shortlist of 100 with int8 rows kept in the bundle; default 0, none), sparsity=0.5 and "
            "recovery_epochs=1 (prune), layers=3 and epochs=2 (distill).")


def compress_command(
    model: Path = typer.Option(..., "--model", "-m", help="A saved model bundle (llm4rec evaluate --save-model)."),
    method: str = typer.Option(..., "--method", help=METHOD_HELP),
    data: Path = typer.Option(..., "--data", "-d", help="The dataset the model was fitted on: the catalogue's "
                                                        "text and the before/after evaluation."),
    out: Path = typer.Option(None, "--out", "-o", help="Directory of the compressed bundle and its report "
                                                       "(new or empty); default: MODEL-METHOD beside the model."),
    settings: list[str] = typer.Option(None, "--set", help=SET_HELP),
    stage: str = typer.Option("test", "--stage", help="Stage of the model's protocol to evaluate on: test or "
                                                      "valid."),
    requests: int = typer.Option(200, "--requests", min=1, help="Users whose top 10 are timed one request at a "
                                                                "time."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    separator: str = LoadOptions.separator, user_col: str = LoadOptions.user_col,
    item_col: str = LoadOptions.item_col, timestamp_col: str = LoadOptions.timestamp_col,
    rating_col: str = LoadOptions.rating_col, items_path: Path = LoadOptions.items_path,
    item_key: str = LoadOptions.item_key, users_path: Path = LoadOptions.users_path,
    user_key: str = LoadOptions.user_key, text_columns: str = LoadOptions.text_columns,
    ratings_file: str = LoadOptions.ratings_file, encoding: str = LoadOptions.encoding,
    tags: bool = LoadOptions.tags,
) -> None:
    """Write a compressed copy of a saved model (int8, pq, prune or distill) and compare it with the original.

    The report, printed and written beside the new bundle (compression.md,
    compression.json), sets both side by side in the same run: size on disk,
    peak memory, latency of one request and of encoding 1,000 items, and
    NDCG@10 / Recall@20 on the protocol the model was fitted for, with a
    paired test over users. The original bundle is never modified; nothing
    is written unless the whole run succeeds.
    """
    from llm4rec.experiments.compress import METHODS, compress_bundle, markdown
    from llm4rec.models.bundle import read_manifest

    if method not in METHODS:
        raise InputError("unknown --method", value=method, expected=" or ".join(METHODS))
    if stage not in ("test", "valid"):
        raise InputError("bad --stage", value=stage, expected="test or valid")
    options = parse_settings(settings)
    read_manifest(model)  # a whole bundle, before loading any data
    out = Path(f"{model.resolve()}-{method}") if out is None else out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("the output exists and is not an empty directory", path=out,
                         expected="a new or empty directory for the compressed bundle",
                         hint="Nothing is overwritten: choose another --out.")
    ds = load_with_spinner(data, fmt, separator=separator, user_col=user_col, item_col=item_col,
                           timestamp_col=timestamp_col, rating_col=rating_col, items_path=items_path,
                           item_key=item_key, users_path=users_path, user_key=user_key, text_columns=text_columns,
                           ratings_file=ratings_file, encoding=encoding, tags=tags)
    report = compress_bundle(model, out, method, ds, options=options, stage=stage, requests=requests,
                             progress=True, data_path=str(Path(data).resolve()),
                             on_step=lambda text: err_console.print(f"{text}...", soft_wrap=True))
    console.print(markdown(report), soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote the bundle and its report (compression.md, compression.json) to {out}", soft_wrap=True)
