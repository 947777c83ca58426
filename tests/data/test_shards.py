"""Sharded P-LOO (``llm4rec data split``): the shards together are exactly the one-process split, each user in
one shard, the same files for any read size, a hash that never changes, and bad input named."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from llm4rec.data import load_dataset, make_split
from llm4rec.data import shards as shards_mod
from llm4rec.data.export import save_dataset
from llm4rec.data.shards import read_manifest, read_shard, split_to_shards, user_shard
from llm4rec.errors import InputError
from tests.cli._run import run


def reference_hash(token: str) -> int:
    """The documented hash, one byte at a time with Python integers."""
    mask = (1 << 64) - 1
    data = token.encode("utf-8")
    x = (sum(b * pow(0x100000001B3, j, 1 << 64) for j, b in enumerate(data)) + len(data) * 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_user_shard_is_the_documented_hash_and_never_changes():
    rng = np.random.default_rng(0)
    tokens = ["", "a", "5", "héllo wörld", "user-" * 30] + [str(x) for x in rng.integers(0, 10**12, 300)]
    got = user_shard(pl.Series(tokens), 97)
    assert got.tolist() == [reference_hash(t) % 97 for t in tokens]
    assert user_shard(pl.Series([5, 123456789]), 97).tolist() == user_shard(pl.Series(["5", "123456789"]), 97).tolist()
    # pinned: a change here moves users between shards of existing splits
    assert [reference_hash(t) for t in ("a", "user-1")] == [5718913436695043505, 9057302666238186576]
    counts = np.bincount(user_shard(pl.Series([str(i) for i in range(40_000)]), 8), minlength=8)
    assert counts.min() > 4_700 and counts.max() < 5_300  # spread evenly


def rows_of(split) -> pl.DataFrame:
    ds = split.dataset
    users, items = ds.users.tokens, ds.items.tokens
    frame = {"user_id": users[ds.user].tolist(), "item_id": items[ds.item].tolist(), "timestamp": ds.timestamp,
             "stage": split.assignment}
    if ds.rating is not None:
        frame["rating"] = ds.rating
    return pl.DataFrame(frame).sort("user_id", "item_id")


def shard_rows(out) -> pl.DataFrame:
    manifest = read_manifest(out)
    frames = [pl.read_parquet(out / f"shard-{s:05d}.parquet") for s in range(manifest["shards"])]
    return pl.concat(frames).sort("user_id", "item_id")


def tiny_table(tmp_path, with_time=True):
    """Users with 1, 2, 3 and 5 interactions, a duplicated pair (the later row wins), equal timestamps broken
    by item order, numeric and text ids."""
    rows = [("u1", "10", 5.0), ("u2", "10", 1.0), ("u2", "11", 2.0), ("u3", "12", 3.0), ("u3", "9", 3.0),
            ("u3", "10", 1.0), ("7", "11", 1.0), ("7", "12", 2.0), ("7", "11", 9.0), ("7", "13", 4.0),
            ("7", "9", 5.0), ("7", "14", 6.0)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    if not with_time:
        frame = frame.drop("timestamp")
    folder = tmp_path / ("tiny" if with_time else "tiny-no-time")
    folder.mkdir()
    frame.write_parquet(folder / "interactions.parquet")
    pl.DataFrame({"item_id": ["9", "10", "11", "12", "13", "14", "99"], "title": list("abcdefg")}).write_parquet(
        folder / "items.parquet")
    return folder


@pytest.mark.parametrize("with_time", [True, False])
@pytest.mark.parametrize("n_shards", [1, 3, 16])
def test_shards_together_are_the_one_process_split(tmp_path, with_time, n_shards):
    folder = tiny_table(tmp_path, with_time)
    manifest = split_to_shards(folder, tmp_path / "out", n_shards)
    whole = make_split(load_dataset(folder), "loo")
    assert shard_rows(tmp_path / "out").select(rows_of(whole).columns).equals(rows_of(whole))
    assert manifest["total"] == {"users": 4, "interactions": 11, "rows": 12, "duplicates_dropped": 1,
                                 "train": 7, "valid": 2, "test": 2}
    assert manifest["items"] == 7  # the item table's unused item 99 is in the vocabulary
    items = pl.read_parquet(tmp_path / "out" / "items.parquet")
    assert items.get_column("item_id").to_list() == ["9", "10", "11", "12", "13", "14", "99"]
    assert items.get_column("title").to_list() == list("abcdefg")


def test_ml100k_shards_match_make_split_and_read_back(ml100k, tmp_path):
    source = save_dataset(ml100k, tmp_path / "ml", to="parquet")
    out = tmp_path / "shards"
    manifest = split_to_shards(source, out, 5)
    whole = make_split(load_dataset(source), "loo")
    expected = rows_of(whole)
    assert shard_rows(out).select(expected.columns).equals(expected)  # ratings too
    per_shard = [set(pl.read_parquet(out / f"shard-{s:05d}.parquet").get_column("user_id").unique()) for s in range(5)]
    assert sum(len(s) for s in per_shard) == ml100k.n_users == len(set().union(*per_shard))
    assert manifest["total"]["test"] == len(whole.stage("test").users) == 943
    split = read_shard(out, 2)
    assert split.dataset.items == whole.dataset.items and split.dataset.n_users == len(per_shard[2])
    test = split.stage("test")
    assert len(test.users) == manifest["per_shard"][2]["test"] and test.fit.provenance["protocol"] == "loo"
    assert split.dataset.item_attrs.columns == ml100k.item_attrs.columns  # titles for the text models
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_files_do_not_depend_on_the_read_size(ml100k, tmp_path, monkeypatch):
    source = save_dataset(ml100k, tmp_path / "ml", to="parquet")
    split_to_shards(source, tmp_path / "one", 4)
    pl.read_parquet(source / "interactions.parquet").write_parquet(source / "interactions.parquet",
                                                                   row_group_size=7_000)
    monkeypatch.setattr(shards_mod, "ROWS_PER_READ", 10_000)
    assert len(shards_mod.open_source(source).reads) == 14  # 14 groups of 7k and one of 2k; the 2k joins the last
    split_to_shards(source, tmp_path / "many", 4)
    for name in ["items.parquet"] + [f"shard-{s:05d}.parquet" for s in range(4)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name


def test_overwrite_replaces_only_an_earlier_split(tmp_path):
    folder = tiny_table(tmp_path)
    out = tmp_path / "out"
    split_to_shards(folder, out, 2)
    with pytest.raises(InputError, match="--overwrite"):
        split_to_shards(folder, out, 3)
    split_to_shards(folder, out, 3, overwrite=True)
    assert read_manifest(out)["shards"] == 3 and len(list(out.glob("shard-*.parquet"))) == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="nothing in it is removed"):
        split_to_shards(folder, out, 2, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_bad_input_is_named(tmp_path, capsys):
    folder = tiny_table(tmp_path)
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(InputError, match="reads Parquet.*data convert"):
        split_to_shards(csv, tmp_path / "a", 2)
    pl.DataFrame({"user": ["1"], "item_id": ["2"]}).write_parquet(tmp_path / "cols.parquet")
    with pytest.raises(InputError, match="column 'user_id': missing column"):
        split_to_shards(tmp_path / "cols.parquet", tmp_path / "a", 2)
    pl.DataFrame({"user_id": ["1"], "item_id": ["2"], "timestamp": ["2020-01-01"]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="timestamp column is not numeric"):
        split_to_shards(tmp_path / "t.parquet", tmp_path / "a", 2)
    pl.DataFrame({"user_id": ["1", None, "2"], "item_id": ["2", "3", "4"]}).write_parquet(tmp_path / "n.parquet")
    with pytest.raises(InputError, match=r"n.parquet, column 'user_id': row 1: missing value"):
        split_to_shards(tmp_path / "n.parquet", tmp_path / "a", 2)
    with pytest.raises(InputError, match="P-LOO only"):
        split_to_shards(folder, tmp_path / "a", 2, protocol="rand")
    assert not (tmp_path / "a").exists()
    code, _, err = run(capsys, "data", "split", str(csv), "--out", str(tmp_path / "b"))
    assert code == 2 and "data convert" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_shard_refuses_a_changed_file(tmp_path):
    out = tmp_path / "out"
    split_to_shards(tiny_table(tmp_path), out, 1)
    path = out / "shard-00000.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.lit(0, dtype=pl.Int8).alias("stage")).write_parquet(path)
    with pytest.raises(InputError, match="stages are not P-LOO"):
        read_shard(out, 0)
    with pytest.raises(InputError, match="no such shard"):
        read_shard(out, 1)
    (out / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a sharded split"):
        read_shard(out, 0)


def test_the_command_prints_what_it_did(ml100k, tmp_path, capsys):
    source = save_dataset(ml100k, tmp_path / "ml", to="parquet")
    code, printed, err = run(capsys, "data", "split", str(source), "--out", str(tmp_path / "s"), "--shards", "3")
    assert code == 0, err
    assert "split 100,000 interactions of 943 users into 3 shards under P-LOO" in printed
    assert "test 943" in printed
