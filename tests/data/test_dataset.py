"""Vocabulary and Dataset: indexing order, duplicate collapse, chronology, immutability."""

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4rec.data import Dataset, Vocabulary
from llm4rec.errors import InputError


def test_vocabulary_orders_integers_numerically_and_strings_lexically():
    assert list(Vocabulary.from_tokens(["10", "9", "100", "9"]).tokens) == ["9", "10", "100"]
    assert list(Vocabulary.from_tokens(["b", "10", "a9"]).tokens) == ["10", "a9", "b"]


def test_vocabulary_unknown_token_is_named():
    vocab = Vocabulary.from_tokens(["a", "b"], kind="item")
    np.testing.assert_array_equal(vocab.index(["b", "a"]), [1, 0])
    with pytest.raises(InputError, match="unknown item 'zz'"):
        vocab.index(["a", "zz"])
    with pytest.raises(InputError, match="out of range"):
        vocab.token(5)
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    np.testing.assert_array_equal(vocab.index(["b", "zz"], unknown="missing"), [1, -1])


def test_vocabulary_takes_a_string_as_one_token_never_its_characters():
    vocab = Vocabulary.from_tokens(["196", "1", "9", "6"], kind="user")
    assert vocab.index("196") == 3  # not the indices of "1", "9", "6"
    with pytest.raises(InputError, match="unknown user '19'"):
        vocab.index("19")


def test_vocabulary_extend_appends_new_tokens_in_order():
    vocab = Vocabulary.from_tokens(["2", "10"], kind="item")
    grown = vocab.extend(["10", "z", "a", "z"])
    assert list(grown.tokens) == ["2", "10", "z", "a"] and len(vocab) == 2


@given(st.lists(st.integers(-50, 1000), min_size=1, max_size=40))
@settings(max_examples=50, deadline=None)
def test_vocabulary_round_trip(values):
    vocab = Vocabulary.from_tokens(values)
    tokens = [str(v) for v in values]
    assert vocab.token(vocab.index(tokens)) == tokens
    assert [int(t) for t in vocab.tokens] == sorted(set(values))


def test_duplicates_keep_latest_row_and_equal_timestamps_keep_last_row():
    frame = pl.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1", "u2"],
        "item_id": ["a", "a", "b", "b", "a"],
        "timestamp": [5.0, 3.0, 7.0, 7.0, 1.0],
        "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
    })
    ds = Dataset.from_frame(frame)
    assert ds.n_interactions == 3
    rows = {(ds.users.token(int(u)), ds.items.token(int(i))): (t, r)
            for u, i, t, r in zip(ds.user, ds.item, ds.timestamp, ds.rating)}
    assert rows[("u1", "a")] == (5.0, 1.0)  # latest timestamp, not the last row
    assert rows[("u1", "b")] == (7.0, 4.0)  # equal timestamps: the last row of the file


def test_chronological_order_breaks_timestamp_ties_by_item_index():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [30, 10, 20, 10],
                          "timestamp": [2, 2, 1, 9]})
    ds = Dataset.from_frame(frame)  # pandas accepted at the edge
    seqs = ds.sequences()
    assert [ds.items.token(s.tolist()) for s in seqs] == [["20", "10", "30"], ["10"]]


def test_without_timestamps_the_row_order_is_the_time():
    ds = Dataset.from_frame(pl.DataFrame({"user_id": ["x"] * 3, "item_id": ["3", "1", "2"]}))
    assert ds.items.token(ds.sequences()[0].tolist()) == ["3", "1", "2"]


def test_arrays_are_immutable_and_matrix_is_binary():
    frame = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "rating": [5.0, 1.0, 3.0]})
    ds = Dataset.from_frame(frame)
    with pytest.raises(ValueError):
        ds.item[0] = 1
    m = ds.matrix()
    assert m.shape == (2, 2) and m.sum() == 3 and m.max() == 1
    assert ds.matrix("rating").toarray().tolist() == [[5.0, 1.0], [3.0, 0.0]]


def test_attributes_align_with_the_item_index_and_table_only_items_are_kept():
    frame = pl.DataFrame({"user_id": ["a", "a"], "item_id": ["2", "10"]})
    attrs = pl.DataFrame({"item_id": ["10", "2", "99"], "title": ["ten", "two", "ninety-nine"]})
    ds = Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",))
    # a catalogue item with no interaction yet stays recommendable: cold start is for exactly these
    assert list(ds.items.tokens) == ["2", "10", "99"]
    assert ds.item_attrs.get_column("title").to_list() == ["two", "ten", "ninety-nine"]
    np.testing.assert_array_equal(ds.interacted_items, [0, 1])
    assert ds.load_report["items_without_interactions"] == 1
    assert ds.describe()["items_without_interactions"] == 1
    dropped = Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",), keep_item_table=False)
    assert dropped.item_attrs.get_column("title").to_list() == ["two", "ten"]


def test_without_items_removes_items_everywhere_and_keeps_order():
    frame = pl.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["x", "y", "y", "z"],
                          "timestamp": [1.0, 2.0, 3.0, 4.0]})
    attrs = pl.DataFrame({"item_id": ["x", "y", "z"], "title": ["X", "Y", "Z"]})
    ds = Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",))
    smaller = ds.without_items(np.array([1]))
    assert list(smaller.items.tokens) == ["x", "z"]
    assert smaller.item_attrs.get_column("title").to_list() == ["X", "Z"]
    assert [smaller.items.token(s.tolist()) for s in smaller.sequences()] == [["x"], ["z"]]
    assert ds.item_table(np.array([2])).get_column("title").to_list() == ["Z"]


def test_duplicates_dropped_are_counted():
    frame = pl.DataFrame({"user_id": ["a", "a", "a"], "item_id": ["x", "x", "y"]})
    assert Dataset.from_frame(frame).load_report["duplicates_dropped"] == 1


def test_bad_frames_are_clear_errors():
    with pytest.raises(InputError, match="missing column.*item_id"):
        Dataset.from_frame(pl.DataFrame({"user_id": ["a"]}), source="f.csv")
    with pytest.raises(InputError, match="no interactions"):
        Dataset.from_frame(pl.DataFrame({"user_id": [], "item_id": []}, schema={"user_id": pl.Utf8,
                                                                                "item_id": pl.Utf8}))
    with pytest.raises(InputError, match="line 2, column 'item_id': missing value"):
        Dataset.from_frame(pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", None]}), source="f.csv")


def test_subset_keeps_vocabularies_and_fingerprint_tracks_content():
    frame = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"]})
    ds = Dataset.from_frame(frame)
    sub = ds.subset(np.array([True, False, True]))
    assert sub.n_items == ds.n_items and sub.n_interactions == 2
    assert sub.fingerprint != ds.fingerprint
    assert Dataset.from_frame(frame).fingerprint == ds.fingerprint


def test_recent_items_are_the_last_items_right_aligned():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 3, 3], "item_id": [10, 11, 12, 10, 12, 11],
                          "timestamp": [1, 2, 3, 1, 5, 4]})
    ds = Dataset.from_frame(frame)
    recent = ds.recent_items(2)
    assert recent.dtype == np.int64
    np.testing.assert_array_equal(recent, [[1, 2], [-1, 0], [1, 2]])  # item indices 10->0, 11->1, 12->2
    sequences = ds.sequences()
    for u, seq in enumerate(sequences):  # agrees with the chronological sequences
        np.testing.assert_array_equal(ds.recent_items(5)[u][-len(seq):], seq[-5:])
