"""The conformance suite: subclass it in a test module, set ``model_name``.

    class TestEASE(RecommenderConformance):
        model_name = "ease"
        settings = {"l2": 10.0}

Every model in the registry must pass it: fit/score/recommend shapes and
dtypes, masking of seen items, determinism, save/load round trip without
pickle, clear errors, and the checkerboard's known answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.testing.checkerboard import checkerboard

__all__ = ["RecommenderConformance"]


class RecommenderConformance:
    model_name: ClassVar[str]
    settings: ClassVar[dict[str, Any]] = {}
    #: False for models that give every user the same scores (e.g. popularity)
    personalised: ClassVar[bool] = True
    #: share of top-5 recommendations that must be of the user's own parity
    min_parity_share: ClassVar[float] = 0.95
    #: the checkerboard's time order ("random" for sequential models; see :func:`checkerboard`)
    time_order: ClassVar[str] = "items"

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return checkerboard(order=cls.time_order)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        return create_model(cls.model_name, cls.settings).fit(data)

    def test_fit_returns_self_and_scores_all_items(self, data):
        model = create_model(self.model_name, self.settings)
        assert model.fit(data) is model
        scores = model.score(np.arange(5))
        assert scores.shape == (5, data.n_items)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_score_subset_of_items_matches_full(self, fitted, data):
        items = np.array([3, 0, 7])
        full = fitted.score([1, 2])
        np.testing.assert_allclose(fitted.score([1, 2], items), full[:, items], rtol=1e-6)

    def test_recommend_excludes_seen_and_is_sorted(self, fitted, data):
        users = np.arange(data.n_users)
        top, scores = fitted.recommend(users, k=5)
        assert top.shape == scores.shape == (data.n_users, 5)
        seen = data.matrix()
        for u in users[:10]:
            row = set(seen[u].indices)
            assert not row & set(top[u][top[u] >= 0].tolist())
        assert (np.diff(scores, axis=1) <= 1e-6).all()

    def test_recommend_can_include_seen(self, fitted):
        top, _ = fitted.recommend([0], k=3, exclude_seen=False)
        assert top.shape == (1, 3) and (top >= 0).all()

    def test_known_answer_checkerboard(self, fitted, data):
        if not self.personalised:  # the known answer: one ranking for everybody
            scores = fitted.score(np.arange(data.n_users))
            assert (scores == scores[0]).all()
            return
        top, _ = fitted.recommend(np.arange(data.n_users), k=5)
        same = (top % 2) == (np.arange(data.n_users)[:, None] % 2)
        assert same[top >= 0].mean() >= self.min_parity_share

    def test_deterministic(self, data, fitted):
        again = create_model(self.model_name, self.settings).fit(data)
        np.testing.assert_allclose(again.score(np.arange(8)), fitted.score(np.arange(8)), rtol=1e-5, atol=1e-6)

    def test_save_load_round_trip(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "model")
        assert {p.name for p in path.iterdir()} == {"config.json", "arrays.npz"}
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted) and loaded.config == fitted.config
        np.testing.assert_array_equal(loaded.score(np.arange(6)), fitted.score(np.arange(6)))
        np.testing.assert_array_equal(loaded.recommend([0, 1], k=4)[0], fitted.recommend([0, 1], k=4)[0])
        with np.load(path / "arrays.npz", allow_pickle=False) as z:  # no object arrays inside
            assert all(z[name].dtype != object for name in z.files)

    def test_unknown_setting_is_a_clear_error(self):
        with pytest.raises(InputError, match="unknown setting 'no_such_key'"):
            create_model(self.model_name, {**self.settings, "no_such_key": 1})

    def test_unfitted_and_out_of_range_errors(self, fitted, data):
        with pytest.raises(InputError, match="not fitted"):
            create_model(self.model_name, self.settings).score([0])
        with pytest.raises(InputError, match="user index out of range"):
            fitted.score([data.n_users])
