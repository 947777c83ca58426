"""``tune`` and ``llm4rec tune``: the grid picks the manual argmax, resume, pruning, outputs, bad input."""

from __future__ import annotations

import json
import threading

import optuna
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation.experiment import run_experiment
from llm4rec.experiments import tune as tune_module
from llm4rec.experiments.tune import OUTPUT_FILES, check_study, tune, write_outputs
from tests.cli._run import run

L2 = [1.0, 30.0, 300.0, 3000.0]


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=300, n_items=200, seed=0)


@pytest.mark.parametrize(("protocol", "metric"), [("loo", "NDCG@10"), ("cold", "NDCG@20")])
def test_a_grid_picks_the_argmax_of_a_manual_loop_and_runs_it_once_on_test(ds, protocol, metric):
    split = make_split(ds, protocol, seed=5)
    manual = {l2: run_experiment(ds, "ease", protocol=protocol, seed=5, settings={"l2": l2}, stage="valid",
                                 split=split).record["metrics"][metric] for l2 in L2}
    result = tune(ds, "ease", protocol=protocol, space=[f"l2={json.dumps(L2)}"], trials=50, seed=5)
    assert result.sampler == "grid" and result.metric == metric
    assert len(result.trials) == len(L2)  # capped at the grid's size
    assert {row["params"]["l2"]: row["value"] for row in result.trials} == manual
    best = result.best_params["l2"]
    assert manual[best] == result.best_value == max(manual.values())  # EASE ranks P-COLD's cold items alike
    direct = run_experiment(ds, "ease", protocol=protocol, seed=5, settings={"l2": best}, stage="test", split=split)
    assert result.test.record["stage"] == "test" and result.test.record["metrics"] == direct.record["metrics"]
    assert result.valid_metrics[metric] == manual[best]


def test_a_resumed_study_runs_only_the_missing_trials(ds, tmp_path):
    first = tune(ds, "itemknn", space=["neighbors=intlog(5,100)", "shrink=float(0,50)"], trials=3,
                 study_dir=tmp_path)
    assert check_study(tmp_path, model="itemknn", protocol="loo", space=["neighbors=intlog(5,100)",
                                                                         "shrink=float(0,50)"]) == 3
    again = tune(ds, "itemknn", space=["neighbors=intlog(5,100)", "shrink=float(0,50)"], trials=5,
                 study_dir=tmp_path)
    assert [r["number"] for r in again.trials] == [0, 1, 2, 3, 4]
    assert again.trials[:3] == first.trials
    assert len({json.dumps(r["params"]) for r in again.trials}) == 5  # no point drawn twice
    same = tune(ds, "itemknn", space=["neighbors=intlog(5,100)", "shrink=float(0,50)"], trials=5,
                study_dir=tmp_path)
    assert same.trials == again.trials and same.test.record["metrics"] == again.test.record["metrics"]


def test_an_interrupted_trial_is_retried_and_the_grid_completed(ds, tmp_path, monkeypatch):
    calls = []
    real = tune_module.run_experiment

    def interrupted_second(*args, **kwargs):
        calls.append(kwargs["settings"]["l2"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "run_experiment", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        tune(ds, "ease", space=[f"l2={json.dumps(L2)}"], study_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]  # no half-written outputs
    monkeypatch.setattr(tune_module, "run_experiment", real)
    result = tune(ds, "ease", space=[f"l2={json.dumps(L2)}"], study_dir=tmp_path)
    states = [(r["number"], r["state"], r["error"]) for r in result.trials]
    assert states == [(0, "complete", None), (1, "failed", "interrupted"), (2, "complete", None),
                      (3, "complete", None), (4, "complete", None)]
    assert result.trials[4]["params"] == {"l2": calls[1]}  # the interrupted point, retried
    assert sorted(r["params"]["l2"] for r in result.trials if r["state"] == "complete") == L2


def test_a_trial_that_fails_with_an_error_is_recorded_and_not_repeated(ds, tmp_path, monkeypatch):
    real = tune_module.run_experiment

    def refuse_l2_30(*args, **kwargs):
        if kwargs["settings"]["l2"] == 30.0:
            raise InputError("the training loss is not finite")
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "run_experiment", refuse_l2_30)
    result = tune(ds, "ease", space=[f"l2={json.dumps(L2)}"], study_dir=tmp_path)
    failed = [r for r in result.trials if r["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["params"] == {"l2": 30.0}
    assert failed[0]["error"] == "the training loss is not finite"
    again = tune(ds, "ease", space=[f"l2={json.dumps(L2)}"], study_dir=tmp_path)
    assert again.trials == result.trials
    monkeypatch.setattr(tune_module, "run_experiment", lambda *a, **k: (_ for _ in ()).throw(InputError("no")))
    with pytest.raises(InputError, match="no trial completed"):
        tune(ds, "ease", space=["l2=[5]"])


@pytest.mark.parametrize(("change", "fragment"), [
    ({"model": "ease", "space": ["l2=[1,2]"]}, "another model (got 'ease'; expected 'itemknn'"),
    ({"space": ["neighbors=[5,10,20]"]}, "another search space (got 'neighbors=[5, 10, 20]'"),
    ({"protocol": "rand"}, "another protocol"),
    ({"seed": 1}, "another seed"),
    ({"settings": {"shrink": 5}}, "another fixed settings"),
    ({"dataset": "other"}, "another dataset"),
])
def test_a_study_made_for_something_else_is_refused(ds, tmp_path, change, fragment):
    tune(ds, "itemknn", space=["neighbors=[5,10]"], study_dir=tmp_path)
    kwargs = {"model": "itemknn", "space": ["neighbors=[5,10]"], **change}
    data = make_synthetic(n_users=100, n_items=80, seed=1) if kwargs.pop("dataset", None) else ds
    with pytest.raises(InputError, match="study.db: the study was made for ") as err:
        tune(data, kwargs.pop("model"), study_dir=tmp_path, **kwargs)
    assert fragment in str(err.value)


def test_a_study_file_that_is_not_one_is_named(ds, tmp_path):
    (tmp_path / "study.db").write_text("not a database\n")
    with pytest.raises(InputError, match="study.db: cannot open the study"):
        tune(ds, "ease", space=["l2=[1,2]"], study_dir=tmp_path)


def test_timeout_starts_no_new_trial_and_bad_arguments_are_refused(ds):
    result = tune(ds, "ease", space=["l2=log(1,1000)"], trials=5, timeout=1e-6)
    assert len(result.trials) == 1
    with pytest.raises(InputError, match="trials"):
        tune(ds, "ease", space=["l2=[1,2]"], trials=0)
    with pytest.raises(InputError, match="search space is empty"):
        tune(ds, "ease", space=[])


class _PruneTinyLr(optuna.pruners.BasePruner):
    """Prunes any trial with a tiny learning rate from its second epoch on."""

    def prune(self, study, trial):
        return trial.params["lr"] < 1e-4 and trial.last_step >= 2


def test_a_neural_trial_is_pruned_by_its_validation_curve_and_leaves_nothing_running(tmp_path):
    import torch

    data = make_synthetic(n_users=150, n_items=100, seed=3)
    fixed = {"dim": 8, "layers": 1, "max_len": 8, "epochs": 4, "batch_size": 128, "patience": 0,
             "run_dir": str(tmp_path / "run")}
    threads, torch_threads = threading.active_count(), torch.get_num_threads()
    rows = []
    result = tune(data, "sasrec", space=["lr=[0.000001,0.01]"], settings=fixed, prune=_PruneTinyLr(),
                  on_trial=rows.append)
    by_lr = {r["params"]["lr"]: r for r in result.trials}
    assert by_lr[1e-6]["state"] == "pruned" and by_lr[1e-6]["pruned_at_epoch"] == 2 and by_lr[1e-6]["value"] is None
    assert by_lr[0.01]["state"] == "complete" and result.best_params == {"lr": 0.01}
    assert rows == result.trials and result.pruner == "_PruneTinyLr"
    # the pruned fit closed what it opened: the run directory's TensorBoard writer thread, torch's threads
    assert threading.active_count() == threads and torch.get_num_threads() == torch_threads
    assert tune(data, "ease", space=["l2=[5]"]).pruner == "MedianPruner"
    assert tune(data, "ease", space=["l2=[5]"], prune=False).pruner == "NopPruner"


def test_outputs_are_written_whole(ds, tmp_path):
    result = tune(ds, "itemknn", space=["neighbors=intlog(5,100)", "shrink=float(0,50)"], trials=4,
                  study_dir=tmp_path / "study")
    assert set(result.importances) == {"neighbors", "shrink"}
    assert sum(result.importances.values()) == pytest.approx(1.0)
    written = write_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(OUTPUT_FILES)
    for name in ("history.png", "importance.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert lines[0] == "number,state,value,seconds,pruned_at_epoch,error,neighbors,shrink" and len(lines) == 5
    record = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert record == json.loads(json.dumps(result.record()))
    assert record["best"]["trial"] == result.best_trial and record["test"]["stage"] == "test"
    assert record["study"] == str(tmp_path / "study" / "study.db") and record["sampler"] == "tpe"
    with pytest.raises(InputError, match="already exist"):
        write_outputs(result, tmp_path / "out")
    one = tune(ds, "ease", space=["l2=[10,100]"])
    assert one.importances is None  # one parameter: the plot is a note
    write_outputs(one, tmp_path / "one")
    assert (tmp_path / "one" / "importance.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from llm4rec.data.export import save_dataset

    return save_dataset(make_synthetic(n_users=300, n_items=200, seed=0), tmp_path_factory.mktemp("tune") / "syn")


def test_cli_tune_writes_the_study_outputs_and_the_record(capsys, data_dir, tmp_path):
    study = tmp_path / "study"
    code, out, err = run(capsys, "tune", "--data", str(data_dir), "--model", "itemknn", "--space",
                         "neighbors=intlog(5,100)", "shrink=float(0,50)", "--trials", "3", "--study", str(study),
                         "--set", "block_size=64", "--json", str(tmp_path / "t.json"), "--timeout", "1h")
    assert code == 0, err
    assert "trial 2 · neighbors=" in err and "chosen on the validation stage (NDCG@10" in out
    assert sorted(p.name for p in study.iterdir()) == sorted([*OUTPUT_FILES, "study.db"])
    assert (study / "history.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "t.json").read_text())
    assert record == json.loads((study / "tune.json").read_text())
    assert {"model", "protocol", "seed", "metric", "space", "settings", "trials", "best", "test", "study",
            "sampler"} <= set(record)
    assert record["settings"] == {"block_size": "64"} and record["test"]["config"]["block_size"] == 64
    assert record["space"] == {"neighbors": "neighbors=intlog(5, 100)", "shrink": "shrink=float(0.0, 50.0)"}
    assert record["test"]["data"]["path"] == str(data_dir.resolve())
    params = " ".join(f"{k}={v}" for k, v in record["best"]["params"].items())
    assert params in out and f"{record['test']['metrics']['NDCG@10']:.4f}" in out
    code, _, err = run(capsys, "tune", "--data", str(data_dir), "--model", "itemknn", "--space",
                       "neighbors=intlog(5,100)", "shrink=float(0,50)", "--trials", "4", "--study", str(study))
    assert code == 2 and "already exist" in err and "--overwrite" in err
    code, _, err = run(capsys, "tune", "--data", str(data_dir), "--model", "itemknn", "--space",
                       "neighbors=intlog(5,100)", "shrink=float(0,50)", "--trials", "4", "--study", str(study),
                       "--set", "block_size=64", "--overwrite")
    assert code == 0 and "resuming the study" in err and "3 finished trials" in err
    assert len(json.loads((study / "tune.json").read_text())["trials"]) == 4


def test_cli_ctrl_c_keeps_the_study_and_writes_nothing_else(capsys, data_dir, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_module, "run_experiment", interrupt)
    code, _, err = run(capsys, "tune", "--data", str(data_dir), "--model", "ease", "--space", "l2=[1,2]",
                       "--study", str(tmp_path / "s"), "--json", str(tmp_path / "t.json"))
    assert code == 130 and "the same command resumes it" in err and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"] and [p.name for p in (tmp_path / "s").iterdir()] == \
        ["study.db"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--space", "l3=[1,2]"], "search space parameter 'l3': unknown setting 'l3' for model 'ease'"),
    (["--space", "l2=log(0,9)"], "search space parameter 'l2': a log scale needs a positive low bound"),
    (["--space", "l2=[1,2]", "--timeout", "soon"], "bad --timeout (got 'soon'"),
    ([], "no search space given"),
    (["--space", "l2=[1,2]", "--protocol", "nope"], "unknown protocol"),
])
def test_cli_bad_input_is_one_paragraph_before_loading(capsys, tmp_path, args, fragment):
    code, out, err = run(capsys, "tune", "--data", str(tmp_path / "missing.csv"), "--model", "ease", *args,
                         "--study", str(tmp_path / "s"))
    assert code == 2 and fragment in err and "Traceback" not in err + out
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400),
                                               ("45", 45), ("2.5s", 2.5)])
def test_timeouts_read_as_durations(text, seconds):
    from llm4rec.cli.tune_cmd import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.realdata
def test_a_grid_over_ease_on_ml100k_chooses_l2_400_and_reproduces_its_test_ndcg(shared_data):
    from llm4rec.data.sources import load_dataset

    result = tune(load_dataset(shared_data / "ml-100k"), "ease", space=["l2=[100,400,800]"])
    assert result.best_params == {"l2": 400}
    assert result.test.record["metrics"]["NDCG@10"] == pytest.approx(0.040884, abs=1e-6)
