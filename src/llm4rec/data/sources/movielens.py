"""MovieLens in the layouts GroupLens ships: 100K, 1M/10M and ml-latest(-small).

* **100K** (a directory with ``u.data``): ``u.data`` is tab separated
  ``user item rating timestamp`` without a header; ``u.item`` is ``|``
  separated ``id|title|release date|video release date|IMDb URL|<genre flags>``
  (Latin-1) with the genre names taken from ``u.genre`` when present, else the
  standard 19; ``u.user`` is ``id|age|gender|occupation|zip``. Other rating
  files of the release (``u1.base``, ``ua.test``, ...) load with
  ``ratings_file=``.
* **1M / 10M** (``ratings.dat``): ``::`` separated ``UserID::MovieID::Rating::Timestamp``,
  ``movies.dat`` ``MovieID::Title::Genres`` (genres ``|`` separated) and, for
  1M only, ``users.dat`` ``UserID::Gender::Age::Occupation::Zip-code``. 1M is
  Latin-1, 10M UTF-8; text is decoded as UTF-8 when it is valid UTF-8 and as
  Latin-1 otherwise (``encoding=`` forces one).
* **ml-latest / ml-latest-small** (``ratings.csv`` with ``movies.csv``): CSV
  with a header, ``userId,movieId,rating,timestamp`` and ``movieId,title,genres``
  (quoted titles may hold commas). ``tags.csv`` is ignored unless ``tags=True``;
  then each movie gets a ``tags`` text column: its distinct tags, lower-cased,
  most-applied first (ties alphabetical), joined by ``|``. Tags are written by
  the same users whose ratings are being predicted, so they carry interaction
  signal into item text (mind this for cold-start protocols).

Item attributes: ``title`` (the year suffix removed), ``year`` (from
``"Title (1995)"``; for 100K, from the release date when the title has none)
and ``genres`` (space-joined names, as RecBole writes them: no MovieLens genre
name holds a space; a movie without genres gets null), plus
``release_date`` and ``imdb_url`` for 100K. Titles are kept as GroupLens wrote
them (``"Usual Suspects, The"``). ``text_fields`` is ``("title", "genres")``.
Every movie of the item file (``u.item``, ``movies.dat``, ``movies.csv``) is in
the item vocabulary with its attributes, rated or not: a sample of the ratings
(``ratings_first10_per_user.dat``) keeps the whole catalogue, and
``Dataset.interacted_items`` lists the rated ones.
User attributes (100K and 1M): ``age``, ``gender``, ``occupation`` (1M's codes
mapped to their names, as 100K writes them) and ``zip_code``; 1M's age is the
code of its range (1 = under 18, 18 = 18-24, ..., 56 = 56+).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from llm4rec.data.dataset import Dataset
from llm4rec.data.sources._common import require_file
from llm4rec.errors import InputError

__all__ = ["load_movielens"]

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
OCCUPATIONS_1M = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin",
    "4": "college/grad student", "5": "customer service", "6": "doctor/health care",
    "7": "executive/managerial", "8": "farmer", "9": "homemaker", "10": "K-12 student",
    "11": "lawyer", "12": "programmer", "13": "retired", "14": "sales/marketing",
    "15": "scientist", "16": "self-employed", "17": "technician/engineer",
    "18": "tradesman/craftsman", "19": "unemployed", "20": "writer",
}
# Genre labels that mean "no genre"; such movies get a null genres field.
_NO_GENRE = ("unknown", "(no genres listed)")
# "Title (1995)", also "Title (1995-2001)" in ml-latest; group 1 = title, 2 = year.
_TITLE_YEAR = r"^(.*?)\s*\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)$"
_TEXT_FIELDS = ("title", "genres")
_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_SEPARATORS = (",", "\t", "::", "|", ";")
_SIDE_FILES = {"movies.dat", "users.dat", "tags.dat", "movies.csv", "tags.csv", "links.csv",
               "genome-scores.csv", "genome-tags.csv"}


def load_movielens(
    path: str | Path,
    *,
    ratings_file: str | None = None,
    encoding: str | None = None,
    tags: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load a MovieLens release from its directory or from its ratings file.

    Movies of the item file without ratings are kept (see the module
    docstring); users of the user file without ratings are dropped.

    Args:
        path: the release directory (``ml-100k/``, ``ml-1m/``, ``ml-latest-small/``)
            or a ratings file inside it; side files are looked for beside it.
        ratings_file: name of the ratings file in the directory when it is not
            the standard one (``u1.base``, ``ratings_first10_per_user.dat``).
            Its extension picks the layout: ``.dat`` 1M/10M, ``.csv`` ml-latest,
            anything else 100K.
        encoding: text encoding of every file; default: UTF-8 when valid, else Latin-1.
        tags: for ml-latest, add the movies' tags from ``tags.csv`` as a text field.
        name: dataset name; default: the directory name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("MovieLens path not found", path=path,
                         expected="a MovieLens directory or ratings file")
    if path.is_dir():
        folder = path
        ratings = folder / ratings_file if ratings_file else _standard_ratings(folder)
    else:
        folder, ratings = path.parent, path
    ratings = require_file(ratings, "MovieLens ratings file")
    name = name or folder.resolve().name
    if tags and ratings.suffix != ".csv":
        raise InputError("tags (tags=True / --tags) are for ml-latest (ratings.csv + tags.csv)", path=ratings,
                         expected="no tags for the 100K, 1M and 10M layouts")
    if ratings.suffix == ".csv":
        inter, items, users = _latest(folder, ratings, encoding, tags)
    elif ratings.suffix == ".dat":
        inter, items, users = _dat(folder, ratings, encoding)
    else:
        inter, items, users = _100k(folder, ratings, encoding)
    text_fields = _TEXT_FIELDS + (("tags",) if items is not None and "tags" in items.columns else ())
    return Dataset.from_frame(inter, name=name, item_attrs=items, user_attrs=users,
                              text_fields=text_fields if items is not None else (), source=str(ratings))


def _standard_ratings(folder: Path) -> Path:
    for candidate in ("u.data", "ratings.dat", "ratings.csv"):
        if (folder / candidate).is_file():
            return folder / candidate
    others = sorted(p.name for p in folder.iterdir()
                    if p.is_file() and p.suffix in (".dat", ".csv") and p.name not in _SIDE_FILES)
    hint = (f"Found {others}; choose one with ratings_file='{others[0]}' / --ratings-file {others[0]}."
            if others else None)
    raise InputError("no MovieLens ratings file in the directory", path=folder,
                     expected="u.data (100K), ratings.dat (1M/10M) or ratings.csv (ml-latest)", hint=hint)


# ---------------------------------------------------------------- layouts
def _100k(folder: Path, ratings: Path, encoding: str | None
          ) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    inter = _read_ratings(ratings, "\t", encoding)
    items = users = None
    if (folder / "u.item").is_file():
        genres = GENRES_100K
        if (folder / "u.genre").is_file():
            table = _read_fields(folder / "u.genre", "|", ["genre", "index"], encoding=encoding,
                                 required=["genre", "index"])
            genres = tuple(table.sort(pl.col("index").cast(pl.Int64, strict=False))
                           .get_column("genre").to_list())
        flags = [f"_g{k}" for k in range(len(genres))]
        raw = _read_fields(folder / "u.item", "|",
                           ["item_id", "raw_title", "release_date", "video_release_date", "imdb_url", *flags],
                           encoding=encoding, required=["item_id"])
        named = [pl.when(pl.col(f) == "1").then(pl.lit(g)) for f, g in zip(flags, genres) if g not in _NO_GENRE]
        items = raw.select(
            "item_id",
            *_title_year("raw_title"),
            pl.concat_str(named, separator=" ", ignore_nulls=True).alias("genres"),
            "release_date",
            "imdb_url",
        ).with_columns(
            pl.coalesce("year", pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int32)),
            pl.when(pl.col("genres") != "").then(pl.col("genres")),
        )
    if (folder / "u.user").is_file():
        users = _read_fields(folder / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip_code"],
                             encoding=encoding, required=["user_id"])
        users = _numbers(users, ["age"], folder / "u.user", dtype=pl.Int32).drop("_line")
    return inter, items, users


def _dat(folder: Path, ratings: Path, encoding: str | None
         ) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    inter = _read_ratings(ratings, "::", encoding)
    items = users = None
    if (folder / "movies.dat").is_file():
        raw = _read_fields(folder / "movies.dat", "::", ["item_id", "raw_title", "raw_genres"],
                           encoding=encoding, required=["item_id", "raw_title"])
        items = raw.select("item_id", *_title_year("raw_title"), _genres("raw_genres"))
    if (folder / "users.dat").is_file():
        users = _read_fields(folder / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip_code"],
                             encoding=encoding, required=["user_id"])
        users = (_numbers(users, ["age"], folder / "users.dat", dtype=pl.Int32)
                 .select("user_id", "age", "gender", pl.col("occupation").replace(OCCUPATIONS_1M), "zip_code"))
    return inter, items, users


def _latest(folder: Path, ratings: Path, encoding: str | None, tags: bool
            ) -> tuple[pl.DataFrame, pl.DataFrame | None, None]:
    raw = _read_csv(ratings, {"userId": "user_id", "movieId": "item_id", "rating": "rating",
                              "timestamp": "timestamp"}, encoding)
    inter = _numbers(raw, ["rating", "timestamp"], ratings).drop("_line")
    items = None
    if (folder / "movies.csv").is_file():
        raw = _read_csv(folder / "movies.csv", {"movieId": "item_id", "title": "raw_title",
                                                "genres": "raw_genres"}, encoding)
        items = raw.select("item_id", *_title_year("raw_title"), _genres("raw_genres"))
        if tags:
            items = items.join(_tags(folder / "tags.csv", encoding), on="item_id", how="left")
    elif tags:
        raise InputError("tags (tags=True / --tags) need movies.csv beside the ratings", path=folder / "movies.csv",
                         expected="an existing file")
    return inter, items, None


def _tags(path: Path, encoding: str | None) -> pl.DataFrame:
    """One row per movie: its distinct lower-cased tags, most-applied first, ``|``-joined."""
    raw = _read_csv(require_file(path, "MovieLens tags file"),
                    {"userId": "user_id", "movieId": "item_id", "tag": "tag"}, encoding)
    counted = (raw.with_columns(pl.col("tag").str.strip_chars().str.to_lowercase())
               .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
               .group_by("item_id", "tag").agg(pl.col("user_id").n_unique().alias("n")))
    return (counted.sort(["item_id", "n", "tag"], descending=[False, True, False])
            .group_by("item_id", maintain_order=True).agg(pl.col("tag").str.join("|").alias("tags")))


# ---------------------------------------------------------------- parsing
def _title_year(column: str) -> list[pl.Expr]:
    raw = pl.col(column).str.strip_chars()
    return [pl.coalesce(raw.str.extract(_TITLE_YEAR, 1), raw).alias("title"),
            raw.str.extract(_TITLE_YEAR, 2).cast(pl.Int32).alias("year")]


def _genres(column: str) -> pl.Expr:
    raw = pl.col(column).str.strip_chars()
    return pl.when(raw.is_in(_NO_GENRE).not_() & (raw != "")).then(raw.str.replace_all("|", " ", literal=True)
                                                                   ).alias("genres")


def _decode(path: Path, encoding: str | None) -> str:
    data = path.read_bytes()
    if encoding is not None:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise InputError(f"cannot decode the file as {encoding}: {exc}", path=path,
                             expected="text in the encoding chosen with encoding= / --encoding, "
                                      "e.g. 'utf-8' or 'latin-1'") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_ratings(path: Path, sep: str, encoding: str | None) -> pl.DataFrame:
    return _read_fields(path, sep, _RATING_COLUMNS, encoding=encoding, required=_RATING_COLUMNS,
                        numeric=["rating", "timestamp"]).drop("_line")


def _read_fields(path: Path, sep: str, columns: list[str], *, encoding: str | None,
                 required: list[str], numeric: list[str] | None = None) -> pl.DataFrame:
    """Read a header-less, unquoted file of ``sep``-separated fields.

    Columns are strings except ``numeric`` ones (float64). Adds ``_line``
    (1-based file line), skips blank lines and raises InputError naming the
    line for a wrong number of fields, an empty required field or a bad number.
    """
    numeric = numeric or []
    path = require_file(path)
    text = _decode(path, encoding)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip():
        raise InputError("empty file", path=path, expected=f"at least one line of {sep.join(columns)}")
    polars_sep = sep
    if len(sep) > 1:  # polars splits on one byte: stand in a character the file lacks
        polars_sep = next((c for c in "\t\x1f\x1e\x1d" if c not in text), "")
        if not polars_sep:
            raise InputError(f"cannot split the file on {sep!r}", path=path,
                             expected="no tab or ASCII control characters in the text")
        text = text.replace(sep, polars_sep)
    data = text.encode("utf-8")
    options = {"separator": polars_sep, "has_header": False, "quote_char": None}
    try:  # fast path: polars parses the numbers
        df = pl.read_csv(data, schema={c: pl.Float64 if c in numeric else pl.String for c in columns},
                         **options)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
        try:  # slow path, to name the bad line: read text, check, then parse the numbers
            df = pl.read_csv(data, schema=dict.fromkeys(columns, pl.String), **options)
        except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
            raise _field_count_error(path, text, polars_sep, sep, columns, None) from None
    df = df.with_row_index("_line", offset=1)
    blank = pl.all_horizontal(pl.col(c).is_null() for c in columns)
    for column in required:
        missing = df.filter(pl.col(column).is_null() & ~blank)
        if missing.height:
            raise _field_count_error(path, text, polars_sep, sep, columns,
                                     (int(missing.get_column("_line")[0]), column))
    df = df.filter(~blank)
    return _numbers(df, [c for c in numeric if df.schema[c] == pl.String], path)


def _field_count_error(path: Path, text: str, polars_sep: str, sep: str, columns: list[str],
                       empty: tuple[int, str] | None) -> InputError:
    """The error for the first line with the wrong number of fields (or ``empty``'s field)."""
    expected = f"{len(columns)} fields separated by {sep!r}"
    for number, line in enumerate(text.split("\n"), start=1):
        if empty is not None and number < empty[0]:
            continue
        got = len(line.split(polars_sep))
        if line.strip() and got != len(columns):
            shown = line.replace(polars_sep, sep)
            others = [s for s in _SEPARATORS if s != sep and s in shown]
            hint = f"The line looks separated by {others[0]!r}, not {sep!r}." if got == 1 and others else None
            return InputError(f"{got} field(s) on the line", path=path, line=number, value=shown,
                              expected=expected, hint=hint)
        if empty is not None:
            return InputError("empty field", path=path, line=number, column=empty[1],
                              value=line.replace(polars_sep, sep), expected="a value")
    return InputError("cannot parse the file", path=path, expected=expected)


def _read_csv(path: Path, columns: dict[str, str], encoding: str | None) -> pl.DataFrame:
    """Read a CSV with a header; keep and rename ``columns`` (all required), as strings.

    Adds ``_line`` (the file line when no quoted field spans lines) and skips blank lines.
    """
    path = require_file(path)
    text = _decode(path, encoding)
    if not text.strip():
        raise InputError("empty file", path=path, line=1,
                         expected=f"a header line {','.join(columns)} and at least one data row")
    try:
        df = pl.read_csv(text.encode("utf-8"), infer_schema=False)
    except pl.exceptions.ComputeError as exc:
        raise InputError(f"cannot parse the CSV: {str(exc).splitlines()[0]}", path=path,
                         expected="comma-separated values with a header") from None
    for column in columns:
        if column not in df.columns:
            hint = None
            if len(df.columns) == 1:
                hint = "The header has one column: the file does not look comma separated."
            raise InputError("missing column", path=path, line=1, column=column,
                             expected=f"a header with {', '.join(columns)} (found {df.columns})", hint=hint)
    df = df.with_row_index("_line", offset=2).select(
        "_line", *[pl.col(k).alias(v) for k, v in columns.items()])
    df = df.filter(~pl.all_horizontal(pl.col(c).is_null() for c in columns.values()))
    if df.height == 0:
        raise InputError("no data rows under the header", path=path, line=2,
                         expected=f"a header line {','.join(columns)} and at least one data row")
    for column, renamed in columns.items():
        missing = df.filter(pl.col(renamed).is_null())
        if missing.height:
            raise InputError("empty field", path=path, line=int(missing.get_column("_line")[0]),
                             column=column, expected="a value")
    return df


def _numbers(df: pl.DataFrame, columns: list[str], path: Path, *,
             dtype: type[pl.DataType] = pl.Float64) -> pl.DataFrame:
    """Cast string columns of a frame with ``_line`` to numbers, naming the first bad value."""
    for column in columns:
        raw = pl.col(column)
        parsed = raw.cast(dtype, strict=False)
        if df.select((parsed.is_null() & raw.is_not_null()).any()).item():
            parsed = raw.str.strip_chars().cast(dtype, strict=False)
            bad = df.filter(parsed.is_null() & (raw.str.strip_chars() != ""))
            if bad.height:
                kind = "an integer" if dtype.is_integer() else "a number"
                raise InputError(f"not {kind}", path=path, line=int(bad.get_column("_line")[0]),
                                 column=column, value=bad.get_column(column)[0], expected=kind)
        df = df.with_columns(parsed)
    return df
