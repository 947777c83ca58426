"""``llm4rec quickstart``: the model is chosen on the validation stage; the chart has its setting and intervals."""

from __future__ import annotations

import json

from llm4rec.cli.main import main
from llm4rec.evaluation import report


def test_quickstart_chooses_on_the_validation_stage_and_reports_test_numbers(capsys, tmp_path, monkeypatch):
    from llm4rec.data import make_split
    from llm4rec.data.synthetic import make_synthetic
    from llm4rec.evaluation.experiment import run_experiment

    drawn = {}
    real = report.comparison_figure

    def spy(rows, metrics, **kwargs):
        drawn.update(rows=rows, metrics=metrics, **kwargs)
        return real(rows, metrics, **kwargs)

    monkeypatch.setattr(report, "comparison_figure", spy)
    code = main(["quickstart", "--models", "pop,itemknn,ease", "--seed", "3", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads((tmp_path / "results.json").read_text())
    valid = {r["model"]: r["valid_metrics"]["NDCG@10"] for r in records}
    chosen = [r["model"] for r in records if r["chosen_on_valid"]]
    assert chosen == [max(valid, key=valid.get)] and all(r["stage"] == "test" for r in records)
    (name,) = chosen
    ds = make_synthetic(seed=3)
    split = make_split(ds, "loo", seed=3)
    assert run_experiment(ds, name, seed=3, split=split, stage="valid").record["metrics"] == \
        next(r["valid_metrics"] for r in records if r["model"] == name)
    test_ndcg = next(r["metrics"]["NDCG@10"] for r in records if r["model"] == name)
    assert f"chosen on the validation stage (NDCG@10): {name}; its test NDCG@10 is {test_ndcg:.4f}" in out
    assert drawn["title"] == "synthetic: P-LOO (full ranking), test stage, seed 3"
    assert drawn["metrics"] == ["HR@10", "NDCG@10", "MRR@10"] and "95% bootstrap intervals" in drawn["note"]
    for row, rec in zip(drawn["rows"], records, strict=True):
        assert row["intervals"] == rec["intervals_95"]
        for metric, (low, high) in rec["intervals_95"].items():
            assert low < rec["metrics"][metric] < high
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
