"""save_dataset: every format loads back to the same dataset; writes are atomic and guarded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm4rec.data.dataset import Dataset
from llm4rec.data.export import EXPORT_FORMATS, save_dataset
from llm4rec.data.sources import load_dataset
from llm4rec.data.sources.recbole import load_recbole
from llm4rec.errors import InputError


@pytest.fixture
def tiny() -> Dataset:
    """String and numeric-looking tokens, fractional times and ratings, text with tabs and commas."""
    frame = pl.DataFrame({
        "user_id": ["u 1", "u2", "u2", "u10", "u2"],
        "item_id": ["007", "7", "a,b", "7", "007"],
        "timestamp": [0.1, 1e9 + 0.25, 5.0, -3.0, 1e9 + 0.25],
        "rating": [0.1, 4.0, 2.5, 1.0, 3.0],
    })
    items = pl.DataFrame({"item_id": ["7", "a,b", "007"], "title": ["Seven\tSamurai", "A, \"B\"", None],
                          "year": [1954, 2000, None], "price": [1.5, None, 2.25]})
    users = pl.DataFrame({"user_id": ["u2", "u 1"], "age": ["30", "41"]})
    return Dataset.from_frame(frame, name="tiny set", item_attrs=items, user_attrs=users, text_fields=("title",))


def test_recbole_round_trip(tiny: Dataset, tmp_path: Path) -> None:
    out = save_dataset(tiny, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["tiny_set.inter", "tiny_set.item", "tiny_set.user"]
    header = (out / "tiny_set.item").read_text().split("\n", 1)[0]
    assert header == "item_id:token\ttitle:token_seq\tyear:token\tprice:float"
    assert (out / "tiny_set.inter").read_text().split("\n", 1)[0] == (
        "user_id:token\titem_id:token\ttimestamp:float\trating:float")
    back = load_recbole(out)
    assert back.fingerprint == tiny.fingerprint
    assert back.text_fields == ("title",)
    assert list(back.items.tokens) == ["007", "7", "a,b"]
    assert back.item_attrs.get_column("title").to_list() == [None, "Seven Samurai", "A, \"B\""]
    assert back.user_attrs.rows() == [("u 1", "41"), ("u10", None), ("u2", "30")]


@pytest.mark.parametrize("to", ["parquet", "csv"])
def test_table_round_trip(tiny: Dataset, tmp_path: Path, to: str) -> None:
    out = save_dataset(tiny, tmp_path / "out", to=to)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", f"interactions.{to}", f"items.{to}",
                                                     f"users.{to}"]
    back = load_dataset(out)
    assert back.fingerprint == tiny.fingerprint
    assert (back.name, back.text_fields) == ("tiny set", ("title",))
    assert back.item_attrs.get_column("title").to_list() == [None, "Seven\tSamurai", "A, \"B\""]
    np.testing.assert_array_equal(back.rating, tiny.rating)


def test_interactions_hold_tokens_not_indices(tiny: Dataset, tmp_path: Path) -> None:
    out = save_dataset(tiny, tmp_path / "out", to="csv")
    rows = pl.read_csv(out / "interactions.csv", infer_schema=False).rows()
    assert rows[:2] == [("u 1", "007", "0.1", "0.1"), ("u10", "7", "-3.0", "1.0")]
    whole = Dataset.from_frame(pl.DataFrame({"user_id": [5], "item_id": [6], "timestamp": [881250949.0],
                                             "rating": [4.0]}))
    out = save_dataset(whole, tmp_path / "whole", to="csv")
    assert (out / "interactions.csv").read_text() == "user_id,item_id,timestamp,rating\n5,6,881250949,4\n"


@pytest.mark.realdata
def test_ml100k_recbole_round_trip(ml100k: Dataset, tmp_path: Path) -> None:
    back = load_recbole(save_dataset(ml100k, tmp_path / "ml-100k"))
    assert back.fingerprint == ml100k.fingerprint
    assert back.item_attrs.equals(ml100k.item_attrs) and back.user_attrs.equals(ml100k.user_attrs)
    assert back.text_fields == ml100k.text_fields


def test_guards_and_atomicity(tiny: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unknown export format"):
        save_dataset(tiny, out, to="xlsx")
    assert set(EXPORT_FORMATS) == {"recbole", "parquet", "csv"}
    save_dataset(tiny, out, to="csv")
    with pytest.raises(InputError, match="output directory is not empty"):
        save_dataset(tiny, out, to="parquet")
    save_dataset(tiny, out, to="parquet", overwrite=True)
    assert sorted(p.name for p in out.iterdir())[1] == "interactions.parquet"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="output path is a file"):
        save_dataset(tiny, tmp_path / "file")
    # a failure midway leaves the old output and no temporary files
    nested = Dataset.from_frame(pl.DataFrame({"user_id": ["1"], "item_id": ["2"]}),
                                item_attrs=pl.DataFrame({"item_id": ["2"], "meta": [{"a": 1}]}))
    with pytest.raises(InputError, match="column 'meta': cannot write the items column"):
        save_dataset(nested, out, to="csv", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]
    assert (out / "interactions.parquet").is_file()
    bad_id = Dataset.from_frame(pl.DataFrame({"user_id": ["a\tb"], "item_id": ["2"]}))
    with pytest.raises(InputError, match="column 'user_id': id with a tab"):
        save_dataset(bad_id, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    empty = tiny.subset(np.zeros(tiny.n_interactions, dtype=bool))
    with pytest.raises(InputError, match="has no interactions"):
        save_dataset(empty, tmp_path / "empty")
