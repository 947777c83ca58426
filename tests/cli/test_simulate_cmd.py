"""``llm4rec simulate``: the JSON and PNG it writes, the table, bad input as one-paragraph errors."""

from __future__ import annotations

import json

import pytest

from tests.cli._run import run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from llm4rec.data import make_synthetic
    from llm4rec.data.export import save_dataset

    return save_dataset(make_synthetic(n_users=60, n_items=40, seed=0, interactions_per_user=(5, 15)),
                        tmp_path_factory.mktemp("sim") / "synthetic")


def test_simulate_writes_results_and_curves(capsys, data, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "simulate", "--data", str(data), "--policies", "oracle,greedy,rl,thompson",
                         "--steps", "3", "--episodes", "4", "--seeds", "2", "--model", "pop",
                         "--sim", "n_candidates=8", "--sim", "slate_size=2", "--out", str(out_dir))
    assert code == 0, err
    assert "clicks/session" in out and "slateq - greedy" in out and "slateq - thompson" in out
    rec = json.loads((out_dir / "results.json").read_text())
    assert list(rec["policies"]) == ["oracle", "greedy", "slateq", "thompson"]
    assert rec["seeds"] == [0, 1] and rec["episodes"] == 4 and rec["simulator"]["session_length"] == 3
    greedy = rec["policies"]["greedy"]
    assert set(greedy["reward_per_episode"]) == {"mean", "ci_low", "ci_high"}
    assert len(greedy["curves"]["cumulative_reward"]["mean"]) == 4 and len(greedy["per_seed_reward"]) == 2
    assert rec["policies"]["oracle"]["regret_per_episode"]["mean"] == 0.0
    assert rec["comparisons"]["best_bandit"] == "thompson"
    assert rec["comparisons"]["slateq_vs_greedy"]["verdict"]
    assert rec["calibration"]["auc"] > 0.5
    assert (out_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--policies", "greedy,dqn"], "unknown policy for the simulator"),
    (["--sim", "fatigeu=1"], "unknown simulator setting 'fatigeu'"),
    (["--sim", "slate_size=9", "--sim", "n_candidates=4"], "slate is longer"),
    (["--vectors", "pixels"], "unknown item vectors"),
    (["--set", "l3=1", "--model", "ease"], "unknown setting 'l3'"),
])
def test_bad_input_is_a_one_paragraph_error_and_writes_nothing(capsys, data, tmp_path, args, fragment):
    code, _, err = run(capsys, "simulate", "--data", str(data), "--out", str(tmp_path / "out"), *args)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_counts_and_missing_data_exit_2(capsys, data, tmp_path):
    for option in ("--steps", "--episodes", "--seeds"):
        code, _, err = run(capsys, "simulate", "--data", str(data), "--out", str(tmp_path / "o"), option, "0")
        assert code == 2 and f"bad value for {option}" in err and "Traceback" not in err
    code, _, err = run(capsys, "simulate", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 2 and "nope" in err and "Traceback" not in err
