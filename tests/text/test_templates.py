"""Item and user text from attribute columns."""

from __future__ import annotations

import polars as pl
import pytest

from llm4rec.data import Dataset
from llm4rec.errors import InputError
from llm4rec.text import (
    Template,
    default_item_template,
    default_user_template,
    item_texts,
    item_titles,
    user_texts,
)


@pytest.fixture
def movies() -> Dataset:
    """Three users, four items with gaps in their attributes; user u1 saw i1, i2, i3, i4 in that order."""
    inter = pl.DataFrame({"user_id": ["u1"] * 4 + ["u2"] * 2 + ["u3"],
                          "item_id": ["i1", "i2", "i3", "i4", "i4", "i1", "i2"],
                          "timestamp": [1, 2, 3, 4, 1, 2, 5]})
    items = pl.DataFrame({
        "item_id": ["i1", "i2", "i3", "i4"],
        "title": ["Heat", "Apollo 13", None, "  "],
        "year": [1995.0, None, 1999.0, None],
        "genres": ["Action Crime", "Drama", "Comedy", None],
        "tags": [["heist", "la"], [], None, ["x"]],
    })
    users = pl.DataFrame({"user_id": ["u1", "u2"], "age": [24, 53], "gender": ["M", "F"],
                          "occupation": ["writer", None], "zip_code": ["85711", "94043"],
                          "profile": ["Mail me: jo@x.org.", None]})
    return Dataset.from_frame(inter, name="movies", item_attrs=items, user_attrs=users,
                              text_fields=("title", "genres"))


def test_missing_fields_drop_with_their_labels(movies):
    texts = item_texts(movies, "{title} ({year}). Genres: {genres}. Tags: {tags}")
    assert texts == ["Heat (1995). Genres: Action Crime. Tags: heist, la",
                     "Apollo 13. Genres: Drama",
                     "(1999). Genres: Comedy",  # no title: the year stands alone
                     "Tags: x"]


def test_item_with_no_text_gets_its_id(movies):
    assert item_texts(movies, "{title}") == ["Heat", "Apollo 13", "i3", "i4"] == item_titles(movies)


def test_segments_and_closing_brackets():
    tpl = Template("Movie: {title} ({year}), {genres}!")
    assert tpl.segments == (("Movie: ", "title", ""), (" (", "year", ")"), (", ", "genres", "!"))
    assert tpl.fields == ("title", "year", "genres")


def test_literal_braces_and_doubled_full_stops():
    frame = pl.DataFrame({"a": ["Done.", "x"], "b": ["y", None]})
    assert Template("{{{a}}}. {b}").render(frame).to_list() == ["{Done.}. y", "{x}"]
    assert Template("{a}. {b}").render(frame).to_list() == ["Done. y", "x"]


def test_template_id_is_a_stable_hash_of_the_string():
    assert Template("{title}").id == Template("{title}").id != Template("{title} ").id
    assert len(Template("{title}").id) == 16


@pytest.mark.parametrize(("template", "problem"), [
    ("no fields here", "names no field"),
    ("{title!r}", "bad template field"),
    ("{year:04d}", "bad template field"),
    ("{0}", "bad template field"),
    ("{title", "bad text template"),
])
def test_bad_templates_are_input_errors(template, problem):
    with pytest.raises(InputError, match=problem):
        Template(template)


def test_unknown_column_names_the_column_and_the_choices(movies):
    with pytest.raises(InputError, match=r"column 'brand'.*unknown column.*expected one of the columns"):
        item_texts(movies, "{title}. {brand}")


def test_default_item_templates_follow_the_columns(movies, synthetic):
    assert default_item_template(movies).text == "{title} ({year}). Genres: {genres}"
    assert default_item_template(synthetic).text == "{title} ({year}). Categories: {categories}. {description}"
    recbole = pl.DataFrame({"item_id": ["1"], "movie_title": ["Toy Story"], "release_year": ["1995"],
                            "class": ["Animation Comedy"]})
    amazon = pl.DataFrame({"item_id": ["1"], "title": ["Lip gloss"], "categories": ["Beauty > Makeup"],
                           "p5_item_id": [1]})
    other = pl.DataFrame({"item_id": ["1"], "blurb": ["A thing"], "notes": ["Nice"]})
    inter = pl.DataFrame({"user_id": ["u"], "item_id": ["1"]})
    for table, text_fields, expected in [
        (recbole, ("movie_title", "class"), "{movie_title} ({release_year}). Genres: {class}"),
        (amazon, ("title", "categories"), "{title}. Categories: {categories}"),
        (other, ("blurb",), "{blurb}"),
        (other, (), "{blurb}. {notes}"),
    ]:
        ds = Dataset.from_frame(inter, item_attrs=table, text_fields=text_fields)
        assert default_item_template(ds).text == expected
    rendered = item_texts(Dataset.from_frame(inter, item_attrs=recbole))
    assert rendered == ["Toy Story (1995). Genres: Animation Comedy"]


def test_no_item_attributes_is_an_input_error():
    ds = Dataset.from_frame(pl.DataFrame({"user_id": ["u"], "item_id": ["1"]}), name="bare")
    with pytest.raises(InputError, match="'bare' has no item attributes"):
        item_texts(ds)


def test_user_text_has_profile_and_recent_titles_oldest_first(movies):
    assert default_user_template(movies).text == ("Age: {age}. Gender: {gender}. Occupation: {occupation}. "
                                                  "{profile}. Recently: {history}")
    texts = user_texts(movies, history=3)
    # u1 saw i1..i4; the last three are i2, i3 (no title: its id), i4 (blank title: its id). No zip code.
    assert texts[0] == "Age: 24. Gender: M. Occupation: writer. Mail me: [EMAIL]. Recently: Apollo 13; i3; i4"
    assert texts[1] == "Age: 53. Gender: F. Recently: i4; Heat"
    assert texts[2] == "Recently: Apollo 13"  # u3 has no profile row
    assert user_texts(movies, "{gender}|{history}", history=1) == ["M|i4", "F|Heat", "Apollo 13"]


def test_user_text_without_history_or_attributes(movies):
    assert user_texts(movies, history=0)[2] == "u3"  # nothing known at all: the id
    with pytest.raises(InputError, match="bad history length"):
        user_texts(movies, history=-1)


def test_scrubbing_is_on_by_default_and_can_be_turned_off(movies):
    assert "[EMAIL]" in user_texts(movies)[0]
    assert "jo@x.org" in user_texts(movies, scrub=False)[0]


def test_synthetic_texts_carry_the_genre_words(synthetic):
    texts = item_texts(synthetic)
    titles = synthetic.item_attrs.get_column("title").to_list()
    assert len(texts) == synthetic.n_items and all(t.startswith(title) for t, title in zip(texts, titles))
    assert all("None" not in t and ". ." not in t for t in texts)
    users = user_texts(synthetic, history=2)
    assert len(users) == synthetic.n_users and all("Recently: " in u for u in users)
