"""The protocols of PROTOCOLS.md against slow, literal reference implementations."""

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4rec.data import Dataset, make_split
from llm4rec.data.splits import sample_negatives
from llm4rec.errors import InputError


def random_dataset(seed: int, n_users: int = 30, n_items: int = 40) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 15))
        items = rng.choice(n_items, size=min(n, n_items), replace=False)
        ts = rng.integers(0, 5, size=len(items))  # many equal timestamps
        rows += [(str(u), str(i), float(t)) for i, t in zip(items, ts)]
    return Dataset.from_frame(pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row"))


def chrono(ds, u):
    """A user's interaction rows in chronological order, literally from the definition."""
    rows = [r for r in range(ds.n_interactions) if ds.user[r] == u]
    return sorted(rows, key=lambda r: (ds.timestamp[r], ds.item[r]))


@given(st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_loo_matches_reference(seed):
    ds = random_dataset(seed)
    split = make_split(ds, "loo")
    expected = np.zeros(ds.n_interactions, dtype=np.int8)
    for u in range(ds.n_users):
        rows = chrono(ds, u)
        if len(rows) >= 3:
            expected[rows[-1]], expected[rows[-2]] = 2, 1
    np.testing.assert_array_equal(split.assignment, expected)


@given(st.integers(0, 10_000), st.integers(0, 5))
@settings(max_examples=20, deadline=None)
def test_rand_matches_reference(seed, split_seed):
    ds = random_dataset(seed)
    split = make_split(ds, "rand", seed=split_seed)
    rng = np.random.default_rng(split_seed)
    expected = np.zeros(ds.n_interactions, dtype=np.int8)
    for u in range(ds.n_users):
        rows = chrono(ds, u)
        n = len(rows)
        if n < 2:
            continue
        perm = rng.permutation(n)
        n_test = max(1, math.floor(0.2 * n + 0.5))
        n_tr = n - n_test
        n_val = max(1, math.floor(0.1 * n_tr + 0.5)) if n_tr >= 2 else 0
        for j in perm[:n_test]:
            expected[rows[j]] = 2
        for j in perm[n_test:n_test + n_val]:
            expected[rows[j]] = 1
    np.testing.assert_array_equal(split.assignment, expected)


def test_cold_items_never_in_fit_sets_and_validation_items_are_warm():
    ds = random_dataset(3, n_users=60, n_items=50)
    split = make_split(ds, "cold", seed=7)
    perm = np.random.default_rng(7).permutation(ds.n_items)
    assert set(split.cold_items) == set(perm[:10])
    warm = np.setdiff1d(np.arange(ds.n_items), split.cold_items)
    vperm = np.random.default_rng(8).permutation(len(warm))
    assert set(split.valid_items) == set(warm[vperm[:8]])
    test, valid = split.stage("test"), split.stage("valid")
    assert not np.isin(test.fit.item, split.cold_items).any()
    assert not np.isin(valid.fit.item, np.concatenate([split.cold_items, split.valid_items])).any()
    np.testing.assert_array_equal(test.candidates, split.cold_items)
    np.testing.assert_array_equal(valid.candidates, split.valid_items)
    for stage in (test, valid):  # evaluated: >= 1 target and >= 1 fit interaction
        has_fit = np.bincount(stage.fit.user, minlength=ds.n_users) > 0
        has_tgt = np.diff(stage.targets.indptr) > 0
        np.testing.assert_array_equal(stage.users, np.flatnonzero(has_fit & has_tgt))


def test_stages_fit_sets_and_targets():
    ds = random_dataset(11)
    split = make_split(ds, "loo")
    valid, test = split.stage("valid"), split.stage("test")
    assert valid.fit.n_interactions + len(valid.users) * 2 == ds.n_interactions
    assert test.fit.n_interactions == valid.fit.n_interactions + len(valid.users)
    np.testing.assert_array_equal(valid.users, test.users)
    assert (np.diff(test.targets.indptr)[test.users] == 1).all()


def reference_negatives(matrix, users, seed, n_neg=100, draw=200):
    rng = np.random.default_rng(seed)
    n_items = matrix.shape[1]
    out = []
    for u in users:
        seen = set(matrix[u].indices.tolist())
        if n_items - len(seen) < n_neg:
            out.append(sorted(set(range(n_items)) - seen))
            continue
        kept = []
        while len(kept) < n_neg:
            for x in rng.integers(0, n_items, draw):
                if x not in seen and x not in kept:
                    kept.append(int(x))
                    if len(kept) == n_neg:
                        break
        out.append(kept)
    return out


@pytest.mark.parametrize("n_items", [150, 104, 90])  # 104: some users have exactly 100 free items
def test_negatives_match_the_literal_reference(n_items):
    ds = random_dataset(5, n_users=25, n_items=n_items)
    users = np.arange(ds.n_users)
    got = sample_negatives(ds.matrix(), users, seed=2026)
    ref = reference_negatives(ds.matrix(), users, seed=2026)
    for row, expected in zip(got, ref):
        assert row[row >= 0].tolist() == expected


def test_same_seed_same_fingerprint_other_seed_other_split():
    ds = random_dataset(1)
    a, b, c = make_split(ds, "rand", 1), make_split(ds, "rand", 1), make_split(ds, "rand", 2)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert make_split(ds, "P-LOO").protocol == "loo"


def test_unknown_protocol_and_stage():
    ds = random_dataset(1)
    with pytest.raises(InputError, match="unknown protocol"):
        make_split(ds, "kfold")
    with pytest.raises(InputError, match="unknown stage"):
        make_split(ds, "loo").stage("train")
    with pytest.raises(InputError, match="no validation stage"):
        make_split(ds, "loo100").stage("valid")


# ------------------------------------------------ catalogue items without interactions
def with_table_only_items(seed: int) -> tuple[Dataset, Dataset]:
    """The same interactions twice: without an item table, and with one listing 15 extra, unused items."""
    plain = random_dataset(seed, n_items=40)
    frame = pl.DataFrame({"user_id": [plain.users.token(int(u)) for u in plain.user],
                          "item_id": [plain.items.token(int(i)) for i in plain.item],
                          "timestamp": plain.timestamp})
    extra = [f"{100 + k}" for k in range(15)] + [str(t) for t in plain.items.tokens]
    attrs = pl.DataFrame({"item_id": extra, "title": [f"item {t}" for t in extra]})
    wide = Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",))
    return plain, wide


@pytest.mark.parametrize("protocol", ["loo", "loo100", "rand", "cold"])
def test_items_without_interactions_never_change_a_protocol(protocol):
    """The protocol's catalogue is the interacted items: a wider vocabulary ranks, draws and holds out the same."""
    plain, wide = with_table_only_items(3)
    assert wide.n_items == plain.n_items + 15
    to_wide = wide.items.index(list(plain.items.tokens))  # plain index -> wide index
    a, b = make_split(plain, protocol, seed=11), make_split(wide, protocol, seed=11)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    if protocol == "cold":
        np.testing.assert_array_equal(to_wide[a.cold_items], b.cold_items)
        np.testing.assert_array_equal(to_wide[a.valid_items], b.valid_items)
    for name in ("test",) if protocol == "loo100" else ("valid", "test"):
        sa, sb = a.stage(name), b.stage(name)
        np.testing.assert_array_equal(sa.users, sb.users)
        # the wide stage ranks exactly the plain stage's items (all of them, or its cold items)
        np.testing.assert_array_equal(sb.candidates, to_wide[sa.candidates] if sa.candidates is not None
                                      else np.sort(to_wide))
        if protocol == "loo100":
            np.testing.assert_array_equal(np.where(sa.negatives >= 0, to_wide[np.maximum(sa.negatives, 0)], -1),
                                          sb.negatives)


def test_stage_fit_sets_carry_their_provenance_and_targets_their_ratings():
    frame = pl.DataFrame({"user_id": ["a"] * 4 + ["b"] * 3, "item_id": ["1", "2", "3", "4", "2", "3", "4"],
                          "timestamp": [1.0, 2, 3, 4, 1, 2, 3], "rating": [5.0, 4, 3, 2, 1, 2, 3]})
    ds = Dataset.from_frame(frame, name="tiny")
    split = make_split(ds, "loo", seed=5)
    test = split.stage("test")
    assert test.fit.provenance == {"dataset": "tiny", "dataset_fingerprint": ds.fingerprint, "protocol": "loo",
                                   "stage": "test", "seed": 5, "split_fingerprint": split.fingerprint}
    assert split.stage("valid").fit.provenance["stage"] == "valid"
    assert ds.provenance is None
    # the last interactions (a, 4) and (b, 4) are the test targets, with their own ratings
    np.testing.assert_array_equal(test.target_ratings.toarray()[:, ds.items.index(["4"])].ravel(), [2.0, 3.0])
    assert test.target_ratings.nnz == test.targets.nnz == 2
