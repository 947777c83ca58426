"""The command line never loses a user's files: outputs are checked before any work, written alone, with the umask."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from tests.cli._run import run


@pytest.fixture
def ratings_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(30):
        lines += [f"u{u},i{i},{t}" for t, i in enumerate(rng.choice(20, size=8, replace=False))]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load or generate data fails the test: the checks must come first."""
    import llm4rec.data.logs
    import llm4rec.data.sources
    import llm4rec.data.synthetic

    def never(*args, **kwargs):
        raise AssertionError("data was loaded before the output paths were checked")

    monkeypatch.setattr(llm4rec.data.sources, "load_dataset", never)
    monkeypatch.setattr(llm4rec.data.synthetic, "make_synthetic", never)
    monkeypatch.setattr(llm4rec.data.logs, "load_bandit_logs", never)


def test_quickstart_out_cwd_keeps_the_users_files(capsys, tmp_path, monkeypatch):
    """`--out .` writes results.json and comparison.png beside the user's files, never removes one."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "data.csv").write_text("a,b\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "quickstart", "--models", "pop,ease", "--out", ".")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.png", "notes.txt", "project", "results.json"]
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "project" / "data.csv").exists()
    before = [r["metrics"] for r in json.loads((tmp_path / "results.json").read_text())]
    (tmp_path / "results.json").write_text("edited by the user")
    code, _, err = run(capsys, "quickstart", "--models", "pop,ease", "--out", ".")
    assert code == 2 and "results.json" in err and "--overwrite" in err and "Traceback" not in err
    assert (tmp_path / "results.json").read_text() == "edited by the user"
    code, _, err = run(capsys, "quickstart", "--models", "pop,ease", "--out", ".", "--overwrite")
    assert code == 0, err
    assert [r["metrics"] for r in json.loads((tmp_path / "results.json").read_text())] == before
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_outputs_get_the_users_umask(capsys, tmp_path, ratings_csv):
    old = os.umask(0o022)
    try:
        assert run(capsys, "quickstart", "--models", "pop", "--out", str(tmp_path / "new" / "qs"))[0] == 0
        assert run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "pop", "--json",
                   str(tmp_path / "r.json"), "--save-model", str(tmp_path / "model"))[0] == 0
    finally:
        os.umask(old)

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    for d in (tmp_path / "new", tmp_path / "new" / "qs", tmp_path / "model"):
        assert mode(d) == 0o755, d
    for f in ((tmp_path / "new" / "qs").iterdir(), (tmp_path / "model").iterdir(), [tmp_path / "r.json"]):
        for path in f:
            assert mode(path) == 0o644, path


def test_json_over_an_existing_file_needs_overwrite(capsys, tmp_path, ratings_csv):
    out_json = tmp_path / "r.json"
    out_json.write_text("keep me")
    args = ["evaluate", "--data", str(ratings_csv), "--model", "pop", "--json", str(out_json)]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--json" in err and "already exists" in err and "--overwrite" in err
    assert out_json.read_text() == "keep me"
    code, _, err = run(capsys, *args, "--overwrite")
    assert code == 0, err
    assert json.loads(out_json.read_text())["model"] == "pop"


def test_save_model_writes_only_the_bundle_and_needs_overwrite_to_replace_it(capsys, tmp_path, ratings_csv):
    from llm4rec.models import Recommender
    from llm4rec.models.bundle import BUNDLE_FILES

    target = tmp_path / "models"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    args = ["evaluate", "--data", str(ratings_csv), "--model", "ease", "--save-model", str(target)]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == sorted([*BUNDLE_FILES, "README.md"])
    saved = (target / "arrays.npz").read_bytes()
    code, _, err = run(capsys, *args, "--set", "l2=1")
    assert code == 2 and "--save-model" in err and "--overwrite" in err
    assert (target / "arrays.npz").read_bytes() == saved
    code, _, err = run(capsys, *args, "--set", "l2=1", "--overwrite")
    assert code == 0, err
    assert Recommender.load(target).config.l2 == 1.0 and (target / "README.md").read_text() == "my notes"


@pytest.mark.parametrize(("command", "fragment"), [
    (["evaluate", "--data", "DATA", "--model", "pop", "--json", "FILE"], "--json: the file already exists"),
    (["evaluate", "--data", "DATA", "--model", "pop", "--json", "DIR"], "--json names a directory"),
    (["evaluate", "--data", "DATA", "--model", "pop", "--json", "FILE/r.json"], "is a file, not a directory"),
    (["evaluate", "--data", "DATA", "--model", "pop", "--save-model", "FILE"], "--save-model names a file"),
    (["quickstart", "--models", "pop", "--out", "FILE"], "--out names a file"),
    (["simulate", "--data", "DATA", "--model", "pop", "--out", "FILE"], "--out names a file"),
    (["ope", "--logs", "DATA", "--policy", "uniform", "--json", "FILE"], "--json: the file already exists"),
    (["data", "convert", "DATA", "FILE"], "OUT names a file"),
])
def test_output_paths_are_checked_before_loading_data(capsys, tmp_path, ratings_csv, no_loading, command,
                                                      fragment):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    subs = {"DATA": str(ratings_csv), "FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "dir")}
    args = [subs.get(a, a.replace("FILE", subs["FILE"])) for a in command]
    code, _, err = run(capsys, *args)
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(("command", "option"), [
    (["evaluate", "--data", "DATA", "--model", "pop", "--json", "RO/r.json"], "--json"),
    (["evaluate", "--data", "DATA", "--model", "pop", "--save-model", "RO/model"], "--save-model"),
    (["quickstart", "--models", "pop", "--out", "RO/out"], "--out"),
    (["simulate", "--data", "DATA", "--out", "RO/out"], "--out"),
])
def test_an_unwritable_output_fails_at_once_naming_the_option(capsys, tmp_path, ratings_csv, no_loading,
                                                               monkeypatch, command, option):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: say the directory is read-only
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(read_only) else real(p, mode))
    else:
        read_only.chmod(0o555)
    args = [a.replace("DATA", str(ratings_csv)).replace("RO", str(read_only)) for a in command]
    code, _, err = run(capsys, *args)
    assert code == 2 and f"{option}: no permission to write here" in err and str(read_only) in err, err
