"""CLI errors speak CLI; CSV/TSV loading options; --set with dotted keys; ope without intervals; what was dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import llm4rec.data.sources
from llm4rec.cli._common import parse_settings
from llm4rec.errors import InputError
from tests.cli._run import run


@pytest.fixture
def semicolon_table(tmp_path):
    """40 users, ';'-separated, columns uid;sku;when, and an item table keyed by 'code' with a text column."""
    rng = np.random.default_rng(0)
    lines = ["uid;sku;when"]
    for u in range(40):
        lines += [f"u{u};i{i};{t}" for t, i in enumerate(rng.choice(np.arange(u % 2, 30, 2), size=8, replace=False))]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.csv").write_text("code;blurb\n" + "".join(f"i{i};item number {i}\n" for i in range(32)))
    return tmp_path / "log.csv", tmp_path / "items.csv"


def test_evaluate_and_data_take_csv_loading_options(capsys, semicolon_table, tmp_path):
    log, items = semicolon_table
    options = ["--sep", ";", "--user-col", "uid", "--item-col", "sku", "--timestamp-col", "when",
               "--items", str(items), "--item-key", "code", "--text-columns", "blurb"]
    code, out, err = run(capsys, "data", "info", str(log), "--format", "csv", *options, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["users"] == 40 and info["items"] == 32 and info["interactions"] == 320
    assert info["text_fields"] == ["blurb"]
    code, out, err = run(capsys, "evaluate", "--data", str(log), "--format", "csv", *options, "--model", "ease",
                         "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["n_users_evaluated"] == 40
    code, _, err = run(capsys, "data", "convert", str(log), str(tmp_path / "csv"), "--to", "csv", "--format", "csv",
                       *options)
    assert code == 0, err
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "csv"), "--json")
    assert json.loads(out)["fingerprint"] == info["fingerprint"]


def test_without_the_options_the_error_names_the_flags(capsys, semicolon_table):
    log, _ = semicolon_table
    code, _, err = run(capsys, "evaluate", "--data", str(log), "--format", "csv", "--model", "pop")
    assert code == 2 and "--separator" in err  # the file reads as one column: the separator is named
    code, _, err = run(capsys, "evaluate", "--data", str(log), "--format", "csv", "--sep", ";", "--model", "pop")
    assert code == 2 and "--user-col" in err and "user_id" in err
    code, _, err = run(capsys, "evaluate", "--data", str(log), "--format", "csv", "--sep", ";", "--user-col", "uid",
                       "--item-col", "sku", "--timestamp-col", "none", "--model", "pop")
    assert code == 0, err


def test_an_option_that_does_not_apply_to_the_format_is_named(capsys, tmp_path):
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "u.data").write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u in range(1, 5) for t, i in enumerate(range(1, 6))))
    code, _, err = run(capsys, "data", "info", str(ml), "--user-col", "uid", "--sep", ";")
    assert code == 2 and "--separator and --user-col do not apply to movielens data" in err
    assert "--ratings-file" in err and "user_col" not in err
    code, _, err = run(capsys, "data", "info", str(ml), "--tags")
    assert code == 2 and "--tags" in err and "ml-latest" in err
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\nu\ti\n")
    code, _, err = run(capsys, "data", "info", str(tmp_path / "x.inter"), "--item-col", "sku")
    assert code == 2 and "--item-col does not apply to recbole data" in err


def test_every_flag_a_loader_message_names_exists():
    """Loader messages say e.g. "user_col= / --user-col": each such flag is an option of evaluate and data info."""
    from typer.main import get_command

    from llm4rec.cli.main import app

    sources = Path(llm4rec.data.sources.__file__).parent
    text = "".join(p.read_text() for p in sources.glob("*.py"))
    named = set(re.findall(r"/ (--[a-z][a-z-]+)", text))
    named |= {"--" + o.replace("_", "-") for o in re.findall(r"_choose\(\"([a-z_]+)\"\)", text)}
    named |= {"--user-col", "--item-col", "--timestamp-col", "--rating-col"}  # _ROLES, through column()
    assert {"--separator", "--items-path", "--user-col", "--ratings-file", "--tags", "--encoding"} <= named
    root = get_command(app)
    for path in (["evaluate"], ["data", "info"], ["data", "convert"]):
        command = root
        for name in path:
            command = command.commands[name]
        flags = {o for p in command.params for o in p.opts}
        assert named <= flags, (path, named - flags)


def test_data_convert_over_a_directory_names_the_flag(capsys, semicolon_table, tmp_path):
    log, _ = semicolon_table
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    code, _, err = run(capsys, "data", "convert", str(log), str(out), "--sep", ";", "--user-col", "uid",
                       "--item-col", "sku")
    assert code == 2 and "--overwrite" in err and "overwrite=True" not in err
    assert (out / "mine.txt").read_text() == "x"


# ----------------------------------------------------------------- --set
@pytest.mark.parametrize(("pairs", "expected"), [
    (["l2=400", "factors=32"], {"l2": "400", "factors": "32"}),
    (["model.l2=400"], {"l2": "400"}),
    (["lora.rank=8", "lora.alpha=16"], {"lora": {"rank": "8", "alpha": "16"}}),
    (["first_stage_settings.l2=400", "model.first_stage=ease"], {"first_stage_settings": {"l2": "400"},
                                                                  "first_stage": "ease"}),
    (["a.b.c=1"], {"a": {"b": {"c": "1"}}}),
    (["template={title}. {genres}"], {"template": "{title}. {genres}"}),
])
def test_set_with_dotted_keys_builds_nested_settings(pairs, expected):
    assert parse_settings(pairs) == expected


@pytest.mark.parametrize("pairs", [["lora"], ["lora.=8"], [".rank=8"], ["lora=8", "lora.rank=8"],
                                   ["lora.rank=8", "lora=8"]])
def test_bad_or_conflicting_set_options_are_errors(pairs):
    with pytest.raises(InputError, match="--set"):
        parse_settings(pairs)


def test_nested_settings_reach_the_model_config():
    from llm4rec.models import model_class

    config = model_class("llm-rerank").make_config(parse_settings(["lora.rank=4", "first_stage_settings.l2=400"]))
    assert config.lora.rank == 4 and float(config.first_stage_settings["l2"]) == 400


def test_set_with_a_model_prefix_through_the_cli(capsys, semicolon_table, tmp_path):
    log, _ = semicolon_table
    code, _, err = run(capsys, "evaluate", "--data", str(log), "--sep", ";", "--user-col", "uid", "--item-col", "sku",
                       "--model", "ease", "--set", "model.l2=7", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["config"] == {"l2": 7.0}


# ------------------------------------------------------- ope --bootstrap 0
def test_ope_without_bootstrap_prints_no_interval(capsys, tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    a, j, r = rng.integers(0, 3, n), rng.integers(0, 2, n), rng.random(n) < 0.2
    logs = tmp_path / "logs.csv"
    logs.write_text("action,position,reward,propensity\n" + "".join(
        f"{x},{y},{int(c)},{1 / 3}\n" for x, y, c in zip(a, j, r, strict=True)))
    code, out, err = run(capsys, "ope", "--logs", str(logs), "--policy", f"empirical:{logs}", "--bootstrap", "0",
                         "--json", str(tmp_path / "o.json"))
    assert code == 0, err
    assert "95% CI" not in out and "truth inside" not in out and "--bootstrap 0" in out and "rel. error" in out
    rec = json.loads((tmp_path / "o.json").read_text())
    assert all(e["ci_low"] is None and e["ci_high"] is None and e["value"] is not None
               for e in rec["estimates"].values())


# ------------------------------------------------------ what was dropped
def test_duplicates_and_left_out_users_are_reported_once(capsys, tmp_path):
    rng = np.random.default_rng(1)
    rows = [f"u{u},i{i},{t}" for u in range(30) for t, i in enumerate(rng.choice(20, size=6, replace=False))]
    rows += ["u0,i_dup,100", "u0,i_dup,101", "u1,i_dup,100", "u1,i_dup,100"]  # 2 repeated pairs
    rows += ["short1,i1,1", "short1,i2,2", "short2,i3,1"]  # 2 users with fewer than 3 interactions
    data = tmp_path / "log.csv"
    data.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    code, out, err = run(capsys, "evaluate", "--data", str(data), "--model", "pop", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert out.count("2 duplicate (user, item) rows of 187 dropped") == 1
    assert out.count("2 of 32 users left out of the evaluation (fewer than 3 interactions") == 1
    assert len([line for line in out.splitlines() if line.startswith("data: ")]) == 1
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["data_report"] == {"rows": 187, "duplicates_dropped": 2, "items_without_interactions": 0,
                                  "users": 32, "users_evaluated": 30, "users_left_out": 2}
    assert rec["n_users_evaluated"] == 30
    code, out, _ = run(capsys, "quickstart", "--models", "pop", "--data", str(data))
    assert code == 0 and out.count("2 of 32 users left out") == 1
