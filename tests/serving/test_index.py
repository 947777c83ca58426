"""Retriever: exact search against a numpy reference, ANN recall on clustered vectors, adds, save/load."""

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.serving.index import Retriever


def clustered(n: int, d: int = 64, clusters: int = 200, seed: int = 0, queries: int = 0):
    """float32[n, d] items around ``clusters`` Gaussian centres (noise as large as a centre), and ``queries``
    float32[q, d] queries drawn the same way."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    items = centres[rng.integers(clusters, size=n)] + rng.standard_normal((n, d))
    q = centres[rng.integers(clusters, size=queries)] + rng.standard_normal((queries, d))
    return items.astype(np.float32), q.astype(np.float32)


def reference(items: np.ndarray, queries: np.ndarray, n: int, exclude=None):
    """Best n by a full stable sort: score descending, ties to the smaller index, -1/-inf padded."""
    scores = (queries @ items.T).astype(np.float32)
    if exclude is not None:
        for r, e in enumerate(exclude):
            scores[r, e] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    top = np.where(np.take_along_axis(scores, order, 1) > -np.inf, order, -1)
    pad = n - top.shape[1]
    top = np.pad(top, ((0, 0), (0, pad)), constant_values=-1)
    return top, np.where(top >= 0, np.take_along_axis(scores, np.maximum(top, 0), 1), -np.inf)


@pytest.fixture(scope="module")
def data():
    return clustered(20_000, queries=200)


@pytest.fixture(scope="module")
def hnsw(data):
    return Retriever(data[0], ann_threshold=0)


@pytest.fixture(scope="module")
def ivfpq(data):
    return Retriever(data[0], ann_threshold=0, hnsw_max=0)


def test_kind_follows_the_catalogue_size(data, hnsw, ivfpq):
    assert Retriever(data[0]).kind == "exact"
    assert hnsw.kind == "hnsw" and ivfpq.kind == "ivfpq"
    assert (hnsw.n_items, hnsw.dim) == (20_000, 64) and hnsw.build_seconds > 0


def test_exact_search_equals_a_full_sort_with_ties_to_the_smaller_index():
    rng = np.random.default_rng(3)
    items = rng.integers(-2, 3, size=(500, 8)).astype(np.float32)  # small integers: many tied scores
    queries = rng.integers(-2, 3, size=(40, 8)).astype(np.float32)
    retriever = Retriever(items)
    assert retriever.kind == "exact"
    top, scores = retriever.search(queries, 25)
    ref_top, ref_scores = reference(items, queries, 25)
    np.testing.assert_array_equal(top, ref_top)
    np.testing.assert_array_equal(scores, ref_scores)
    assert top.dtype == np.int64 and scores.dtype == np.float32


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_excluded_items_are_never_returned_and_rows_stay_n_long(kind, data, hnsw, ivfpq):
    items, queries = data
    retriever = {"exact": Retriever(items), "hnsw": hnsw, "ivfpq": ivfpq}[kind]
    queries = queries[:20]
    best, _ = retriever.search(queries, 30)
    exclude = [best[r, : 5 + r] for r in range(len(queries))]  # each row's own best items, various lengths
    top, scores = retriever.search(queries, 10, exclude=exclude)
    ref_top, ref_scores = reference(items, queries, 10, exclude)
    assert (top >= 0).all()
    for r in range(len(queries)):
        assert not np.isin(top[r], exclude[r]).any()
    found = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(top, ref_top)])
    assert found >= (1.0 if kind == "exact" else 0.95)  # measured: 1.0 (hnsw), 0.99 (ivfpq)
    same = top == ref_top
    assert same.mean() >= (1.0 if kind == "exact" else 0.9)
    np.testing.assert_allclose(scores[same], ref_scores[same], rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_ann_recall_against_exact_scoring(kind, data, hnsw, ivfpq):
    items, queries = data
    retriever = {"hnsw": hnsw, "ivfpq": ivfpq}[kind]
    assert retriever.recall_at(queries, k=10) >= 0.95  # measured: 1.0 (hnsw), 0.999 (ivfpq)
    top, scores = retriever.search(queries[:5], 10)
    exact = np.einsum("bd,bkd->bk", queries[:5], items[top])  # returned scores are exact inner products
    np.testing.assert_allclose(scores, exact, rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_recall_is_one(data):
    assert Retriever(data[0][:1000]).recall_at(data[1]) == 1.0


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_added_items_are_found_and_replaced_vectors_retire(kind):
    items, _ = clustered(3000, d=30, clusters=30, seed=4)  # d=30: IVF-PQ pads to a multiple of 4
    before = items.copy()
    retriever = Retriever(items, ann_threshold=50_000 if kind == "exact" else 0,
                          hnsw_max=0 if kind == "ivfpq" else 10_000)
    assert retriever.kind == kind
    rng = np.random.default_rng(5)
    new = (5 * rng.standard_normal((2, 30))).astype(np.float32)  # far out: each is its own best match
    retriever.add(new, np.array([3001, 3000]))
    assert retriever.n_items == 3002
    top, scores = retriever.search(new, 3)
    np.testing.assert_array_equal(top[:, 0], [3001, 3000])
    np.testing.assert_allclose(scores[:, 0], (new * new).sum(1), rtol=1e-5)

    first = np.argmax(items @ items.T, axis=1)
    i = int(np.flatnonzero(first == np.arange(len(items)))[0])  # an item that is its own vector's best match
    assert retriever.search(items[i:i + 1], 1)[0][0, 0] == i
    moved = (5 * rng.standard_normal((1, 30))).astype(np.float32)
    retriever.add(moved, np.array([i]))
    assert i not in retriever.search(items[i:i + 1], 5)[0][0]  # the old vector no longer finds it
    assert retriever.search(moved, 1)[0][0, 0] == i  # the new one does
    assert retriever.n_items == 3002
    np.testing.assert_array_equal(items, before)  # the caller's matrix is never written


def test_padding_when_fewer_items_than_asked():
    items, queries = clustered(50, d=8, clusters=5, queries=3)
    for retriever in (Retriever(items), Retriever(items, ann_threshold=0), Retriever(items, ann_threshold=0,
                                                                                      hnsw_max=0)):
        top, scores = retriever.search(queries, 60, exclude=[np.arange(10), [], [49]])
        assert top.shape == scores.shape == (3, 60)
        assert ((top >= 0).sum(1) == [40, 50, 49]).all()
        assert (top[:, 50:] == -1).all() and np.isneginf(scores[:, 50:]).all()
        valid = top[0] >= 0
        assert (scores[0, valid] > -np.inf).all() and np.isneginf(scores[0, ~valid]).all()


def test_bad_input_is_a_clear_error(data):
    retriever = Retriever(data[0][:100])
    with pytest.raises(InputError, match="another size"):
        retriever.search(np.zeros((1, 3), dtype=np.float32), 5)
    with pytest.raises(InputError, match="list length"):
        retriever.search(data[1][:1], 0)
    with pytest.raises(InputError, match="without gaps"):
        retriever.add(data[1][:1], np.array([105]))
    with pytest.raises(InputError, match="NaN"):
        Retriever(np.full((3, 2), np.nan))


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_save_and_load_answer_alike(kind, tmp_path):
    items, queries = clustered(2000, d=16, clusters=20, queries=10)
    retriever = Retriever(items, ann_threshold=0, hnsw_max=0 if kind == "ivfpq" else 10_000)
    extra = clustered(1, d=16, seed=9)[0]
    retriever.add(np.concatenate([extra, extra]), np.array([3, 2000]))
    retriever.save(tmp_path / "index")
    assert not list((tmp_path / "index").glob("*.pkl"))
    loaded = Retriever.load(tmp_path / "index", retriever._items)
    assert loaded.kind == kind
    for a, b in zip(retriever.search(queries, 10, exclude=[[1]] * 10), loaded.search(queries, 10, exclude=[[1]] * 10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="do not match"):
        Retriever.load(tmp_path / "index", items)
