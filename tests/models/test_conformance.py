"""Every registered baseline passes the shared conformance suite."""

from llm4rec.models import MODELS
from llm4rec.testing import RecommenderConformance


class TestPopularity(RecommenderConformance):
    model_name = "pop"
    personalised = False


class TestItemKNN(RecommenderConformance):
    model_name = "itemknn"
    settings = {"neighbors": 20, "shrink": 1.0}


class TestItemKNNSmallBlocks(RecommenderConformance):
    model_name = "itemknn"
    settings = {"neighbors": 20, "shrink": 1.0, "block_size": 7}


class TestEASE(RecommenderConformance):
    model_name = "ease"
    settings = {"l2": 10.0}


class TestALS(RecommenderConformance):
    model_name = "als"
    settings = {"factors": 2, "iterations": 15, "regularization": 0.05, "alpha": 2.0}
    # implicit's recalculate_user (the exact ALS user step); with 2 factors every same-parity item scores
    # almost alike, so the lists below the top few trade places (ml-100k: 0.99, tests/models/test_fold_in.py)
    fold_in_overlap = 0.6


class TestBPR(RecommenderConformance):
    model_name = "bpr"
    settings = {"factors": 8, "iterations": 200, "learning_rate": 0.05}
    min_parity_share = 0.9
    fold_in_overlap = 0.7  # BPR-SGD on a fresh user vector, item factors fixed (ml-100k: 0.62, test_fold_in.py)


def test_every_registered_model_has_a_conformance_class():
    import sys

    module = sys.modules[__name__]
    covered = {getattr(module, n).model_name for n in dir(module)
               if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), RecommenderConformance)
               and getattr(module, n) is not RecommenderConformance}
    assert covered == set(MODELS)


def test_scoring_an_out_of_range_item_is_a_clear_error():
    import pytest

    from llm4rec.errors import InputError
    from llm4rec.models import create_model
    from llm4rec.testing import checkerboard

    model = create_model("pop").fit(checkerboard())
    with pytest.raises(InputError, match="item index out of range"):
        model.score_indices([0], [999])
    with pytest.raises(InputError, match="unknown item '999'"):
        model.score(["0"], items=["999"])


class TestEnsemble(RecommenderConformance):
    model_name = "ensemble"
    settings = {"models": "ease,pop", "settings": '{"ease": {"l2": 10}}', "grid_step": 0.5}


class TestEnsembleRRF(RecommenderConformance):
    model_name = "ensemble"
    settings = {"models": ["itemknn", "ease"], "method": "rrf", "weights": [0.5, 0.5]}


class TestSemanticKNN(RecommenderConformance):
    model_name = "semantic-knn"


class TestLLMRerank(RecommenderConformance):
    model_name = "llm-rerank"
    # A short prompt and few candidates keep the class within a minute on 2 cores (the LM loads once).
    settings = {"first_stage_settings": {"l2": 10.0}, "candidates": 2, "history": 2, "num_threads": 1,
                "system": "Answer Yes or No.", "prompt": "Liked: {history}\nLike {candidate}?"}

    def test_score_subset_of_items_matches_full(self, fitted, data):
        """Scoring given items re-ranks among them (P-COLD), so a subset is not a column slice; all items are."""
        import numpy as np

        everything = np.arange(data.n_items)
        np.testing.assert_allclose(fitted.score_indices([1, 2], everything), fitted.score_indices([1, 2]), rtol=1e-6)
        items = np.array([3, 0, 7])
        first = fitted.first_stage_.score_indices([1, 2], items)
        sub = fitted.score_indices([1, 2], items)
        seen = data.matrix()[[1, 2]][:, items].toarray() > 0
        for r in range(2):
            masked = np.where(seen[r], -np.inf, first[r])
            cands = np.argsort(-masked, kind="stable")[:min(2, int(np.isfinite(masked).sum()))]
            rest = np.setdiff1d(np.arange(len(items)), cands)
            np.testing.assert_array_equal(sub[r, rest], first[r, rest])
            if len(cands) and len(rest):
                assert sub[r, cands].min() > sub[r, rest].max()


class TestTwoTower(RecommenderConformance):
    model_name = "llm-two-tower"
    # A linear 16-d item tower, no validation hold-out (the checkerboard is small): a few seconds. The
    # checkerboard's timestamps follow item order, so next-item histories would learn that order, not
    # the parity: train on the users' other items instead.
    settings = {"dim": 16, "hidden": 0, "negatives": 10, "batch_size": 32, "epochs": 15, "lr": 0.01,
                "valid": "none", "history": "others"}


class TestSASRec(RecommenderConformance):
    model_name = "sasrec"
    # random time order (ascending sequences would teach "next = a larger item"); small and fast: 32-d,
    # one block, no validation hold-out; strong dropout: 40 short sequences are easy to memorise, and
    # only the parity generalises
    time_order = "random"
    settings = {"dim": 32, "layers": 1, "max_len": 20, "epochs": 50, "lr": 0.005, "dropout": 0.5,
                "batch_size": 16, "valid": "none"}
    min_parity_share = 0.9


class TestSASRecText(TestSASRec):
    model_name = "sasrec-text"


class TestGenerative(RecommenderConformance):
    model_name = "generative"
    # as sasrec (random time order, small, no hold-out, strong dropout); a beam as wide as the catalogue
    # generates every unseen item, so the beam's scores are the exact log-probabilities
    time_order = "random"
    settings = {"dim": 32, "layers": 1, "heads": 1, "max_len": 20, "epochs": 50, "lr": 0.005, "dropout": 0.5,
                "batch_size": 16, "valid": "none", "levels": 2, "codebook": 4, "beam": 32}
    min_parity_share = 0.9
