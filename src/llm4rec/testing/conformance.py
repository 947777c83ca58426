"""The conformance suite: subclass it in a test module, set ``model_name``.

    class TestEASE(RecommenderConformance):
        model_name = "ease"
        settings = {"l2": 10.0}

Every model in the registry must pass it: fit/score/recommend shapes and
dtypes, masking of seen items, determinism, the external-id API (known users
by id equal their fit history given as ``histories``; empty histories fall
back to popularity; unknown items and ids of the wrong kind are clear errors),
new items through ``add_items`` (text models) or a clear refusal, bundle
save/load without pickle, clear errors, and the checkerboard's known answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from llm4rec.errors import InputError
from llm4rec.models import TEXT_MODELS, Recommender, create_model
from llm4rec.models.bundle import BUNDLE_FILES
from llm4rec.testing.checkerboard import checkerboard

__all__ = ["RecommenderConformance"]


def top10_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of shared items between the rows of two top-k lists (padding ignored)."""
    return float(np.mean([len(set(x[x != None]) & set(y[y != None])) / max(1, (x != None).sum())
                          for x, y in zip(a, b)]))


class RecommenderConformance:
    model_name: ClassVar[str]
    settings: ClassVar[dict[str, Any]] = {}
    #: False for models that give every user the same scores (e.g. popularity)
    personalised: ClassVar[bool] = True
    #: share of top-5 recommendations that must be of the user's own parity
    min_parity_share: ClassVar[float] = 0.95
    #: the checkerboard's time order ("random" for sequential models; see :func:`checkerboard`)
    time_order: ClassVar[str] = "items"
    #: None: a known user's recommendations equal those of their fit history given as ``histories``
    #: exactly; a float: the model folds new histories in, and the top-10 lists must overlap this much
    fold_in_overlap: ClassVar[float | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return checkerboard(order=cls.time_order)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        return create_model(cls.model_name, cls.settings).fit(data)

    @staticmethod
    def fit_history_ids(data, users) -> list[list[str]]:
        seqs = data.sequences()
        return [data.items.token(seqs[u].tolist()) for u in users]

    def test_fit_returns_self_and_scores_all_items(self, data):
        model = create_model(self.model_name, self.settings)
        assert model.fit(data) is model
        scores = model.score_indices(np.arange(5))
        assert scores.shape == (5, data.n_items)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_score_subset_of_items_matches_full(self, fitted, data):
        items = np.array([3, 0, 7])
        full = fitted.score_indices([1, 2])
        np.testing.assert_allclose(fitted.score_indices([1, 2], items), full[:, items], rtol=1e-6)

    def test_recommend_excludes_seen_and_is_sorted(self, fitted, data):
        users = np.arange(data.n_users)
        top, scores = fitted.recommend_indices(users, k=5)
        assert top.shape == scores.shape == (data.n_users, 5)
        seen = data.matrix()
        for u in users[:10]:
            row = set(seen[u].indices)
            assert not row & set(top[u][top[u] >= 0].tolist())
        assert (np.diff(scores, axis=1) <= 1e-6).all()

    def test_recommend_can_include_seen(self, fitted):
        top, _ = fitted.recommend_indices([0], k=3, exclude_seen=False)
        assert top.shape == (1, 3) and (top >= 0).all()

    def test_known_answer_checkerboard(self, fitted, data):
        if not self.personalised:  # the known answer: one ranking for everybody
            scores = fitted.score_indices(np.arange(data.n_users))
            assert (scores == scores[0]).all()
            return
        top, _ = fitted.recommend_indices(np.arange(data.n_users), k=5)
        same = (top % 2) == (np.arange(data.n_users)[:, None] % 2)
        assert same[top >= 0].mean() >= self.min_parity_share

    def test_deterministic(self, data, fitted):
        again = create_model(self.model_name, self.settings).fit(data)
        np.testing.assert_allclose(again.score_indices(np.arange(8)), fitted.score_indices(np.arange(8)),
                                   rtol=1e-5, atol=1e-6)

    # ------------------------------------------------------------ by external id
    def test_scores_by_id_equal_scores_by_index(self, fitted, data):
        users = [str(t) for t in data.users.tokens[[3, 0, 5]]]
        items = [str(t) for t in data.items.tokens[[2, 9]]]
        np.testing.assert_array_equal(fitted.score(users), fitted.score_indices([3, 0, 5]))
        np.testing.assert_array_equal(fitted.score(users, items=items), fitted.score_indices([3, 0, 5], [2, 9]))
        assert list(fitted.item_ids) == list(data.items.tokens)

    def test_known_user_equals_their_fit_history(self, fitted, data):
        users = np.arange(data.n_users)
        ids = [str(t) for t in data.users.tokens]
        by_id = fitted.recommend(ids, k=10)
        by_history = fitted.recommend(histories=self.fit_history_ids(data, users), k=10)
        assert by_id.items.shape == (data.n_users, 10) and by_id.items.dtype == object
        assert set(by_id.items[by_id.items != None]) <= set(data.items.tokens)
        if self.fold_in_overlap is None:
            np.testing.assert_array_equal(by_history.items, by_id.items)
            np.testing.assert_allclose(by_history.scores, by_id.scores, rtol=1e-5, atol=1e-5)
        else:
            assert top10_overlap(by_id.items, by_history.items) >= self.fold_in_overlap

    def test_a_grown_history_needs_no_refit(self, fitted, data):
        """A known user with a new interaction: the new item is masked and the list moves without refitting."""
        seqs = self.fit_history_ids(data, [0])
        first = fitted.recommend(["0"], k=3).items[0]
        grown = fitted.recommend(["0"], histories=[seqs[0] + [first[0]]], k=3).items[0]
        assert first[0] not in set(grown)

    def test_empty_history_falls_back_to_popularity(self, fitted, data):
        rec = fitted.recommend(histories=[[], []], k=5)
        counts = np.bincount(data.item, minlength=data.n_items)
        expected = np.lexsort((np.arange(data.n_items), -counts))[:5]  # most popular, ties to the smaller index
        assert rec.items.tolist() == [list(data.items.tokens[expected])] * 2
        np.testing.assert_array_equal(rec.scores[0], counts[expected].astype(np.float32))

    def test_unknown_history_items_are_an_error_or_skipped(self, fitted, data):
        history = self.fit_history_ids(data, [2])[0]
        with pytest.raises(InputError, match="unknown item 'no-such-item' in history 1"):
            fitted.score(histories=[history, ["no-such-item"] + history])
        skipped = fitted.score(histories=[history, ["no-such-item"] + history], unknown="skip")
        np.testing.assert_allclose(skipped[1], skipped[0], rtol=1e-5, atol=1e-6)

    def test_ids_of_the_wrong_kind_are_errors(self, fitted, data):
        with pytest.raises(InputError, match="external ids, given as strings"):
            fitted.recommend([1])  # an index is never taken for the id "1"
        with pytest.raises(InputError, match="external ids, given as strings"):
            fitted.recommend(np.arange(3))
        with pytest.raises(InputError, match="unknown user 'no-such-user'"):
            fitted.recommend(["no-such-user"])
        with pytest.raises(InputError, match="history 0 is not a list"):
            fitted.recommend(histories=["2"])  # a string is one id, never its characters
        with pytest.raises(InputError, match="bad list length k"):
            fitted.recommend(["0"], k=-3)
        with pytest.raises(InputError, match="dense user indices must be integers"):
            fitted.score_indices(["0"])

    def test_new_items_through_text_or_a_clear_refusal(self, fitted, data):
        table = pl.DataFrame({"item_id": ["new-even"], "title": ["even item 100"]})
        if self.model_name not in TEXT_MODELS:
            with pytest.raises(InputError, match="cannot rank new items without retraining.*semantic-knn"):
                fitted.add_items(table)
            return
        model = Recommender.load(fitted.save(self._tmp / "before-add"))
        before = model.score(["0"])
        model.add_items(table)
        assert model.item_ids[-1] == "new-even" and model.n_items_ == data.n_items + 1
        after = model.score(["0"])
        assert after.shape == (1, data.n_items + 1) and np.isfinite(after).all()
        if not model.partial_scores:
            np.testing.assert_allclose(after[:, :-1], before, rtol=1e-5, atol=1e-5)  # old items unchanged
        rec = model.recommend(["0"], k=data.n_items + 1, exclude_seen=True)
        assert "new-even" in set(rec.items[0])
        again = Recommender.load(model.save(self._tmp / "after-add"))
        np.testing.assert_array_equal(again.score(["0"]), after)

    @pytest.fixture(autouse=True)
    def _tmp_dir(self, tmp_path):
        self._tmp = tmp_path

    # ------------------------------------------------------------------ bundles
    def test_save_load_round_trip(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "model")
        assert {p.name for p in path.iterdir()} == set(BUNDLE_FILES)
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted) and loaded.config == fitted.config
        np.testing.assert_array_equal(loaded.score_indices(np.arange(6)), fitted.score_indices(np.arange(6)))
        assert loaded.recommend(["0", "1"], k=4).items.tolist() == fitted.recommend(["0", "1"], k=4).items.tolist()
        assert loaded.provenance_ == fitted.provenance_
        with np.load(path / "arrays.npz", allow_pickle=False) as z:  # no object arrays inside
            assert all(z[name].dtype != object for name in z.files)

    def test_unknown_setting_is_a_clear_error(self):
        with pytest.raises(InputError, match="unknown setting 'no_such_key'"):
            create_model(self.model_name, {**self.settings, "no_such_key": 1})

    def test_unfitted_and_out_of_range_errors(self, fitted, data):
        with pytest.raises(InputError, match="not fitted"):
            create_model(self.model_name, self.settings).score_indices([0])
        with pytest.raises(InputError, match="user index out of range"):
            fitted.score_indices([data.n_users])
