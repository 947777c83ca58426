"""Ensemble: fusion arithmetic, tuned weights, errors."""

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model
from llm4rec.testing import checkerboard


def test_a_single_weighted_member_ranks_like_that_member():
    ds = checkerboard()
    solo = create_model("ensemble", {"models": "ease,pop", "weights": "1,0"}).fit(ds)
    ease = create_model("ease").fit(ds)
    np.testing.assert_array_equal(solo.recommend(np.arange(10), k=5)[0], ease.recommend(np.arange(10), k=5)[0])


def test_zscore_fusion_is_the_weighted_sum_of_standardised_scores():
    ds = checkerboard()
    ens = create_model("ensemble", {"models": "ease,itemknn", "weights": [0.3, 0.7]}).fit(ds)
    parts = []
    for name in ("ease", "itemknn"):
        s = create_model(name).fit(ds).score([0, 1]).astype(np.float64)
        parts.append((s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True))
    np.testing.assert_allclose(ens.score([0, 1]), 0.3 * parts[0] + 0.7 * parts[1], atol=1e-4)


def test_tuned_weights_do_not_lose_to_the_best_member_on_synthetic_data():
    ds = make_synthetic(n_users=300, n_items=200, seed=3)
    stage = make_split(ds, "loo").stage("test")
    ens = create_model("ensemble", {"models": "ease,pop", "grid_step": 0.25}).fit(stage.fit)
    assert ens.weights_.sum() == pytest.approx(1.0) and ens.weights_[0] > 0
    fused = evaluate(ens, stage).metrics["NDCG@10"]
    pop = evaluate(create_model("pop").fit(stage.fit), stage).metrics["NDCG@10"]
    assert fused > 1.5 * pop


def test_bad_members_are_clear_errors():
    ds = checkerboard()
    with pytest.raises(InputError, match="unknown model"):
        create_model("ensemble", {"models": "ease,nosuch", "weights": "1,0"}).fit(ds)
    with pytest.raises(InputError, match="one weight per member"):
        create_model("ensemble", {"models": "ease,pop", "weights": "1"}).fit(ds)
    with pytest.raises(InputError, match="not a member"):
        create_model("ensemble", {"models": "ease,pop", "settings": {"als": {}}, "weights": "1,0"}).fit(ds)
    with pytest.raises(InputError, match="method=rrf"):
        create_model("ensemble", {"models": "ease,generative", "weights": "1,1"}).fit(ds)
