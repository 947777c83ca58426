"""The synthetic dataset: determinism, contract, meaningful text, planted answers, a fair difficulty."""

import re

import numpy as np
import pytest
from pydantic import ValidationError

from llm4rec.data import make_split
from llm4rec.data.synthetic import FILLER_WORDS, GENRES, SyntheticConfig, make_synthetic
from llm4rec.errors import InputError
from llm4rec.evaluation.evaluator import evaluate
from llm4rec.models import create_model


@pytest.fixture(scope="module")
def default():
    return make_synthetic(return_truth=True)


@pytest.fixture(scope="module")
def loo_results(default):
    """P-LOO test-stage results of the baselines on the defaults."""
    ds, _ = default
    stage = make_split(ds, "loo").stage("test")
    models = {name: create_model(name, settings).fit(stage.fit)
              for name, settings in [("pop", {}), ("itemknn", {}), ("ease", {"l2": 200.0}), ("als", {})]}
    return models, {name: evaluate(m, stage).metrics for name, m in models.items()}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in FILLER_WORDS]


def test_same_seed_same_data_other_seed_other_data(default):
    ds, _ = default
    again = make_synthetic()
    assert again.fingerprint == ds.fingerprint
    assert again.item_attrs.equals(ds.item_attrs) and again.user_attrs.equals(ds.user_attrs)
    other = make_synthetic(seed=2027)
    assert other.fingerprint != ds.fingerprint
    assert not other.item_attrs.equals(ds.item_attrs)


def test_dataset_contract(default):
    ds, truth = default
    assert ds.name == "synthetic" and ds.n_users == 1000
    assert 750 <= ds.n_items <= 800  # items nobody drew are not in the catalogue
    counts = np.diff(ds.user_offsets)
    assert counts.min() >= 10 and counts.max() <= 60
    same_user = ds.user[1:] == ds.user[:-1]
    assert (np.diff(ds.timestamp)[same_user] > 0).all()  # strictly increasing per user
    assert set(np.unique(ds.rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.text_fields == ("title", "categories", "description")
    assert ds.item_attrs.columns == ["item_id", "title", "categories", "description", "year"]
    assert ds.user_attrs.columns == ["user_id", "age", "profile"]
    assert ds.item_attrs.get_column("title").n_unique() == ds.n_items
    assert ds.item_attrs.null_count().sum_horizontal().item() == 0
    years = ds.item_attrs.get_column("year").to_numpy()
    assert years.min() >= 1960 and years.max() <= 2024
    # The truth is aligned with the dataset's indices: categories name the planted genres.
    assert truth.user_genre_weights.shape == (ds.n_users, len(truth.genres))
    np.testing.assert_allclose(truth.user_genre_weights.sum(axis=1), 1.0)
    assert len(truth.noise) == ds.n_interactions
    for i, cats in enumerate(ds.item_attrs.get_column("categories").to_list()):
        second = truth.item_second_genre[i]
        expected = [truth.genres[truth.item_genre[i]]] + ([truth.genres[second]] if second >= 0 else [])
        assert cats.split(", ") == expected


def test_bad_settings_are_named():
    with pytest.raises(InputError, match="noise"):
        make_synthetic(noise=1.5)
    with pytest.raises(InputError, match="n_genres"):
        make_synthetic(n_genres=len(GENRES) + 1)
    with pytest.raises(InputError, match="interactions_per_user"):
        make_synthetic(n_items=50, interactions_per_user=(10, 100))
    with pytest.raises(InputError, match="interactions_per_user"):
        make_synthetic(interactions_per_user=(8, 4))
    with pytest.raises(ValidationError):
        SyntheticConfig(n_user=10)  # misspelt key
    cfg = SyntheticConfig(n_users=30, n_items=40, n_genres=3, interactions_per_user=(3, 8))
    assert make_synthetic(**cfg.model_dump()).n_users == 30


def test_small_genres_run_out_without_duplicates():
    # ~7 items per genre, 15 interactions per user: draws fall back to other genres.
    ds = make_synthetic(n_users=40, n_items=20, n_genres=3, interactions_per_user=(15, 15))
    assert (np.diff(ds.user_offsets) == 15).all()  # a duplicated pair would have been collapsed


def test_repeated_titles_get_an_edition():
    ds = make_synthetic(n_users=20, n_items=3000, n_genres=2, interactions_per_user=(5, 10))
    titles = ds.item_attrs.get_column("title")
    assert titles.n_unique() == ds.n_items
    assert titles.str.contains(" Edition ").any()


def test_vocabularies_are_disjoint_and_apart_from_filler():
    words = [w for vocab in GENRES.values() for w in vocab]
    assert 8 <= len(GENRES) <= 12 and all(len(v) == 25 for v in GENRES.values())
    assert len(set(words)) == len(words)
    assert not set(words) & FILLER_WORDS


def test_item_text_comes_from_its_genres(default):
    ds, truth = default
    vocab_genre = {w: g for g, name in enumerate(truth.genres) for w in GENRES[name]}
    own_share, recovered = [], []
    texts = zip(ds.item_attrs.get_column("title"), ds.item_attrs.get_column("description"))
    for i, (title, desc) in enumerate(texts):
        genres = np.array([vocab_genre[w] for w in _words(f"{title} {desc}")])  # KeyError = a stray word
        own_share.append(np.isin(genres, [truth.item_genre[i], truth.item_second_genre[i]]).mean())
        recovered.append(np.bincount(genres).argmax() == truth.item_genre[i])
    assert np.mean(own_share) > 0.95 and min(own_share) >= 0.5
    assert np.mean(recovered) > 0.9  # a bag-of-words text model recovers the genre


def test_planted_preferences_show_in_interactions_and_ratings(default):
    ds, truth = default
    n_genres = len(truth.genres)
    top = truth.user_top_genre()
    item_genre = truth.item_genre[ds.item]
    hist = np.zeros((ds.n_users, n_genres))
    np.add.at(hist, (ds.user, item_genre), 1)
    assert (hist.argmax(axis=1) == top).mean() > 0.85
    assert abs(truth.noise.mean() - 0.2) < 0.02
    in_taste = truth.user_genre_weights[ds.user, item_genre] > 0
    assert in_taste[~truth.noise].mean() > 0.8 and in_taste[truth.noise].mean() < 0.3
    favourite = item_genre == top[ds.user]
    assert ds.rating[favourite].mean() > ds.rating[truth.noise].mean() + 1.5
    # Heavy-tailed popularity that follows the planted quality: the top 10% of
    # items take about a third of the interactions.
    pop = np.bincount(ds.item, minlength=ds.n_items)
    assert 0.25 < np.sort(pop)[::-1][: ds.n_items // 10].sum() / pop.sum() < 0.5
    assert np.corrcoef(np.log(pop), np.log(truth.item_quality))[0, 1] > 0.6
    # Older users lean to older items.
    years = ds.item_attrs.get_column("year").to_numpy()
    mean_year = np.bincount(ds.user, weights=years[ds.item]) / np.bincount(ds.user)
    assert np.corrcoef(mean_year, truth.user_era)[0, 1] > 0.3


def test_sequences_drift_and_keep_series_in_order(default):
    ds, truth = default
    offsets = ds.user_offsets
    n = np.diff(offsets)[ds.user]
    t = (np.arange(ds.n_interactions) - offsets[ds.user]) / (n - 1)
    second = np.argsort(truth.user_genre_weights, axis=1)[:, -2]
    two = truth.user_genre_weights[np.arange(ds.n_users), second] > 0
    is_second = truth.item_genre[ds.item] == second[ds.user]
    mask = two[ds.user] & ~truth.noise
    assert is_second[mask & (t > 2 / 3)].mean() > is_second[mask & (t < 1 / 3)].mean() + 0.1

    series, part = truth.item_series[ds.item], truth.item_installment[ds.item]
    order = np.lexsort((np.arange(ds.n_interactions), series, ds.user))  # by user, series, time
    same = (ds.user[order][1:] == ds.user[order][:-1]) & (series[order][1:] == series[order][:-1])
    assert (np.diff(part[order])[same & (series[order][1:] >= 0)] > 0).all()
    follows = (ds.user[1:] == ds.user[:-1]) & (series[:-1] >= 0) & (series[1:] == series[:-1])
    assert follows.sum() > 0.05 * ds.n_interactions  # sequels often come right after


def test_profiles_name_the_favourite_genre_only_sometimes(default):
    ds, truth = default
    named = [[g for g, name in enumerate(truth.genres) if name in p]
             for p in ds.user_attrs.get_column("profile").to_list()]
    mentions = np.array([len(x) > 0 for x in named])
    assert 0.3 < mentions.mean() < 0.5
    right = np.mean([x[0] == g for x, g in zip(named, truth.user_top_genre()) if x])
    assert 0.7 < right < 0.95  # a noisy hint, not the answer
    assert set(ds.user_attrs.get_column("age").unique()) == {"18-24", "25-34", "35-44", "45-54", "55+"}


def test_fair_but_not_trivial_under_p_loo(loo_results):
    _, metrics = loo_results
    pop = metrics["pop"]["NDCG@10"]
    for name in ("itemknn", "ease"):
        assert metrics[name]["NDCG@10"] >= 1.5 * pop, (name, metrics)
    best = max(metrics[name]["HR@10"] for name in ("itemknn", "ease", "als"))
    assert 0.15 <= best <= 0.6, metrics


def test_fair_but_not_trivial_under_p_rand(default):
    ds, _ = default
    stage = make_split(ds, "rand").stage("test")
    ndcg = {name: evaluate(create_model(name, settings).fit(stage.fit), stage).metrics["NDCG@20"]
            for name, settings in [("pop", {}), ("itemknn", {}), ("ease", {"l2": 200.0})]}
    assert min(ndcg["itemknn"], ndcg["ease"]) >= 1.5 * ndcg["pop"], ndcg
    assert max(ndcg.values()) < 0.6, ndcg


def test_ease_recovers_the_planted_genre(default, loo_results):
    ds, truth = default
    models, _ = loo_results
    users = np.arange(ds.n_users)
    top = truth.user_top_genre()
    genre_mass = truth.item_genre_matrix()  # (I, G)

    def majority_genre(model):
        rec, _ = model.recommend_indices(users, 10)
        return genre_mass[rec].sum(axis=1).argmax(axis=1)  # (U, 10, G) -> (U,)

    chance = np.bincount(top, minlength=len(truth.genres)).max() / ds.n_users  # always guess the commonest
    assert (majority_genre(models["ease"]) == top).mean() > max(0.8, 3 * chance)
    assert (majority_genre(models["pop"]) == top).mean() <= chance + 0.05
