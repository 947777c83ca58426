"""``llm4rec embed``: encode every item's text into a matrix of embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llm4rec.cli._common import console
from llm4rec.cli.data_cmd import FORMAT_HELP, load_with_spinner

#: the files ``llm4rec embed`` writes into OUT
EMBED_FILES = ("embeddings.npy", "items.json", "meta.json")


def embed_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset file or directory."),
    encoder: str = typer.Option("minilm", "--encoder", "-e",
                                help="minilm, minilm-qint8, minilm-int8, e5-multilingual, "
                                     "or a model folder / .onnx / .gguf path."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (written atomically)."),
    template: str = typer.Option(None, "--template", "-t",
                                 help="Item text template, e.g. '{title}. Categories: {categories}' "
                                      "(default: chosen from the dataset's columns)."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Embedding cache root (default $LLM4REC_CACHE/"
                                                             "embeddings or ~/.cache/llm4rec/embeddings)."),
    ray_address: str = typer.Option(None, "--ray", metavar="ADDRESS",
                                    help="Encode on a Ray cluster: auto (the one `ray start` runs here), local "
                                         "(one started for this command) or the head's host:port. Same files "
                                         "and cache as without it."),
    workers: int = typer.Option(None, "--workers", min=1,
                                help="With --ray: encoder actors, one CPU each (default: all the cluster's CPUs)."),
    text_column: str = typer.Option(None, "--text-column",
                                    help="With --ray: DATA is a Parquet items table whose texts are in this "
                                         "column; OUT becomes Parquet files of (id, embedding) rows."),
    id_column: str = typer.Option(None, "--id-column",
                                  help="With --ray: DATA is a Parquet items table named by this column "
                                       "(default item_id); texts from --text-column or --template."),
) -> None:
    """Encode every item's text; write embeddings.npy, items.json and meta.json into OUT.

    embeddings.npy is float32[n_items, dim] with L2-normalised rows, in the
    order of items.json (the item ids); meta.json records the encoder, its
    fingerprint, the template, dim and the dataset fingerprint. Texts already
    in the embedding cache are not encoded again, and the work is stored in
    the cache as it goes: after an interruption (Ctrl-C), the same command
    resumes, saying how many texts came from the cache.

    With --ray the texts are encoded by a pool of Ray actors (one encoder
    load each) through the same cache; the files are the same. With
    --text-column or --id-column, DATA is a Parquet items table (a file or a
    folder) streamed to Parquet: OUT holds part files of (id, embedding) rows
    and _embedding.json, written only when complete.
    """
    import io

    import numpy as np

    from llm4rec._atomic import atomic_dir
    from llm4rec.errors import InputError
    from llm4rec.text import (
        Template,
        default_cache_dir,
        default_item_template,
        encode_cached,
        get_encoder,
        item_texts,
    )

    if ray_address is not None:
        from llm4rec.distributed.cluster import check_address

        check_address(ray_address)  # a malformed or dead address fails before any work
    elif workers is not None or text_column is not None or id_column is not None:
        flag = "--workers" if workers is not None else "--text-column" if text_column is not None else "--id-column"
        raise InputError(f"{flag} needs --ray", value=flag,
                         expected="--ray auto, --ray local (a cluster on this machine) or --ray HOST:PORT")
    if text_column is not None or id_column is not None:
        _embed_parquet_items(data, out, encoder, template, text_column, id_column or "item_id", batch_size,
                             cache_dir, ray_address, workers)
        return
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise InputError("output path exists and is not an embedding directory", path=out,
                         expected="a new or empty directory, or one written by `llm4rec embed`")
    enc = get_encoder(encoder)  # a bad name or path fails before the data loads
    tpl = Template(template) if template is not None else None
    ds = load_with_spinner(data, fmt)
    tpl = tpl or default_item_template(ds)
    cache_root = default_cache_dir() if cache_dir is None else cache_dir

    def report(cached: int, to_encode: int) -> None:
        if cached and to_encode:
            console.print(f"resuming: {cached} of {cached + to_encode} distinct texts from the embedding cache "
                          f"({cache_root}), {to_encode} to encode", soft_wrap=True)
        elif cached:
            console.print(f"all {cached} distinct texts from the embedding cache ({cache_root})", soft_wrap=True)

    try:
        if ray_address is None:
            vectors = encode_cached(enc, item_texts(ds, tpl), cache_dir=cache_root, template_id=tpl.id,
                                    batch_size=batch_size, progress=True, on_lookup=report)
        else:
            from llm4rec.distributed.embed import embed_dataset, quiet_ray_data

            with quiet_ray_data(), console.status(f"encoding on Ray ({ray_address})"):
                vectors = embed_dataset(ds, tpl, encoder, address=ray_address, cache_dir=cache_root,
                                        batch_size=batch_size, workers=workers, on_lookup=report)
    except KeyboardInterrupt:
        console.print(f"interrupted: the finished chunks of texts are kept in the embedding cache ({cache_root}); "
                      "run the same command again to encode only the rest", soft_wrap=True)
        raise
    from llm4rec._runinfo import environment

    meta = {"dataset": ds.name, "data": str(data.resolve()), "dataset_fingerprint": ds.fingerprint,
            "n_items": int(vectors.shape[0]),
            "encoder": encoder, "backend": enc.backend, "fingerprint": enc.fingerprint, "dim": int(vectors.shape[1]),
            "template": tpl.text, "template_id": tpl.id, "pii_scrubbed": True, "environment": environment()}
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    with atomic_dir(out, replace=True) as tmp:  # checked above: empty or our own output
        (tmp / "embeddings.npy").write_bytes(buf.getvalue())
        (tmp / "items.json").write_text(json.dumps([str(t) for t in ds.items.tokens]) + "\n", encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    console.print(f"{ds.name}: {vectors.shape[0]} items x {vectors.shape[1]} dims with {encoder} "
                  f"(template {tpl.text!r}) -> {out}")


def _embed_parquet_items(data: Path, out: Path, encoder: str, template: str | None, text_column: str | None,
                         id_column: str, batch_size: int, cache_dir: Path | None, ray_address: str | None,
                         workers: int | None) -> None:
    """``llm4rec embed --ray ... --text-column/--id-column``: a Parquet items table to Parquet embeddings."""
    from llm4rec.distributed.embed import embed_parquet, quiet_ray_data
    from llm4rec.errors import InputError

    if (text_column is None) == (template is None):
        raise InputError("a Parquet items table needs exactly one of --text-column and --template",
                         value={"--text-column": text_column, "--template": template},
                         expected="--text-column COLUMN (texts as they are) or --template '{title}...' "
                                  "(rendered from the table's columns)")
    with quiet_ray_data(), console.status(f"encoding on Ray ({ray_address})"):
        summary = embed_parquet(data, out, encoder, text_column=text_column, template=template,
                                id_column=id_column, cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                                address=ray_address, overwrite=True)
    console.print(f"{data}: {summary.rows} rows x {summary.dim} dims with {encoder} on {summary.workers} Ray "
                  f"workers in {summary.seconds:.1f} s -> {out} (Parquet: {id_column}, embedding)", soft_wrap=True)
