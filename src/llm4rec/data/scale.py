"""Synthetic interaction logs at scale (1M-100M interactions, 100k-10M items) with a known answer.

``generate_scale(out, n_interactions, n_items)`` writes a directory that
:func:`llm4rec.data.load_dataset` reads (the layout of
``save_dataset(to="parquet")``) plus the planted structure, so accuracy can be
checked at every size:

===========================  =====================================================================
file                         contents
===========================  =====================================================================
``interactions.parquet``     ``user_id``, ``item_id``, ``timestamp`` (int64; per user, in time order)
``items.parquet``            ``item_id``, ``title``, ``category``, ``description`` (one row per item)
``dataset.json``             name and text fields, as :func:`~llm4rec.data.export.save_dataset` writes
``truth_items.parquet``      ``item_id``, ``topic``, ``rank`` (popularity rank in the topic, 0 = most
                             popular), ``successor`` (an item id)
``truth_users.parquet``      ``user_id``, ``topic``, ``length``
``truth.json``               the process's parameters, topic shares, the expected in-topic share and
                             reference accuracies (an oracle that knows the process, and two weaker ones)
===========================  =====================================================================

The process (every draw is a counter-based hash of ``(seed, stream, user or
item, position, attempt)``, so the output does not depend on ``chunk_users``):

Topics and items
    ``n_topics`` topics of (nearly) equal size, shares ``pi ~ Dirichlet(2)``
    (a user's topic and the noise topic are drawn from ``pi``). Within a topic,
    the item of popularity rank ``r`` has weight ``z(r) = (r + 1)^-a / H`` (Zipf,
    ``a = ZIPF_EXPONENT``, normalised per topic). Each topic's items form one
    random cycle: ``successor(i)`` is the next item of that cycle (same topic).
    Item ids are a random permutation, so an id says nothing about the topic.
    Text: every topic has a genre (from :data:`~llm4rec.data.synthetic.GENRES`)
    and 8 pseudo-words of its own; titles and descriptions mix them, and
    ``category`` names the genre and the topic's first pseudo-word.

Users
    One topic ``t_u ~ pi``; a length of at least ``MIN_LENGTH`` (log-normal
    spread, capped, scaled so the lengths sum to ``n_interactions`` exactly).

Sequences
    The next item is drawn from ``q(j) = p_s 1[j = successor(prev)] + p_t z_{t_u}(j)
    + p_n pi_{topic(j)} z_{topic(j)}(j)`` restricted to the items the user has not
    seen (rejection sampling; the first item has no successor term). Timestamps
    are strictly increasing (gaps of about a day).

Reference accuracy (``truth.json["reference"]``), under P-LOO's test stage
(the last item is the target, every earlier item is masked): the *oracle* ranks
unseen items by ``q`` itself; *topic_oracle* drops the successor term (it knows
the user's topic, not the sequence rule); *popularity* ranks by the planted
global weight ``pi_t z_t`` (what a popularity model approaches). Each has the
realised HR/NDCG/MRR at 10 and 20 on the generated targets, and their expectation
under ``q`` (``expected``). A learned model should land between popularity and
the oracle.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.errors import InputError

__all__ = ["ScaleSettings", "generate_scale", "read_truth"]

FORMAT = "llm4rec-scale/1"
P_SUCCESSOR = 0.5  # the next item is the successor of the previous one
P_TOPIC = 0.35  # ... a Zipf draw from the user's topic
P_NOISE = 0.15  # ... a Zipf draw from a topic drawn by its share
ZIPF_EXPONENT = 1.0
MIN_LENGTH = 5
MAX_LENGTH = 250  # also at most a quarter of the smallest topic
LENGTH_SIGMA = 0.75  # log-normal spread of the lengths
TOPIC_CONCENTRATION = 2.0  # Dirichlet parameter of the topic shares
MIN_TOPIC_SIZE = 40
KS = (10, 20)  # reference metrics at these cutoffs
WORDS_PER_TOPIC = 8
START = 1_577_836_800  # 2020-01-01 UTC; users start within two years of it
START_SPREAD = 2 * 365 * 86_400
MEAN_GAP = 86_400  # seconds
ROW_GROUP_ROWS = 1 << 20
ITEM_BLOCK = 1 << 18
_FIXED = float(1 << 32)  # fixed-point scale of order-independent sums
_MAX_ATTEMPTS = 4096

# hash streams
_S_USER_TOPIC, _S_LENGTH, _S_LENGTH2, _S_LENGTH_ORDER, _S_SEQ, _S_TIME, _S_START, _S_TEXT = range(1, 9)

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_ADJECTIVES = ("gripping", "charming", "thoughtful", "lively", "gentle", "bold", "quiet", "sweeping")
_KINDS = ("story", "tale", "guide", "portrait", "collection", "study", "journey", "chronicle")


class ScaleSettings:
    """The resolved settings of one generation (sizes, topics, lengths), validated.

    Raises :class:`InputError` naming the setting when a size is impossible.
    """

    def __init__(self, n_interactions: int, n_items: int, n_users: int | None = None,
                 n_topics: int | None = None, seed: int = 2026) -> None:
        for name, value in (("n_interactions", n_interactions), ("n_items", n_items)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"bad size {name}", value=value, expected="a positive integer")
        n_interactions, n_items = int(n_interactions), int(n_items)
        if n_topics is None:
            n_topics = min(1000, max(10, n_items // 1000))
            n_topics = max(1, min(n_topics, n_items // MIN_TOPIC_SIZE))
        if n_users is None:
            n_users = max(1, n_interactions // 20)
        for name, value in (("n_users", n_users), ("n_topics", n_topics)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"bad size {name}", value=value, expected="a positive integer")
        n_users, n_topics = int(n_users), int(n_topics)
        if n_items // n_topics < MIN_TOPIC_SIZE:
            raise InputError("too few items per topic", value=f"{n_items} items in {n_topics} topics",
                             expected=f"at least {MIN_TOPIC_SIZE} items per topic (n_items >= "
                                      f"{MIN_TOPIC_SIZE * n_topics}, or fewer topics)")
        if n_topics * WORDS_PER_TOPIC > len(_pseudo_words_pool()):
            raise InputError("too many topics", value=n_topics,
                             expected=f"at most {len(_pseudo_words_pool()) // WORDS_PER_TOPIC}")
        self.max_length = min(MAX_LENGTH, (n_items // n_topics) // 4)
        if n_interactions < MIN_LENGTH * n_users:
            raise InputError("too few interactions for the users", value=f"{n_interactions} for {n_users} users",
                             expected=f"at least {MIN_LENGTH} per user (n_interactions >= {MIN_LENGTH * n_users})",
                             hint="Give fewer users or more interactions.")
        if n_interactions > self.max_length * n_users:
            raise InputError("too many interactions for the users", value=f"{n_interactions} for {n_users} users",
                             expected=f"at most {self.max_length} per user (the longest sequence this catalogue "
                                      f"allows): n_interactions <= {self.max_length * n_users}",
                             hint="Give more users or more items.")
        if not 0 <= seed < 2**63:
            raise InputError("bad seed", value=seed, expected="an integer in [0, 2**63)")
        self.n_interactions, self.n_items, self.n_users, self.n_topics, self.seed = (
            n_interactions, n_items, n_users, n_topics, int(seed))


def read_truth(path: str | Path) -> dict:
    """The ``truth.json`` of a generated directory (or the file itself), as a dict."""
    path = Path(path)
    if path.is_dir():
        path = path / "truth.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no truth.json", path=path, expected="a directory written by generate_scale") from None


def generate_scale(out_dir: str | Path, n_interactions: int, n_items: int, *, n_users: int | None = None,
                   n_topics: int | None = None, seed: int = 2026, chunk_users: int = 32_768,
                   row_group_rows: int = ROW_GROUP_ROWS, overwrite: bool = False,
                   progress: bool | Callable[[str, int, int], None] = True) -> Path:
    """Write a synthetic dataset with a planted structure into the directory ``out_dir``; return it.

    Args:
        out_dir: a new or empty directory (written as a temporary sibling, then renamed).
        n_interactions: exactly this many interactions (no duplicated user-item pairs).
        n_items: catalogue size; every item has a row in ``items.parquet``.
        n_users: default ``n_interactions // 20``.
        n_topics: default ``n_items // 1000`` clipped to [10, 1000] (and at least 40 items per topic).
        seed: the same seed gives byte-identical files, whatever ``chunk_users``.
        chunk_users: users generated at once; memory grows with it (about 2 KB per user), not with the total.
        row_group_rows: rows per Parquet row group (the last one of a file may be smaller).
        overwrite: replace ``out_dir`` when it holds an earlier output of this function.
        progress: a bar on stderr (True), none (False), or a callable ``(step, done, total)``.

    Raises :class:`InputError` for impossible sizes or an output directory in the way.
    """
    cfg = ScaleSettings(n_interactions, n_items, n_users, n_topics, seed)
    if not isinstance(chunk_users, (int, np.integer)) or chunk_users < 1:
        raise InputError("bad chunk_users", value=chunk_users, expected="a positive integer")
    if not isinstance(row_group_rows, (int, np.integer)) or row_group_rows < 1:
        raise InputError("bad row_group_rows", value=row_group_rows, expected="a positive integer")
    out = Path(out_dir)
    _check_out(out, overwrite)
    from llm4rec._atomic import atomic_dir

    with _reporter(progress) as report, atomic_dir(out, replace=overwrite) as tmp:
        world = _World(cfg)
        _write_items(world, tmp, row_group_rows, report)
        truth = _write_interactions(world, tmp, int(chunk_users), row_group_rows, report)
        meta = {"name": "synthetic-scale", "text_fields": ["title", "category", "description"]}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- output directory
_OUR_FILES = re.compile(r"^(dataset\.json|truth\.json|(interactions|items|truth_items|truth_users)\.parquet)$")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("the output path is a file", path=out, expected="a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError("the output directory is not empty", path=out, expected="a new or empty directory",
                             hint="Pass overwrite=True (--overwrite) to replace an earlier generated dataset there.")
        if not all(p.is_file() and _OUR_FILES.match(p.name) for p in out.iterdir()):
            raise InputError("the output directory holds other files, so it is not replaced", path=out,
                             expected="a new or empty directory, or one written by generate_scale")


@contextlib.contextmanager
def _reporter(progress: bool | Callable[[str, int, int], None]) -> Iterator[Callable[[str, int, int], None]]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda step, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        yield report


class _RowGroups:
    """A Parquet file written in row groups of exactly ``rows`` rows (the last may be smaller), so the file
    does not depend on how the rows were batched."""

    def __init__(self, path: Path, schema: Any, rows: int) -> None:
        import pyarrow.parquet as pq

        self.writer = pq.ParquetWriter(path, schema)
        self.rows, self.buffer, self.n = rows, [], 0

    def write(self, table: Any) -> None:
        import pyarrow as pa

        self.buffer.append(table)
        self.n += table.num_rows
        if self.n >= self.rows:
            whole = pa.concat_tables(self.buffer)
            start = 0
            while whole.num_rows - start >= self.rows:
                self.writer.write_table(whole.slice(start, self.rows), row_group_size=self.rows)
                start += self.rows
            rest = whole.slice(start)
            self.buffer, self.n = [rest], rest.num_rows

    def close(self) -> None:
        import pyarrow as pa

        if self.n:
            self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=self.rows)
        self.writer.close()


# --------------------------------------------------------------------------- hashing
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64[n] (a new array): a counter-based source of random bits."""
    z = x + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _key(seed: int, stream: int) -> np.uint64:
    return _mix(np.array([(seed * 0x100000001B3 + stream * 0xD6E8FEB86659FD93) % 2**64], dtype=np.uint64))[0]


def _hash(seed: int, stream: int, ids: np.ndarray) -> np.ndarray:
    """uint64[n]: bits for each id (int array) in one stream."""
    return _mix(ids.astype(np.uint64) * _GOLDEN ^ _key(seed, stream))


def _uniform(h: np.ndarray) -> np.ndarray:
    """float64[n] in [0, 1) from uint64 bits."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


# --------------------------------------------------------------------------- the planted world
class _World:
    """Item-level structure in internal item order (topic blocks, popularity rank within a topic).

    Attributes (I items, T topics; internal item ``i`` is ``start[topic] + rank``):
        start: int64[T + 1] first internal item of each topic.
        size: int64[T] items per topic.
        pi: float64[T] topic shares (sum 1); cum_pi its cumulative sum.
        cum_zipf: float64[max size] cumulative Zipf weights (rank r -> sum of (j+1)^-a, j <= r).
        topic: int32[I]; z: float64[I] Zipf weight within its topic (sums to 1 per topic);
        g: float64[I] global weight pi[topic] * z.
        succ: int32[I] successor (internal); ext: int64[I] item id; internal: int64[I] id -> internal.
        head: int64[M] internal items by descending g (the first M, enough for any user's top-k).
    """

    def __init__(self, cfg: ScaleSettings) -> None:
        self.cfg = cfg
        n, t = cfg.n_items, cfg.n_topics
        rng = np.random.default_rng([cfg.seed, 0x5CA1E])
        self.size = np.full(t, n // t, dtype=np.int64)
        self.size[: n % t] += 1
        self.start = np.concatenate([[0], np.cumsum(self.size)])
        self.pi = rng.dirichlet(np.full(t, TOPIC_CONCENTRATION))
        self.cum_pi = np.cumsum(self.pi)
        ranks = np.arange(int(self.size.max()), dtype=np.float64)
        self.cum_zipf = np.cumsum((ranks + 1.0) ** -ZIPF_EXPONENT)
        self.topic = np.repeat(np.arange(t, dtype=np.int32), self.size)
        rank = np.arange(n, dtype=np.int64) - self.start[self.topic]
        self.z = (rank + 1.0) ** -ZIPF_EXPONENT / self.cum_zipf[self.size - 1][self.topic]
        self.g = self.pi[self.topic] * self.z
        # successor: one random cycle per topic
        order = np.lexsort((rng.random(n), self.topic))  # int64[I], topic blocks in random order
        nxt = np.roll(order, -1)
        nxt[self.start[1:] - 1] = order[self.start[:-1]]
        self.succ = np.empty(n, dtype=np.int32)
        self.succ[order] = nxt
        del order, nxt
        self.ext = rng.permutation(n).astype(np.int64)
        self.internal = np.empty(n, dtype=np.int64)
        self.internal[self.ext] = np.arange(n)
        m = min(n, max(KS) + cfg.max_length)
        head = np.argpartition(-self.g, m - 1)[:m] if m < n else np.arange(n)
        self.head = head[np.lexsort((self.ext[head], -self.g[head]))]

    def zipf_items(self, topic: np.ndarray, v: np.ndarray) -> np.ndarray:
        """int64[n]: the internal item of ``topic`` whose Zipf quantile holds ``v`` (in [0, 1))."""
        size = self.size[topic]
        r = np.searchsorted(self.cum_zipf, v * self.cum_zipf[size - 1], side="right")
        return self.start[topic] + np.minimum(r, size - 1)

    def topic_of_quantile(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(topic, the quantile within it) for quantiles ``v`` of the topic shares."""
        x = v * self.cum_pi[-1]
        t = np.minimum(np.searchsorted(self.cum_pi, x, side="right"), len(self.pi) - 1)
        lo = np.where(t > 0, self.cum_pi[t - 1], 0.0)
        return t, np.clip((x - lo) / self.pi[t], 0.0, np.nextafter(1.0, 0.0))


# --------------------------------------------------------------------------- items
@functools.lru_cache(maxsize=1)
def _pseudo_words_pool() -> tuple[str, ...]:
    """Three-syllable pseudo-words (``bakulo``) that are not genre or filler words."""
    from llm4rec.data.synthetic import GENRES

    taken = {w for words in GENRES.values() for w in words}
    syll = [c + v for c in _CONSONANTS for v in _VOWELS]
    return tuple(a + b + c for a in syll for b in syll for c in syll if a + b + c not in taken)


def _topic_text(cfg: ScaleSettings) -> tuple[list[str], list[str], list[str]]:
    """(genre per topic, pseudo-words [T * 8] (topic t owns [8t, 8t + 8)), category label per topic)."""
    from llm4rec.data.synthetic import GENRES

    genres = list(GENRES)
    pool = _pseudo_words_pool()
    pick = np.random.default_rng([cfg.seed, 0x7E47]).choice(len(pool), cfg.n_topics * WORDS_PER_TOPIC,
                                                            replace=False)
    words = [pool[i] for i in pick]
    topic_genre = [genres[t % len(genres)] for t in range(cfg.n_topics)]
    labels = [f"{topic_genre[t]} / {words[WORDS_PER_TOPIC * t]}" for t in range(cfg.n_topics)]
    return topic_genre, words, labels


def _write_items(world: _World, folder: Path, row_group_rows: int, report: Callable[[str, int, int], None]) -> None:
    """items.parquet and truth_items.parquet, in item-id order, in blocks of ITEM_BLOCK ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from llm4rec.data.synthetic import GENRES

    cfg = world.cfg
    topic_genre, words, labels = _topic_text(cfg)
    pw = pa.array(words)
    pw_title = pa.array([w.capitalize() for w in words])
    gw_flat = [w for g in GENRES for w in GENRES[g]]
    gw = pa.array(gw_flat)
    gw_title = pa.array([w.capitalize() for w in gw_flat])
    genre_index = {g: k for k, g in enumerate(GENRES)}
    topic_gbase = np.array([genre_index[g] * 25 for g in topic_genre], dtype=np.int64)
    label_arr = pa.array(labels)
    adj, kinds = pa.array(_ADJECTIVES), pa.array(_KINDS)
    item_schema = pa.schema([("item_id", pa.int64()), ("title", pa.string()), ("category", pa.string()),
                             ("description", pa.string())])
    truth_schema = pa.schema([("item_id", pa.int64()), ("topic", pa.int32()), ("rank", pa.int32()),
                              ("successor", pa.int64())])
    items = _RowGroups(folder / "items.parquet", item_schema, row_group_rows)
    truth = _RowGroups(folder / "truth_items.parquet", truth_schema, row_group_rows)
    sp = pa.scalar(" ")
    n = cfg.n_items
    for lo in range(0, n, ITEM_BLOCK):
        ids = np.arange(lo, min(n, lo + ITEM_BLOCK), dtype=np.int64)
        inner = world.internal[ids]
        topic = world.topic[inner].astype(np.int64)
        h = _hash(cfg.seed, _S_TEXT, ids)

        def field(shift: int, modulus: int, h: np.ndarray = h) -> np.ndarray:
            return ((h >> np.uint64(shift)) % np.uint64(modulus)).astype(np.int64)

        own = topic * WORDS_PER_TOPIC  # the topic's pseudo-words start here
        gb = topic_gbase[topic]  # ... and its genre words here
        t1, d1 = field(0, WORDS_PER_TOPIC), field(22, WORDS_PER_TOPIC)  # two different pseudo-words each
        t2 = (t1 + 1 + field(3, WORDS_PER_TOPIC - 1)) % WORDS_PER_TOPIC
        d2 = (d1 + 1 + field(25, WORDS_PER_TOPIC - 1)) % WORDS_PER_TOPIC
        title = pc.binary_join_element_wise(pw_title.take(own + t1), pw.take(own + t2),
                                            gw_title.take(gb + field(6, 25)), sp)
        lit = pa.scalar
        description = pc.binary_join_element_wise(
            lit("A "), adj.take(field(11, len(_ADJECTIVES))), sp, kinds.take(field(14, len(_KINDS))), lit(" of "),
            gw.take(gb + field(17, 25)), lit(" and "), pw.take(own + d1), lit(", with "),
            pw.take(own + d2), sp, gw.take(gb + field(28, 25)), lit("."), lit(""))
        items.write(pa.table({"item_id": ids, "title": title,
                              "category": label_arr.take(topic), "description": description}, schema=item_schema))
        truth.write(pa.table({"item_id": ids, "topic": topic.astype(np.int32),
                              "rank": (inner - world.start[topic]).astype(np.int32),
                              "successor": world.ext[world.succ[inner]]}, schema=truth_schema))
        report("items", int(ids[-1]) + 1, n)
    items.close()
    truth.close()


# --------------------------------------------------------------------------- users and sequences
def _lengths(cfg: ScaleSettings) -> np.ndarray:
    """int64[U]: sequence lengths in [MIN_LENGTH, max_length] summing to n_interactions exactly."""
    u = np.arange(cfg.n_users, dtype=np.int64)
    u1 = _uniform(_hash(cfg.seed, _S_LENGTH, u))
    u2 = _uniform(_hash(cfg.seed, _S_LENGTH2, u))
    normal = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)
    w = np.exp(LENGTH_SIGMA * normal)
    extra = cfg.n_interactions - MIN_LENGTH * cfg.n_users
    share = extra * (w / w.sum())
    base = np.floor(share).astype(np.int64)
    rest = extra - int(base.sum())
    if rest:
        base[np.argsort(-(share - base), kind="stable")[:rest]] += 1
    lengths = MIN_LENGTH + base
    order = np.argsort(_hash(cfg.seed, _S_LENGTH_ORDER, u), kind="stable")  # who takes the excess first
    np.minimum(lengths, cfg.max_length, out=lengths)
    excess = cfg.n_interactions - int(lengths.sum())
    while excess:  # hand what the cap cut off to users below it, one more each per round
        room = order[lengths[order] < cfg.max_length][:excess]
        lengths[room] += 1
        excess -= len(room)
    return lengths


def _write_interactions(world: _World, folder: Path, chunk_users: int, row_group_rows: int,
                        report: Callable[[str, int, int], None]) -> dict:
    import pyarrow as pa

    cfg = world.cfg
    lengths = _lengths(cfg)
    inter_schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])
    user_schema = pa.schema([("user_id", pa.int64()), ("topic", pa.int32()), ("length", pa.int32())])
    inter = _RowGroups(folder / "interactions.parquet", inter_schema, row_group_rows)
    users = _RowGroups(folder / "truth_users.parquet", user_schema, row_group_rows)
    kmax = max(KS)
    acc = {"hist": {r: np.zeros(kmax + 1, dtype=np.int64) for r in _RANKERS},
           "mass": {r: np.zeros(kmax, dtype=np.int64) for r in _RANKERS},
           "in_topic": 0, "p_in": 0, "var_in": 0}
    done = 0
    for lo in range(0, cfg.n_users, chunk_users):
        uids = np.arange(lo, min(cfg.n_users, lo + chunk_users), dtype=np.int64)
        length = lengths[uids]
        topic, _ = world.topic_of_quantile(_uniform(_hash(cfg.seed, _S_USER_TOPIC, uids)))
        items, denom = _sequences(world, uids, topic, length, acc)
        _reference(world, items, length, topic, denom, acc)
        flat_user = np.repeat(uids, length)
        offsets = np.concatenate([[0], np.cumsum(length)])
        pos = np.arange(len(flat_user), dtype=np.int64) - np.repeat(offsets[:-1], length)
        valid = np.arange(items.shape[1])[None, :] < length[:, None]
        flat_items = items[valid]  # row-major: user by user, in time order
        inter.write(pa.table({"user_id": flat_user, "item_id": world.ext[flat_items],
                              "timestamp": _timestamps(cfg, uids, flat_user, pos, offsets)}, schema=inter_schema))
        users.write(pa.table({"user_id": uids, "topic": topic.astype(np.int32), "length": length.astype(np.int32)},
                             schema=user_schema))
        done += len(flat_user)
        report("interactions", done, cfg.n_interactions)
    inter.close()
    users.close()
    return _truth(world, lengths, acc)


def _timestamps(cfg: ScaleSettings, uids: np.ndarray, flat_user: np.ndarray, pos: np.ndarray,
                offsets: np.ndarray) -> np.ndarray:
    """int64[n]: start + cumulative gaps per user (gaps >= 60 s, so strictly increasing)."""
    start = START + np.floor(_uniform(_hash(cfg.seed, _S_START, uids)) * START_SPREAD).astype(np.int64)
    cell = flat_user * np.int64(1 << 12) + pos  # position < 4096
    gap = 60 + np.floor(-np.log1p(-_uniform(_hash(cfg.seed, _S_TIME, cell))) * MEAN_GAP).astype(np.int64)
    gap[offsets[:-1]] = 0
    csum = np.cumsum(gap)
    csum -= np.repeat(csum[offsets[:-1]], np.diff(offsets))
    return np.repeat(start, np.diff(offsets)) + csum


def _sequences(world: _World, uids: np.ndarray, topic: np.ndarray, length: np.ndarray, acc: dict
               ) -> tuple[np.ndarray, np.ndarray]:
    """Draw the chunk's sequences, position by position for all users at once.

    Returns (int32[n, Lmax] internal items, -1 past a user's length; float64[n] the unseen mass
    ``1 - q(seen)`` before the last draw, the oracle's normaliser). Adds the expected and observed
    in-topic counts to ``acc``.
    """
    cfg = world.cfg
    n = len(uids)
    order = np.argsort(-length, kind="stable")  # longest first: the active users are a prefix
    L = length[order]
    tu = topic[order]
    base = _hash(cfg.seed, _S_SEQ, uids[order])
    lmax = int(L[0])
    seq = np.full((n, lmax), -1, dtype=np.int32)
    active = np.searchsorted(-L, -np.arange(lmax + 1), side="left")  # users with L > t
    seen_static = np.zeros(n)  # sum over seen items of p_t z 1[in topic] + p_n g
    seen_in_topic = np.zeros(n)  # the same over seen items of the user's topic
    denom = np.empty(n)
    own = P_TOPIC + P_NOISE * world.pi[tu]  # static mass of the user's topic
    for t in range(lmax):
        m = int(active[t])
        # exact probability that this draw is in the user's topic, for the truth's expected share
        if t == 0:
            p_in = own[:m] / (P_TOPIC + P_NOISE)
        else:
            succ_prev = world.succ[seq[:m, t - 1]]
            succ_seen = (seq[:m, :t] == succ_prev[:, None]).any(axis=1)
            succ_in = world.topic[succ_prev] == tu[:m]
            unseen = 1.0 - seen_static[:m] - P_SUCCESSOR * succ_seen
            p_in = (own[:m] - seen_in_topic[:m] + P_SUCCESSOR * (succ_in & ~succ_seen)) / unseen
            last = slice(int(active[t + 1]), m)  # users drawing their last item now
            denom[last] = unseen[last]
        acc["p_in"] += int(np.round(p_in * _FIXED).astype(np.int64).sum())
        acc["var_in"] += int(np.round(p_in * (1 - p_in) * _FIXED).astype(np.int64).sum())
        pending = np.arange(m)
        for attempt in range(_MAX_ATTEMPTS):
            counter = np.uint64((t * _MAX_ATTEMPTS + attempt) * int(_M1) % 2**64)
            u = _uniform(_mix(base[pending] + counter))
            if t == 0:
                u = P_SUCCESSOR + u * (1.0 - P_SUCCESSOR)
            cand = np.empty(len(pending), dtype=np.int64)
            s = u < P_SUCCESSOR
            tp = ~s & (u < P_SUCCESSOR + P_TOPIC)
            nz = ~s & ~tp
            if s.any():
                cand[s] = world.succ[seq[pending[s], t - 1]]
            cand[tp] = world.zipf_items(tu[pending[tp]], (u[tp] - P_SUCCESSOR) / P_TOPIC)
            nt, v = world.topic_of_quantile((u[nz] - P_SUCCESSOR - P_TOPIC) / P_NOISE)
            cand[nz] = world.zipf_items(nt, v)
            if t:
                history = seq[:m, :t] if attempt == 0 else seq[pending, :t]
                dup = (history == cand[:, None]).any(axis=1)
            else:
                dup = np.zeros(len(pending), dtype=bool)
            ok = pending[~dup]
            got = cand[~dup]
            seq[ok, t] = got
            static = P_NOISE * world.g[got]
            inside = world.topic[got] == tu[ok]
            static += P_TOPIC * world.z[got] * inside
            seen_static[ok] += static
            seen_in_topic[ok] += static * inside
            acc["in_topic"] += int(inside.sum())
            pending = pending[dup]
            if not len(pending):
                break
        else:  # pragma: no cover - the sizes make this practically impossible
            raise RuntimeError("the sequence generator found no unseen item; report this with the sizes")
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)
    return seq[back], denom[back]


# --------------------------------------------------------------------------- reference accuracy
_RANKERS = ("oracle", "topic_oracle", "popularity")
_BLOCK_CELLS = 1 << 22


def _reference(world: _World, seq: np.ndarray, length: np.ndarray, topic: np.ndarray, denom: np.ndarray,
               acc: dict) -> None:
    """Rank each user's unseen items three ways for the last item (P-LOO test); add to ``acc``.

    Candidates per user: successor(prev), the first ``kmax + L - 1`` items of the user's topic and of the
    global ``head``; with at most ``L - 1`` of each list seen, every ranking's top ``kmax`` is among them.
    """
    kmax = max(KS)
    order = np.argsort(-length, kind="stable")
    lo = 0
    while lo < len(order):
        width = 1 + 2 * (kmax + int(length[order[lo]]) - 1)
        rows = order[lo: lo + max(1, _BLOCK_CELLS // (width * 4))]
        lo += len(rows)
        _reference_block(world, seq[rows, : int(length[rows].max())], length[rows], topic[rows], denom[rows], acc)


def _reference_block(world: _World, seq: np.ndarray, length: np.ndarray, topic: np.ndarray, denom: np.ndarray,
                     acc: dict) -> None:
    kmax = max(KS)
    n = len(length)
    m = min(kmax + int(length.max()) - 1, int(world.size.min()), len(world.head))
    r = np.arange(n)
    prev = seq[r, length - 2].astype(np.int64)
    target = seq[r, length - 1].astype(np.int64)
    succ_prev = world.succ[prev].astype(np.int64)
    cand = np.concatenate([succ_prev[:, None], world.start[topic][:, None] + np.arange(m),
                           np.broadcast_to(world.head[:m], (n, m))], axis=1)  # int64[n, W]
    width = cand.shape[1]
    # drop seen candidates and repeats: one sorted key array (row, item) for both
    n_items = np.int64(world.cfg.n_items)
    hist = seq.astype(np.int64)
    hist_valid = np.arange(seq.shape[1])[None, :] < (length - 1)[:, None]
    seen_keys = np.sort((r[:, None] * n_items + hist)[hist_valid])
    keys = r[:, None] * n_items + cand
    at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
    valid = seen_keys[at] != keys
    flat = keys.ravel()
    by_key = np.argsort(flat, kind="stable")
    repeat = np.zeros(flat.size, dtype=bool)
    repeat[by_key[1:]] = flat[by_key[1:]] == flat[by_key[:-1]]
    valid &= ~repeat.reshape(n, width)
    g = world.g[cand]
    static = P_NOISE * g + P_TOPIC * world.z[cand] * (world.topic[cand] == topic[:, None])
    q = static + P_SUCCESSOR * (cand == succ_prev[:, None])
    ext = world.ext[cand]
    for name, score in (("oracle", q), ("topic_oracle", static), ("popularity", g)):
        s = np.where(valid, score, -np.inf)
        top = np.argpartition(-s, kmax - 1, axis=1)[:, :kmax]
        top = np.take_along_axis(top, np.lexsort((np.take_along_axis(ext, top, 1), -np.take_along_axis(s, top, 1)),
                                                 axis=1), 1)
        items = np.take_along_axis(cand, top, 1)  # int64[n, kmax], best first
        hit = items == target[:, None]
        pos = np.where(hit.any(axis=1), hit.argmax(axis=1), kmax)
        acc["hist"][name] += np.bincount(pos, minlength=kmax + 1)
        mass = np.take_along_axis(q, top, 1) / denom[:, None]
        acc["mass"][name] += np.round(mass * _FIXED).astype(np.int64).sum(axis=0)


def _metrics_from(hist: np.ndarray | None, mass: np.ndarray | None, n: int) -> dict[str, float]:
    """HR/NDCG/MRR at KS from a position histogram (realised) or per-position expected mass."""
    kmax = max(KS)
    weight = hist[:kmax].astype(np.float64) if hist is not None else mass.astype(np.float64) / _FIXED
    p = np.arange(kmax)
    out = {}
    for k in KS:
        out[f"HR@{k}"] = float(weight[:k].sum() / n)
        out[f"NDCG@{k}"] = float((weight[:k] / np.log2(p[:k] + 2)).sum() / n)
        out[f"MRR@{k}"] = float((weight[:k] / (p[:k] + 1)).sum() / n)
    return out


def _truth(world: _World, lengths: np.ndarray, acc: dict) -> dict:
    cfg = world.cfg
    n_eval = int((lengths >= 3).sum())
    reference: dict[str, Any] = {
        "protocol": "loo", "stage": "test", "users": n_eval,
        "what": "the last item of every user is the target, all earlier items are masked; realised metrics on "
                "the generated targets and their expectation under the process ('expected')",
    }
    described = {"oracle": "ranks unseen items by the true next-item probability q",
                 "topic_oracle": "knows each user's topic but not the successor rule (q without its successor term)",
                 "popularity": "ranks by the planted global weight pi[topic] * z (what a popularity model "
                               "approaches)"}
    for name in _RANKERS:
        reference[name] = {"description": described[name],
                           **_metrics_from(acc["hist"][name], None, n_eval),
                           "expected": _metrics_from(None, acc["mass"][name], n_eval)}
    return {
        "format": FORMAT,
        "seed": cfg.seed,
        "n_users": cfg.n_users,
        "n_items": cfg.n_items,
        "n_interactions": cfg.n_interactions,
        "n_topics": cfg.n_topics,
        "process": {
            "p_successor": P_SUCCESSOR, "p_topic": P_TOPIC, "p_noise": P_NOISE, "zipf_exponent": ZIPF_EXPONENT,
            "min_length": MIN_LENGTH, "max_length": cfg.max_length, "length_sigma": LENGTH_SIGMA,
            "topic_concentration": TOPIC_CONCENTRATION,
            "topic_sizes": world.size.tolist(),
            "topic_shares": world.pi.tolist(),
            "rule": "next item ~ q(j) = p_successor 1[j = successor(prev)] + p_topic z_{topic(u)}(j) + "
                    "p_noise pi[topic(j)] z_{topic(j)}(j), over the items the user has not seen; "
                    "z_t(rank r) = (r + 1)^-zipf_exponent normalised within topic t",
        },
        "in_topic": {
            "observed_share": acc["in_topic"] / cfg.n_interactions,
            "expected_share": acc["p_in"] / _FIXED / cfg.n_interactions,
            "expected_variance": acc["var_in"] / _FIXED,
            "what": "share of interactions in the user's own topic; expected_share is exact for the process "
                    "(given the drawn histories), expected_variance the variance of the in-topic count",
        },
        "reference": reference,
        "files": {"interactions": "interactions.parquet", "items": "items.parquet",
                  "truth_items": "truth_items.parquet", "truth_users": "truth_users.parquet"},
    }
