"""Offline reports for the dashboard: the kind of every file the real CLI writes, and names that cannot escape."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from llm4rec.cli.main import main
from llm4rec.errors import InputError
from llm4rec.serving.reports import detect_kind, list_reports, read_report
from tests.cli.test_ope_cmd import write_logs


def cli(*args: str) -> None:
    assert main(list(args)) == 0, args


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A reports directory holding what `llm4rec evaluate/quickstart/simulate/ope` and a training run wrote."""
    from llm4rec.data import make_synthetic
    from llm4rec.data.export import save_dataset

    work = tmp_path_factory.mktemp("cli")
    data = save_dataset(make_synthetic(n_users=60, n_items=40, seed=0, interactions_per_user=(5, 15)),
                        work / "synthetic")
    out = tmp_path_factory.mktemp("reports")
    cli("evaluate", "--data", str(data), "--model", "ease", "--json", str(out / "ease.json"))
    cli("evaluate", "--data", str(data), "--model", "sasrec", "--set", "epochs=2", "--set", "dim=8",
        "--set", "layers=1", "--set", f"run_dir={work / 'run'}", "--json", str(out / "sasrec.json"))
    shutil.copy(work / "run" / "metrics.json", out / "sasrec-training.json")
    cli("quickstart", "--data", str(data), "--models", "pop,ease", "--out", str(work / "qs"))
    shutil.copy(work / "qs" / "results.json", out / "quickstart.json")
    shutil.copy(work / "qs" / "comparison.png", out / "comparison.png")
    cli("simulate", "--data", str(data), "--policies", "oracle,greedy,thompson", "--steps", "3", "--episodes", "4",
        "--seeds", "2", "--model", "pop", "--sim", "n_candidates=8", "--sim", "slate_size=2",
        "--out", str(work / "sim"))
    shutil.copy(work / "sim" / "results.json", out / "simulate.json")
    logs, target = write_logs(work / "random.csv"), write_logs(work / "target.csv", seed=1)
    cli("ope", "--logs", str(logs), "--policy", f"empirical:{target}", "--bootstrap", "100",
        "--json", str(out / "ope.json"))
    shutil.copy(work / "run" / "config.json", out / "config.json")  # a JSON file of no known kind
    (out / "nested").mkdir()
    (out / "nested" / "hidden.json").write_text("{}")
    return out


def test_every_cli_result_is_listed_with_its_kind(reports):
    listed = list_reports(reports)
    assert [r["name"] for r in listed] == sorted(["ease.json", "sasrec.json", "sasrec-training.json",
                                                  "quickstart.json", "simulate.json", "ope.json", "config.json"])
    kinds = {r["name"]: r["kind"] for r in listed}
    assert kinds == {"ease.json": "evaluate", "sasrec.json": "evaluate", "sasrec-training.json": "training",
                     "quickstart.json": "compare", "simulate.json": "simulate", "ope.json": "ope",
                     "config.json": "json"}
    for r in listed:
        assert r["modified"] == pytest.approx((reports / r["name"]).stat().st_mtime)
        assert r["bytes"] == (reports / r["name"]).stat().st_size


def test_a_report_is_its_file_content_with_the_fields_the_charts_read(reports):
    for name in ("ease.json", "quickstart.json", "simulate.json", "ope.json", "sasrec-training.json"):
        got = read_report(reports, name)
        assert got["name"] == name and got["data"] == json.loads((reports / name).read_text())
    ev = read_report(reports, "ease.json")["data"]
    assert ev["model"] == "ease" and set(ev["metrics"]) == {"HR@10", "NDCG@10", "MRR@10"}
    qs = read_report(reports, "quickstart.json")["data"]
    assert [r["model"] for r in qs] == ["pop", "ease"]
    for rec in qs:
        for metric, (low, high) in rec["intervals_95"].items():
            assert low <= rec["metrics"][metric] <= high
    sim = read_report(reports, "simulate.json")["data"]
    assert list(sim["policies"]) == ["oracle", "greedy", "thompson"]
    curves = sim["policies"]["greedy"]["curves"]
    assert len(curves["cumulative_regret"]["mean"]) == len(curves["cumulative_reward"]["ci_low"]) == 4
    ope = read_report(reports, "ope.json")["data"]
    assert set(ope["estimates"]) == {"ips", "snips", "dm", "dr", "switch-dr"}
    assert all(e["ci_low"] <= e["value"] <= e["ci_high"] for e in ope["estimates"].values())
    training = read_report(reports, "sasrec-training.json")["data"]
    assert [h["epoch"] for h in training["history"]] == [1, 2] and "loss" in training["history"][0]


@pytest.mark.parametrize("name", ["../ease.json", "nested/hidden.json", "nested\\hidden.json", "missing.json",
                                  "comparison.png", "nested", "", "..", "ease.json\x00"])
def test_a_name_outside_the_directory_or_not_a_json_file_is_404(reports, name):
    with pytest.raises(InputError) as info:
        read_report(reports, name)
    assert info.value.status == 404 and "reports directory" in str(info.value)


def test_broken_json_is_422_and_non_finite_numbers_read_as_null(tmp_path):
    (tmp_path / "broken.json").write_text('{"metrics": ')
    (tmp_path / "nan.json").write_text('{"estimates": {"ips": {"value": NaN, "ci_low": -Infinity, "ci_high": 1}}, '
                                       '"n_rounds": 3}')
    assert {r["name"]: r["kind"] for r in list_reports(tmp_path)} == {"broken.json": "json", "nan.json": "ope"}
    with pytest.raises(InputError) as info:
        read_report(tmp_path, "broken.json")
    assert info.value.status == 422 and "not valid JSON" in str(info.value)
    got = read_report(tmp_path, "nan.json")
    assert got["kind"] == "ope" and got["data"]["estimates"]["ips"] == {"value": None, "ci_low": None, "ci_high": 1}
    json.dumps(got, allow_nan=False)  # what the HTTP response needs


def test_the_kind_follows_a_rewritten_file_and_a_missing_directory_is_404(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("[]")
    assert list_reports(tmp_path)[0]["kind"] == "json"
    path.write_text(json.dumps({"model": "pop", "protocol": "P-LOO", "metrics": {"HR@10": 0.1}}))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert list_reports(tmp_path)[0]["kind"] == "evaluate"
    with pytest.raises(InputError) as info:
        list_reports(tmp_path / "absent")
    assert info.value.status == 404


def test_detect_kind_of_near_misses():
    assert detect_kind({"metrics": {"HR@10": 1}}) == "json"  # no model, no protocol
    assert detect_kind([{"model": "a", "protocol": "p", "metrics": {}}, {"x": 1}]) == "json"
    assert detect_kind({"policies": {}, "simulator": {}}) == "json"
    assert detect_kind({"history": [], "epochs_run": 0}) == "json"
    assert detect_kind(None) == detect_kind(3) == detect_kind("x") == "json"
