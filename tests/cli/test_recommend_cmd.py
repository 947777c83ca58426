"""``llm4rec recommend``: batch inference against the model's own ``recommend``, every input and output format,
bad input named by line, and nothing written unless the run succeeds."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from llm4rec.data.synthetic import make_synthetic
from llm4rec.models import create_model
from tests.cli._run import run

K = 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    data = make_synthetic(n_users=120, n_items=80, seed=3, interactions_per_user=(3, 20))
    model = create_model("ease", {"l2": 50.0}).fit(data)
    return model, model.save(root / "ease")


def expected_rows(model, ids, recs) -> list[tuple]:
    """The reference: one (user_id, rank, item_id) per recommendation, from model.recommend."""
    return [(u, r + 1, item) for u, row in zip(ids, recs.items) for r, item in enumerate(row) if item is not None]


def rows(path) -> list[tuple]:
    frame = {".parquet": pl.read_parquet, ".csv": lambda p: pl.read_csv(p, schema_overrides={
        "user_id": pl.Utf8, "item_id": pl.Utf8}), ".jsonl": pl.read_ndjson}[path.suffix](path)
    return [(str(u), int(r), str(i)) for u, r, i in frame.select("user_id", "rank", "item_id").iter_rows()]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_all_users_match_the_models_own_top_k_in_every_format(saved, tmp_path, capsys, suffix):
    model, bundle = saved
    out = tmp_path / f"recs{suffix}"
    code, printed, _ = run(capsys, "recommend", "--model", str(bundle), "--all", "--k", str(K), "--out", str(out),
                           "--block", "7")  # blocks of 7 users: the last one is short
    assert code == 0, printed
    ids = model.users_.tokens.tolist()
    assert rows(out) == expected_rows(model, ids, model.recommend(users=ids, k=K))
    assert "120 users" in printed
    if suffix == ".parquet":
        scores = pl.read_parquet(out)["score"].to_numpy().reshape(-1, K)
        np.testing.assert_allclose(scores, model.recommend(users=ids, k=K).scores, rtol=1e-6)


def test_user_files_unknown_ids_and_the_fallback(saved, tmp_path, capsys):
    model, bundle = saved
    users = tmp_path / "users.txt"
    users.write_text("7\n3\nnobody\n11\n")
    out = tmp_path / "recs.parquet"
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--users", str(users), "--out", str(out))
    assert code != 0 and "line 3" in err and "nobody" in err and not out.exists()
    code, _, _ = run(capsys, "recommend", "--model", str(bundle), "--users", str(users), "--out", str(out),
                     "--k", str(K), "--unknown", "fallback")
    assert code == 0
    got = rows(out)
    known = expected_rows(model, ["7", "3", "11"], model.recommend(users=["7", "3", "11"], k=K))
    fallback = expected_rows(model, ["nobody"], model.recommend(histories=[[]], k=K))
    assert got == known[:2 * K] + fallback + known[2 * K:]
    csv = tmp_path / "users.csv"
    csv.write_text("user_id,segment\n3,a\n7,b\n")
    code, _, _ = run(capsys, "recommend", "--model", str(bundle), "--users", str(csv), "--out", str(out),
                     "--k", str(K), "--overwrite")
    assert code == 0 and rows(out) == expected_rows(model, ["3", "7"], model.recommend(users=["3", "7"], k=K))


def test_histories_in_json_lines_and_parquet(saved, tmp_path, capsys):
    model, bundle = saved
    given = {"a": ["1", "2", "3"], "b": ["40"], "c": [], "d": ["5", "no-such-item", "6"]}
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text("".join(json.dumps({"id": u, "history": h}) + "\n" for u, h in given.items()))
    parquet = tmp_path / "h.parquet"
    pl.DataFrame({"id": list(given), "history": list(given.values())},
                 schema={"id": pl.Utf8, "history": pl.List(pl.Utf8)}).write_parquet(parquet)
    expected = expected_rows(model, list(given), model.recommend(histories=list(given.values()), k=K,
                                                                 unknown="skip"))
    for source in (jsonl, parquet):
        out = tmp_path / f"from-{source.suffix[1:]}.parquet"
        code, _, _ = run(capsys, "recommend", "--model", str(bundle), "--histories", str(source), "--out", str(out),
                         "--k", str(K), "--block", "3")
        assert code == 0 and rows(out) == expected


def test_bad_input_is_named_and_nothing_is_left_behind(saved, tmp_path, capsys):
    _, bundle = saved
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "history": ["1"]}\n' * 5 + '{"id": "b", "history": \n')
    out = tmp_path / "recs.parquet"
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--histories", str(bad), "--out", str(out),
                       "--block", "2")  # fails after two blocks were written
    assert code != 0 and "line 6" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no output, no temporary file
    out.write_text("mine")
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--out", str(out))
    assert code != 0 and "exists" in err and out.read_text() == "mine"
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--users", str(bad), "--out",
                       str(tmp_path / "x.parquet"))
    assert code != 0 and "exactly one of" in err
    code, _, err = run(capsys, "recommend", "--model", str(bundle), "--all", "--out", str(tmp_path / "x.txt"))
    assert code != 0 and ".parquet" in err


def test_the_default_block_keeps_a_blocks_work_space_under_two_gib():
    from llm4rec.batch import BLOCK_BYTES, auto_block

    assert auto_block(12_101) == 1024 and auto_block(200_000) == 1024  # Beauty and up: the fixed default
    assert auto_block(1_000_000) == 214 and 214 * 1_000_000 * 10 <= BLOCK_BYTES < 215 * 1_000_000 * 10
    assert auto_block(10 ** 12) == 1 and auto_block(0) == 1024
