"""llm4rec reproduces an independent implementation of PROTOCOLS.md to 1e-4.

Reference numbers (from the foundation issue): EASE with l2=400 fitted on the
test-stage fit set of ml-100k, seed 2026.
"""

import pytest

from llm4rec.data import make_split
from llm4rec.evaluation import evaluate
from llm4rec.models import create_model

REFERENCE = {
    "loo": ({"HR@10": 0.086957, "NDCG@10": 0.040884, "MRR@10": 0.027106}, 943),
    "loo100": ({"HR@10": 0.594910, "NDCG@10": 0.322526}, 943),
    "rand": ({"Recall@20": 0.367951, "NDCG@20": 0.445423}, 943),
    "cold": ({"Recall@20": 0.141949, "NDCG@20": 0.203439}, 941),
}


@pytest.mark.realdata
@pytest.mark.parametrize("protocol", list(REFERENCE))
def test_ease_matches_the_independent_implementation(ml100k, protocol):
    expected, n_users = REFERENCE[protocol]
    stage = make_split(ml100k, protocol, seed=2026).stage("test")
    model = create_model("ease", {"l2": 400}).fit(stage.fit)
    result = evaluate(model, stage)
    assert result.n_users == n_users
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-4), name
