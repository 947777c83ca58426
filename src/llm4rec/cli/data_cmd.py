"""``llm4rec data``: inspect, convert and fetch datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import console, progress_bar

data_app = typer.Typer(help="Inspect, convert and download datasets.", no_args_is_help=True)

FORMAT_HELP = "Input format: auto, movielens, recbole, amazon or csv (CSV/TSV/Parquet)."


def load_with_spinner(path: Path, fmt: str):
    """Load a dataset with a spinner on stderr."""
    from llm4rec.data.sources import load_dataset

    with progress_bar() as progress:
        progress.add_task(f"loading {path}", total=None)
        return load_dataset(path, format=fmt)


@data_app.command("info")
def info(
    path: Path = typer.Argument(..., help="Dataset file or directory."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Counts, sparsity, rating range and text fields of a dataset."""
    from rich.table import Table

    ds = load_with_spinner(path, fmt)
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
    out: Path = typer.Argument(..., help="Output directory (written atomically)."),
    to: str = typer.Option("recbole", "--to", help="Output format: recbole, parquet or csv."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists and is not empty."),
) -> None:
    """Convert a dataset to RecBole atomic files, Parquet or CSV."""
    from llm4rec.data.export import save_dataset

    ds = load_with_spinner(source, fmt)
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
