"""The `llm4rec` command, run in-process through its real entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli._run import run

JSON_KEYS = {"dataset", "protocol", "seed", "split_fingerprint", "model", "config", "metrics", "fit_seconds",
             "eval_seconds", "n_users_evaluated"}


@pytest.fixture
def ratings_csv(tmp_path):
    """A small CSV of 60 users with a planted two-group structure."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,rating,timestamp"]
    for u in range(60):
        items = rng.choice(np.arange(u % 2, 40, 2), size=12, replace=False)
        lines += [f"u{u},i{i},{rng.integers(1, 6)},{t}" for t, i in enumerate(items)]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", [[], ["evaluate"], ["quickstart"], ["data"], ["data", "info"],
                                     ["data", "convert"], ["data", "fetch"], ["data", "list"]])
def test_help_everywhere(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and "Usage" in out


def test_quickstart_compares_baselines_and_writes_results(capsys, tmp_path):
    code, out, _ = run(capsys, "quickstart", "--models", "pop,ease,itemknn", "--out", str(tmp_path / "qs"))
    assert code == 0
    assert "P-LOO (full ranking)" in out and "ease" in out
    records = json.loads((tmp_path / "qs" / "results.json").read_text())
    by_model = {r["model"]: r["metrics"]["NDCG@10"] for r in records}
    assert by_model["ease"] > 1.5 * by_model["pop"]
    assert (tmp_path / "qs" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_writes_the_json_contract(capsys, ratings_csv, tmp_path):
    out_json = tmp_path / "r.json"
    code, out, _ = run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "ease", "--set", "l2=5",
                       "--protocol", "rand", "--seed", "7", "--json", str(out_json))
    assert code == 0, out
    rec = json.loads(out_json.read_text())
    assert JSON_KEYS <= set(rec)
    assert rec["protocol"] == "P-RAND" and rec["seed"] == 7 and rec["config"] == {"l2": 5.0}
    assert set(rec["metrics"]) == {"Recall@20", "NDCG@20"}
    assert rec["n_users_evaluated"] == 60 and rec["metrics"]["NDCG@20"] > 0.2


def test_the_record_holds_what_a_rerun_needs(capsys, ratings_csv, tmp_path):
    import subprocess

    import llm4rec
    from llm4rec.data.sources import load_dataset

    out_json = tmp_path / "r.json"
    code, out, _ = run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "als", "--json", str(out_json))
    assert code == 0, out
    rec = json.loads(out_json.read_text())
    ds = load_dataset(ratings_csv)
    assert rec["data"] == {"path": str(ratings_csv.resolve()), "fingerprint": ds.fingerprint,
                           "item_text_fingerprint": ds.item_text_fingerprint}
    assert set(rec["config"]) >= {"factors", "regularization", "alpha", "iterations", "seed"}  # defaults resolved
    env = rec["environment"]
    assert env["versions"]["numpy"] == np.__version__ and env["versions"]["llm4rec"] == llm4rec.__version__
    assert env["device"] == "cpu" and env["threads"]["cpus"] >= 1 and "openblas" in env["threads"]["pools"]
    source = subprocess.run(["git", "-C", llm4rec.__path__[0], "rev-parse", "HEAD"], capture_output=True, text=True)
    if source.returncode == 0:  # run from a git checkout: the commit is recorded
        assert env["git"]["commit"] == source.stdout.strip()
    assert 0 < rec["fit_seconds"] <= rec["wall_seconds"] and 20 < rec["peak_memory_mib"] < 4000
    assert rec["encoder_fingerprint"] is None  # ALS reads no text


def test_peak_memory_is_the_blocks_own_and_nests():
    from llm4rec._runinfo import PeakMemory

    with PeakMemory() as outer:
        big = np.ones(60_000_000)  # 458 MiB touched
        del big
        with PeakMemory() as inner:
            small = np.ones(5_000_000)  # 38 MiB
            del small
    assert outer.mib - inner.mib > 300 or not inner.per_block
    assert outer.mib > 450


def test_evaluate_sampled_protocol_says_so(capsys, ratings_csv):
    code, out, _ = run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "pop", "--protocol", "loo100")
    assert code == 0 and "sampled" in out


def test_same_seed_same_numbers_and_model_saved(capsys, ratings_csv, tmp_path):
    args = ["evaluate", "--data", str(ratings_csv), "--model", "bpr", "--set", "iterations=20"]
    run(capsys, *args, "--json", str(tmp_path / "a.json"), "--save-model", str(tmp_path / "m"))
    run(capsys, *args, "--json", str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["metrics"] == b["metrics"] and a["config"]["seed"] == 2026
    assert (tmp_path / "m" / "arrays.npz").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "nosuch"], "unknown model (got 'nosuch'"),
    (["--model", "ease", "--protocol", "kfold"], "unknown protocol (got 'kfold'"),
    (["--model", "ease", "--set", "lambda=3"], "unknown setting 'lambda' for model 'ease'"),
    (["--model", "ease", "--set", "l2=-1"], "bad value for setting 'l2'"),
    (["--model", "ease", "--set", "l2"], "bad --set option"),
])
def test_bad_options_are_one_paragraph_errors(capsys, ratings_csv, tmp_path, args, fragment):
    out_json = tmp_path / "never.json"
    code, _, err = run(capsys, "evaluate", "--data", str(ratings_csv), *args, "--json", str(out_json))
    assert code == 2
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3
    assert not out_json.exists() and list(tmp_path.iterdir()) == [ratings_csv]


def test_evaluate_applies_a_saved_sasrec_text_model_to_another_dataset(capsys, ratings_csv, tmp_path):
    """--model-path with --set: zero-shot (epochs=0) or fine-tuned on another catalogue; ID-only models refuse."""
    from llm4rec.data import make_synthetic
    from llm4rec.data.export import save_dataset
    from llm4rec.models import create_model

    cache = str(tmp_path / "cache")
    small = {"dim": 16, "layers": 1, "max_len": 10, "epochs": 2, "cache_dir": cache}
    create_model("sasrec-text", small).fit(make_synthetic(n_users=80, n_items=60, seed=1)).save(tmp_path / "src")
    target = save_dataset(make_synthetic(n_users=80, n_items=60, seed=2), tmp_path / "other")
    for epochs in (0, 1):
        code, out, _ = run(capsys, "evaluate", "--data", str(target), "--model-path", str(tmp_path / "src"),
                           "--set", f"epochs={epochs}", "--json", str(tmp_path / f"t{epochs}.json"))
        rec = json.loads((tmp_path / f"t{epochs}.json").read_text())
        assert code == 0 and "NDCG@10" in out and rec["model"] == "sasrec-text"
        assert rec["config"]["init_from"] == str(tmp_path / "src") and rec["config"]["epochs"] == epochs
    run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "ease", "--save-model", str(tmp_path / "ease"))
    code, _, err = run(capsys, "evaluate", "--data", str(target), "--model-path", str(tmp_path / "ease"),
                       "--set", "epochs=1")
    assert code == 2 and "cannot be applied to another dataset" in err and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "--data", str(target))
    assert code == 2 and "--model NAME or --model-path DIR" in err


def test_missing_file_and_bad_rating_name_the_place(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", "--data", str(tmp_path / "nope.csv"), "--model", "ease")
    assert code == 2 and "nope.csv" in err and "Traceback" not in err
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,rating\na,x,5\nb,y,five\n")
    code, _, err = run(capsys, "evaluate", "--data", str(bad), "--model", "ease")
    assert code == 2
    assert "bad.csv" in err and "line 3" in err and "rating" in err and "five" in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "--debug", "evaluate", "--data", str(tmp_path / "nope.csv"), "--model", "ease")
    assert code == 2 and "Traceback" in err


def test_data_info_and_convert_round_trip(capsys, ratings_csv, tmp_path):
    code, out, _ = run(capsys, "data", "info", str(ratings_csv), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["users"] == 60 and info["interactions"] == 720
    code, _, _ = run(capsys, "data", "convert", str(ratings_csv), str(tmp_path / "rb"), "--to", "recbole")
    assert code == 0
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "rb"), "--json")
    assert json.loads(out)["fingerprint"] == info["fingerprint"]


@pytest.mark.realdata
def test_evaluate_reproduces_the_reference_on_ml100k(capsys, shared_data, tmp_path):
    out_json = tmp_path / "r.json"
    code, _, _ = run(capsys, "evaluate", "--data", str(shared_data / "ml-100k"), "--model", "ease",
                     "--set", "l2=400", "--json", str(out_json))
    assert code == 0
    rec = json.loads(out_json.read_text())
    assert rec["metrics"]["NDCG@10"] == pytest.approx(0.040884, abs=1e-4)
    assert rec["n_users_evaluated"] == 943 and rec["dataset"] == "ml-100k"


@pytest.mark.parametrize(("content", "fragments"), [
    ("user_id;item_id;rating\na;x;5\n", ["bad.csv", "user_id"]),  # wrong separator: one column found
    ("user,item\na,x\n", ["bad.csv", "user_id"]),  # missing column
    ("user_id,item_id,rating\n", ["bad.csv", "no interactions"]),  # empty dataset
])
def test_bad_files_name_the_file_and_what_was_expected(capsys, tmp_path, content, fragments):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code, _, err = run(capsys, "evaluate", "--data", str(bad), "--model", "pop", "--json", str(tmp_path / "o.json"))
    assert code == 2 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "o.json").exists()


def test_fetch_errors_are_clear_offline(capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "data", "fetch", "ml-999k", "--cache-dir", str(tmp_path))
    assert code == 2 and "unknown dataset" in err and "ml-100k" in err
    monkeypatch.setenv("LLM4REC_FETCH_BASE_URL", "http://127.0.0.1:9/nothing")  # port 9: nothing listens
    code, _, err = run(capsys, "data", "fetch", "ml-100k", "--cache-dir", str(tmp_path))
    assert code == 2 and "127.0.0.1:9" in err and "Traceback" not in err
    assert not (tmp_path / "ml-100k").exists()
