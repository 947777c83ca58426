"""Loaders: each raw format written small in tmp_path with a known answer, bad input, real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from llm4rec.data.sources import FORMATS, detect_format, from_dataframe, load_dataset
from llm4rec.data.sources.amazon import load_amazon
from llm4rec.data.sources.movielens import GENRES_100K, _title_year, load_movielens
from llm4rec.data.sources.recbole import load_recbole
from llm4rec.data.sources.tabular import load_table
from llm4rec.errors import InputError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def sequences(ds) -> dict[str, list[str]]:
    """user token -> item tokens in the dataset's chronological order."""
    users, items = ds.users.tokens, ds.items.tokens
    return {users[u]: [items[i] for i in seq] for u, seq in enumerate(ds.sequences())}


def flags(*on: int) -> str:
    return "|".join("1" if k in on else "0" for k in range(19))


def table_only(ds) -> dict[str, tuple]:
    """item token -> its text fields, for the items of the item table without any interaction."""
    never = np.setdiff1d(np.arange(ds.n_items), ds.interacted_items)
    assert ds.load_report["items_without_interactions"] == len(never)
    return {row[0]: row[1:] for row in ds.item_attrs[never].select("item_id", *ds.text_fields).rows()}


def raises_naming(path: Path, expected: str, load, *args, **kwargs) -> str:
    """Call ``load``; assert it raises an InputError naming ``path`` and saying ``expected``; return the message."""
    with pytest.raises(InputError) as err:
        load(*args, **kwargs)
    message = str(err.value)
    assert str(path) in message and f"expected {expected}" in message, message
    return message


# ------------------------------------------------------------------ MovieLens 100K
@pytest.fixture
def ml100k_raw(tmp_path: Path) -> Path:
    root = tmp_path / "ml-100k"
    write(root / "u.data", "10\t3\t4\t300\n2\t3\t2\t100\n10\t1\t3\t100\n10\t3\t5\t50\n2\t1\t1\t100\n")
    write(root / "u.item",
          f"1|Misérables, Les (1995)|01-Jan-1995||http://imdb/1|{flags(8, 14)}\n"
          f"3|unknown|01-Jan-1996||http://imdb/3|{flags(0)}\n"
          f"7|Not Rated (1994)|||http://imdb/7|{flags(1)}\n", encoding="latin-1")
    write(root / "u.user", "2|24|M|technician|85711\n10|53|F|other|94043\n")
    return root


def test_movielens_100k_known_answer(ml100k_raw: Path) -> None:
    ds = load_movielens(ml100k_raw)
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == ("ml-100k", 2, 3, 4)
    assert list(ds.users.tokens) == ["2", "10"]  # numeric order, not string order
    assert list(ds.items.tokens) == ["1", "3", "7"]  # 7 is in u.item without ratings: kept
    np.testing.assert_array_equal(ds.interacted_items, [0, 1])
    assert ds.load_report == {"rows": 5, "duplicates_dropped": 1, "items_without_interactions": 1}
    # user 10 rated item 3 twice: the later row (ts 300, rating 4) is kept; user 2's tie at ts 100 is
    # ordered by item index.
    assert sequences(ds) == {"2": ["1", "3"], "10": ["1", "3"]}
    np.testing.assert_array_equal(ds.rating, [1, 2, 3, 4])
    np.testing.assert_array_equal(ds.timestamp, [100, 100, 100, 300])
    items = ds.item_attrs
    assert items.columns == ["item_id", "title", "year", "genres", "release_date", "imdb_url"]
    assert items.row(0) == ("1", "Misérables, Les", 1995, "Drama Romance", "01-Jan-1995", "http://imdb/1")
    assert items.row(1)[:4] == ("3", "unknown", 1996, None)  # year from the release date; "unknown" genre
    assert items.row(2) == ("7", "Not Rated", 1994, "Action", None, "http://imdb/7")
    assert ds.text_fields == ("title", "genres")
    assert ds.user_attrs.rows() == [("2", 24, "M", "technician", "85711"), ("10", 53, "F", "other", "94043")]


def test_movielens_100k_genre_names_from_u_genre(ml100k_raw: Path) -> None:
    write(ml100k_raw / "u.genre", "\n".join(f"G{k}|{k}" for k in range(19)) + "\n\n")
    ds = load_movielens(ml100k_raw)
    assert ds.item_attrs.get_column("genres").to_list() == ["G8 G14", "G0", "G1"]
    assert GENRES_100K[8] == "Drama"


def test_movielens_100k_other_ratings_file(ml100k_raw: Path) -> None:
    write(ml100k_raw / "u1.base", "7\t7\t5\t10\n")
    ds = load_movielens(ml100k_raw, ratings_file="u1.base")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (1, 3, 1)  # the whole of u.item, rated or not
    np.testing.assert_array_equal(ds.interacted_items, [2])
    assert ds.item_attrs.row(2)[:3] == ("7", "Not Rated", 1994)
    assert load_movielens(ml100k_raw / "u1.base").fingerprint == ds.fingerprint


# ------------------------------------------------------------------ MovieLens 1M / 10M
@pytest.fixture
def ml1m_raw(tmp_path: Path) -> Path:
    root = tmp_path / "ml-1m"
    write(root / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300000\n"
                                "2::661::1::978300000\n2::661::2::978300000\n")
    write(root / "movies.dat", "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                               "1193::Cérémonie, La (1995)::Drama\n", encoding="latin-1")
    write(root / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return root


def test_movielens_1m_known_answer(ml1m_raw: Path) -> None:
    ds = load_movielens(ml1m_raw)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 4)
    assert sequences(ds) == {"1": ["1193", "661"], "2": ["661", "1193"]}
    # equal timestamps for (2, 661): the last row of the file wins
    np.testing.assert_array_equal(ds.rating, [5, 3, 2, 4])
    assert ds.item_attrs.rows() == [("661", "James and the Giant Peach", 1996, "Animation Children's Musical"),
                                    ("1193", "Cérémonie, La", 1995, "Drama")]
    assert ds.user_attrs.rows() == [("1", 1, "F", "K-12 student", "48067"), ("2", 56, "M", "self-employed", "70072")]


def test_movielens_keeps_unrated_movies_in_every_layout(ml100k_raw: Path, ml1m_raw: Path,
                                                         mllatest_raw: Path) -> None:
    with (ml1m_raw / "movies.dat").open("a", encoding="latin-1") as fh:
        fh.write("3952::Contender, The (2000)::Drama|Thriller\n")
    cases = {ml100k_raw: {"7": ("Not Rated", "Action")},
             ml1m_raw: {"3952": ("Contender, The", "Drama Thriller")},
             mllatest_raw: {"12": ("Babylon 5", None)}}  # (no genres listed): a null genres field
    for folder, kept in cases.items():
        ds = load_movielens(folder)
        assert table_only(ds) == kept, folder
        assert ds.n_items == len(ds.interacted_items) + len(kept)


def test_movielens_dat_ratings_file_option_and_utf8(ml1m_raw: Path) -> None:
    (ml1m_raw / "ratings.dat").rename(ml1m_raw / "sample.dat")
    write(ml1m_raw / "movies.dat", "661::Amélie (2001)::(no genres listed)\n1193::X::Drama\n")  # UTF-8 (10M)
    with pytest.raises(InputError, match="ratings_file='sample.dat'"):
        load_movielens(ml1m_raw)
    ds = load_movielens(ml1m_raw, ratings_file="sample.dat", name="sample")
    assert ds.name == "sample" and ds.n_interactions == 4
    assert ds.item_attrs.rows() == [("661", "Amélie", 2001, None), ("1193", "X", None, "Drama")]


def test_movielens_windows_line_ends_and_blank_lines(ml1m_raw: Path) -> None:
    write(ml1m_raw / "ratings.dat", "1::1193::5::978300760\r\n\r\n2::661::3::978302109\r\n")
    ds = load_movielens(ml1m_raw)
    assert ds.n_interactions == 2
    assert ds.user_attrs.get_column("zip_code").to_list() == ["48067", "70072"]


# ------------------------------------------------------------------ ml-latest
@pytest.fixture
def mllatest_raw(tmp_path: Path) -> Path:
    root = tmp_path / "ml-latest-small"
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,11,4.5,964982703\n1,2,3.0,964981247\n"
                                "5,11,0.5,964982224\n")
    write(root / "movies.csv", 'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n'
                               '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                               '12,Babylon 5 (1994-1998),(no genres listed)\n')
    write(root / "tags.csv", "userId,movieId,tag,timestamp\n1,11,politics,1\n5,11,Romance,2\n7,11,romance ,3\n"
                             "1,2,jungle,4\n")
    return root


def test_movielens_latest_known_answer(mllatest_raw: Path) -> None:
    ds = load_movielens(mllatest_raw)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 3)
    assert sequences(ds) == {"1": ["2", "11"], "5": ["11"]}
    np.testing.assert_allclose(ds.rating, [3.0, 4.5, 0.5])
    assert ds.item_attrs.rows() == [("2", "Jumanji", 1995, "Adventure Children Fantasy"),
                                    ("11", "American President, The", 1995, "Comedy Drama Romance"),
                                    ("12", "Babylon 5", 1994, None)]  # in movies.csv, never rated
    np.testing.assert_array_equal(ds.interacted_items, [0, 1])
    assert ds.user_attrs is None and ds.text_fields == ("title", "genres")


def test_movielens_latest_tags(mllatest_raw: Path) -> None:
    ds = load_movielens(mllatest_raw / "ratings.csv", tags=True)
    assert ds.text_fields == ("title", "genres", "tags")
    assert ds.item_attrs.get_column("tags").to_list() == ["jungle", "romance|politics", None]  # 12: no tags


def test_movielens_year_ranges() -> None:
    frame = pl.DataFrame({"t": ["Babylon 5 (1994-1998)", "Heat (1995) ", "No Year", "Alien³ (1992)"]})
    assert frame.select(*_title_year("t")).rows() == [("Babylon 5", 1994), ("Heat", 1995), ("No Year", None),
                                                      ("Alien³", 1992)]


# ------------------------------------------------------------------ MovieLens bad input
def test_movielens_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as err:
        load_movielens(tmp_path / "nope")
    assert "nope" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="u.data"):
        load_movielens(tmp_path / "empty")
    with pytest.raises(InputError, match="missing.dat: MovieLens ratings file not found"):
        load_movielens(tmp_path / "empty", ratings_file="missing.dat")


def test_movielens_tags_only_for_latest(ml1m_raw: Path) -> None:
    with pytest.raises(InputError, match=r"tags \(tags=True / --tags\) are for ml-latest"):
        load_movielens(ml1m_raw, tags=True)


def test_movielens_wrong_separator(ml1m_raw: Path) -> None:
    write(ml1m_raw / "ratings.dat", "1,1193,5,978300760\n")
    with pytest.raises(InputError) as err:
        load_movielens(ml1m_raw)
    message = str(err.value)
    assert "ratings.dat, line 1" in message and "'1,1193,5,978300760'" in message
    assert "separated by ','" in message


def test_movielens_too_many_and_too_few_fields(ml1m_raw: Path) -> None:
    write(ml1m_raw / "ratings.dat", "1::1::5::9\n1::2::5::9::extra\n")
    with pytest.raises(InputError, match=r"ratings.dat, line 2: 5 field"):
        load_movielens(ml1m_raw)
    write(ml1m_raw / "ratings.dat", "1::1::5::9\n\n1::2::5\n")
    with pytest.raises(InputError, match=r"ratings.dat, line 3: 3 field"):
        load_movielens(ml1m_raw)
    write(ml1m_raw / "ratings.dat", "1::1::5::9\n1::::5::9\n")
    with pytest.raises(InputError, match=r"ratings.dat, line 2, column 'item_id': empty field"):
        load_movielens(ml1m_raw)


def test_movielens_non_numeric_rating(ml1m_raw: Path, ml100k_raw: Path) -> None:
    write(ml1m_raw / "ratings.dat", "1::1193::5::978300760\n\n1::661::five::978302109\n")
    with pytest.raises(InputError) as err:
        load_movielens(ml1m_raw)
    assert str(err.value).startswith(f"{ml1m_raw / 'ratings.dat'}, line 3, column 'rating': not a number")
    assert "'five'" in str(err.value)
    write(ml100k_raw / "u.user", "2|24|M|technician|85711\n10|old|F|other|94043\n")
    with pytest.raises(InputError, match=r"u.user, line 2, column 'age': not an integer \(got 'old'"):
        load_movielens(ml100k_raw)


def test_movielens_csv_missing_column_and_bad_rating(mllatest_raw: Path) -> None:
    write(mllatest_raw / "ratings.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"ratings.csv, line 1, column 'movieId': missing column"):
        load_movielens(mllatest_raw)
    write(mllatest_raw / "ratings.csv", "userId;movieId;rating;timestamp\n1;2;3;4\n")
    with pytest.raises(InputError, match="does not look comma separated"):
        load_movielens(mllatest_raw)
    write(mllatest_raw / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,x,4\n")
    with pytest.raises(InputError, match=r"ratings.csv, line 3, column 'rating': not a number \(got 'x'"):
        load_movielens(mllatest_raw)


def test_movielens_empty_file(ml1m_raw: Path) -> None:
    write(ml1m_raw / "ratings.dat", "\n\n")
    with pytest.raises(InputError, match="ratings.dat: empty file"):
        load_movielens(ml1m_raw)


def test_movielens_empty_ratings_files_name_the_file(ml100k_raw: Path, ml1m_raw: Path, mllatest_raw: Path) -> None:
    ratings = write(ml100k_raw / "u.data", "")
    raises_naming(ratings, "at least one line of user_id\titem_id\trating\ttimestamp", load_movielens, ml100k_raw)
    ratings = write(ml1m_raw / "ratings.dat", "")
    raises_naming(ratings, "at least one line of user_id::item_id::rating::timestamp", load_movielens, ml1m_raw)
    ratings = write(mllatest_raw / "ratings.csv", "")
    raises_naming(ratings, "a header line userId,movieId,rating,timestamp and at least one data row",
                  load_movielens, mllatest_raw)
    for header_only in ("userId,movieId,rating,timestamp\n", "userId,movieId,rating,timestamp\n\n\n"):
        write(ratings, header_only)
        message = raises_naming(ratings, "a header line userId,movieId,rating,timestamp and at least one data row",
                                load_movielens, mllatest_raw)
        assert "ratings.csv, line 2: no data rows under the header" in message


# ------------------------------------------------------------------ Amazon
@pytest.fixture
def amazon_raw(tmp_path: Path) -> Path:
    root = tmp_path / "amazon-tiny"
    write(root / "sequences.txt", "AX B02 B01 B03\nAB  B01\tB02\n\nAC B03 B01 B03\n")
    items = [
        {"asin": "B01", "p5_item_id": 1, "title": "Crabtree &amp; Evelyn Hand &quot;Therapy&quot;",
         "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Skin"]]},
        {"asin": "B02", "p5_item_id": 2, "title": "Plain", "categories": []},
        {"asin": "B99", "p5_item_id": 3, "title": "never bought", "categories": [["Beauty"]]},
    ]
    write(root / "items.jsonl", "".join(json.dumps(obj) + "\n" for obj in items))
    return root


def test_amazon_known_answer(amazon_raw: Path) -> None:
    ds = load_amazon(amazon_raw)
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == ("amazon-tiny", 3, 4, 7)
    assert list(ds.users.tokens) == ["AB", "AC", "AX"]
    # line order is time order; AC's repeated B03 keeps the later position
    assert sequences(ds) == {"AB": ["B01", "B02"], "AC": ["B01", "B03"], "AX": ["B02", "B01", "B03"]}
    np.testing.assert_array_equal(ds.timestamp, [0, 1, 1, 2, 0, 1, 2])
    assert ds.rating is None
    assert ds.item_attrs.rows() == [
        ("B01", 'Crabtree & Evelyn Hand "Therapy"', "Beauty > Makeup > Nails; Beauty > Skin", 1),
        ("B02", "Plain", None, 2),
        ("B03", None, None, None),
        ("B99", "never bought", "Beauty", 3),  # in items.jsonl, in no sequence: kept
    ]
    np.testing.assert_array_equal(ds.interacted_items, [0, 1, 2])
    assert ds.text_fields == ("title", "categories")


def test_amazon_keeps_items_in_no_sequence(amazon_raw: Path) -> None:
    ds = load_amazon(amazon_raw)
    assert table_only(ds) == {"B99": ("never bought", "Beauty")}
    assert "B99" not in {i for seq in sequences(ds).values() for i in seq}


def test_amazon_empty_sequences_name_the_file(amazon_raw: Path) -> None:
    for text in ("", "\n  \n"):
        path = write(amazon_raw / "sequences.txt", text)
        raises_naming(path, "at least one line 'user_id item_1 ... item_n'", load_amazon, amazon_raw)


def test_amazon_without_items_and_from_file(amazon_raw: Path) -> None:
    (amazon_raw / "items.jsonl").unlink()
    ds = load_amazon(amazon_raw / "sequences.txt")
    assert ds.item_attrs is None and ds.text_fields == () and ds.n_interactions == 7


def test_amazon_bad_input(amazon_raw: Path) -> None:
    with pytest.raises(InputError, match="missing: Amazon sequences file not found"):
        load_amazon(amazon_raw / "missing")
    write(amazon_raw / "items.jsonl", '{"asin": "B01", "title": "x"}\n{"asin": "B02", "title": \n')
    with pytest.raises(InputError, match=r"items.jsonl, line 2: not JSON"):
        load_amazon(amazon_raw)
    write(amazon_raw / "items.jsonl", '{"asin": "B01", "categories": "Beauty"}\n')
    with pytest.raises(InputError, match=r"items.jsonl, line 1, column 'categories': bad categories"):
        load_amazon(amazon_raw)
    write(amazon_raw / "sequences.txt", "AX B01\nAB\n")
    with pytest.raises(InputError, match=r"sequences.txt, line 2: a user without items \(got 'AB'"):
        load_amazon(amazon_raw)
    write(amazon_raw / "sequences.txt", "AX B01\nAB B02\nAX B03\n")
    with pytest.raises(InputError, match=r"line 3: user on more than one line \(lines 1 and 3\)"):
        load_amazon(amazon_raw)
    write(amazon_raw / "sequences.txt", "\n")
    with pytest.raises(InputError, match="sequences.txt: empty file"):
        load_amazon(amazon_raw)


# ------------------------------------------------------------------ tables
def test_table_csv_with_mapping_dates_and_items(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "uid,sku,when,stars\n"
                                      "u2,b,2024-01-02T00:00:00,5\n"
                                      "u1,b,2024-01-01T00:00:00+01:00,4\n"
                                      "u1,a,2024-01-01,3\n")
    items = write(tmp_path / "items.tsv", "sku\tname\tprice\na\tApple, red\t1.5\nb\tBanana\t2\nz\tZucchini\t3\n")
    ds = load_table(log, user_col="uid", item_col="sku", timestamp_col="when", rating_col="stars",
                    items_path=items, text_columns=["name"])
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == ("log", 2, 3, 3)
    assert sequences(ds) == {"u1": ["b", "a"], "u2": ["b"]}  # 2024-01-01T00:00+01:00 is 23:00 UTC the day before
    np.testing.assert_array_equal(ds.timestamp, [1704063600, 1704067200, 1704153600])
    np.testing.assert_array_equal(ds.rating, [4, 3, 5])
    assert ds.item_attrs.rows() == [("a", "Apple, red", "1.5"), ("b", "Banana", "2"), ("z", "Zucchini", "3")]
    np.testing.assert_array_equal(ds.interacted_items, [0, 1])  # z: in the item table only
    assert ds.text_fields == ("name",)


def test_table_auto_columns_and_separator_sniffing(tmp_path: Path) -> None:
    log = write(tmp_path / "log.txt", "user_id;item_id;score;time\n1;10;1;20\n1;2;0;10\n\n2;10;1;5\n")
    ds = load_table(log)
    assert sequences(ds) == {"1": ["2", "10"], "2": ["10"]}
    np.testing.assert_array_equal(ds.rating, [0, 1, 1])
    no_time = load_table(log, timestamp_col=None, rating_col=None)
    assert sequences(no_time) == {"1": ["10", "2"], "2": ["10"]} and no_time.rating is None


def test_table_parquet_typed_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame({
        "user_id": [3, 1, 1],
        "item_id": [7, 7, 8],
        "timestamp": pl.Series(["2024-01-01 00:00:10", "2024-01-01 00:00:00", "2024-01-01 00:00:05"]
                               ).str.to_datetime(),
        "rating": [1.0, 2.0, None],
    })
    frame.write_parquet(tmp_path / "log.parquet")
    with pytest.raises(InputError, match=r"log.parquet, column 'rating': row 2: missing value"):
        load_table(tmp_path / "log.parquet")
    ds = load_table(tmp_path / "log.parquet", rating_col=None)
    assert sequences(ds) == {"1": ["7", "8"], "3": ["7"]}
    np.testing.assert_array_equal(ds.timestamp, [1704067200, 1704067205, 1704067210])


def test_from_dataframe_pandas_and_polars() -> None:
    pdf = pd.DataFrame({"user": ["b", "a", "a"], "item": [2, 1, 2], "ts": [3.0, 2.0, 1.0],
                        "rating": [1, 2, 3]})
    items = pd.DataFrame({"item": [1, 2], "text": ["one", "two"]})
    a = from_dataframe(pdf, user_col="user", item_col="item", timestamp_col="ts", items=items,
                       text_columns=["text"], name="tiny")
    b = from_dataframe(pl.from_pandas(pdf), user_col="user", item_col="item", timestamp_col="ts",
                       items=pl.from_pandas(items), text_columns=["text"], name="tiny")
    assert a.fingerprint == b.fingerprint
    assert sequences(a) == {"a": ["2", "1"], "b": ["2"]}
    assert a.item_attrs.rows() == [("1", "one"), ("2", "two")]
    with pytest.raises(InputError, match=r"<DataFrame>, column 'ts': row 1: not a timestamp \(got 'soon'"):
        from_dataframe(pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1], "ts": ["5", "soon"]}), timestamp_col="ts")


def test_table_keeps_items_without_interactions(tmp_path: Path) -> None:
    log = write(tmp_path / "log.tsv", "user_id\titem_id\n1\t10\n2\t10\n")
    items = write(tmp_path / "items.csv", "item_id,title,brand\n30,New gadget,Acme\n10,Old gadget,Acme\n")
    ds = load_table(log, items_path=items, text_columns=["title", "brand"])
    assert list(ds.items.tokens) == ["10", "30"] and ds.n_interactions == 2
    assert table_only(ds) == {"30": ("New gadget", "Acme")}
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 10]})
    items_frame = pd.DataFrame({"item_id": [30, 10], "title": ["New gadget", "Old gadget"], "brand": ["Acme"] * 2})
    same = from_dataframe(frame, items=items_frame, text_columns=["title", "brand"])
    assert table_only(same) == {"30": ("New gadget", "Acme")}


def test_table_empty_and_header_only_files_name_the_file(tmp_path: Path) -> None:
    from llm4rec.data.sources.tabular import read_table

    rows = "a header line and at least one data row"
    for name, text in [("empty.csv", ""), ("blank.tsv", "\n \n"), ("header.csv", "user_id,item_id\n"),
                       ("header.tsv", "user_id\titem_id\n"), ("no_newline.csv", "user_id,item_id"),
                       ("blank_rows.csv", "user_id,item_id\n\n\n"), ("sniffed.txt", "user_id;item_id\n")]:
        path = write(tmp_path / name, text)
        empty = not text.strip()
        assert ("empty file" if empty else "line 2: no data rows under the header") in raises_naming(
            path, rows, read_table, path)
        assert ("empty file" if empty else "line 2: no interactions under the header") in raises_naming(
            path, rows, load_table, path)
    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"user_id": [], "item_id": []}, schema={"user_id": pl.Int64, "item_id": pl.Utf8}).write_parquet(empty)
    for load, what in ((read_table, "data rows"), (load_table, "interactions")):
        message = raises_naming(empty, "a table with at least one row (its columns are ['user_id', 'item_id'])",
                                load, empty)
        assert f"no {what} in the Parquet table" in message
    # an attribute table is a data file too
    log = write(tmp_path / "log.csv", "user_id,item_id\n1,2\n")
    items = write(tmp_path / "items.csv", "item_id,title\n")
    assert "no items under the header" in raises_naming(items, rows, load_table, log, items_path=items)


def test_table_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.csv: table not found"):
        load_table(tmp_path / "nope.csv")
    log = write(tmp_path / "log.csv", "user,item_id\n1,2\n")
    with pytest.raises(InputError) as err:
        load_table(log)
    assert str(err.value) == (f"{log}, column 'user_id': no user id column (expected a column 'user_id' among "
                              "['user', 'item_id']; choose another with user_col= / --user-col)")
    with pytest.raises(InputError, match=r"column 'sku': no item id column .*item_col= / --item-col"):
        load_table(log, user_col="user", item_col="sku")
    with pytest.raises(InputError, match=r"column 'when': no timestamp column .*timestamp_col= / --timestamp-col"):
        load_table(log, user_col="user", timestamp_col="when")
    write(log, "user_id\titem_id\n1\t2\n")
    with pytest.raises(InputError, match=r"is the separator right \(separator= / --separator\)"):
        load_table(log)
    write(log, "user_id,item_id,rating\n1,2,4\n1,3,four\n")
    with pytest.raises(InputError) as err:
        load_table(log)
    assert str(err.value) == (f"{log}, line 3, column 'rating': not a number "
                              "(got 'four'; expected a numeric rating)")
    write(log, "user_id,item_id,timestamp\n1,2,2024-01-01\n1,3,yesterday\n")
    with pytest.raises(InputError, match=r"log.csv, line 3, column 'timestamp': not a timestamp \(got 'yesterday'"):
        load_table(log)
    write(log, "user_id,item_id\n1,2\n,3\n")
    with pytest.raises(InputError, match=r"log.csv, line 3, column 'user_id': missing value"):
        load_table(log)
    write(log, "user_id,item_id,note\n,,x\n")
    with pytest.raises(InputError, match=r"log.csv: no interactions \(expected at least one row with a 'user_id'"):
        load_table(log)
    write(log, "user_id,item_id\n1,2\n")
    with pytest.raises(InputError, match=r"column 'title': text column not in the item table .*--items-path"):
        load_table(log, text_columns=["title"])
    items = write(tmp_path / "items.csv", "id,title\n2,Two\n")
    with pytest.raises(InputError, match=r"items.csv, column 'item_id': attribute table lacks its key column "
                                         r"\(expected a column 'item_id' among \['id', 'title'\]; "
                                         r"choose another with item_key= / --item-key\)"):
        load_table(log, items_path=items)
    with pytest.raises(InputError, match=r"column 'name': text column not in the item table \(expected one of "
                                         r"the item table's columns \['title'\]; .*text_columns= / --text-columns"):
        load_table(log, items_path=items, item_key="id", text_columns=["name"])
    assert load_table(log, items_path=items, item_key="id").item_attrs.rows() == [("2", "Two")]


# ------------------------------------------------------------------ RecBole
@pytest.fixture
def recbole_raw(tmp_path: Path) -> Path:
    root = tmp_path / "rb-tiny"
    write(root / "rb-tiny.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                  "u1\ti2\t4\t20\nu1\ti1\t5\t10\nu2\ti2\t3\t5\n")
    write(root / "rb-tiny.item", "item_id:token\ttitle:token_seq\tprice:float\n"
                                 "i1\tRed Apple\t1.5\ni2\tBanana\t2\ni9\tNew Cherry\t3\n")
    write(root / "rb-tiny.user", "user_id:token\tage:token\nu1\t30\nu2\t40\nu7\t50\n")
    return root


def test_recbole_known_answer_keeps_table_only_items(recbole_raw: Path) -> None:
    ds = load_recbole(recbole_raw)
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == ("rb-tiny", 2, 3, 3)
    assert sequences(ds) == {"u1": ["i1", "i2"], "u2": ["i2"]}
    np.testing.assert_array_equal(ds.rating, [5, 4, 3])
    assert ds.text_fields == ("title",)
    assert ds.item_attrs.rows() == [("i1", "Red Apple", 1.5), ("i2", "Banana", 2.0), ("i9", "New Cherry", 3.0)]
    assert table_only(ds) == {"i9": ("New Cherry",)}
    assert ds.user_attrs.rows() == [("u1", "30"), ("u2", "40")]  # users without interactions are dropped


def test_recbole_empty_and_header_only_files_name_the_file(recbole_raw: Path) -> None:
    inter = recbole_raw / "rb-tiny.inter"
    header = "user_id:token\titem_id:token\n"
    write(inter, "")
    raises_naming(inter, "a typed header 'field:type<TAB>...' and at least one data row", load_recbole, recbole_raw)
    for text in (header, header + "\n\n", header.rstrip("\n")):
        write(inter, text)
        message = raises_naming(inter, "a typed header line and at least one data row", load_recbole, recbole_raw)
        assert "rb-tiny.inter, line 2: no data rows under the header" in message
    write(inter, header + "u1\ti1\n")
    item = write(recbole_raw / "rb-tiny.item", "item_id:token\ttitle:token_seq\n")
    raises_naming(item, "a typed header line and at least one data row", load_recbole, recbole_raw)


# ------------------------------------------------------------------ detection and the front door
def test_detect_format(tmp_path: Path, ml100k_raw: Path, ml1m_raw: Path, mllatest_raw: Path,
                       amazon_raw: Path) -> None:
    recbole = write(tmp_path / "rb" / "x.inter", "user_id:token\titem_id:token\n1\t2\n")
    csv = write(tmp_path / "t" / "log.csv", "user_id,item_id\n1,2\n")
    cases = {ml100k_raw: "movielens", ml1m_raw: "movielens", mllatest_raw: "movielens",
             mllatest_raw / "ratings.csv": "movielens", ml1m_raw / "ratings.dat": "movielens",
             amazon_raw: "amazon", amazon_raw / "sequences.txt": "amazon", recbole.parent: "recbole",
             recbole: "recbole", csv: "csv"}
    for path, expected in cases.items():
        assert detect_format(path) == expected, path
    with pytest.raises(InputError, match=r"cannot tell the dataset format.*sequences.txt.*format= / --format"):
        detect_format(csv.parent.parent)
    with pytest.raises(InputError, match="dataset path not found"):
        detect_format(tmp_path / "nope")


def test_load_dataset_dispatch(ml1m_raw: Path, amazon_raw: Path, tmp_path: Path) -> None:
    assert set(FORMATS) == {"auto", "movielens", "recbole", "amazon", "csv", "parquet"}
    assert load_dataset(ml1m_raw).fingerprint == load_movielens(ml1m_raw).fingerprint
    assert load_dataset(amazon_raw, format="amazon").n_interactions == 7
    pl.DataFrame({"user_id": [1], "item_id": [2]}).write_parquet(tmp_path / "log.parquet")
    assert load_dataset(tmp_path / "log.parquet", format="parquet").n_interactions == 1
    log = write(tmp_path / "log.csv", "u,i\n1,2\n")
    assert load_dataset(log, user_col="u", item_col="i").n_interactions == 1
    with pytest.raises(InputError, match="unknown dataset format"):
        load_dataset(log, format="excel")
    with pytest.raises(InputError, match=r"unknown option 'user_col' for format 'amazon'"):
        load_dataset(amazon_raw, user_col="u")


# ------------------------------------------------------------------ real data
@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "users", "items", "interactions"), [
    ("amazon-beauty", 22_363, 12_101, 198_502),
    ("amazon-sports", 35_598, 18_357, 296_337),
])
def test_amazon_real(shared_data: Path, folder: str, users: int, items: int, interactions: int) -> None:
    ds = load_dataset(shared_data / folder)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (users, items, interactions)
    assert len(ds.interacted_items) == items  # every item of items.jsonl is in a sequence
    seq = sequences(ds)
    first = (shared_data / folder / "sequences.txt").read_text().split("\n", 1)[0].split()
    assert seq[first[0]] == first[1:]
    if folder == "amazon-beauty":
        titles = ds.item_attrs.get_column("title")
        assert titles.null_count() == 0 and not titles.str.contains("&amp;").any()
    else:
        assert ds.item_attrs is None


@pytest.mark.realdata
def test_ml1m_sample_real(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "ml-1m", ratings_file="ratings_first10_per_user.dat")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (6_040, 3_883, 60_400)  # all of movies.dat
    assert len(ds.interacted_items) == 1_893  # the movies the sample rates
    assert ds.load_report == {"rows": 60_400, "duplicates_dropped": 0, "items_without_interactions": 1_990}
    assert ds.user_attrs.height == 6_040 and ds.user_attrs.get_column("gender").null_count() == 0
    assert ds.item_attrs.get_column("title").null_count() == 0
    titles = ds.item_attrs.get_column("title")
    assert titles.str.contains("é").any() and not titles.str.contains("\ufffd|Ã").any()  # Latin-1 decoded


@pytest.mark.realdata
def test_ml100k_raw_matches_recbole_copy(shared_data: Path, ml100k, tmp_path: Path) -> None:
    """u.data rebuilt from the RecBole copy of ML-100K loads to the same dataset."""
    inter = (shared_data / "ml-100k" / "ml-100k.inter").read_text().split("\n", 1)[1]
    write(tmp_path / "ml-100k" / "u.data", inter)
    ds = load_dataset(tmp_path / "ml-100k")
    assert ds.fingerprint == ml100k.fingerprint
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    real = load_dataset(shared_data / "ml-100k")  # the RecBole copy, with its .item table
    assert (real.n_users, real.n_items, real.n_interactions) == (943, 1682, 100_000)
    assert real.load_report["items_without_interactions"] == 0
