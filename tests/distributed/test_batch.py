"""``llm4rec recommend --ray``: on a real two-worker cluster, the output file is byte for byte the single-process
one (every format, every kind of request), a worker killed mid-run changes nothing, and bad input is named
before anything is written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from llm4rec import batch
from llm4rec.models import Recommender, create_model
from tests.cli._run import run

pytestmark = pytest.mark.realdata

K = 7
BLOCK = 100  # ml-100k's 943 users in 10 blocks, the last one short


@pytest.fixture(scope="module")
def saved(ml100k, tmp_path_factory):
    """(the model as the single-process run loads it, its bundle): EASE fitted on the whole of ml-100k."""
    bundle = create_model("ease", {"l2": 200.0}).fit(ml100k).save(tmp_path_factory.mktemp("ray-batch") / "ease")
    return Recommender.load(bundle), bundle


def single_process(model, blocks, path):
    batch.recommend_to_file(model, blocks, path, K)
    return path.read_bytes()


def leftovers(directory):
    """Temporary files the writers may have left (a dot file beside the output)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_all_users_through_the_cli_give_the_single_process_file(ray_cluster, saved, tmp_path, capsys, suffix):
    _, bundle = saved
    one, many = tmp_path / f"one{suffix}", tmp_path / f"ray{suffix}"
    code, printed, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--k", str(K), "--out", str(one),
                             "--block", str(BLOCK))
    assert code == 0, err
    code, printed, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--k", str(K), "--out",
                             str(many), "--block", str(BLOCK), "--ray", ray_cluster.address, "--workers", "2")
    assert code == 0, err
    assert "943 users" in printed
    assert many.read_bytes() == one.read_bytes()  # same rows, order, scores, row groups, bytes
    frame = pl.read_parquet(many) if suffix == ".parquet" else pl.read_csv(many)
    assert frame.columns == ["user_id", "rank", "item_id", "score"] and frame.height == 943 * K
    assert leftovers(tmp_path) == []


def test_a_file_of_user_ids_with_unknown_ones_and_the_fallback(ray_cluster, saved, tmp_path):
    from llm4rec.distributed.batch import Requests, recommend_ray

    model, bundle = saved
    ids = model.users_.tokens[::-3][:250].tolist()  # out of index order, over 3 blocks of 100
    ids[120] = "nobody"  # unknown: the popularity fallback, inside a block of known users
    users = tmp_path / "users.txt"
    users.write_text("\n".join(ids) + "\n")
    expected = single_process(model, batch.users_from_file(model, users, BLOCK, "fallback")[1], tmp_path / "one.jsonl")
    rows = recommend_ray(bundle, Requests("users", users, "fallback"), tmp_path / "ray.jsonl", K, block=BLOCK,
                         address=ray_cluster.address)
    assert (tmp_path / "ray.jsonl").read_bytes() == expected and rows == 250 * K
    assert leftovers(tmp_path) == []


def test_histories_of_any_users(ray_cluster, saved, tmp_path):
    from llm4rec.distributed.batch import Requests, recommend_ray

    model, bundle = saved
    rng = np.random.default_rng(0)
    items = model.items_.tokens
    given = [{"id": f"visitor-{n}", "history": rng.choice(items, size=int(rng.integers(0, 30)), replace=False).tolist()
              + (["no-such-item"] if n % 7 == 0 else [])} for n in range(230)]
    source = tmp_path / "histories.jsonl"
    source.write_text("".join(json.dumps(h) + "\n" for h in given))
    expected = single_process(model, batch.histories_from_file(source, 64)[1], tmp_path / "one.parquet")
    recommend_ray(bundle, Requests("histories", source), tmp_path / "ray.parquet", K, block=64,
                  address=ray_cluster.address)
    assert (tmp_path / "ray.parquet").read_bytes() == expected
    assert pl.read_parquet(tmp_path / "ray.parquet")["user_id"].unique(maintain_order=True).to_list() == \
        [h["id"] for h in given]


@pytest.mark.slow
def test_a_worker_killed_mid_run_still_gives_the_whole_file(ray_cluster, saved, tmp_path):
    """One of the two worker nodes dies after the first block is written: its actor's blocks are retried on
    the other node and the file is complete and identical; until then, nothing is at the output path."""
    from llm4rec.distributed.batch import recommend_ray

    model, bundle = saved
    expected = single_process(model, batch.all_users(model, 20)[1], tmp_path / "one.parquet")
    out = tmp_path / "ray.parquet"
    killed_at = []

    def kill_once(done: int) -> None:
        if not killed_at:
            assert not out.exists()  # the run writes beside it, not to it
            ray_cluster.kill_worker()
            killed_at.append(done)

    try:
        rows = recommend_ray(bundle, "all", out, K, block=20, address=ray_cluster.address, progress=kill_once)
    finally:
        ray_cluster.add_worker()  # later tests get two workers again
    assert killed_at == [20]  # the kill came after the first of 48 blocks was written
    assert rows == 943 * K and out.read_bytes() == expected
    assert leftovers(tmp_path) == []


def test_bad_input_is_named_through_the_cli_and_nothing_is_written(ray_cluster, saved, tmp_path, capsys):
    _, bundle = saved
    out = tmp_path / "recs.parquet"
    users = tmp_path / "users.txt"
    users.write_text("1\n2\nnobody\n")
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--users", str(users), "--out", str(out),
                       "--ray", ray_cluster.address)
    assert code != 0 and "line 3" in err and "'nobody'" in err and "Traceback" not in err
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--out", str(out), "--ray", "no address")
    assert code != 0 and "not a Ray cluster address" in err and "host:port" in err
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--out", str(out), "--workers", "2")
    assert code != 0 and "--workers goes with --ray" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "history": ["1"]}\n' * 5 + '{"id": "b", "history": \n')
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--histories", str(bad), "--out", str(out),
                       "--block", "2", "--ray", ray_cluster.address)
    assert code != 0 and "line 6" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "users.txt"]


@pytest.mark.slow
def test_an_address_where_no_cluster_runs_fails_at_once(saved, tmp_path):
    """In a fresh process (this one is connected already): a closed port is an error within seconds."""
    _, bundle = saved
    out = tmp_path / "recs.parquet"
    done = subprocess.run([sys.executable, "-m", "llm4rec", "recommend", "--model", str(bundle), "--all", "--out",
                           str(out), "--ray", "127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "nothing answers at this Ray address" in done.stderr and "127.0.0.1:9" in \
        done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_a_worker_that_reads_another_bundle_fails_the_run_with_an_input_error(saved):
    """The actor's side without Ray: a bundle.json other than the driver's is answered with an error row, which
    the driver raises as the InputError (Ray keeps only the text of an actor's own exceptions)."""
    import pyarrow as pa

    from llm4rec.distributed.batch import _in_order, _Scorer
    from llm4rec.errors import InputError

    _, bundle = saved
    requests = pa.table({"block": pa.array([0, 0], pa.int32()), "id": ["1", "2"], "user": pa.array([0, 1])})
    answer = _Scorer(str(bundle), "0" * 64, K, True)(requests)
    with pytest.raises(InputError, match="another bundle") as caught:
        list(_in_order([answer], [2]))
    assert str(bundle) in str(caught.value)
    good = _Scorer(str(bundle), hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest(), K, True)
    [(n, columns)] = list(_in_order([good(requests)], [2]))
    assert n == 2 and columns["user_id"].tolist() == ["1"] * K + ["2"] * K
    with pytest.raises(RuntimeError, match="1 of 2 blocks"):
        list(_in_order([good(requests)], [2, 5]))
