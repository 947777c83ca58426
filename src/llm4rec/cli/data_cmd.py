"""``llm4rec data``: inspect, convert and fetch datasets; the data-loading options other commands share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from llm4rec.cli._common import console, progress_bar
from llm4rec.errors import InputError

if TYPE_CHECKING:
    from llm4rec.data import Dataset

data_app = typer.Typer(help="Inspect, convert and download datasets.", no_args_is_help=True)

FORMAT_HELP = "Input format: auto, movielens, recbole, amazon or csv (CSV/TSV/Parquet)."

#: loader keyword -> command-line flag (the loaders' messages name both)
_FLAGS = {"separator": "--separator", "user_col": "--user-col", "item_col": "--item-col",
          "timestamp_col": "--timestamp-col", "rating_col": "--rating-col", "items_path": "--items-path",
          "item_key": "--item-key", "users_path": "--users-path", "user_key": "--user-key",
          "text_columns": "--text-columns", "ratings_file": "--ratings-file", "encoding": "--encoding",
          "tags": "--tags"}
_TABLE_OPTIONS = ("separator", "user_col", "item_col", "timestamp_col", "rating_col", "items_path", "item_key",
                  "users_path", "user_key", "text_columns")
_TABLE = "CSV/TSV/Parquet loading"
_ML = "MovieLens loading"


class LoadOptions:
    """The data-loading options that ``evaluate`` and ``data info / convert`` share (typer defaults)."""

    separator = typer.Option(None, "--separator", "--sep", rich_help_panel=_TABLE,
                             help="Field separator of a delimited file, e.g. ';' or '\\t' (default: from the "
                                  "extension, .csv comma and .tsv tab, or from the header line).")
    user_col = typer.Option(None, "--user-col", rich_help_panel=_TABLE, help="User id column (default user_id).")
    item_col = typer.Option(None, "--item-col", rich_help_panel=_TABLE, help="Item id column (default item_id).")
    timestamp_col = typer.Option(None, "--timestamp-col", rich_help_panel=_TABLE,
                                 help="Timestamp column (default: the first of timestamp, time, ts, datetime, date); "
                                      "'none': no timestamp, the row order is the time order.")
    rating_col = typer.Option(None, "--rating-col", rich_help_panel=_TABLE,
                              help="Rating column (default: rating or score when present); 'none': no ratings.")
    items_path = typer.Option(None, "--items-path", "--items", rich_help_panel=_TABLE,
                              help="Item table (CSV/TSV/Parquet) with titles and other attributes; every item in "
                                   "it is kept, with or without interactions.")
    item_key = typer.Option(None, "--item-key", rich_help_panel=_TABLE,
                            help="Item id column of the item table (default: --item-col).")
    users_path = typer.Option(None, "--users-path", "--users", rich_help_panel=_TABLE,
                              help="User table (CSV/TSV/Parquet) with user attributes.")
    user_key = typer.Option(None, "--user-key", rich_help_panel=_TABLE,
                            help="User id column of the user table (default: --user-col).")
    text_columns = typer.Option(None, "--text-columns", rich_help_panel=_TABLE,
                                help="Comma-separated item-table columns that hold text (for the language-model "
                                     "recommenders), e.g. title,description.")
    ratings_file = typer.Option(None, "--ratings-file", rich_help_panel=_ML,
                                help="MovieLens: another rating file of the release, e.g. u1.base.")
    encoding = typer.Option(None, "--encoding", rich_help_panel=_ML,
                            help="MovieLens: text encoding of every file (default: UTF-8 when valid, else Latin-1).")
    tags = typer.Option(False, "--tags", rich_help_panel=_ML,
                        help="MovieLens ml-latest: add the movies' tags (tags.csv) as a text field.")


def _loader_options(given: dict[str, Any]) -> dict[str, Any]:
    """The loader keywords of the options given on the command line (not None, not False)."""
    options: dict[str, Any] = {}
    for key, value in given.items():
        if value is None or value is False:
            continue
        if key in ("timestamp_col", "rating_col") and value.lower() == "none":
            value = None
        elif key == "text_columns":
            value = [c.strip() for c in value.split(",") if c.strip()]
        elif key == "separator" and value == "\\t":  # a tab typed as '\t' in a shell
            value = "\t"
        options[key] = value
    return options


def load_with_spinner(path: Path, fmt: str, **given: Any) -> Dataset:
    """Load a dataset with a spinner on stderr; ``given`` are the :class:`LoadOptions` options as typed.

    An option that the detected (or chosen) format does not take is an error naming the flag.
    """
    import inspect

    from llm4rec.data.sources import (
        FORMATS,
        detect_format,
        load_amazon,
        load_dataset,
        load_movielens,
        load_recbole,
        load_table,
    )

    options = _loader_options(given)
    if options:
        if fmt not in FORMATS:
            raise InputError("unknown dataset format", value=fmt, expected=f"one of {list(FORMATS)}")
        detected = detect_format(path) if fmt == "auto" else fmt
        loader = {"movielens": load_movielens, "recbole": load_recbole, "amazon": load_amazon}.get(detected,
                                                                                                   load_table)
        takes = [p for p in inspect.signature(loader).parameters if p in _FLAGS]
        wrong = [k for k in options if k not in takes]
        if wrong:
            flags = [_FLAGS[k] for k in wrong]
            families = {"CSV/TSV/Parquet tables (--format csv)" if k in _TABLE_OPTIONS else "MovieLens releases"
                        for k in wrong}
            raise InputError(f"{' and '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply to {detected} "
                             "data", path=path,
                             expected=f"options of the {detected} loader: {', '.join(_FLAGS[k] for k in takes)}"
                             if takes else f"no loading options for {detected} data",
                             hint=f"{', '.join(flags)} {'is' if len(flags) == 1 else 'are'} for "
                                  f"{' and '.join(sorted(families))}.")
    with progress_bar() as progress:
        progress.add_task(f"loading {path}", total=None)
        return load_dataset(path, format=fmt, **options)


@data_app.command("info")
def info(
    path: Path = typer.Argument(..., help="Dataset file or directory."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    separator: str = LoadOptions.separator, user_col: str = LoadOptions.user_col,
    item_col: str = LoadOptions.item_col, timestamp_col: str = LoadOptions.timestamp_col,
    rating_col: str = LoadOptions.rating_col, items_path: Path = LoadOptions.items_path,
    item_key: str = LoadOptions.item_key, users_path: Path = LoadOptions.users_path,
    user_key: str = LoadOptions.user_key, text_columns: str = LoadOptions.text_columns,
    ratings_file: str = LoadOptions.ratings_file, encoding: str = LoadOptions.encoding,
    tags: bool = LoadOptions.tags,
) -> None:
    """Counts, sparsity, rating range and text fields of a dataset."""
    from rich.table import Table

    ds = load_with_spinner(path, fmt, separator=separator, user_col=user_col, item_col=item_col,
                           timestamp_col=timestamp_col, rating_col=rating_col, items_path=items_path,
                           item_key=item_key, users_path=users_path, user_key=user_key, text_columns=text_columns,
                           ratings_file=ratings_file, encoding=encoding, tags=tags)
    summary = {**ds.describe(), "fingerprint": ds.fingerprint}
    if as_json:
        console.print_json(json.dumps(summary))
        return
    table = Table(title=f"{ds.name} ({path})", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@data_app.command("convert")
def convert(
    source: Path = typer.Argument(..., help="Dataset file or directory to read."),
    out: Path = typer.Argument(..., help="Output directory: new or empty (written atomically), or an earlier "
                                         "export with --overwrite."),
    to: str = typer.Option("recbole", "--to", help="Output format: recbole, parquet or csv."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds an earlier export (a "
                                                              "directory with other files is never replaced)."),
    separator: str = LoadOptions.separator, user_col: str = LoadOptions.user_col,
    item_col: str = LoadOptions.item_col, timestamp_col: str = LoadOptions.timestamp_col,
    rating_col: str = LoadOptions.rating_col, items_path: Path = LoadOptions.items_path,
    item_key: str = LoadOptions.item_key, users_path: Path = LoadOptions.users_path,
    user_key: str = LoadOptions.user_key, text_columns: str = LoadOptions.text_columns,
    ratings_file: str = LoadOptions.ratings_file, encoding: str = LoadOptions.encoding,
    tags: bool = LoadOptions.tags,
) -> None:
    """Convert a dataset to RecBole atomic files, Parquet or CSV."""
    import os

    from llm4rec.data.export import EXPORT_FORMATS, save_dataset

    if to not in EXPORT_FORMATS:  # every check before the data loads
        raise InputError("unknown export format", value=to, expected=f"one of {list(EXPORT_FORMATS)}")
    if out.exists() and not out.is_dir():
        raise InputError("OUT names a file", path=out, expected="a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("OUT is not empty", path=out, expected="a new or empty directory",
                         hint="Add --overwrite to replace an earlier export there.")
    probe = out.parent  # the export is written beside OUT, then renamed
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError("no permission to write OUT here", path=probe, expected="a writable directory")
    ds = load_with_spinner(source, fmt, separator=separator, user_col=user_col, item_col=item_col,
                           timestamp_col=timestamp_col, rating_col=rating_col, items_path=items_path,
                           item_key=item_key, users_path=users_path, user_key=user_key, text_columns=text_columns,
                           ratings_file=ratings_file, encoding=encoding, tags=tags)
    written = save_dataset(ds, out, to=to, overwrite=overwrite)
    console.print(f"wrote {ds.name} ({ds.n_interactions} interactions) as {to} to {written}")


@data_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="Dataset name, e.g. ml-100k (see `llm4rec data fetch --list`)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where to store it (default $LLM4REC_CACHE "
                                                              "or ~/.cache/llm4rec)."),
    force: bool = typer.Option(False, "--force", help="Download again even if present."),
) -> None:
    """Download a public dataset from its official address, verify its checksum, unpack it."""
    from llm4rec.data.fetch import fetch_dataset

    path = fetch_dataset(name, cache_dir, force=force, progress=True)
    console.print(f"{name} is ready at {path}")
    console.print(f"try: llm4rec data info {path}")


@data_app.command("list")
def list_remote() -> None:
    """Datasets that `llm4rec data fetch` knows."""
    from rich.table import Table

    from llm4rec.data.fetch import DATASETS

    table = Table("name", "description", "address")
    for name, remote in DATASETS.items():
        table.add_row(name, getattr(remote, "description", ""), remote.url)
    console.print(table)


_SIZE = r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMbB]?)\s*$"
_MULTIPLIER = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_count(text: str, option: str) -> int:
    """``"1M"`` -> 1_000_000: a positive whole number with an optional suffix k (1e3), M (1e6) or B (1e9);
    ``_`` and ``,`` between digits are ignored (``1_000``, ``2.5k``). Anything else is an InputError naming
    ``option``."""
    import re
    from decimal import Decimal

    match = re.match(_SIZE, str(text).replace("_", "").replace(",", ""))
    if match:
        value = Decimal(match.group(1)) * _MULTIPLIER[match.group(2).lower()]
        if value == value.to_integral_value() and value >= 1:
            return int(value)
    raise InputError(f"bad size for {option}", value=text,
                     expected="a positive whole number, optionally with k, M or B (e.g. 100k, 1M, 2.5M, 1B)")


@data_app.command("generate")
def generate(
    interactions: str = typer.Option(..., "--interactions", "-n", help="How many interactions, e.g. 1M, 250k, 1B."),
    items: str = typer.Option(..., "--items", help="Catalogue size, e.g. 100k; every item gets text."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: new or empty (written atomically)."),
    users: str = typer.Option(None, "--users", help="How many users (default: interactions / 20)."),
    topics: str = typer.Option(None, "--topics", help="How many topics (default: items / 1000, within 10-1000)."),
    seed: int = typer.Option(2026, "--seed", help="Random seed: the same seed gives the same files."),
    chunk_users: str = typer.Option("32k", "--chunk-users", help="Users generated at once (bounds the memory; "
                                                                 "the output does not depend on it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds an earlier generated "
                                                              "dataset (a directory with other files is never "
                                                              "replaced)."),
) -> None:
    """Generate a synthetic log with item text and a planted structure (Parquet), for scale tests.

    OUT loads like any dataset; OUT/truth.json holds the planted structure and what an oracle scores on it.
    """
    import time

    from llm4rec.cli._common import StepReporter
    from llm4rec.data.scale import generate_scale, read_truth

    sizes = {"n_interactions": parse_count(interactions, "--interactions"),
             "n_items": parse_count(items, "--items"),
             "n_users": None if users is None else parse_count(users, "--users"),
             "n_topics": None if topics is None else parse_count(topics, "--topics")}
    chunk = parse_count(chunk_users, "--chunk-users")
    t0 = time.perf_counter()
    with progress_bar() as progress:
        generate_scale(out, seed=seed, chunk_users=chunk, overwrite=overwrite, progress=StepReporter(progress),
                       **sizes)
    truth = read_truth(out)
    ref = truth["reference"]
    console.print(f"wrote {truth['n_interactions']:,} interactions of {truth['n_users']:,} users on "
                  f"{truth['n_items']:,} items ({truth['n_topics']} topics) to {out} in "
                  f"{time.perf_counter() - t0:.1f}s")
    console.print("reference P-LOO NDCG@10: " + ", ".join(f"{name.replace('_', ' ')} {ref[name]['NDCG@10']:.4f}"
                                                          for name in ("oracle", "topic_oracle", "popularity"))
                  + " (truth.json has more)")
    console.print(f"try: llm4rec evaluate --data {out} --model ease")


@data_app.command("split")
def split(
    data: Path = typer.Argument(..., help="Interactions in Parquet: a file, or a directory as `data generate` and "
                                          "`data convert --to parquet` write."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: new or empty (written atomically)."),
    shards: int = typer.Option(16, "--shards", min=1, max=65_536,
                               help="Shards of users; a step holds one shard (or one read of 2Mi rows)."),
    protocol: str = typer.Option("loo", "--protocol", help="Evaluation protocol: loo (P-LOO) only."),
    seed: int = typer.Option(2026, "--seed", help="The protocol's seed, stored in the manifest."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Run the steps as tasks on a Ray cluster (the ray extra): auto (the one `ray "
                                 "start` runs here), local (a private one) or the head's host:port."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds an earlier sharded split (a "
                                                              "directory with other files is never replaced)."),
) -> None:
    """Split a log too large for one process under P-LOO, in shards of users (bounded memory).

    Each user's interactions land in one shard (a hash of the user id), and each shard is split on its own:
    together they are exactly the one-process split. OUT holds manifest.json, items.parquet and
    shard-NNNNN.parquet files (user_id, item_id, timestamp[, rating], stage: 0 train, 1 valid, 2 test);
    `llm4rec.data.shards.read_shard(OUT, k)` reads one back as a split.
    """
    import time

    from llm4rec.cli._common import StepReporter

    t0 = time.perf_counter()
    with progress_bar() as progress:
        report = StepReporter(progress)
        if ray is None:
            from llm4rec.data.shards import split_to_shards

            manifest = split_to_shards(data, out, shards, protocol=protocol, seed=seed, overwrite=overwrite,
                                       progress=report)
        else:
            from llm4rec.distributed.split import split_ray

            manifest = split_ray(data, out, shards, protocol=protocol, seed=seed, overwrite=overwrite, address=ray,
                                 progress=report)
    total = manifest["total"]
    console.print(f"split {total['interactions']:,} interactions of {total['users']:,} users into {shards} shards "
                  f"under P-LOO (train {total['train']:,}, valid {total['valid']:,}, test {total['test']:,}; "
                  f"{total['duplicates_dropped']:,} duplicate rows dropped) in {time.perf_counter() - t0:.1f}s: "
                  f"{out}")
