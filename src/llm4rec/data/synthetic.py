"""Synthetic interaction data with meaningful text and a planted, known answer.

``make_synthetic()`` is the quickstart's embedded dataset and the known-answer
data of the tests. It is a fair small problem: personalised models beat
popularity clearly, but within-genre choice is random enough that nobody gets
near-perfect hit rates. The generative process, in order (one
``np.random.default_rng(seed)`` drives every draw, so a seed fixes the data):

Genres
    The first ``n_genres`` entries of :data:`GENRES`, each a name and a
    hand-written vocabulary of 25 words; vocabularies are disjoint. Genre
    shares ``s ~ Dirichlet(8)`` make some genres larger than others.

Items
    Primary genre ``~ s``; with probability 0.25 also a secondary genre.
    Quality ``q ~ LogNormal(0, 1.25)`` gives heavy-tailed popularity. Runs of
    items of one genre form series of 2-4 installments (about 35% of items);
    installment ``k`` has quality ``q_first * 0.7**(k-1)``, a later year and
    the title ``"<base> II"`` etc. Titles are 2-4 words (genre words plus
    :data:`FILLER_WORDS`), unique (``"Edition 2"`` is appended to a repeated
    base). Descriptions are one sentence of genre words and filler; about 10%
    carry one off-topic word from another genre. Release years lean recent
    (``2024 - Exponential(15)``, not before 1960). Item ids are shuffled, so
    an id says nothing about the genre.

Users
    One preferred genre (half of users) or two, the first drawn ``~ s``; planted
    weights ``w1 ~ U(0.5, 0.85)``, ``w2 = 1 - w1``. An age bucket sets a
    preferred release era; items far from it are chosen less often. Some
    profiles (40%) name a favourite genre, and 20% of those name a wrong one.

Interactions
    Each user has ``n ~ LogUniform(lo, hi + 1)`` interactions, ``(lo, hi) =
    interactions_per_user``. Position ``t`` in [0, 1] of the sequence is
    exploration noise with probability ``noise`` (an item drawn by quality
    alone), otherwise it comes from the second genre with probability
    ``w2 * (0.5 + t)`` (taste drifts towards it; on average it is ``w2``) and
    from the first genre otherwise. Within a genre, items are drawn without
    replacement with weight ``quality * era affinity`` (secondary-genre items
    at half weight). After an installment, the next one follows immediately
    with probability 0.5, and a user's installments of a series always come in
    order. Timestamps increase strictly (gaps of about two days). Ratings 1-5
    rise with how well the item's genres match the user's and with quality.

``make_synthetic(return_truth=True)`` also returns the planted
:class:`SyntheticTruth`, aligned with the dataset's vocabulary indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm4rec.data.dataset import Dataset
from llm4rec.errors import InputError

__all__ = ["FILLER_WORDS", "GENRES", "SyntheticConfig", "SyntheticTruth", "make_synthetic"]

#: genre name -> its vocabulary (25 distinct words; no word is in two genres)
GENRES: dict[str, tuple[str, ...]] = {
    "space opera": ("starship", "galaxy", "captain", "nebula", "asteroid", "orbit", "alien", "comet",
                    "planet", "rocket", "station", "empire", "rebel", "pilot", "cosmos", "quasar",
                    "warp", "moon", "satellite", "voyager", "astronaut", "meteor", "eclipse",
                    "stardust", "hyperdrive"),
    "cooking": ("recipe", "garlic", "kitchen", "oven", "basil", "pasta", "bread", "spice", "soup",
                "chef", "butter", "lemon", "saffron", "noodle", "pastry", "skillet", "ginger",
                "tomato", "feast", "bakery", "dumpling", "honey", "pepper", "cinnamon", "olive"),
    "mystery": ("detective", "clue", "alibi", "suspect", "inspector", "fingerprint", "witness",
                "secret", "riddle", "cipher", "magnifier", "footprint", "motive", "case", "lantern",
                "shadow", "puzzle", "evidence", "manor", "butler", "disguise", "whisper", "locket",
                "keyhole", "verdict"),
    "fantasy": ("dragon", "wizard", "castle", "sword", "quest", "elf", "spell", "kingdom", "potion",
                "knight", "dwarf", "amulet", "enchanted", "sorcerer", "throne", "griffin", "unicorn",
                "prophecy", "rune", "goblin", "scroll", "tower", "crown", "phoenix", "realm"),
    "wildlife": ("forest", "river", "eagle", "wolf", "meadow", "glacier", "coral", "canyon",
                 "savanna", "bison", "otter", "heron", "fern", "tundra", "waterfall", "reef", "owl",
                 "badger", "prairie", "rainforest", "butterfly", "salmon", "lynx", "migration",
                 "hedgehog"),
    "sports": ("football", "stadium", "champion", "coach", "goal", "marathon", "league", "striker",
               "trophy", "tournament", "racket", "sprint", "medal", "referee", "dribble", "rookie",
               "playoff", "pitch", "victory", "team", "training", "relay", "hurdle", "underdog",
               "scoreboard"),
    "romance": ("love", "wedding", "heart", "letter", "rose", "sweetheart", "promise", "dance",
                "moonlight", "bouquet", "candle", "serenade", "valentine", "courtship", "proposal",
                "picnic", "ballroom", "blush", "cupid", "sonnet", "darling", "longing", "reunion",
                "summer", "kindred"),
    "music": ("guitar", "melody", "rhythm", "concert", "piano", "violin", "chorus", "symphony",
              "drummer", "album", "orchestra", "harmony", "jazz", "tempo", "encore", "lyric",
              "studio", "tune", "trumpet", "festival", "bass", "anthem", "microphone", "vinyl",
              "ballad"),
    "history": ("pharaoh", "emperor", "dynasty", "revolution", "treaty", "monarch", "chronicle",
                "parliament", "archive", "pyramid", "legion", "renaissance", "medieval", "manuscript",
                "artifact", "senate", "cathedral", "century", "scribe", "ancient", "heritage",
                "ruins", "colosseum", "viking", "samurai"),
    "science": ("robot", "circuit", "algorithm", "laboratory", "quantum", "molecule", "experiment",
                "inventor", "microscope", "data", "code", "engine", "neuron", "battery", "laser",
                "atom", "gadget", "sensor", "prototype", "theory", "genome", "chemistry", "physics",
                "equation", "machine"),
    "comedy": ("prank", "giggle", "banana", "clown", "joke", "mishap", "sitcom", "pratfall",
               "blunder", "chuckle", "slapstick", "goofy", "punchline", "silly", "caper",
               "roommate", "hijinks", "pie", "parody", "sketch", "laughter", "hiccup", "quirky",
               "mayhem", "nonsense"),
    "travel": ("passport", "island", "jungle", "treasure", "expedition", "map", "compass", "safari",
               "backpack", "journey", "mountain", "desert", "harbor", "caravan", "explorer",
               "lagoon", "summit", "trek", "postcard", "oasis", "voyage", "sailboat", "cliff",
               "temple", "bazaar"),
}

_ADJECTIVES = ("gripping", "charming", "thoughtful", "lively", "gentle", "bold", "quiet",
               "sweeping", "warm", "clever", "tender", "playful")
_KINDS = ("story", "tale", "saga", "portrait", "fable", "collection")
_NUMERALS = ("", "II", "III", "IV")
_DESCRIPTIONS = (
    "A {a} {k} of {w0} and {w1}.",
    "A {a} {k} about {w0}, {w1} and {w2}.",
    "{A} and {b}: a {k} where the {w0} meets the {w1}.",
    "In this {a} {k}, a {w0} and a {w1} share one {w2}.",
)
_TITLES = ("The {W0} {W1}", "{W0} and the {W1}", "{W0} of the {W1}", "{W0} {W1}", "The {W0} {W1} {W2}")
_HOBBIES = ("weekend walks", "board games", "quiet evenings", "good coffee", "long train rides",
            "gardening", "crosswords")
_PROFILE_MENTION = ("Loves {g} and {h}.", "A big fan of {g}; also enjoys {h}.", "Mostly here for {g}.")
_PROFILE_PLAIN = ("Enjoys {h}.", "Likes {h} and a good story.", "New here; into {h}.")
_AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_SHARES = (0.15, 0.30, 0.25, 0.18, 0.12)
_ERA_BY_AGE = (2018.0, 2010.0, 2000.0, 1990.0, 1978.0)

#: words of titles and descriptions that belong to no genre
FILLER_WORDS: frozenset[str] = frozenset(
    {"the", "of", "and", "a", "about", "in", "this", "where", "meets", "share", "one", "edition",
     *(n.lower() for n in _NUMERALS if n), *_ADJECTIVES, *_KINDS})

_SECOND_GENRE_RATE = 0.25  # items with a secondary genre
_SECOND_GENRE_WEIGHT = 0.5  # their weight in the secondary genre's pool (and in rating affinity)
_POPULARITY_SIGMA = 1.25  # log-normal sigma of item quality
_SERIES_RATE = 0.35  # share of items in a series
_SEQUEL_DECAY = 0.7  # quality of installment k = first * decay**(k - 1)
_SEQUEL_RATE = 0.5  # chance the next installment follows immediately
_OFF_TOPIC_RATE = 0.1  # descriptions with one word from another genre
_TWO_GENRE_RATE = 0.5  # users with two preferred genres
_ERA_WIDTH = 12.0  # years: the width of a user's preferred era
_ERA_FLOOR = 0.25  # relative weight of items far outside the era
_PROFILE_MENTION_RATE = 0.4
_PROFILE_WRONG_RATE = 0.2
_START = 1_546_300_800.0  # 2019-01-01 UTC: users start between this and _START + 4 years
_MEAN_GAP = 2 * 86_400.0  # seconds between a user's interactions, on average
_OUTSIDE_POOL = -1e3  # log-weight offset: items outside a genre are drawn only once it runs out


class SyntheticConfig(BaseModel):
    """Settings of :func:`make_synthetic`; a misspelt key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(1000, ge=1)
    n_items: int = Field(800, ge=2)
    n_genres: int = Field(8, ge=2, le=len(GENRES), description="the first n of GENRES")
    interactions_per_user: tuple[int, int] = Field(
        (10, 60), description="(min, max) per user; log-uniform in between")
    noise: float = Field(0.2, ge=0.0, le=1.0, description="share of exploration interactions")
    seed: int = 2026

    @model_validator(mode="after")
    def _check_lengths(self) -> SyntheticConfig:
        lo, hi = self.interactions_per_user
        if not 1 <= lo <= hi <= self.n_items:
            raise ValueError(f"interactions_per_user must satisfy 1 <= min <= max <= n_items "
                             f"({self.n_items}), got {(lo, hi)}")
        return self


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The planted answer, indexed like the dataset's vocabularies and interaction rows.

    Attributes:
        genres: genre names; genre ``g`` is ``genres[g]`` with vocabulary ``GENRES[genres[g]]``.
        user_genre_weights: float64[n_users, n_genres], rows sum to 1: the planted
            taste averaged over the sequence (exploration noise aside).
        user_era: float64[n_users] preferred release year.
        item_genre: int64[n_items] primary genre.
        item_second_genre: int64[n_items] secondary genre, -1 for none.
        item_quality: float64[n_items] popularity weight.
        item_series: int64[n_items] series id, -1 for a standalone item.
        item_installment: int64[n_items] 1-based position in its series (1 if standalone).
        noise: bool[n_interactions] True for exploration interactions.
    """

    genres: tuple[str, ...]
    user_genre_weights: np.ndarray
    user_era: np.ndarray
    item_genre: np.ndarray
    item_second_genre: np.ndarray
    item_quality: np.ndarray
    item_series: np.ndarray
    item_installment: np.ndarray
    noise: np.ndarray

    def user_top_genre(self) -> np.ndarray:
        """int64[n_users]: each user's most preferred genre."""
        return np.argmax(self.user_genre_weights, axis=1)

    def item_genre_matrix(self) -> np.ndarray:
        """float64[n_items, n_genres]: 1 for the primary genre, 0.5 for the secondary."""
        m = np.zeros((len(self.item_genre), len(self.genres)))
        m[np.arange(len(self.item_genre)), self.item_genre] = 1.0
        has2 = self.item_second_genre >= 0
        m[np.flatnonzero(has2), self.item_second_genre[has2]] = _SECOND_GENRE_WEIGHT
        return m


@overload
def make_synthetic(n_users: int = ..., n_items: int = ..., n_genres: int = ..., *,
                   interactions_per_user: tuple[int, int] = ..., noise: float = ..., seed: int = ...,
                   return_truth: Literal[False] = ...) -> Dataset: ...
@overload
def make_synthetic(n_users: int = ..., n_items: int = ..., n_genres: int = ..., *,
                   interactions_per_user: tuple[int, int] = ..., noise: float = ..., seed: int = ...,
                   return_truth: Literal[True]) -> tuple[Dataset, SyntheticTruth]: ...
def make_synthetic(n_users: int = 1000, n_items: int = 800, n_genres: int = 8, *,
                   interactions_per_user: tuple[int, int] = (10, 60), noise: float = 0.2,
                   seed: int = 2026, return_truth: bool = False
                   ) -> Dataset | tuple[Dataset, SyntheticTruth]:
    """Generate the synthetic dataset (see the module docstring for the process).

    Returns a :class:`Dataset` named ``"synthetic"`` with ratings, item attributes
    ``title``, ``categories`` (genre names, comma separated), ``description``,
    ``year`` (text fields: title, categories, description) and user attributes
    ``age`` and ``profile``; with ``return_truth=True`` also the planted
    :class:`SyntheticTruth`. The catalogue holds the items drawn at least once,
    so it can be a little smaller than ``n_items`` (785 of 800 by default).
    ``make_synthetic(**SyntheticConfig(...).model_dump())`` runs a validated
    config. Bad settings raise :class:`InputError`.
    """
    try:
        cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_genres=n_genres,
                              interactions_per_user=interactions_per_user, noise=noise, seed=seed)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "interactions_per_user"
        raise InputError(f"bad synthetic-data setting {key!r}: {err['msg']}", value=err.get("input"),
                         expected=f"a valid {key}") from None
    return _generate(cfg, return_truth)


# --------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class _Items:
    """Items in generation order (grouped by primary genre; ids are assigned by a shuffle)."""

    genre: np.ndarray  # int64[I]
    second: np.ndarray  # int64[I], -1 for none
    quality: np.ndarray  # float64[I]
    series: np.ndarray  # int64[I], -1 for none
    installment: np.ndarray  # int64[I], 1-based
    next_item: np.ndarray  # int64[I], the next installment or -1
    year: np.ndarray  # int64[I]


@dataclass(frozen=True)
class _Users:
    weights: np.ndarray  # float64[U, G], rows sum to 1
    first: np.ndarray  # int64[U] favourite genre
    second: np.ndarray  # int64[U] second genre (weight 0 for one-genre users)
    era: np.ndarray  # float64[U] preferred release year
    age: np.ndarray  # int64[U] index into _AGE_BUCKETS
    profile: list[str]


def _generate(cfg: SyntheticConfig, return_truth: bool) -> Dataset | tuple[Dataset, SyntheticTruth]:
    rng = np.random.default_rng(cfg.seed)
    names = tuple(list(GENRES)[: cfg.n_genres])
    share = rng.dirichlet(np.full(cfg.n_genres, 8.0))
    items = _make_items(rng, cfg.n_items, share)
    titles, descriptions = _item_text(rng, items, names)
    users = _make_users(rng, cfg.n_users, share, names)
    user, item, noise = _interactions(rng, cfg, items, users)
    timestamp = _timestamps(rng, user, cfg.n_users)
    rating = _ratings(rng, user, item, items, users.weights)

    perm = rng.permutation(cfg.n_items)  # generation index -> item id - 1
    categories = [", ".join(names[g] for g in ((a,) if b < 0 else (a, b)))
                  for a, b in zip(items.genre.tolist(), items.second.tolist())]
    ds = Dataset.from_frame(
        pl.DataFrame({"user_id": user + 1, "item_id": perm[item] + 1, "timestamp": timestamp,
                      "rating": rating}),
        name="synthetic",
        item_attrs=pl.DataFrame({"item_id": perm + 1, "title": titles, "categories": categories,
                                 "description": descriptions, "year": items.year}),
        user_attrs=pl.DataFrame({"user_id": np.arange(1, cfg.n_users + 1),
                                 "age": [_AGE_BUCKETS[a] for a in users.age], "profile": users.profile}),
        text_fields=("title", "categories", "description"),
        keep_item_table=False,  # the catalogue is the generated interactions' items, as documented
    )
    if not return_truth:
        return ds
    u_idx = ds.users.index(range(1, cfg.n_users + 1))  # generation user -> dataset index
    i_idx = np.full(cfg.n_items, -1, dtype=np.int64)  # generation item -> dataset index
    in_catalogue = np.bincount(item, minlength=cfg.n_items) > 0
    i_idx[in_catalogue] = ds.items.index((perm[in_catalogue] + 1).tolist())

    def by_item(a: np.ndarray) -> np.ndarray:
        out = np.empty(ds.n_items, dtype=a.dtype)
        out[i_idx[in_catalogue]] = a[in_catalogue]
        return out

    def by_user(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        out[u_idx] = a
        return out

    rows = np.lexsort((i_idx[item], timestamp, u_idx[user]))  # the dataset's row order
    truth = SyntheticTruth(
        genres=names, user_genre_weights=by_user(users.weights), user_era=by_user(users.era),
        item_genre=by_item(items.genre), item_second_genre=by_item(items.second),
        item_quality=by_item(items.quality), item_series=by_item(items.series),
        item_installment=by_item(items.installment), noise=noise[rows],
    )
    return ds, truth


def _make_items(rng: np.random.Generator, n: int, share: np.ndarray) -> _Items:
    n_genres = len(share)
    genre = np.sort(rng.choice(n_genres, n, p=share))
    other = (genre + rng.integers(1, n_genres, n)) % n_genres
    second = np.where(rng.random(n) < _SECOND_GENRE_RATE, other, -1)
    quality = rng.lognormal(0.0, _POPULARITY_SIGMA, n)
    year = np.maximum(1960, 2024 - np.floor(rng.exponential(15.0, n))).astype(np.int64)
    # A series of mean length 3 starts at an item with probability p, so the share
    # of items in series is 3p / (1 + 2p); solve for p.
    starts = rng.random(n) < _SERIES_RATE / (3.0 - 2.0 * _SERIES_RATE)
    lengths = rng.integers(2, 5, n)
    year_steps = rng.integers(1, 4, n)
    run_end = np.searchsorted(genre, genre, side="right")  # series stay within one genre
    series = np.full(n, -1, dtype=np.int64)
    installment = np.ones(n, dtype=np.int64)
    next_item = np.full(n, -1, dtype=np.int64)
    i = n_series = 0
    while i < n:  # one step per series or standalone item
        length = min(int(lengths[i]), int(run_end[i]) - i) if starts[i] else 1
        if length >= 2:
            s = slice(i, i + length)
            series[s] = n_series
            installment[s] = np.arange(1, length + 1)
            next_item[i:i + length - 1] = np.arange(i + 1, i + length)
            second[s] = second[i]
            quality[s] = quality[i] * _SEQUEL_DECAY ** np.arange(length)
            year[s] = np.minimum(2024, year[i] + np.cumsum(np.r_[0, year_steps[i + 1:i + length]]))
            n_series += 1
        i += length
    return _Items(genre, second, quality, series, installment, next_item, year)


def _item_text(rng: np.random.Generator, items: _Items,
               names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Titles (unique; installments add a numeral) and one-sentence descriptions."""
    n, n_genres = len(items.genre), len(names)
    vocab = [GENRES[g] for g in names]
    n_words = len(vocab[0])
    title_words = rng.random((n, n_words)).argsort(axis=1)[:, :3]  # distinct word indices
    desc_words = rng.random((n, n_words)).argsort(axis=1)[:, :3]
    title_tmpl = rng.integers(0, len(_TITLES), n)
    second_in_title = rng.random(n) < 0.5
    desc_tmpl = rng.integers(0, len(_DESCRIPTIONS), n)
    adjective = rng.integers(0, len(_ADJECTIVES), n)
    adjective_2 = (adjective + rng.integers(1, len(_ADJECTIVES), n)) % len(_ADJECTIVES)  # another one
    kinds = rng.integers(0, len(_KINDS), n)
    off_topic = rng.random(n) < _OFF_TOPIC_RATE
    off_genre = rng.integers(1, n_genres, n)
    off_word = rng.integers(0, n_words, n)

    titles: list[str] = []
    descriptions: list[str] = []
    base_count: dict[str, int] = {}
    series_base: dict[int, str] = {}
    for i in range(n):
        g, g2 = int(items.genre[i]), int(items.second[i])
        words = [vocab[g][w] for w in title_words[i]]
        if g2 >= 0 and second_in_title[i]:
            words[1] = vocab[g2][title_words[i, 1]]
        if items.installment[i] == 1:
            base = _TITLES[title_tmpl[i]].format(**{f"W{j}": w.capitalize()
                                                    for j, w in enumerate(words)})
            base_count[base] = base_count.get(base, 0) + 1
            if base_count[base] > 1:
                base = f"{base} Edition {base_count[base]}"
            series_base[int(items.series[i])] = base
            titles.append(base)
        else:
            titles.append(f"{series_base[int(items.series[i])]} {_NUMERALS[items.installment[i] - 1]}")

        words = [vocab[g][w] for w in desc_words[i]]
        if g2 >= 0:
            words[1] = vocab[g2][desc_words[i, 1]]
        if off_topic[i]:
            other = (g + off_genre[i]) % n_genres
            words[0] = vocab[other][off_word[i]]
        a, b = _ADJECTIVES[adjective[i]], _ADJECTIVES[adjective_2[i]]
        descriptions.append(_DESCRIPTIONS[desc_tmpl[i]].format(
            a=a, A=a.capitalize(), b=b, k=_KINDS[kinds[i]], **{f"w{j}": w for j, w in enumerate(words)}))
    return titles, descriptions


def _make_users(rng: np.random.Generator, n: int, share: np.ndarray, names: tuple[str, ...]) -> _Users:
    n_genres = len(share)
    first = rng.choice(n_genres, n, p=share)
    second = (first + rng.integers(1, n_genres, n)) % n_genres
    w1 = np.where(rng.random(n) < _TWO_GENRE_RATE, rng.uniform(0.5, 0.85, n), 1.0)
    weights = np.zeros((n, n_genres))
    weights[np.arange(n), first] = w1
    weights[np.arange(n), second] += 1.0 - w1
    age = rng.choice(len(_AGE_BUCKETS), n, p=_AGE_SHARES)
    era = np.asarray(_ERA_BY_AGE)[age] + rng.normal(0.0, 5.0, n)

    mention = rng.random(n) < _PROFILE_MENTION_RATE
    wrong = (first + rng.integers(1, n_genres, n)) % n_genres
    named = np.where(rng.random(n) < _PROFILE_WRONG_RATE, wrong, first)
    tmpl = rng.integers(0, 3, n)
    hobby = rng.integers(0, len(_HOBBIES), n)
    profile = [(_PROFILE_MENTION if m else _PROFILE_PLAIN)[t].format(g=names[g], h=_HOBBIES[h])
               for m, g, t, h in zip(mention.tolist(), named.tolist(), tmpl.tolist(), hobby.tolist())]
    return _Users(weights, first, second, era, age, profile)


def _interactions(rng: np.random.Generator, cfg: SyntheticConfig, items: _Items,
                  users: _Users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, noise) per interaction, users ascending, each user's rows in time order."""
    n_users, n_items, n_genres = cfg.n_users, cfg.n_items, cfg.n_genres
    lo, hi = cfg.interactions_per_user
    counts = np.clip(np.floor(np.exp(rng.uniform(math.log(lo), math.log(hi + 1), n_users))), lo, hi)
    counts = counts.astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    user = np.repeat(np.arange(n_users), counts)
    t = (np.arange(len(user)) - offsets[user]) / np.maximum(counts - 1, 1)[user]  # position in [0, 1]

    # Which pool each position draws from: a preferred genre (drifting) or exploration (= n_genres).
    w2 = users.weights[user, users.second[user]]
    genre = np.where(rng.random(len(user)) < w2 * (0.5 + t), users.second[user], users.first[user])
    source = np.where(rng.random(len(user)) < cfg.noise, n_genres, genre)

    log_q = np.log(items.quality)
    member = np.where(items.genre[None, :] == np.arange(n_genres)[:, None], 0.0,
                      np.where(items.second[None, :] == np.arange(n_genres)[:, None],
                               math.log(_SECOND_GENRE_WEIGHT), _OUTSIDE_POOL))  # (G, I)
    pool = np.vstack([member + log_q, log_q])  # (G + 1, I) log-weights; last row: exploration
    out_items, out_noise = [], []
    taken = np.zeros(n_items, dtype=bool)
    for u in range(n_users):  # draws without replacement need the user's earlier picks
        src = source[offsets[u]:offsets[u + 1]]
        chosen = np.empty(len(src), dtype=np.int64)
        log_era = np.log(_ERA_FLOOR + (1.0 - _ERA_FLOOR) * np.exp(
            -0.5 * ((items.year - users.era[u]) / _ERA_WIDTH) ** 2))  # (I,)
        for s in np.unique(src):
            slots = np.flatnonzero(src == s)
            keys = pool[s] + rng.gumbel(size=n_items) + (log_era if s < n_genres else 0.0)
            keys[taken] = -np.inf
            # Gumbel top-k: a weighted draw without replacement.
            pick = np.argpartition(-keys, len(slots) - 1)[:len(slots)]
            rng.shuffle(pick)
            chosen[slots] = pick
            taken[pick] = True
        is_noise = src == n_genres
        # A sequel often follows right away (a sequel of a noise pick counts as noise).
        nxt = items.next_item[chosen]
        follow = np.flatnonzero((nxt >= 0) & ~taken[np.maximum(nxt, 0)]
                                & (rng.random(len(chosen)) < _SEQUEL_RATE))
        chosen = np.insert(chosen, follow + 1, nxt[follow])
        is_noise = np.insert(is_noise, follow + 1, is_noise[follow])
        # Installments of one series always come in order: permute the series items among their slots.
        slots = np.flatnonzero(items.series[chosen] >= 0)
        sid = items.series[chosen[slots]]
        gather = np.arange(len(chosen))
        by_time = np.lexsort((slots, sid))
        by_installment = np.lexsort((items.installment[chosen[slots]], sid))
        gather[slots[by_time]] = slots[by_installment]
        taken[chosen] = False
        out_items.append(chosen[gather][:len(src)])
        out_noise.append(is_noise[gather][:len(src)])
    return user, np.concatenate(out_items), np.concatenate(out_noise)


def _timestamps(rng: np.random.Generator, user: np.ndarray, n_users: int) -> np.ndarray:
    """float64 seconds, strictly increasing within each user (rows are in time order)."""
    counts = np.bincount(user, minlength=n_users)
    start = rng.uniform(_START, _START + 4 * 365 * 86_400.0, n_users)
    gaps = np.round(rng.exponential(_MEAN_GAP, len(user))) + 60.0
    elapsed = np.cumsum(gaps)
    first_row = np.cumsum(counts) - counts
    return start[user] + elapsed - np.repeat(elapsed[first_row], counts)


def _ratings(rng: np.random.Generator, user: np.ndarray, item: np.ndarray, items: _Items,
             weights: np.ndarray) -> np.ndarray:
    """1-5 stars: higher when the item's genres match the user's taste and for better items."""
    g2 = items.second[item]
    affinity = weights[user, items.genre[item]] + np.where(
        g2 >= 0, _SECOND_GENRE_WEIGHT * weights[user, np.maximum(g2, 0)], 0.0)
    match = np.minimum(1.0, affinity / weights[user].max(axis=1))  # 1 = as good as the favourite genre
    z_quality = (np.log(items.quality[item]) - np.log(items.quality).mean()) / _POPULARITY_SIGMA
    stars = 1.8 + 2.6 * match + 0.35 * z_quality + rng.normal(0.0, 0.7, len(user))
    return np.clip(np.rint(stars), 1, 5).astype(np.float32)
