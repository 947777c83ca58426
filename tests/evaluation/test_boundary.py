"""The model boundary: what fit receives never holds a target of the stage evaluated (every protocol x stage)."""

from __future__ import annotations

import numpy as np
import pytest

from llm4rec.data import make_synthetic
from llm4rec.evaluation.experiment import run_experiment
from llm4rec.models import MODELS
from llm4rec.models.base import ModelConfig, Recommender

SEEN: list = []


class Recorder(Recommender):
    """Remembers every fit set it is given; scores by popularity."""

    name = "recorder"
    Config = ModelConfig

    def _fit(self, data) -> None:
        SEEN.append(data)

    def _score_histories(self, histories, items):
        counts = self.popularity_ if items is None else self.popularity_[items]
        return np.broadcast_to(counts, (len(histories), len(counts))).copy()


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=150, n_items=120, interactions_per_user=(4, 15), seed=5)


#: every protocol x stage; P-LOO-100 has no validation stage of its own (it is P-LOO's)
STAGES = [(p, s) for p in ("loo", "loo100", "rand", "cold") for s in ("valid", "test") if (p, s) != ("loo100", "valid")]


@pytest.mark.parametrize("protocol, stage", STAGES)
def test_fit_never_sees_the_stage_targets(ds, protocol, stage, monkeypatch):
    monkeypatch.setitem(MODELS, "recorder", f"{__name__}:Recorder")
    SEEN.clear()
    exp = run_experiment(ds, "recorder", protocol=protocol, stage=stage, seed=11)
    (fit,) = SEEN
    st = exp.split.stage(stage)
    assert fit.provenance["protocol"] == protocol and fit.provenance["stage"] == stage
    fit_pairs = set(zip(fit.user.tolist(), fit.item.tolist()))
    tu, ti = st.targets.nonzero()
    assert len(tu) > 0 and not fit_pairs & set(zip(tu.tolist(), ti.tolist()))
    if protocol == "cold":  # no interaction with a (pseudo-)cold item reaches fit
        held = exp.split.cold_items if stage == "test" else np.union1d(exp.split.cold_items, exp.split.valid_items)
        assert not np.isin(fit.item, held).any()
        assert set(st.candidates.tolist()) == set((exp.split.cold_items if stage == "test"
                                                    else exp.split.valid_items).tolist())
