"""Embedding on a Ray cluster: the single-process vectors and cache, across workers, surviving a dead worker.

Real texts (the first 300 Amazon Beauty items, MovieLens 100K titles for the
CLI) and the real packaged MiniLM encoder, on the session's local cluster (a
head and two one-CPU worker nodes, separate processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llm4rec.errors import InputError

N_ITEMS = 300


@pytest.fixture(scope="module")
def beauty(shared_data, tmp_path_factory):
    """The first N_ITEMS Amazon Beauty items as Parquet (attributes, and rendered texts), with their vectors
    from the single-process path (``encode_cached``) and the cache it filled."""
    import polars as pl

    from llm4rec.data import load_dataset
    from llm4rec.text import default_item_template, encode_cached, get_encoder, table_texts

    ds = load_dataset(shared_data / "amazon-beauty")
    tpl = default_item_template(ds)
    attrs = ds.item_attrs.head(N_ITEMS)
    root = tmp_path_factory.mktemp("beauty")
    attrs.write_parquet(root / "items.parquet")
    texts = table_texts(attrs, tpl)
    pl.DataFrame({"item_id": attrs.get_column("item_id"), "text": texts}).write_parquet(root / "texts.parquet")
    encoder = get_encoder("minilm")
    ref = encode_cached(encoder, texts, cache_dir=root / "ref-cache", template_id=tpl.id)
    return SimpleNamespace(root=root, ids=attrs.get_column("item_id").to_list(), texts=texts, template=tpl,
                           ref=ref, ref_cache=root / "ref-cache", fingerprint=encoder.fingerprint)


def _shards(cache_root: Path, fingerprint: str, template_id: str) -> list[str]:
    from llm4rec.text import EmbeddingCache

    return [p.name for p in EmbeddingCache(cache_root, fingerprint, template_id).shards()]


def _read_output(out: Path, ids: list[str]) -> np.ndarray:
    """float32[len(ids), dim] from an embed_parquet output folder, rows in the order of ``ids``; asserts that
    the folder holds exactly one row per id and nothing but Parquet parts and the meta file."""
    import pyarrow.dataset as pads

    from llm4rec.distributed.embed import EMBEDDING_COLUMN, META_FILE

    names = sorted(p.name for p in out.iterdir())
    assert META_FILE in names and all(n.endswith(".parquet") for n in names if n != META_FILE)
    table = pads.dataset(str(out), format="parquet").to_table()
    assert table.num_rows == len(ids)
    got = table.column("item_id").to_pylist()
    assert sorted(got) == sorted(ids)  # every item once
    column = table.column(EMBEDDING_COLUMN).combine_chunks()
    assert str(column.type.value_type) == "float" and column.type.list_size == 384
    vectors = column.flatten().to_numpy().reshape(len(got), -1)
    position = {item: row for row, item in enumerate(got)}
    return vectors[[position[i] for i in ids]]


def _no_leftovers(out: Path) -> None:
    """Nothing half-written beside ``out`` (atomic_dir's temporary siblings start with '.<name>.')."""
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_parquet_template_mode_matches_the_single_process_path(ray_cluster, beauty, tmp_path):
    """Items rendered by the workers with the template: the single-process vectors, and the same cache keys
    (the single-process path then finds every text in the cache the workers filled)."""
    from llm4rec.distributed.embed import META_FILE, embed_parquet
    from llm4rec.text import encode_cached, get_encoder

    cache, out = tmp_path / "cache", tmp_path / "out"
    summary = embed_parquet(beauty.root / "items.parquet", out, "minilm", template=beauty.template,
                            cache_dir=cache, chunk_size=64, workers=2)
    assert (summary.rows, summary.dim, summary.workers) == (N_ITEMS, 384, 2)
    assert summary.template_id == beauty.template.id and summary.fingerprint == beauty.fingerprint
    vectors = _read_output(out, beauty.ids)
    np.testing.assert_allclose(vectors, beauty.ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["rows"] == N_ITEMS and meta["template"] == beauty.template.text
    _no_leftovers(out)

    shards = _shards(cache, beauty.fingerprint, beauty.template.id)
    assert len(shards) >= 2  # one per batch with new texts (chunks of 64 rows)
    again = encode_cached(get_encoder("minilm"), beauty.texts, cache_dir=cache, template_id=beauty.template.id)
    assert _shards(cache, beauty.fingerprint, beauty.template.id) == shards  # nothing encoded again
    np.testing.assert_allclose(again, beauty.ref, atol=1e-5)


def test_a_run_over_a_full_cache_encodes_nothing(ray_cluster, beauty, tmp_path):
    """The cache the single-process path wrote serves every row to the workers: no new shard is written."""
    from llm4rec.distributed.embed import embed_parquet

    cache = tmp_path / "cache"
    shutil.copytree(beauty.ref_cache, cache)
    before = _shards(cache, beauty.fingerprint, beauty.template.id)
    assert before
    out = tmp_path / "out"
    embed_parquet(beauty.root / "texts.parquet", out, "minilm", text_column="text", template_id=beauty.template.id,
                  cache_dir=cache, chunk_size=128)
    assert _shards(cache, beauty.fingerprint, beauty.template.id) == before
    np.testing.assert_allclose(_read_output(out, beauty.ids), beauty.ref, atol=1e-5)


def test_encode_texts_is_encode_cached_across_workers(ray_cluster, beauty, tmp_path):
    """Texts in (with duplicates), the single-process matrix out in input order; a second call is all cache."""
    from llm4rec.distributed.embed import encode_texts

    texts = beauty.texts + beauty.texts[:25]  # duplicates are encoded once and returned in place
    seen = []
    vectors = encode_texts(texts, "minilm", template_id=beauty.template.id, cache_dir=tmp_path, chunk_size=64,
                           on_lookup=lambda cached, todo: seen.append((cached, todo)))
    assert vectors.dtype == np.float32 and vectors.shape == (N_ITEMS + 25, 384)
    np.testing.assert_allclose(vectors[:N_ITEMS], beauty.ref, atol=1e-5)
    np.testing.assert_array_equal(vectors[N_ITEMS:], vectors[:25])
    distinct = len(set(beauty.texts))
    assert seen == [(0, distinct)]
    shards = _shards(tmp_path, beauty.fingerprint, beauty.template.id)
    again = encode_texts(texts, "minilm", template_id=beauty.template.id, cache_dir=tmp_path,
                         on_lookup=lambda cached, todo: seen.append((cached, todo)))
    assert seen[-1] == (distinct, 0)
    assert _shards(tmp_path, beauty.fingerprint, beauty.template.id) == shards
    np.testing.assert_array_equal(again, vectors)


@pytest.mark.slow
def test_killing_a_worker_node_mid_run_still_gives_complete_output(ray_cluster, beauty, tmp_path):
    """A worker node dies once its first batches are stored: the run finishes on what is left (the dead
    actor's batches retried), every row is right, and nothing partial is left behind."""
    from llm4rec.distributed.embed import embed_parquet

    cache, out = tmp_path / "cache", tmp_path / "out"
    killed = threading.Event()
    stop = threading.Event()

    def kill_after_first_batches() -> None:
        while not stop.is_set():
            if len(_shards(cache, beauty.fingerprint, "raw")) >= 2:  # two batches encoded and stored
                ray_cluster.kill_worker()
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_batches, daemon=True)
    killer.start()
    try:
        summary = embed_parquet(beauty.root / "texts.parquet", out, "minilm", text_column="text", cache_dir=cache,
                                chunk_size=16, workers=2)
    finally:
        stop.set()
        killer.join()
        if killed.is_set():
            ray_cluster.add_worker()  # later tests get their two workers back
    assert killed.is_set(), "the run ended before a worker could be killed"
    assert summary.rows == N_ITEMS
    np.testing.assert_allclose(_read_output(out, beauty.ids), beauty.ref, atol=1e-5)
    _no_leftovers(out)


@pytest.mark.slow
def test_a_bad_row_fails_cleanly_and_writes_nothing(ray_cluster, beauty, tmp_path):
    """A blank text fails the run with an InputError naming the file, the column and the row's id; no output."""
    import polars as pl

    from llm4rec.distributed.embed import embed_parquet

    texts = list(beauty.texts[:40])
    texts[33] = "   "
    source = tmp_path / "bad.parquet"
    pl.DataFrame({"item_id": beauty.ids[:40], "text": texts}).write_parquet(source)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="empty text") as info:
        embed_parquet(source, out, "minilm", text_column="text", cache_dir=tmp_path / "cache", chunk_size=16)
    assert str(source) in str(info.value) and "'text'" in str(info.value) and beauty.ids[33] in str(info.value)
    assert not out.exists()
    _no_leftovers(out)


def test_arguments_are_checked_before_any_work(ray_cluster, beauty, tmp_path):
    from llm4rec.distributed.embed import embed_parquet, encode_texts

    items = beauty.root / "items.parquet"
    with pytest.raises(InputError, match="exactly one of text_column and template"):
        embed_parquet(items, tmp_path / "o", text_column="title", template="{title}")
    with pytest.raises(InputError, match="no such column") as info:
        embed_parquet(items, tmp_path / "o", text_column="description")
    assert str(items) in str(info.value)
    import polars as pl

    pl.DataFrame({"item_id": [], "text": []}, schema={"item_id": pl.Utf8, "text": pl.Utf8}).write_parquet(
        tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="has no rows"):
        embed_parquet(tmp_path / "empty.parquet", tmp_path / "o", text_column="text")
    with pytest.raises(InputError, match="Parquet items not found"):
        embed_parquet(tmp_path / "missing.parquet", tmp_path / "o", text_column="text")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="the output exists"):
        embed_parquet(items, tmp_path / "taken", text_column="title", overwrite=True)
    with pytest.raises(InputError, match="room for 2 encoder actors"):
        encode_texts(["a lipstick"], "minilm", cache_dir=tmp_path / "cache", workers=3)
    with pytest.raises(InputError, match="not a Ray cluster address"):
        encode_texts(["a lipstick"], "minilm", cache_dir=tmp_path / "cache", address="no address")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine" and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def ml_small(shared_data, tmp_path_factory):
    """MovieLens 100K cut to its first 240 movies (RecBole files: .item rows and their ratings)."""
    source = shared_data / "ml-100k"
    root = tmp_path_factory.mktemp("ml-small")
    lines = (source / "ml-100k.item").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "ml-small.item").write_text("".join(lines[:241]), encoding="utf-8")
    inter = (source / "ml-100k.inter").read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [row for row in inter[1:] if int(row.split("\t")[1]) <= 240]
    (root / "ml-small.inter").write_text(inter[0] + "".join(kept), encoding="utf-8")
    return root


@pytest.mark.slow
def test_cli_embed_with_ray_writes_the_files_of_the_single_process_command(ray_cluster, ml_small, tmp_path,
                                                                            capsys):
    from tests.cli._run import run

    code, out, err = run(capsys, "embed", "--data", str(ml_small), "--out", str(tmp_path / "one"),
                         "--cache-dir", str(tmp_path / "cache-one"))
    assert code == 0, out + err
    code, out, err = run(capsys, "embed", "--data", str(ml_small), "--out", str(tmp_path / "ray"),
                         "--cache-dir", str(tmp_path / "cache-ray"), "--ray", ray_cluster.address,
                         "--workers", "2")
    assert code == 0, out + err
    assert "240 items x 384 dims" in out
    one, ray = tmp_path / "one", tmp_path / "ray"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in ray.iterdir())
    assert (one / "items.json").read_text() == (ray / "items.json").read_text()
    a = np.load(one / "embeddings.npy", allow_pickle=False)
    b = np.load(ray / "embeddings.npy", allow_pickle=False)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (240, 384)
    np.testing.assert_allclose(b, a, atol=1e-5)
    meta_one, meta_ray = (json.loads((d / "meta.json").read_text()) for d in (one, ray))
    meta_one.pop("environment")
    meta_ray.pop("environment")
    assert meta_ray == meta_one
    code, out, err = run(capsys, "embed", "--data", str(ml_small), "--out", str(tmp_path / "ray"),
                         "--cache-dir", str(tmp_path / "cache-ray"), "--ray", ray_cluster.address)
    assert code == 0 and "all 240 distinct texts from the embedding cache" in out  # a rerun encodes nothing
    np.testing.assert_array_equal(np.load(ray / "embeddings.npy", allow_pickle=False), b)

    # Parquet in, Parquet out: the items' texts from a column
    import polars as pl

    from llm4rec.distributed.embed import META_FILE

    titles = pl.read_csv(ml_small / "ml-small.item", separator="\t", quote_char=None).rename(
        {"item_id:token": "movie", "movie_title:token_seq": "title"}).select("movie", "title")
    titles.write_parquet(tmp_path / "titles.parquet")
    code, out, err = run(capsys, "embed", "--data", str(tmp_path / "titles.parquet"), "--out",
                         str(tmp_path / "pq"), "--cache-dir", str(tmp_path / "cache-ray"), "--ray",
                         ray_cluster.address, "--text-column", "title", "--id-column", "movie")
    assert code == 0, out + err
    assert "240 rows x 384 dims" in out
    assert json.loads((tmp_path / "pq" / META_FILE).read_text())["rows"] == 240


def test_cli_bad_ray_address_is_a_clear_error(tmp_path, ml_small, capsys):
    """A well-formed address where nothing listens: one paragraph naming it, no traceback, no output."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", "from llm4rec.cli.main import main; raise SystemExit(main())",
                           "embed", "--data", str(ml_small), "--out", str(tmp_path / "out"), "--ray",
                           "127.0.0.1:1"], capture_output=True, text=True, timeout=120, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "nothing answers at this Ray address" in text and "127.0.0.1:1" in text
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_cli_ray_options_need_ray(tmp_path, ml_small, capsys):
    from tests.cli._run import run

    code, out, err = run(capsys, "embed", "--data", str(ml_small), "--out", str(tmp_path / "out"),
                         "--workers", "2")
    assert code == 2 and "--workers needs --ray" in out + err
    code, out, err = run(capsys, "embed", "--data", str(ml_small), "--out", str(tmp_path / "out"),
                         "--ray", "not an address")
    assert code == 2 and "not a Ray cluster address" in out + err
    assert not (tmp_path / "out").exists()
