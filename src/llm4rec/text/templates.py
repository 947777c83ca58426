"""Item and user text from attribute columns, through small format-string templates.

A template is a Python format string over column names, e.g.
``"{title} ({year}). Categories: {categories}. {description}"``. Each field
owns the literal text just before it (its label and separator) and the closing
brackets just after it, so a missing field (null, empty, whitespace) drops
cleanly with its label: with no year and no categories the text above reads
``"Heat. A cop and a thief."``, never ``"Heat (None). Categories: ."``.
Separators left at the start of a text are stripped, a doubled full stop
(``"walks.. Recently"``) is collapsed, ``{{``/``}}`` are literal braces. List
columns are joined with ``", "``, whole floats print as integers.

Rendering is vectorised in polars over the whole attribute table. A
template's :attr:`~Template.id` (a hash of its string) keys the embedding
cache. PII is scrubbed from every rendered text by default
(:mod:`llm4rec.text.pii`).

Defaults (:func:`default_item_template`, :func:`default_user_template`) are
chosen from the columns present, so every loader gets a sensible text:

=====================  ==========================================================
data                   default item template
=====================  ==========================================================
synthetic              ``{title} ({year}). Categories: {categories}. {description}``
MovieLens (loaders)    ``{title} ({year}). Genres: {genres}``
MovieLens (RecBole)    ``{movie_title} ({release_year}). Genres: {class}``
Amazon                 ``{title}. Categories: {categories}``
=====================  ==========================================================

User text is the profile fields (age, gender, occupation, free-text profile;
never the zip code) plus ``{history}``, the titles of the user's most recent
items in time order. Pass the fit-set dataset of a split so that the history
holds no test items.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from llm4rec.errors import InputError
from llm4rec.text.pii import scrub_pii

if TYPE_CHECKING:
    import polars as pl

    from llm4rec.data.dataset import Dataset

__all__ = ["HISTORY_FIELD", "Template", "default_item_template", "default_user_template", "item_template",
           "item_texts", "item_titles", "table_texts", "user_texts"]

#: the user-template field that holds the titles of the most recent history items
HISTORY_FIELD = "history"

_CLOSERS = ")]}\"'»”’"
_LEAD_SEPARATORS = " .,;:-|/"
_TITLE_COLUMNS = ("title", "movie_title", "name", "item_name")
_YEAR_COLUMNS = ("year", "release_year")
_CATEGORY_COLUMNS = (("categories", "Categories"), ("category", "Category"), ("genres", "Genres"),
                     ("genre", "Genre"), ("class", "Genres"))


@dataclass(frozen=True)
class Template:
    """A format string over attribute columns; see the module docstring for the rules.

    Attributes:
        text: the template string, e.g. ``"{title}. Categories: {categories}"``.
    """

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InputError("bad text template", value=self.text, expected="a format string")
        self.segments  # noqa: B018 - parse now, so a bad template fails where it is written

    @cached_property
    def segments(self) -> tuple[tuple[str, str, str], ...]:
        """``(prefix, field, suffix)`` per field, in order; raises InputError on a bad template."""
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise InputError(f"bad text template: {exc}", value=self.text,
                             expected="a format string such as '{title}. Categories: {categories}'") from None
        literals, fields = [""], []  # literals[i] comes before fields[i]; literals[-1] trails
        for literal, field, spec, conversion in parsed:
            literals[-1] += literal
            if field is None:
                continue
            if not field.isidentifier() or spec or conversion:
                raise InputError("bad template field", value="{" + field + (f"!{conversion}" if conversion else "")
                                 + (f":{spec}" if spec else "") + "}",
                                 expected="a plain column name in braces, e.g. {title}")
            fields.append(field)
            literals.append("")
        segments: list[list[str]] = []
        for before, field in zip(literals, fields):
            if segments:  # closing brackets right after a field belong to it
                closing = len(before) - len(before.lstrip(_CLOSERS))
                segments[-1][2] += before[:closing]
                before = before[closing:]
            segments.append([before, field, ""])
        if not segments:
            raise InputError("the text template names no field", value=self.text,
                             expected="at least one column in braces, e.g. '{title}'")
        segments[-1][2] += literals[-1]
        return tuple((p, f, s) for p, f, s in segments)

    @property
    def fields(self) -> tuple[str, ...]:
        """The column names the template reads, in order."""
        return tuple(f for _, f, _ in self.segments)

    @property
    def id(self) -> str:
        """Stable id: sha256 of the template string, 16 hex digits."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def render(self, frame: pl.DataFrame, *, source: str = "attribute table") -> pl.Series:
        """The text of every row of ``frame`` (Utf8, ``""`` where every field is missing)."""
        import polars as pl

        missing = [f for f in self.fields if f not in frame.columns]
        if missing:
            raise InputError("the text template names an unknown column", path=source, column=missing[0],
                             value=self.text, expected=f"one of the columns {frame.columns}")
        parts = [pl.concat_str([pl.lit(prefix), _as_text(frame.schema[field], field), pl.lit(suffix)])
                 for prefix, field, suffix in self.segments]
        text = (pl.concat_str(parts, ignore_nulls=True)
                .str.replace_all(r"([^.][!?.])\.(\s|$)", "${1}${2}")
                .str.strip_chars_start(_LEAD_SEPARATORS)
                .str.strip_chars_end())
        return frame.select(text.alias("text")).get_column("text")

    def __str__(self) -> str:
        return self.text


def _as_text(dtype: pl.DataType, field: str) -> pl.Expr:
    """Column ``field`` as stripped text, null when missing or blank."""
    import polars as pl

    col = pl.col(field)
    if isinstance(dtype, (pl.List, pl.Array)):
        col = col.cast(pl.List(pl.Utf8)).list.drop_nulls().list.join(", ")
    elif dtype.is_float():
        col = pl.when(col.is_finite() & (col == col.round())).then(col.cast(pl.Int64).cast(pl.Utf8)
                                                                  ).otherwise(col.cast(pl.Utf8))
    else:
        col = col.cast(pl.Utf8)
    col = col.str.strip_chars()
    return pl.when(col.str.len_chars() > 0).then(col)


def _resolve(template: str | Template | None) -> Template | None:
    if template is None or isinstance(template, Template):
        return template
    if not isinstance(template, str):
        raise InputError("bad text template", value=template, expected="a format string or a Template")
    return Template(template)


def default_item_template(dataset: Dataset) -> Template:
    """The item template for the columns this dataset has (see the module docstring).

    Known columns (title, year, brand, categories/genres, description) in a
    fixed order; otherwise the dataset's text fields joined by ``". "``.
    """
    columns = [] if dataset.item_attrs is None else dataset.item_attrs.columns[1:]
    if not columns:
        raise InputError(f"dataset {dataset.name!r} has no item attributes to build text from",
                         expected="an item table with text columns (title, categories, ...)")
    pieces = []
    title = next((c for c in _TITLE_COLUMNS if c in columns), None)
    if title:
        pieces.append(f"{{{title}}}")
    year = next((c for c in _YEAR_COLUMNS if c in columns), None)
    if year and title:
        pieces.append(f" ({{{year}}})")
    if "brand" in columns:
        pieces.append(". Brand: {brand}")
    category = next(((c, label) for c, label in _CATEGORY_COLUMNS if c in columns), None)
    if category:
        pieces.append(f". {category[1]}: {{{category[0]}}}")
    if "description" in columns:
        pieces.append(". {description}")
    if not title and not category:
        fields = [f for f in dataset.text_fields if f in columns] or columns
        pieces = [". ".join(f"{{{f}}}" for f in fields)]
    return Template("".join(pieces))


def default_user_template(dataset: Dataset) -> Template:
    """Profile fields present (age, gender, occupation, profile) plus ``{history}``."""
    columns = [] if dataset.user_attrs is None else dataset.user_attrs.columns[1:]
    labels = {"age": "Age: {age}", "gender": "Gender: {gender}", "occupation": "Occupation: {occupation}",
              "profile": "{profile}"}
    pieces = [text for col, text in labels.items() if col in columns]
    pieces.append(f"Recently: {{{HISTORY_FIELD}}}")
    return Template(". ".join(pieces))


def item_texts(dataset: Dataset, template: str | Template | None = None, *, scrub: bool = True) -> list[str]:
    """One text per item, aligned to the dataset's item index.

    Args:
        dataset: any :class:`~llm4rec.data.Dataset` with item attributes.
        template: a format string or :class:`Template` over item attribute
            columns; ``None`` for :func:`default_item_template`.
        scrub: replace PII by placeholders (:func:`~llm4rec.text.pii.scrub_pii`).

    An item whose fields are all missing gets its id token as text, so every
    row has something to encode.
    """
    tpl = _resolve(template) or default_item_template(dataset)
    if dataset.item_attrs is None:
        raise InputError(f"dataset {dataset.name!r} has no item attributes to build text from",
                         expected="an item table with text columns (title, categories, ...)")
    return table_texts(dataset.item_attrs, tpl, scrub=scrub, source=f"{dataset.name} item attributes")


def table_texts(table: pl.DataFrame, template: str | Template, *, scrub: bool = True,
                source: str = "item table") -> list[str]:
    """One text per row of an item table (``item_id`` + attribute columns), as :func:`item_texts` makes it."""
    import polars as pl

    tpl = _resolve(template)
    rendered = tpl.render(table, source=source)
    texts = (pl.DataFrame({"text": rendered, "item_id": table.get_column("item_id")})
             .select(pl.when(pl.col("text").str.len_chars() > 0).then(pl.col("text"))
                     .otherwise(pl.col("item_id").cast(pl.Utf8)))
             .to_series().to_list())
    return scrub_pii(texts) if scrub else texts


def item_template(dataset: Dataset, template: str | Template | None = None) -> str:
    """The template string a model reads items with: ``template``, or the dataset's default."""
    return (_resolve(template) or default_item_template(dataset)).text


def item_titles(dataset: Dataset) -> list[str]:
    """The title of each item (its title column, else its default text), aligned to the item index."""
    columns = [] if dataset.item_attrs is None else dataset.item_attrs.columns
    title = next((c for c in _TITLE_COLUMNS if c in columns), None)
    return item_texts(dataset, f"{{{title}}}" if title else None, scrub=False)


def user_texts(dataset: Dataset, template: str | Template | None = None, *, history: int = 10,
               scrub: bool = True) -> list[str]:
    """One text per user, aligned to the dataset's user index.

    Args:
        dataset: the interactions to read histories from (use a split's fit
            set, so no held-out item leaks into the text) and the user table.
        template: a format string over user attribute columns and
            ``{history}``; ``None`` for :func:`default_user_template`.
        history: how many of the most recent items' titles ``{history}``
            holds (oldest first, joined by ``"; "``); 0 for none.
        scrub: replace PII by placeholders.

    A user with no field at all gets their id token as text.
    """
    import polars as pl

    if history < 0:
        raise InputError("bad history length", value=history, expected="an integer >= 0")
    tpl = _resolve(template) or default_user_template(dataset)
    users = (dataset.user_attrs if dataset.user_attrs is not None
             else pl.DataFrame({"user_id": [str(t) for t in dataset.users.tokens]}))
    if HISTORY_FIELD in tpl.fields:
        users = users.with_columns(_history_column(dataset, history))
    rendered = tpl.render(users, source=f"{dataset.name} user attributes")
    texts = (pl.DataFrame({"text": rendered, "user_id": users.get_column("user_id")})
             .select(pl.when(pl.col("text").str.len_chars() > 0).then(pl.col("text"))
                     .otherwise(pl.col("user_id").cast(pl.Utf8)))
             .to_series().to_list())
    return scrub_pii(texts) if scrub else texts


def _history_column(dataset: Dataset, n: int) -> pl.Series:
    """Utf8[n_users]: the titles of each user's last ``n`` items, oldest first, ``"; "``-joined."""
    import polars as pl

    offsets = dataset.user_offsets
    rank_from_end = offsets[dataset.user + 1] - 1 - np.arange(dataset.n_interactions)
    keep = rank_from_end < n
    titles = pl.Series("title", item_titles(dataset) if dataset.item_attrs is not None
                       else [str(t) for t in dataset.items.tokens])
    recent = (pl.DataFrame({"user": dataset.user[keep], "title": titles.gather(dataset.item[keep])})
              .group_by("user", maintain_order=True).agg(pl.col("title").str.join("; ")))
    joined = pl.DataFrame({"user": np.arange(dataset.n_users, dtype=np.int32)}).join(
        recent, on="user", how="left", maintain_order="left")
    return joined.get_column("title").alias(HISTORY_FIELD)
