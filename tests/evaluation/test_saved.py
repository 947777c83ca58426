"""Evaluating a saved model as it is: the same numbers as a fresh run, and no stage whose targets it saw."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation.experiment import run_experiment
from llm4rec.evaluation.saved import evaluate_saved
from llm4rec.models import create_model


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=200, n_items=150, interactions_per_user=(5, 20), seed=3)


def saved(tmp_path, ds, protocol="loo", seed=2026, stage="test", name="ease", whole=False):
    split = make_split(ds, protocol, seed=seed)
    data = ds if whole else split.stage(stage).fit
    return create_model(name, {"l2": 50.0} if name == "ease" else {}).fit(data).save(tmp_path / f"{name}-{stage}")


def test_a_saved_model_scores_like_the_run_that_fitted_it(tmp_path, ds):
    path = saved(tmp_path, ds)
    fresh = run_experiment(ds, "ease", settings={"l2": 50.0})
    again = evaluate_saved(path, ds)
    assert again.record["metrics"] == fresh.record["metrics"]
    assert again.record["split_fingerprint"] == fresh.record["split_fingerprint"]
    assert again.record["model_provenance"]["stage"] == "test"


def test_a_model_from_the_valid_stage_is_evaluated_on_test_through_grown_histories(tmp_path, ds):
    """Fitted on train only, it reads each user's train + validation history at test time (no refit)."""
    path = saved(tmp_path, ds, stage="valid")
    served = evaluate_saved(path, ds, stage="test").record["metrics"]["NDCG@10"]
    refit = run_experiment(ds, "ease", settings={"l2": 50.0}).record["metrics"]["NDCG@10"]
    assert served == pytest.approx(refit, rel=0.25)


@pytest.mark.parametrize("case, match", [
    ({"whole": True}, "whole dataset"),
    ({"seed": 7}, "another split"),
    ({"protocol": "rand"}, "another split"),
])
def test_stages_whose_targets_the_model_may_have_seen_are_refused(tmp_path, ds, case, match):
    path = saved(tmp_path, ds, **case)
    with pytest.raises(InputError, match=match):
        evaluate_saved(path, ds, protocol="loo", seed=2026)


def test_a_model_from_the_test_stage_may_not_be_evaluated_on_valid(tmp_path, ds):
    path = saved(tmp_path, ds, stage="test")
    with pytest.raises(InputError, match=r"targets are among its fit interactions \(e\.g\. user"):
        evaluate_saved(path, ds, stage="valid")


def test_other_data_with_shared_ids_is_checked_pair_by_pair(tmp_path, ds):
    """Another dataset (another fingerprint) that holds a pair the model was fitted on is still refused."""
    path = saved(tmp_path, ds, whole=True)
    smaller = ds.subset(np.arange(ds.n_interactions) % 2 == 0)  # other fingerprint, the same ids
    with pytest.raises(InputError, match="among its fit interactions"):
        evaluate_saved(path, smaller)


def test_id_only_models_refuse_unknown_items(tmp_path, ds):
    split = make_split(ds, "cold")
    fit = split.stage("test").fit.without_items(split.cold_items)
    path = create_model("ease").fit(fit).save(tmp_path / "ease")
    with pytest.raises(InputError, match="unknown to this 'ease' model"):
        evaluate_saved(path, ds, protocol="cold")
