"""`llm4rec embed` end to end on the synthetic data, with the int8 ONNX encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm4rec.cli.main import main
from llm4rec.data import load_dataset
from llm4rec.data.export import save_dataset
from llm4rec.text import OnnxEncoder, default_item_template, item_embeddings, item_texts


@pytest.fixture
def data_dir(synthetic, tmp_path):
    return save_dataset(synthetic, tmp_path / "synthetic", to="csv")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_writes_matrix_ids_and_meta(capsys, data_dir, tmp_path):
    out, cache = tmp_path / "emb", tmp_path / "cache"
    code, stdout, err = run(capsys, "embed", "--data", str(data_dir), "--encoder", "minilm-int8", "--out", str(out),
                            "--cache-dir", str(cache))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "items.json", "meta.json"]
    ds = load_dataset(data_dir)
    emb = np.load(out / "embeddings.npy", allow_pickle=False)
    assert emb.shape == (ds.n_items, 384) and emb.dtype == np.float32
    assert json.loads((out / "items.json").read_text()) == [str(t) for t in ds.items.tokens]
    np.testing.assert_array_equal(emb, item_embeddings(ds, encoder="minilm-int8", cache_dir=cache))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoder"] == "minilm-int8" and meta["dim"] == 384 and meta["dataset_fingerprint"] == ds.fingerprint
    assert meta["template"] == "{title} ({year}). Categories: {categories}. {description}"
    assert len(meta["fingerprint"]) == 16 and f"{ds.n_items} items x 384 dims" in stdout
    # Again with a template, into the same directory: replaced whole.
    code, _, err = run(capsys, "embed", "-d", str(data_dir), "-e", "minilm-int8", "-o", str(out), "--cache-dir",
                       str(cache), "--template", "{title}")
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["template"] == "{title}"


def test_embed_errors_name_the_problem_and_leave_nothing(capsys, data_dir, tmp_path):
    out = tmp_path / "emb"
    code, _, err = run(capsys, "embed", "--data", str(data_dir), "--encoder", "minilm-int8", "--out", str(out),
                       "--template", "{title}. {brand}", "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and "column 'brand'" in err and not out.exists()
    code, _, err = run(capsys, "embed", "--data", str(data_dir), "--encoder", str(tmp_path / "no-model"),
                       "--out", str(out))
    assert code == 2 and "encoder model not found" in err and not out.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "embed", "--data", str(data_dir), "--out", str(foreign))
    assert code == 2 and "not an embedding directory" in err and (foreign / "keep.txt").read_text() == "mine"


def test_an_interrupted_embed_resumes_from_the_cache(capsys, data_dir, tmp_path, monkeypatch):
    ds = load_dataset(data_dir)
    n_texts = len(set(item_texts(ds, default_item_template(ds))))
    monkeypatch.setattr("llm4rec.text.cache.STORE_EVERY", 8)  # with --batch-size 4: a shard every 2 batches
    encoded: list[int] = []  # one entry per text encoded
    stop_after = [5]  # batches; then Ctrl-C
    real = OnnxEncoder._encode_ids

    def counting(self, ids, mask):
        if len(encoded) == 4 * stop_after[0]:
            raise KeyboardInterrupt
        encoded.extend(range(len(ids)))
        return real(self, ids, mask)

    monkeypatch.setattr(OnnxEncoder, "_encode_ids", counting)
    out, cache = tmp_path / "emb", tmp_path / "cache"
    args = ["embed", "-d", str(data_dir), "-e", "minilm-int8", "-o", str(out), "--cache-dir", str(cache),
            "--batch-size", "4"]
    code, stdout, err = run(capsys, *args)
    assert code == 130 and not out.exists()
    assert f"interrupted: the finished chunks of texts are kept in the embedding cache ({cache})" in stdout
    stop_after[0], encoded[:] = 10**9, []
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert f"resuming: 16 of {n_texts} distinct texts from the embedding cache ({cache}), {n_texts - 16} to encode" \
        in stdout
    assert len(encoded) == n_texts - 16  # only what the first run had not stored
    clean = item_embeddings(ds, encoder="minilm-int8", cache_dir=tmp_path / "clean", batch_size=4)
    np.testing.assert_allclose(np.load(out / "embeddings.npy", allow_pickle=False), clean, atol=1e-5)
    encoded.clear()
    code, stdout, err = run(capsys, *args)  # a third time: nothing left to encode
    assert code == 0 and f"all {n_texts} distinct texts from the embedding cache ({cache})" in stdout
    assert encoded == []


def test_embed_help(capsys):
    code, out, _ = run(capsys, "embed", "--help")
    assert code == 0 and "--encoder" in out and "--template" in out
