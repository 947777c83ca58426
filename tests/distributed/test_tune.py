"""``tune_ray`` and ``llm4rec tune --ray``: the single-process study and outputs, trials run concurrently."""

from __future__ import annotations

import csv
import json
import sqlite3

import optuna
import pytest

from llm4rec.data import make_synthetic
from llm4rec.distributed.tune import tune_ray
from llm4rec.errors import InputError
from llm4rec.experiments.tune import OUTPUT_FILES, STUDY_NAME, tune, write_outputs
from tests.cli._run import run

L2 = [1.0, 30.0, 300.0, 3000.0]
KNN = ["neighbors=intlog(5,100)", "shrink=float(0,50)"]


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=300, n_items=200, seed=0)


def _study(path):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path / 'study.db'}")


def _schema(path):
    with sqlite3.connect(path / "study.db") as db:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))


def _keys(record):
    """The key structure of a tune.json record (the trial rows' and best's keys, the top level's)."""
    return {"top": sorted(record), "best": sorted(record["best"]), "trial": sorted({k for t in record["trials"]
                                                                                   for k in t}),
            "test": sorted(record["test"])}


def test_a_grid_on_ray_is_the_single_process_grid_with_the_same_study_and_outputs(ray_cluster, ds, tmp_path):
    rows = []
    ray = tune_ray(ds, "ease", space=[f"l2={json.dumps(L2)}"], trials=50, seed=5, study_dir=tmp_path / "ray",
                   on_trial=rows.append)
    one = tune(ds, "ease", space=[f"l2={json.dumps(L2)}"], trials=50, seed=5, study_dir=tmp_path / "one")
    # the same points, the same valid values, the same choice and test record
    assert {r["params"]["l2"]: r["value"] for r in ray.trials} == {r["params"]["l2"]: r["value"] for r in one.trials}
    assert sorted(r["number"] for r in ray.trials) == [0, 1, 2, 3] and sorted(rows, key=lambda r: r["number"]) == \
        ray.trials  # on_trial saw every trial (in the order they finished)
    assert ray.best_value == max(r["value"] for r in ray.trials) == one.best_value
    assert ray.best_params == one.best_params and ray.valid_metrics == one.valid_metrics
    assert ray.test.record["metrics"] == one.test.record["metrics"]
    assert (ray.sampler, ray.pruner, ray.metric) == (one.sampler, one.pruner, one.metric) == \
        ("grid", "MedianPruner", "NDCG@10")
    # the study: same database schema, study attributes, trial states, params, distributions and values
    assert _schema(tmp_path / "ray") == _schema(tmp_path / "one")
    ray_study, one_study = _study(tmp_path / "ray"), _study(tmp_path / "one")
    assert ray_study.user_attrs == one_study.user_attrs and ray_study.direction == one_study.direction
    by_l2 = {t.params["l2"]: t for t in one_study.trials}
    for trial in ray_study.trials:
        twin = by_l2[trial.params["l2"]]
        assert (trial.state, trial.value, trial.distributions) == (twin.state, twin.value, twin.distributions)
        assert trial.user_attrs["metrics"] == twin.user_attrs["metrics"]
        assert set(trial.user_attrs) == {"metrics", "node_id", "pid"}  # plus where it ran
    # the outputs: the same files, trials.csv columns, tune.json keys
    write_outputs(ray, tmp_path / "ray")
    write_outputs(one, tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted([*OUTPUT_FILES, "study.db"])
    with open(tmp_path / "ray" / "trials.csv") as a, open(tmp_path / "one" / "trials.csv") as b:
        ray_csv, one_csv = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert list(ray_csv[0]) == list(one_csv[0]) == ["number", "state", "value", "seconds", "pruned_at_epoch",
                                                   "error", "l2"]
    assert {r["l2"]: r["value"] for r in ray_csv} == {r["l2"]: r["value"] for r in one_csv}
    ray_json = json.loads((tmp_path / "ray" / "tune.json").read_text())
    one_json = json.loads((tmp_path / "one" / "tune.json").read_text())
    assert _keys(ray_json) == _keys(one_json)
    assert ray_json["best"]["valid_value"] == max(t["value"] for t in ray_json["trials"])
    assert (tmp_path / "ray" / "history.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_trials_run_at_the_same_time_on_both_worker_nodes(ray_cluster, tmp_path):
    import ray

    data = make_synthetic(n_users=1500, n_items=800, seed=1)  # ease: about a second a trial
    # a fresh worker process per trial: with reuse (the default) the worker that starts first may take
    # both short trials before the other node's worker process is up
    tune_ray(data, "ease", space=["l2=[10,100]"], study_dir=tmp_path, concurrency=2, reuse_actors=False)
    trials = _study(tmp_path).trials
    workers = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
    assert len(workers) == 2
    assert {t.user_attrs["node_id"] for t in trials} == workers
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    first_end = min(t.datetime_complete for t in trials)
    assert all(t.datetime_start < first_end for t in trials)  # both were running at once


def test_a_resumed_study_runs_only_the_missing_trials_whichever_path_began_it(ray_cluster, ds, tmp_path):
    begun = tune(ds, "itemknn", space=KNN, trials=2, study_dir=tmp_path)  # single-process
    rows = []
    more = tune_ray(ds, "itemknn", space=KNN, trials=4, study_dir=tmp_path, on_trial=rows.append)
    assert more.trials[:2] == begun.trials
    assert sorted(r["number"] for r in rows) == [2, 3] and [r["number"] for r in more.trials] == [0, 1, 2, 3]
    assert len({json.dumps(r["params"]) for r in more.trials}) == 4  # no point drawn twice
    assert more.best_value == max(r["value"] for r in more.trials)
    rows.clear()
    same = tune_ray(ds, "itemknn", space=KNN, trials=4, study_dir=tmp_path, on_trial=rows.append)
    assert rows == [] and same.trials == more.trials and same.test.record["metrics"] == more.test.record["metrics"]
    again = tune(ds, "itemknn", space=KNN, trials=4, study_dir=tmp_path)  # and back: the same study
    assert again.trials == more.trials


@pytest.mark.slow
def test_a_poor_neural_trial_is_pruned_by_the_studys_pruner(ray_cluster, tmp_path):
    class PruneTinyLr(optuna.pruners.BasePruner):
        """Prunes any trial with a tiny learning rate from its second epoch on (runs on the driver)."""

        def prune(self, study, trial):
            return trial.params["lr"] < 1e-4 and trial.last_step >= 2

    data = make_synthetic(n_users=150, n_items=100, seed=3)
    fixed = {"dim": 8, "layers": 1, "max_len": 8, "epochs": 4, "batch_size": 128, "patience": 0}
    result = tune_ray(data, "sasrec", space=["lr=[0.000001,0.01]"], settings=fixed, prune=PruneTinyLr(),
                      study_dir=tmp_path)
    by_lr = {r["params"]["lr"]: r for r in result.trials}
    assert by_lr[1e-6]["state"] == "pruned" and by_lr[1e-6]["pruned_at_epoch"] == 2 and by_lr[1e-6]["value"] is None
    assert by_lr[0.01]["state"] == "complete" and result.best_params == {"lr": 0.01}
    pruned = next(t for t in _study(tmp_path).trials if t.params["lr"] == 1e-6)
    assert sorted(pruned.intermediate_values) == [1, 2]  # the epochs the pruner saw


def test_bad_arguments_are_refused(ds):
    with pytest.raises(InputError, match="concurrency must be positive"):
        tune_ray(ds, "ease", space=["l2=[1,2]"], concurrency=0)
    with pytest.raises(InputError, match="search space is empty"):
        tune_ray(ds, "ease", space=[], address="local")


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from llm4rec.data.export import save_dataset

    return save_dataset(make_synthetic(n_users=300, n_items=200, seed=0), tmp_path_factory.mktemp("tune") / "syn")


def test_cli_tune_ray_writes_the_study_outputs(ray_cluster, capsys, data_dir, tmp_path):
    study = tmp_path / "study"
    code, out, err = run(capsys, "tune", "--data", str(data_dir), "--model", "itemknn", "--space",
                         "neighbors=[5,20,80]", "--study", str(study), "--ray", ray_cluster.address,
                         "--concurrency", "2", "--json", str(tmp_path / "t.json"))
    assert code == 0, err
    assert "chosen on the validation stage (NDCG@10" in out and "· neighbors=" in err
    assert sorted(p.name for p in study.iterdir()) == sorted([*OUTPUT_FILES, "study.db"])
    record = json.loads((tmp_path / "t.json").read_text())
    assert record == json.loads((study / "tune.json").read_text()) and record["sampler"] == "grid"
    assert sorted(t["params"]["neighbors"] for t in record["trials"]) == [5, 20, 80]
    assert record["best"]["valid_value"] == max(t["value"] for t in record["trials"])
    assert record["test"]["data"]["path"] == str(data_dir.resolve())


@pytest.mark.parametrize(("args", "fragment"), [
    (["--ray", "127.0.0.1:1"], "(got '127.0.0.1:1'; expected a running cluster"),
    (["--ray", "head-without-port"], "not a Ray cluster address (got 'head-without-port'"),
    (["--concurrency", "2"], "--concurrency needs --ray"),
])
def test_cli_a_bad_ray_address_is_one_paragraph_before_loading(capsys, tmp_path, args, fragment):
    code, out, err = run(capsys, "tune", "--data", str(tmp_path / "missing.csv"), "--model", "ease", "--space",
                         "l2=[1,2]", "--study", str(tmp_path / "s"), *args)
    assert code == 2 and fragment in err and "Traceback" not in err + out
    assert not (tmp_path / "s").exists()
