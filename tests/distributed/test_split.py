"""``llm4rec data split --ray``: on a real two-worker cluster, the shards are byte for byte the single-process
ones, a worker node killed mid-run changes nothing, and nothing half-written is left."""

from __future__ import annotations

import polars as pl
import pytest

from llm4rec.data import shards as shards_mod
from llm4rec.data.export import save_dataset
from llm4rec.data.shards import split_to_shards
from tests.cli._run import run

pytestmark = pytest.mark.realdata

SHARDS = 5


@pytest.fixture(scope="module")
def source(ml100k, tmp_path_factory):
    """ml-100k as Parquet in row groups of 10k rows, and its single-process sharded split."""
    folder = save_dataset(ml100k, tmp_path_factory.mktemp("ray-split") / "ml", to="parquet")
    pl.read_parquet(folder / "interactions.parquet").write_parquet(folder / "interactions.parquet",
                                                                   row_group_size=10_000)
    return folder


def same_files(a, b):
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert names == ["items.parquet", "manifest.json"] + [f"shard-{s:05d}.parquet" for s in range(SHARDS)]
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_the_ray_command_writes_the_single_process_files(ray_cluster, source, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shards_mod, "ROWS_PER_READ", 20_000)  # 5 map tasks
    split_to_shards(source, tmp_path / "one", SHARDS)
    code, printed, err = run(capsys, "data", "split", str(source), "--out", str(tmp_path / "ray"), "--shards",
                             str(SHARDS), "--ray", ray_cluster.address)
    assert code == 0, err
    assert "split 100,000 interactions of 943 users into 5 shards" in printed
    assert same_files(tmp_path / "one", tmp_path / "ray")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_worker_node_killed_mid_run_changes_nothing(ray_cluster, source, tmp_path, monkeypatch):
    from llm4rec.distributed.split import split_ray

    monkeypatch.setattr(shards_mod, "ROWS_PER_READ", 10_000)  # 10 map tasks over 2 one-CPU nodes
    split_to_shards(source, tmp_path / "one", SHARDS)
    killed = []

    def kill_once(step, done, total):
        if not killed and step.startswith("reading") and done == 2:
            ray_cluster.kill_worker()  # tasks running or queued there are retried on the other node
            killed.append(step)

    out = tmp_path / "ray"
    try:
        manifest = split_ray(source, out, SHARDS, address=ray_cluster.address, progress=kill_once)
    finally:
        ray_cluster.add_worker()  # later tests get two workers again
    assert killed and manifest["total"]["test"] == 943
    assert same_files(tmp_path / "one", out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_input_fails_before_ray_and_writes_nothing(ray_cluster, source, tmp_path, capsys):
    code, _, err = run(capsys, "data", "split", str(source), "--out", str(tmp_path / "x"), "--protocol", "cold",
                       "--ray", ray_cluster.address)
    assert code == 2 and "P-LOO only" in err and "Traceback" not in err
    code, _, err = run(capsys, "data", "split", str(source), "--out", str(tmp_path / "x"), "--ray", "head:99999")
    assert code == 2 and "not a Ray cluster address" in err
    assert not list(tmp_path.iterdir())
