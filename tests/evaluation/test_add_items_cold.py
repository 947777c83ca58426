"""New items without retraining, on real data: fit without P-COLD's cold items, add them through their text,
and the cold-start metrics equal the protocol's own cold evaluation."""

from __future__ import annotations

import pytest

from llm4rec.data import make_split
from llm4rec.evaluation.experiment import run_experiment
from llm4rec.evaluation.saved import evaluate_saved
from llm4rec.models import create_model

pytestmark = pytest.mark.realdata


def test_semantic_knn_add_items_equals_p_cold(ml100k, tmp_path):
    split = make_split(ml100k, "cold")
    fit = split.stage("test").fit.without_items(split.cold_items)  # the catalogue as it was before they came
    assert fit.n_items == ml100k.n_items - len(split.cold_items)
    path = create_model("semantic-knn").fit(fit).save(tmp_path / "before-the-new-items")
    added = evaluate_saved(path, ml100k, protocol="cold")  # adds the 336 cold items through add_items
    protocol = run_experiment(ml100k, "semantic-knn", protocol="cold", split=split)
    assert "336 items added" in added.record["evaluated_as"]
    assert added.record["metrics"] == pytest.approx(protocol.record["metrics"], abs=1e-9)
    assert added.record["metrics"]["Recall@20"] > 0.1  # cold items are really ranked, not left at the floor
