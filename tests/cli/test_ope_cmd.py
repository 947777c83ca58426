"""``llm4rec ope``: the JSON contract, the table, and bad input as one-paragraph errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli._run import run


def write_logs(path, n_actions=4, seed=0, propensity=None, n=400):
    """A CSV of uniform-random logs over two positions (propensity 1/n_actions)."""
    rng = np.random.default_rng(seed)
    a, j = rng.integers(0, n_actions, n), rng.integers(0, 2, n)
    click = rng.random(n) < 0.1 + 0.2 * (a == 0)
    p = np.full(n, 1 / n_actions) if propensity is None else propensity
    path.write_text("action,position,reward,propensity\n" + "".join(
        f"{x},{y},{int(c)},{q}\n" for x, y, c, q in zip(a, j, click, p, strict=True)))
    return path


def test_ope_writes_the_json_contract(capsys, tmp_path):
    random = write_logs(tmp_path / "random.csv")
    target = write_logs(tmp_path / "target.csv", seed=1)
    out_json = tmp_path / "ope.json"
    code, out, _ = run(capsys, "ope", "--logs", str(random), "--policy", f"empirical:{target}",
                       "--estimators", "snips,dr", "--bootstrap", "200", "--json", str(out_json))
    assert code == 0, out
    assert "snips" in out and "95% CI" in out and "rel. error" in out
    rec = json.loads(out_json.read_text())
    assert set(rec) == {"logs", "policy", "n_rounds", "estimates", "on_policy_value", "seconds", "peak_memory_mib",
                        "environment"}
    assert rec["environment"]["versions"]["numpy"] == np.__version__ and rec["peak_memory_mib"] > 10
    assert rec["n_rounds"] == 400 and rec["policy"] == f"empirical:{target}"
    assert set(rec["estimates"]) == {"snips", "dr"}
    assert all(set(e) == {"value", "ci_low", "ci_high"} for e in rec["estimates"].values())
    assert rec["on_policy_value"] == pytest.approx(np.mean([int(x) for x in
                                                            np.loadtxt(target, delimiter=",", skiprows=1)[:, 2]]))


def test_ope_of_uniform_and_of_a_saved_policy(capsys, tmp_path):
    from llm4rec.data.logs import load_bandit_logs
    from llm4rec.strategies.logged import EmpiricalPolicy

    logs = write_logs(tmp_path / "random.csv")
    code, out, _ = run(capsys, "ope", "--logs", str(logs), "--policy", "uniform", "--json", str(tmp_path / "u.json"))
    rec = json.loads((tmp_path / "u.json").read_text())
    assert code == 0 and "on_policy_value" not in rec and "rel. error" not in out
    assert set(rec["estimates"]) == {"ips", "snips", "dm", "dr", "switch-dr"}
    assert rec["estimates"]["snips"]["value"] == pytest.approx(load_bandit_logs(logs).mean_reward)
    EmpiricalPolicy.from_logs(load_bandit_logs(write_logs(tmp_path / "t.csv", seed=1))).save(tmp_path / "saved")
    code, _, _ = run(capsys, "ope", "--logs", str(logs), "--policy", str(tmp_path / "saved"),
                     "--json", str(tmp_path / "s.json"))
    run(capsys, "ope", "--logs", str(logs), "--policy", f"empirical:{tmp_path / 't.csv'}",
        "--json", str(tmp_path / "e.json"))
    saved, direct = (json.loads((tmp_path / f"{x}.json").read_text())["estimates"] for x in "se")
    assert code == 0 and saved == direct


@pytest.mark.parametrize(("setup", "policy", "extra", "fragment"), [
    ("no-propensity", "uniform", [], "missing propensity column"),
    ("bad-propensity", "uniform", [], "line 4, column 'propensity': propensity outside (0, 1] (got 1.5"),
    ("ok", "empirical:OTHER", [], "mismatched action sets: the policy from"),
    ("ok", "bts", [], "unknown policy (got 'bts'"),
    ("ok", "uniform", ["--estimators", "ips,magic"], "unknown estimator (got 'magic'"),
])
def test_bad_input_is_one_paragraph_and_writes_nothing(capsys, tmp_path, setup, policy, extra, fragment):
    logs = tmp_path / "logs.csv"
    if setup == "no-propensity":
        logs.write_text("action,position,reward\n0,0,1\n")
    else:
        write_logs(logs, propensity=np.r_[0.25, 0.25, 1.5, np.full(397, 0.25)] if setup == "bad-propensity" else None)
    write_logs(tmp_path / "other.csv", n_actions=5)
    out_json = tmp_path / "never.json"
    policy = policy.replace("OTHER", str(tmp_path / "other.csv"))
    code, _, err = run(capsys, "ope", "--logs", str(logs), "--policy", policy, *extra, "--json", str(out_json))
    assert code == 2 and "Traceback" not in err
    assert fragment in err, err
    assert len(err.strip().splitlines()) <= 3 and not out_json.exists()


def test_ope_help(capsys):
    code, out, _ = run(capsys, "ope", "--help")
    assert code == 0 and "--policy" in out and "empirical:DIR" in out
