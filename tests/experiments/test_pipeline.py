"""``llm4rec run``: records as direct runs give them, statistics by hand, noise marks, resume, overwrite, the CLI."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import llm4rec.evaluation.experiment as experiment_module
from llm4rec.errors import InputError
from llm4rec.experiments.config import load_config
from llm4rec.experiments.pipeline import partial_dir, run_pipeline
from tests.cli._run import run

RESULT_FILES = {"config.toml", "resolved.json", "records.jsonl", "per_user", "report.md", "report.html",
                "comparison.png", "significance.json"}
#: fields of a record that differ from one run to the next
TIMINGS = {"fit_seconds", "eval_seconds", "wall_seconds", "peak_memory_mib"}


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    """The built-in synthetic data (150 users, 60 items, a planted structure that EASE finds) as a CSV."""
    from llm4rec.data.synthetic import make_synthetic

    ds = make_synthetic(n_users=150, n_items=60, seed=0)
    path = tmp_path_factory.mktemp("data") / "synthetic.csv"
    rows = zip(ds.users.tokens[ds.user], ds.items.tokens[ds.item], ds.timestamp, strict=True)
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t:.0f}\n" for u, i, t in rows))
    return path


def experiment(tmp_path, data_csv, *, protocol="loo", seeds=(2026,), baseline="pop", models=None):
    models = models or ['name = "pop"', 'name = "pop"\nlabel = "pop-again"', 'name = "ease"\nsettings = { l2 = 10.0 }']
    text = (f'name = "toy comparison"\n[data]\npath = "{data_csv}"\n[protocol]\nname = "{protocol}"\n'
            f"seeds = {list(seeds)}\n[report]\nbaseline = \"{baseline}\"\n"
            + "".join(f"[[models]]\n{m}\n" for m in models))
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return path


def records(out_dir):
    return [json.loads(line) for line in (out_dir / "records.jsonl").read_text().splitlines()]


def test_records_equal_direct_runs_and_a_copy_of_the_model_is_within_noise(tmp_path, data_csv):
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset

    config = load_config(experiment(tmp_path, data_csv))
    result = run_pipeline(config, tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == RESULT_FILES and not partial_dir(out).exists()
    ds = load_dataset(data_csv)
    split = make_split(ds, "loo", seed=2026)
    for rec, (name, settings) in zip(records(out), [("pop", {}), ("pop", {}), ("ease", {"l2": 10.0})], strict=True):
        direct = experiment_module.run_experiment(ds, name, seed=2026, settings=settings, split=split,
                                                  data_path=str(data_csv))
        assert {k: v for k, v in rec.items() if k not in TIMINGS | {"label", "environment"}} == \
            {k: v for k, v in direct.record.items() if k not in TIMINGS | {"environment"}}
        with np.load(out / "per_user" / f"{rec['label']}-2026.npz", allow_pickle=False) as saved:
            for metric, values in direct.result.per_user.items():
                np.testing.assert_array_equal(saved[metric], values)
            np.testing.assert_array_equal(saved["users"], ds.users.tokens[direct.result.users])
    sig = json.loads((out / "significance.json").read_text())
    assert sig["baseline"] == "pop" and sig["metrics"] == ["HR@10", "NDCG@10", "MRR@10"]
    for metric in sig["metrics"]:
        same, better = sig["differences"]["pop-again"][metric], sig["differences"]["ease"][metric]
        assert same["within_noise"] and same["difference"] == same["low"] == same["high"] == 0.0
        assert not better["within_noise"] and better["low"] > 0
    report = (out / "report.md").read_text()
    assert "Better than pop beyond noise: ease (HR@10, NDCG@10, MRR@10)." in report
    assert "Within noise of pop on every metric: pop-again." in report
    assert re.search(r"\| pop-again \| - \| (\S+ \[\S+, \S+\] ≈ \| ){3}", report), report
    assert re.search(r"\| ease \| l2=10 \| (\d\.\d{4} \[\S+, \S+\] \| ){3}", report), report  # no mark
    assert result.verdict[0] == "Better than pop beyond noise: ease (HR@10, NDCG@10, MRR@10)."


def test_several_seeds_give_means_and_t_intervals_over_seeds(tmp_path, data_csv):
    config = load_config(experiment(tmp_path, data_csv, protocol="rand", baseline="pop",
                                     models=['name = "pop"', 'name = "ease"\nsettings = { l2 = 10.0 }']),
                         seeds=[1, 2])
    run_pipeline(config, tmp_path / "out")
    recs = {(r["label"], r["seed"]): r for r in records(tmp_path / "out")}
    sig = json.loads((tmp_path / "out" / "significance.json").read_text())
    assert sig["seeds"] == [1, 2] and sig["interval"] == "95% t-interval over 2 seeds"
    t = stats.t.ppf(0.975, 1)
    for metric in ("Recall@20", "NDCG@20"):
        ease = [recs["ease", s]["metrics"][metric] for s in (1, 2)]
        pop = [recs["pop", s]["metrics"][metric] for s in (1, 2)]
        got = sig["models"]["ease"][metric]
        half = t * np.std(ease, ddof=1) / math.sqrt(2)
        assert got["mean"] == pytest.approx(np.mean(ease), abs=1e-12)
        assert (got["low"], got["high"]) == pytest.approx((np.mean(ease) - half, np.mean(ease) + half), abs=1e-12)
        diffs = np.subtract(ease, pop)
        half = t * np.std(diffs, ddof=1) / math.sqrt(2)
        d = sig["differences"]["ease"][metric]
        assert d["difference"] == pytest.approx(diffs.mean(), abs=1e-12)
        assert (d["low"], d["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half), abs=1e-12)
        users = d["users_interval"]
        assert d["within_noise"] == (d["low"] <= 0 <= d["high"] or users[0] <= 0 <= users[1])
        assert set(d["per_seed"]) == {"1", "2"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Runs" in report and "95% t-interval over 2 seeds" in report


def test_seeds_that_change_nothing_do_not_hide_the_users_noise(tmp_path, data_csv):
    """P-LOO's split ignores the seed and EASE is deterministic: the seeds' interval has zero width, so a tiny
    difference is within noise only through the users' bootstrap interval."""
    from llm4rec.evaluation.significance import paired_test

    config = load_config(experiment(tmp_path, data_csv, baseline="ease", models=[
        'name = "ease"\nsettings = { l2 = 10.0 }', 'name = "ease"\nlabel = "ease-11"\nsettings = { l2 = 11.0 }',
        'name = "pop"']), seeds=[1, 2])
    run_pipeline(config, tmp_path / "out")
    sig = json.loads((tmp_path / "out" / "significance.json").read_text())
    near, far = sig["differences"]["ease-11"]["NDCG@10"], sig["differences"]["pop"]["NDCG@10"]
    assert near["low"] == near["high"] == near["difference"] != 0  # zero spread over the seeds
    with np.load(tmp_path / "out" / "per_user" / "ease-11-1.npz") as a, \
            np.load(tmp_path / "out" / "per_user" / "ease-1.npz") as b:
        by_hand = paired_test(a["NDCG@10"], b["NDCG@10"], seed=1)  # the seeds' runs are identical
    assert near["users_interval"] == pytest.approx([by_hand.ci_low, by_hand.ci_high])
    assert near["within_noise"] and by_hand.ci_low < 0 < by_hand.ci_high
    assert not far["within_noise"] and far["users_interval"][1] < 0


def test_an_interrupted_run_leaves_no_results_folder_and_resumes(tmp_path, data_csv, monkeypatch):
    config = load_config(experiment(tmp_path, data_csv, models=['name = "pop"', 'name = "ease"']))
    out = tmp_path / "out"
    real = experiment_module.run_experiment
    calls, interrupt = [], [True]

    def second_call_interrupted(dataset, model, **kwargs):
        calls.append(model)
        if len(calls) == 2 and interrupt and interrupt.pop():
            raise KeyboardInterrupt
        return real(dataset, model, **kwargs)

    monkeypatch.setattr(experiment_module, "run_experiment", second_call_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, out)
    assert not out.exists() and calls == ["pop", "ease"]
    kept = json.loads((partial_dir(out) / "runs" / "pop-2026.json").read_text())
    assert kept["record"]["model"] == "pop" and not (partial_dir(out) / "runs" / "ease-2026.json").exists()
    calls.clear()
    events = []
    result = run_pipeline(config, out, progress=lambda event, text, done, total: events.append((event, done)))
    assert calls == ["ease"] and result.reused == 1  # pop was not refitted
    assert events == [("reused", 1), ("running", 1), ("finished", 2)]
    assert {p.name for p in out.iterdir()} == RESULT_FILES and not partial_dir(out).exists()
    assert [r["model"] for r in records(out)] == ["pop", "ease"]
    # another setting is another run: a changed entry is not reused
    calls.clear()
    changed = load_config(experiment(tmp_path, data_csv, models=['name = "pop"', 'name = "ease"']),
                          ["models.ease.settings.l2=1.0"])
    run_pipeline(changed, tmp_path / "out2")
    assert calls == ["pop", "ease"]


def test_an_existing_results_folder_needs_overwrite_and_survives_a_failed_rerun(tmp_path, data_csv, monkeypatch):
    config = load_config(experiment(tmp_path, data_csv, models=['name = "pop"']))
    out = tmp_path / "out"
    run_pipeline(config, out)
    before = (out / "records.jsonl").read_text()
    with pytest.raises(InputError, match="the results folder already exists"):
        run_pipeline(config, out)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(experiment_module, "run_experiment", broken)
    with pytest.raises(RuntimeError):
        run_pipeline(config, out, overwrite=True)
    assert (out / "records.jsonl").read_text() == before  # the old folder stays until a new one is complete
    monkeypatch.undo()
    (out / "notes.txt").write_text("mine")
    run_pipeline(config, out, overwrite=True)
    assert {p.name for p in out.iterdir()} == RESULT_FILES  # replaced whole
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not a results folder"):
        run_pipeline(config, theirs, overwrite=True)
    assert [p.name for p in theirs.iterdir()] == ["thesis.tex"]


def test_a_tuned_model_keeps_its_study(tmp_path, data_csv):
    config = load_config(experiment(tmp_path, data_csv, models=[
        'name = "pop"', 'name = "ease"\ntune = { space = ["l2=[1.0, 10.0, 100.0]"], trials = 3 }']))
    result = run_pipeline(config, tmp_path / "out")
    tuned = result.runs[1].record
    assert tuned["tuning"]["best"]["settings"]["l2"] == tuned["config"]["l2"]
    assert len(tuned["tuning"]["trials"]) == 3 and tuned["tuning"]["study"] == "studies/ease-2026/study.db"
    assert (tmp_path / "out" / tuned["tuning"]["study"]).is_file()
    assert "tuned (3 trials): l2=" in (tmp_path / "out" / "report.md").read_text()


def test_run_end_to_end_through_the_command_line(capsys, tmp_path, data_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = experiment(tmp_path, data_csv)
    code, out, err = run(capsys, "run", str(path), "--seeds", "2026,7", "--set", "models.ease.settings.l2=50")
    assert code == 0, err
    folder = tmp_path / "results" / "toy"  # the default: results/<stem>
    assert f"report: {os.path.join('results', 'toy', 'report.md')}" in out
    assert "toy comparison" in out and "≈" in out and "Better than pop beyond noise: ease" in out
    assert "done: ease, seed 7: HR@10" in err
    assert {p.name for p in folder.iterdir()} == RESULT_FILES
    resolved = json.loads((folder / "resolved.json").read_text())
    assert resolved["overrides"] == ["--set models.ease.settings.l2=50", "--seeds 2026,7"]
    assert resolved["experiment"]["protocol"]["seeds"] == [2026, 7]
    assert (folder / "config.toml").read_text() == path.read_text()
    assert all(r["config"]["l2"] == 50 for r in records(folder) if r["model"] == "ease")
    page = (folder / "report.html").read_text()
    assert "data:image/png;base64," in page and not re.search(r"https?://", page)
    code, _, err = run(capsys, "run", str(path))
    assert code == 2 and "the results folder already exists" in err and "--overwrite" in err
    partial_dir(tmp_path / "again").mkdir()  # as an interrupted attempt leaves it
    code, out, err = run(capsys, "run", str(path), "--out", "again")
    assert code == 0 and f"resuming from {partial_dir(Path('again'))}" in out, err


def test_run_has_help_and_usage_errors(capsys):
    code, out, _ = run(capsys, "run", "-h")
    assert code == 0 and "Usage: llm4rec run [OPTIONS]" in out and "--seeds" in out
    code, _, err = run(capsys, "run")
    assert code == 2 and err.startswith("Usage: llm4rec run ") and "Missing argument" in err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "models.ease.settings.l2=abc"], "error: --set models.ease.settings.l2=abc: bad value for setting"),
    (["--seeds", "1,x"], "error: bad --seeds (got '1,x'"),
    (["--set", "data.path=nope.csv"], "--set data.path=nope.csv: dataset not found"),
])
def test_bad_input_fails_before_any_data_is_loaded(capsys, tmp_path, data_csv, monkeypatch, args, fragment):
    import llm4rec.data.sources

    def never(*args, **kwargs):
        raise AssertionError("data was loaded before the input was checked")

    monkeypatch.setattr(llm4rec.data.sources, "load_dataset", never)
    code, _, err = run(capsys, "run", str(experiment(tmp_path, data_csv)), "--out", str(tmp_path / "o"), *args)
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() and not partial_dir(tmp_path / "o").exists()


@pytest.mark.realdata
def test_the_shipped_baseline_config_reproduces_the_recorded_numbers(shared_data, tmp_path, monkeypatch):
    """configs/ml100k-baselines-loo.toml against bench/RESULTS.md (ml-100k, P-LOO, seed 2026)."""
    from tests.conftest import ROOT

    monkeypatch.setenv("LLM4REC_SHARED_DATA", str(shared_data))
    config = load_config(ROOT / "configs" / "ml100k-baselines-loo.toml")
    assert config.data.path == str((shared_data / "ml-100k").resolve())
    got = {r.label: r.record["metrics"] for r in run_pipeline(config, tmp_path / "out").runs}
    assert got["ease"]["NDCG@10"] == pytest.approx(0.040884, abs=1e-6)
    assert got["ease"]["HR@10"] == pytest.approx(0.086957, abs=1e-6)
    recorded = {"pop": (0.0498, 0.0253, 0.0179), "itemknn": (0.0604, 0.0283, 0.0188),
                "ease": (0.0870, 0.0409, 0.0271), "bpr": (0.1039, 0.0487, 0.0320)}
    for label, values in recorded.items():
        assert tuple(round(got[label][m], 4) for m in ("HR@10", "NDCG@10", "MRR@10")) == values, label
    # ALS: implicit's conjugate-gradient steps run on OpenBLAS, whose kernel is chosen by CPU type, so its
    # float32 factors (and the fourth decimal) depend on the machine: recorded 0.0880 / 0.0390 / 0.0243; the
    # Haswell and Zen kernels give 0.0870 / 0.0388 / 0.0244, Sandybridge 0.0880 / 0.0392 / 0.0246
    assert got["als"]["NDCG@10"] == pytest.approx(0.0390, abs=0.0005)
