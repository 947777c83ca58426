"""The service's event store: feedback, served slates, added items, API keys and the privacy log.

One SQL database, SQLite (a file, shared by the worker processes of one
machine) or PostgreSQL (shared by many machines), reached through SQLAlchemy
Core. The tables:

``events``
    Feedback, one row per event: ``seq`` (insertion order), ``event_id``
    (unique: a retried event is stored once), ``type`` (one of
    :data:`EVENT_TYPES`), ``user_id``, ``item_id``, ``timestamp`` (unix
    seconds), and the slate it came from, if any: ``recommendation_id`` and
    ``position`` (0-based), and ``value`` (a rating, or dwell seconds).
``recommendations`` and ``impressions``
    Every served slate: who got it (``user_id``, may be null), from which
    ``policy`` and ``model_version``, when; and one ``impressions`` row per
    shown position with the ``item_id``, the model's ``action`` index and the
    policy's ``propensity`` of showing it there. Joined with the rewarding
    events (:data:`REWARDING` with the same recommendation id and position)
    this is the logged bandit feedback for off-policy evaluation; the user id
    never leaves the store with it.
``items``
    Items added or updated through the API (``item_id``, ``fields`` as
    JSON), so every worker and every restart sees them; ``seq`` grows with
    every upsert and only the newest version of an item is kept.
``api_keys``
    ``key_id``, ``name``, the SHA-256 ``key_hash`` (never the key),
    ``scopes``, ``rate_per_minute``, ``created`` and ``revoked`` times.
``forgotten`` and ``audit``
    An HMAC (keyed with the server secret) of each forgotten user id, never
    the id; and the audit log of administrative actions (``action``,
    ``actor`` = the acting key id, ``details`` JSON).
``meta``
    ``secret``: 32 random bytes, created once, the key of those HMACs.

Writes are durable when a method returns: SQLite runs in WAL mode with
``synchronous=FULL``; PostgreSQL commits synchronously by default. Feedback
and served slates go through one writer thread per store that commits
whatever concurrent callers queued meanwhile in one transaction (group
commit), so many threads cost one disk flush per group, not one each.
"""

from __future__ import annotations

import hmac
import io
import json
import math
import numbers
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, make_url

from llm4rec._atomic import atomic_write_bytes
from llm4rec.errors import InputError

if TYPE_CHECKING:
    import polars as pl
    from typing_extensions import Self

    from llm4rec.data.logs import BanditLogs

__all__ = ["EVENT_TYPES", "INTERACTIONS", "REWARDING", "EventStore", "normalise_url", "redact"]

#: every event type the store takes
EVENT_TYPES = ("impression", "click", "purchase", "rating", "dwell", "like", "dismiss")
#: the event types that make up a user's history
INTERACTIONS = ("click", "purchase", "rating", "dwell", "like")
#: the event types that give a shown item reward 1 in the logged bandit feedback
REWARDING = ("click", "purchase", "like")
#: the event type that hides an item from the user's lists from then on
DISMISS = "dismiss"

MAX_ID_CHARS = 128
#: a writer's group stops taking queued jobs once it holds this many rows
MAX_GROUP_ROWS = 20_000
#: SQLite: seconds between WAL checkpoints (EventStore._checkpoint_loop)
CHECKPOINT_SECONDS = 0.5
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: the key of PostgreSQL's advisory lock around table creation (several workers may start at once)
SCHEMA_LOCK = 0x6C6C6D34
#: PostgreSQL advisory lock held by every write group (writers of all processes take turns, as in SQLite)
WRITE_LOCK = 0x6C6C6D35
URL_FORMS = "a SQLite file path, sqlite:///path/to/file.db, or postgresql://user[:password]@host[:port]/database"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # sqlite: INTEGER PRIMARY KEY is the rowid

metadata = sa.MetaData()

events_table = sa.Table(
    "events", metadata,
    sa.Column("seq", _ID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(MAX_ID_CHARS), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String, nullable=False, index=True),
    sa.Column("item_id", sa.String, nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("recommendation_id", sa.String(MAX_ID_CHARS)),
    sa.Column("position", sa.Integer),
    sa.Column("value", sa.Float),
    sa.Index("ix_events_recommendation", "recommendation_id", "position"),
    sa.Index("ix_events_item", "item_id"),  # an item's page: who interacted with it
)

recommendations_table = sa.Table(
    "recommendations", metadata,
    sa.Column("recommendation_id", sa.String(MAX_ID_CHARS), primary_key=True),
    sa.Column("user_id", sa.String, index=True),
    sa.Column("policy", sa.String, nullable=False),
    sa.Column("model_version", sa.String, nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False, index=True),
    sa.Column("experiment", sa.String),  # the experiment and arm the user was in, if any
    sa.Column("arm", sa.String),
    sa.Column("shadow", sa.Text),  # JSON {other arm: [P(shown item j at position j) under that arm]}
)
#: columns added to ``recommendations`` after its first release (added to older stores when opened)
_ADDED_COLUMNS = {"experiment": "VARCHAR", "arm": "VARCHAR", "shadow": "TEXT"}

impressions_table = sa.Table(
    "impressions", metadata,
    sa.Column("recommendation_id", sa.String(MAX_ID_CHARS),
              sa.ForeignKey("recommendations.recommendation_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_id", sa.String, nullable=False),
    sa.Column("action", sa.BigInteger, nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
)

items_table = sa.Table(
    "items", metadata,
    sa.Column("seq", _ID, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String, nullable=False, index=True),
    sa.Column("fields", sa.JSON, nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sqlite_autoincrement=True,  # a deleted old version's seq is never handed out again
)

keys_table = sa.Table(
    "api_keys", metadata,
    sa.Column("key_id", sa.String, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("key_hash", sa.String, nullable=False, unique=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("rate_per_minute", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float),
)

forgotten_table = sa.Table(
    "forgotten", metadata,
    sa.Column("user_hmac", sa.String(64), primary_key=True),
    sa.Column("timestamp", sa.Float, nullable=False),
)

audit_table = sa.Table(
    "audit", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("actor", sa.String, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)

experiments_table = sa.Table(
    "experiments", metadata,
    sa.Column("name", sa.String(MAX_ID_CHARS), primary_key=True),
    sa.Column("arms", sa.JSON, nullable=False),  # [{"name", "policy", "model_version", "share"}]
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("stopped", sa.Float),
)

meta_table = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
)

#: the request path's reads (see EventStore._select)
_HISTORY_SQL = (f"SELECT item_id, timestamp, type FROM events WHERE user_id = ? AND type IN "
                f"({', '.join('?' * (len(INTERACTIONS) + 1))}) ORDER BY timestamp, seq")
_FORGOTTEN_SQL = "SELECT 1 FROM forgotten WHERE user_hmac = ?"

EVENT_FIELDS = ("event_id", "type", "user_id", "item_id", "timestamp", "recommendation_id", "position", "value")
SLATE_FIELDS = ("recommendation_id", "user_id", "policy", "model_version", "items", "actions", "propensities",
                "timestamp", "experiment", "arm", "shadow")
_OPTIONAL_SLATE_FIELDS = ("user_id", "experiment", "arm", "shadow")


#: the writer's statements (see EventStore._commit_group)
_SLATE_COLUMNS = ("recommendation_id", "user_id", "policy", "model_version", "timestamp", "experiment", "arm",
                  "shadow")
_IMPRESSION_COLUMNS = ("recommendation_id", "position", "item_id", "action", "propensity")
_INSERT_EVENT = (f"INSERT INTO events ({', '.join(EVENT_FIELDS)}) VALUES ({', '.join('?' * len(EVENT_FIELDS))}) "
                 "ON CONFLICT (event_id) DO NOTHING")
_INSERT_SLATE = (f"INSERT INTO recommendations ({', '.join(_SLATE_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_SLATE_COLUMNS))})")
_INSERT_IMPRESSION = (f"INSERT INTO impressions ({', '.join(_IMPRESSION_COLUMNS)}) "
                      f"VALUES ({', '.join('?' * len(_IMPRESSION_COLUMNS))})")
#: ids per "already stored?" query
_PRESENT_CHUNK = 500


# ------------------------------------------------------------------ URLs
def normalise_url(url_or_path: str) -> str:
    """The SQLAlchemy URL of an event store.

    A bare path becomes ``sqlite:////absolute/path``; ``postgresql://`` (or
    ``postgres://``) becomes ``postgresql+psycopg://``; ``sqlite:///`` and
    ``postgresql+psycopg://`` URLs are kept. Anything else is an InputError.
    """
    if not isinstance(url_or_path, (str, os.PathLike)) or not str(url_or_path).strip():
        raise InputError("no event store given", value=url_or_path, expected=URL_FORMS)
    text = os.fspath(url_or_path).strip()
    if "://" not in text:
        return "sqlite:///" + str(Path(text).expanduser().resolve())
    try:
        url = make_url(text)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError
        raise InputError("not a database URL", value=redact(text), expected=URL_FORMS) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise InputError("an event store must be a SQLite file, not an in-memory database",
                             value=redact(text), expected=URL_FORMS)
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise InputError("the PostgreSQL URL names no database", value=redact(text), expected=URL_FORMS)
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise InputError("unsupported event store URL", value=redact(text), expected=URL_FORMS)


def redact(url: str | URL) -> str:
    """``url`` with its password, if any, shown as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL (a bare path): nothing to hide
        return str(url)


# ------------------------------------------------------------ validation
def _bad(where: str, field: str, problem: str, value: object, expected: str) -> InputError:
    return InputError(f"{where}, field {field!r}: {problem}", value=value, expected=expected)


def _text(where: str, field: str, value: object, *, optional: bool = False, limit: int | None = None) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(where, field, "not a non-empty string", value, "a non-empty string" + (" or null" if optional
                                                                                        else ""))
    if limit is not None and len(value) > limit:
        raise _bad(where, field, "too long", value, f"at most {limit} characters")
    return value


def _number(where: str, field: str, value: object, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _bad(where, field, "not a finite number", value, "a finite number" + (" or null" if optional else ""))
    return float(value)


def _index(where: str, field: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _bad(where, field, "not a whole number >= 0", value, "an integer >= 0" + (" or null" if optional
                                                                                       else ""))
    return int(value)


def _fields(where: str, given: object, allowed: Sequence[str], required: Sequence[str]) -> dict:
    if not isinstance(given, dict):
        raise InputError(f"{where}: not an object", value=given, expected="a dict with keys " + ", ".join(allowed))
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise _bad(where, str(unknown[0]), "unknown field", unknown[0], "one of " + ", ".join(allowed))
    missing = [k for k in required if k not in given]
    if missing:
        raise _bad(where, missing[0], "missing", None, "a value")
    return given


def _event(i: int, given: object) -> dict[str, Any]:
    where = f"event {i}"
    e = _fields(where, given, EVENT_FIELDS, EVENT_FIELDS[:5])
    kind = e["type"]
    if kind not in EVENT_TYPES:
        raise _bad(where, "type", "unknown event type", kind, "one of " + ", ".join(EVENT_TYPES))
    return {
        "event_id": _text(where, "event_id", e["event_id"], limit=MAX_ID_CHARS),
        "type": kind,
        "user_id": _text(where, "user_id", e["user_id"]),
        "item_id": _text(where, "item_id", e["item_id"]),
        "timestamp": _number(where, "timestamp", e["timestamp"]),
        "recommendation_id": _text(where, "recommendation_id", e.get("recommendation_id"), optional=True,
                                   limit=MAX_ID_CHARS),
        "position": _index(where, "position", e.get("position"), optional=True),
        "value": _number(where, "value", e.get("value"), optional=True),
    }


def _slate(where: str, given: object) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A served slate checked: (its recommendations row, its impressions rows)."""
    r = _fields(where, given, SLATE_FIELDS, [f for f in SLATE_FIELDS if f not in _OPTIONAL_SLATE_FIELDS])
    rid = _text(where, "recommendation_id", r["recommendation_id"], limit=MAX_ID_CHARS)
    shadow = r.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, dict) or not all(isinstance(v, list) for v in shadow.values()):
            raise _bad(where, "shadow", "not a dict of lists", shadow, "{arm name: [probability per position]}")
        shadow = json.dumps(_json(f"{where}: shadow", shadow), allow_nan=False)
    row = {"recommendation_id": rid,
           "user_id": _text(where, "user_id", r.get("user_id"), optional=True),
           "policy": _text(where, "policy", r["policy"]),
           "model_version": _text(where, "model_version", r["model_version"]),
           "timestamp": _number(where, "timestamp", r["timestamp"]),
           "experiment": _text(where, "experiment", r.get("experiment"), optional=True),
           "arm": _text(where, "arm", r.get("arm"), optional=True),
           "shadow": shadow}
    lists = {}
    for field in ("items", "actions", "propensities"):
        value = r[field]
        value = value.tolist() if hasattr(value, "tolist") else value  # a numpy array
        if not isinstance(value, (list, tuple)):
            raise _bad(where, field, "not a list", value, "a list")
        lists[field] = list(value)
    n = len(lists["items"])
    for field in ("actions", "propensities"):
        if len(lists[field]) != n:
            raise _bad(where, field, f"{len(lists[field])} values for {n} items", len(lists[field]),
                       f"{n} values, one per item")
    shown = []
    for j, (item, action, p) in enumerate(zip(lists["items"], lists["actions"], lists["propensities"])):
        item = _text(where, f"items[{j}]", item)
        action = _index(where, f"actions[{j}]", action)
        p = _number(where, f"propensities[{j}]", p)
        if not 0.0 < p <= 1.0:
            raise _bad(where, f"propensities[{j}]", "not a probability in (0, 1]", p, "a probability in (0, 1]")
        shown.append({"recommendation_id": rid, "position": j, "item_id": item, "action": action, "propensity": p})
    return row, shown


def _json(what: str, value: object) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be stored as JSON: {exc}", value=value,
                         expected="strings, numbers, booleans, null, lists and dicts") from None
    return value


class _Job:
    """One caller's write, waiting in the writer's queue: kind "events" or "slates", the checked rows."""

    __slots__ = ("future", "kind", "rows")

    def __init__(self, kind: str, rows: list) -> None:
        self.kind = kind
        self.rows = rows
        self.future: Future = Future()


# ------------------------------------------------------------------ store
class EventStore:
    """The event store of the service (see the module docstring); thread-safe, shareable between processes.

    Args:
        url: a SQLite file path or ``sqlite:///`` URL (its directory must
            exist), or ``postgresql://user[:password]@host[:port]/database``.
        secret: the key of the forgotten users' HMACs; default: the store's
            own random secret, created with the tables.
    """

    def __init__(self, url: str, *, secret: bytes | None = None) -> None:
        self.url = normalise_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.dialect == "sqlite":
            database = Path(make_url(self.url).database)
            if not database.parent.is_dir():
                raise InputError("the event store's directory does not exist", path=database.parent,
                                 expected="an existing directory for the SQLite file " + database.name)
            # as many pooled connections as the app's request threads: no connect (and pragmas) per request
            self._engine = sa.create_engine(self.url, connect_args={"check_same_thread": False},
                                            pool_size=40, max_overflow=10)
            _sqlite_pragmas(self._engine)
        else:
            self._engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=20, max_overflow=20)
        try:
            with self._write() as conn:
                if self.dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK)))
                metadata.create_all(conn)
                _add_columns(conn)
                conn.execute(self._insert(meta_table).values(key="secret", value=secrets.token_hex(32))
                             .on_conflict_do_nothing(index_elements=["key"]))
                stored = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "secret")).scalar_one()
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            raise InputError(f"cannot open the event store {redact(self.url)}: {reason}", value=redact(self.url),
                             expected="a reachable database" if self.dialect == "postgresql"
                             else "a writable SQLite file") from None
        self._secret = secret if secret is not None else bytes.fromhex(stored)

    def __repr__(self) -> str:
        return f"EventStore({redact(self.url)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the queued writes, stop the writer and close every connection; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            if writer is not None:
                self._queue.put(None)
        if writer is not None:
            writer.join()
        self._stopping.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self._engine.dispose()

    # ------------------------------------------------------------ plumbing
    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def _write(self) -> Any:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so it waits for the write lock up front)."""
        conn = self._engine.connect()
        if self.dialect == "sqlite":
            conn.execution_options(sqlite_immediate=True)
        return _Transaction(conn)

    def _select(self, sql: str, params: tuple) -> list[tuple]:
        """Rows of one fixed SELECT (``?`` placeholders) on a pooled driver connection: the request path's
        reads, without SQLAlchemy's per-statement work (a tenth of the time)."""
        if self.dialect != "sqlite":
            sql = sql.replace("?", "%s")
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            conn.close()  # back to the pool (rolled back there)

    def _submit(self, kind: str, rows: list, wait: bool = True) -> Any:
        """Hand ``rows`` to the writer thread and wait until its group is committed (or failed); with
        ``wait=False``, the :class:`~concurrent.futures.Future` of that instead."""
        job = _Job(kind, rows)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="llm4rec-store-writer", daemon=True)
                self._writer.start()
                if self.dialect == "sqlite":
                    self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                                          name="llm4rec-store-checkpoint")
                    self._checkpointer.start()
            self._queue.put(job)
        return job.future.result() if wait else job.future

    def _checkpoint_loop(self) -> None:
        """SQLite: copy the WAL into the database file every CHECKPOINT_SECONDS, beside the writer.

        SQLite would otherwise checkpoint inside the commit that fills the WAL, and every caller waiting
        on that commit (feedback, slate logs) would wait for the database file's fsync too. PASSIVE: the
        writer keeps appending meanwhile.
        """
        import sqlite3

        conn = sqlite3.connect(make_url(self.url).database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # busy: the next round tries again
                    continue
        finally:
            conn.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                return
            group, n = [job], len(job.rows)
            while n < MAX_GROUP_ROWS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                n += len(more.rows)
            try:
                results = self._commit_group(group)
            except BaseException as exc:  # noqa: BLE001 - every caller of the group gets the failure
                for j in group:
                    j.future.set_exception(exc)
            else:
                for j, result in zip(group, results):
                    j.future.set_result(result)

    def _commit_group(self, group: list[_Job]) -> list[Any]:
        """Insert every job's rows in one transaction (:meth:`_insert_group`); rolled back on any error.

        On a driver connection, not through SQLAlchemy: a small group costs a third of the CPU. The
        transaction holds the database's one write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
        lock shared by every service process), so "already stored?" read inside it stays true until commit.
        """
        sqlite = self.dialect == "sqlite"
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            try:
                results = self._insert_group(_placeholders(cursor, sqlite), group)
                if sqlite:
                    cursor.execute("COMMIT")
                else:
                    conn.commit()
            except BaseException:
                if sqlite:
                    cursor.execute("ROLLBACK")
                else:
                    conn.rollback()
                raise
        finally:
            conn.close()
        return results

    def _insert_group(self, run: Callable[..., Any], group: list[_Job]) -> list[Any]:
        """The group's new rows inserted with ``run``; per job: (new, duplicates) for events, else None."""
        events: dict[str, dict] = {}
        slates: dict[str, list] = {}
        for job in group:
            if job.kind == "events":
                for e in job.rows:
                    events.setdefault(e["event_id"], e)
            else:
                for rec, shown in job.rows:
                    slates.setdefault(rec["recommendation_id"], [rec, shown])
        stored = _present(run, "events", "event_id", list(events))
        new = [e for key, e in events.items() if key not in stored]
        if new:
            run(_INSERT_EVENT, [tuple(e[f] for f in EVENT_FIELDS) for e in new], many=True)
        logged = _present(run, "recommendations", "recommendation_id", list(slates))
        fresh = [v for key, v in slates.items() if key not in logged]
        users = {rec["user_id"]: self._hmac(rec["user_id"]) for rec, _ in fresh if rec["user_id"] is not None}
        gone = _present(run, "forgotten", "user_hmac", list(set(users.values())))
        if gone:  # served before the user was forgotten, reaching the store after: never stored
            fresh = [(rec, shown) for rec, shown in fresh if users.get(rec["user_id"]) not in gone]
        if fresh:
            run(_INSERT_SLATE, [tuple(rec[f] for f in _SLATE_COLUMNS) for rec, _ in fresh], many=True)
            run(_INSERT_IMPRESSION, [tuple(row[f] for f in _IMPRESSION_COLUMNS)
                                     for _, shown in fresh for row in shown], many=True)
        new_ids = {e["event_id"] for e in new}
        results: list[Any] = []
        claimed: set[str] = set()
        for job in group:
            if job.kind != "events":
                results.append(None)
                continue
            count = 0
            for e in job.rows:
                if e["event_id"] in new_ids and e["event_id"] not in claimed:
                    claimed.add(e["event_id"])
                    count += 1
            results.append((count, len(job.rows) - count))
        return results

    def _hmac(self, user_id: str) -> str:
        return hmac.new(self._secret, user_id.encode("utf-8"), sha256).hexdigest()

    # ------------------------------------------------------------ feedback
    def add_events(self, events: list[dict], *, wait: bool = True) -> tuple[int, int] | Future:
        """Store feedback events durably: (new, duplicates); an event id already stored is ignored.

        Every event is checked before anything is written (InputError names
        the event's index, the field and the value). When this returns the
        events are committed; concurrent callers share one transaction.
        ``wait=False`` returns the Future of that result at once (checks done).
        """
        rows = [_event(i, e) for i, e in enumerate(events)]
        if not rows:
            if wait:
                return 0, 0
            done: Future = Future()
            done.set_result((0, 0))
            return done
        return self._submit("events", rows, wait)

    def user_history(self, user_id: str) -> list[tuple[str, float]]:
        """(item_id, timestamp) of the user's :data:`INTERACTIONS`, oldest first (ties: in insertion order)."""
        return [(item, ts) for item, ts, kind in self.user_events(user_id) if kind != DISMISS]

    def user_events(self, user_id: str) -> list[tuple[str, float, str]]:
        """(item_id, timestamp, type) of the user's :data:`INTERACTIONS` and dismissals, oldest first (one read)."""
        return [(item, float(ts), kind) for item, ts, kind in
                self._select(_HISTORY_SQL, (user_id, *INTERACTIONS, DISMISS))]

    def count_events(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one())

    # --------------------------------------------------------- impressions
    def log_recommendation(self, recommendation_id: str, user_id: str | None, policy: str, model_version: str,
                           items: list[str], actions: list[int], propensities: list[float],
                           timestamp: float, *, wait: bool = True) -> Future | None:
        """Store a served slate durably, one impression per shown position (a known id is ignored);
        ``wait=False``: return the Future of the commit at once."""
        return self.log_recommendations([{"recommendation_id": recommendation_id, "user_id": user_id,
                                          "policy": policy, "model_version": model_version, "items": items,
                                          "actions": actions, "propensities": propensities,
                                          "timestamp": timestamp}], wait=wait)

    def log_recommendations(self, rows: list[dict], *, wait: bool = True) -> Future | None:
        """Store many served slates in one transaction (keys: the arguments of :meth:`log_recommendation`)."""
        checked = [_slate(f"recommendation {i}", r) for i, r in enumerate(rows)]
        if not checked:
            return None
        return self._submit("slates", checked, wait)

    def recommendation(self, recommendation_id: str) -> dict | None:
        """A logged slate as given to :meth:`log_recommendation`, or None."""
        r, i = recommendations_table, impressions_table
        with self._engine.connect() as conn:
            rec = conn.execute(sa.select(r).where(r.c.recommendation_id == recommendation_id)).mappings().first()
            if rec is None:
                return None
            shown = conn.execute(sa.select(i.c.item_id, i.c.action, i.c.propensity)
                                 .where(i.c.recommendation_id == recommendation_id).order_by(i.c.position)).all()
        return {"recommendation_id": rec["recommendation_id"], "user_id": rec["user_id"], "policy": rec["policy"],
                "model_version": rec["model_version"], "items": [s[0] for s in shown],
                "actions": [int(s[1]) for s in shown], "propensities": [float(s[2]) for s in shown],
                "timestamp": float(rec["timestamp"])}

    # -------------------------------------------------------------- exports
    def _reward(self) -> Any:
        """1.0 where a rewarding event names the impression's slate and position, else 0.0 (a column)."""
        e, i = events_table, impressions_table
        hit = sa.exists().where(e.c.recommendation_id == i.c.recommendation_id, e.c.position == i.c.position,
                                e.c.type.in_(REWARDING)).correlate(i)
        return sa.case((hit, 1.0), else_=0.0)

    def impressions_frame(self, policy: str | None = None) -> pl.DataFrame:
        """One row per shown (slate, position) with its reward, by timestamp, recommendation id, position.

        Columns: recommendation_id, policy, model_version, timestamp, item_id,
        action (int64), position (int64, 0-based), propensity (float64),
        reward (float64: 1.0 if a :data:`REWARDING` event names this slate and
        position). No user id.
        """
        import polars as pl

        r, i = recommendations_table, impressions_table
        stmt = sa.select(i.c.recommendation_id, r.c.policy, r.c.model_version, r.c.timestamp, i.c.item_id,
                         i.c.action, i.c.position, i.c.propensity, self._reward().label("reward")) \
            .join(r, r.c.recommendation_id == i.c.recommendation_id) \
            .order_by(r.c.timestamp, i.c.recommendation_id, i.c.position)
        if policy is not None:
            stmt = stmt.where(r.c.policy == policy)
        schema = {"recommendation_id": pl.Utf8, "policy": pl.Utf8, "model_version": pl.Utf8,
                  "timestamp": pl.Float64, "item_id": pl.Utf8, "action": pl.Int64, "position": pl.Int64,
                  "propensity": pl.Float64, "reward": pl.Float64}
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return pl.DataFrame([tuple(row) for row in rows], schema=schema, orient="row")

    def events_frame(self) -> pl.DataFrame:
        """Every event in insertion order: event_id, type, user_id, item_id, timestamp, recommendation_id,
        position, value."""
        import polars as pl

        t = events_table
        schema = {"event_id": pl.Utf8, "type": pl.Utf8, "user_id": pl.Utf8, "item_id": pl.Utf8,
                  "timestamp": pl.Float64, "recommendation_id": pl.Utf8, "position": pl.Int64, "value": pl.Float64}
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(*(t.c[c] for c in schema)).order_by(t.c.seq)).all()
        return pl.DataFrame([tuple(row) for row in rows], schema=schema, orient="row")

    def policy_ctr(self) -> dict[str, tuple[int, int]]:
        """Per policy: (items shown, items rewarded) over every logged slate."""
        r, i = recommendations_table, impressions_table
        stmt = sa.select(r.c.policy, sa.func.count(), sa.func.sum(self._reward())).select_from(i) \
            .join(r, r.c.recommendation_id == i.c.recommendation_id).group_by(r.c.policy)
        with self._engine.connect() as conn:
            return {policy: (int(shown), int(rewarded or 0)) for policy, shown, rewarded in conn.execute(stmt)}

    def online_counts(self, since: float = 0.0, bucket: float = 300.0,
                      experiment: str | None = None) -> pl.DataFrame:
        """Shown items per time bucket and (model_version, policy, arm), counted in the database.

        Columns: t (bucket start, unix seconds), model_version, policy, arm, slates (slates served), shown,
        clicks (shown items a :data:`REWARDING` event names), purchases. Slates served at or after
        ``since``; of ``experiment`` only, if given. No user id. Three grouped queries (slates, rewarded
        impressions, purchased impressions), so the impressions are counted through their index, never
        fetched: about a second per million impressions in the window on SQLite (bench/webapp.py).
        """
        import polars as pl

        width = repr(float(bucket))  # a number, written into the SQL (it appears in SELECT and GROUP BY)
        slot = f"CAST(r.timestamp / {width} AS INTEGER)" if self.dialect == "sqlite" else \
            f"FLOOR(r.timestamp / {width})"
        where = "r.timestamp >= ?" + ("" if experiment is None else " AND r.experiment = ?")
        params = (float(since),) + (() if experiment is None else (experiment,))
        keys = f"{slot}, r.model_version, r.policy, r.arm"
        served = self._select(f"SELECT {keys}, COUNT(*), SUM((SELECT COUNT(*) FROM impressions i WHERE "
                              f"i.recommendation_id = r.recommendation_id)) FROM recommendations r WHERE {where} "
                              f"GROUP BY {keys}", params)

        def rewarded(types: tuple[str, ...]) -> dict[tuple, int]:
            rows = self._select(
                f"SELECT {keys}, COUNT(*) FROM (SELECT DISTINCT recommendation_id, position FROM events WHERE "
                f"type IN ({', '.join('?' * len(types))}) AND recommendation_id IS NOT NULL) c JOIN impressions i "
                "ON i.recommendation_id = c.recommendation_id AND i.position = c.position JOIN recommendations r "
                f"ON r.recommendation_id = c.recommendation_id WHERE {where} GROUP BY {keys}",
                (*types, *params))
            return {tuple(row[:4]): int(row[4]) for row in rows}

        clicks, bought = rewarded(REWARDING), rewarded(("purchase",))
        rows = [(float(t) * bucket, v, p, a, int(n), int(shown or 0), float(clicks.get((t, v, p, a), 0)),
                 float(bought.get((t, v, p, a), 0))) for t, v, p, a, n, shown in served]
        schema = {"t": pl.Float64, "model_version": pl.Utf8, "policy": pl.Utf8, "arm": pl.Utf8,
                  "slates": pl.Int64, "shown": pl.Int64, "clicks": pl.Float64, "purchases": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def experiment_impressions(self, experiment: str) -> pl.DataFrame:
        """One row per item shown in ``experiment``: arm, position, propensity, shadow (the slate's JSON),
        reward (1.0 if a :data:`REWARDING` event names it). No user id."""
        import polars as pl

        sql = ("SELECT r.arm, i.position, i.propensity, r.shadow, CASE WHEN EXISTS (SELECT 1 FROM events e "
               "WHERE e.recommendation_id = i.recommendation_id AND e.position = i.position AND e.type IN "
               f"({', '.join('?' * len(REWARDING))})) THEN 1.0 ELSE 0.0 END FROM impressions i JOIN "
               "recommendations r ON r.recommendation_id = i.recommendation_id WHERE r.experiment = ?")
        schema = {"arm": pl.Utf8, "position": pl.Int64, "propensity": pl.Float64, "shadow": pl.Utf8,
                  "reward": pl.Float64}
        return pl.DataFrame(self._select(sql, (*REWARDING, experiment)), schema=schema, orient="row")

    def export(self, path: str | Path, what: str = "events", policy: str | None = None, *,
               overwrite: bool = False) -> int:
        """Write :meth:`events_frame` or :meth:`impressions_frame` to a Parquet or CSV file (by its suffix).

        The file appears whole or not at all (a temporary file in the same
        directory, then a rename). An existing file is refused unless
        ``overwrite``. Returns the number of rows written.
        """
        path = Path(path)
        if what not in ("events", "impressions"):
            raise InputError("unknown export", value=what, expected="'events' or 'impressions'")
        if what == "events" and policy is not None:
            raise InputError("a policy filters only the impressions export", value=policy,
                             expected="policy=None with what='events'")
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise InputError("unknown export format", path=path, value=path.suffix,
                             expected="a file name ending in .parquet or .csv")
        if path.exists() and not overwrite:
            raise InputError("the export file exists", path=path, expected="a new file name",
                             hint="Pass overwrite=True to replace it.")
        if not path.parent.is_dir():
            raise InputError("the export's directory does not exist", path=path.parent,
                             expected="an existing directory")
        frame = self.events_frame() if what == "events" else self.impressions_frame(policy)
        buffer = io.BytesIO()
        if suffix == ".parquet":
            frame.write_parquet(buffer)
        else:
            frame.write_csv(buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return frame.height

    def bandit_logs(self, policy: str | None = None, n_actions: int | None = None) -> BanditLogs:
        """The logged slates (of ``policy``, or all) as bandit feedback for off-policy evaluation."""
        import numpy as np

        from llm4rec.data.logs import BanditLogs

        frame = self.impressions_frame(policy)
        if frame.height == 0:
            raise InputError("no logged impressions", value=policy,
                             expected="served slates in the store" + (f" of policy {policy!r}" if policy else ""))
        action = frame.get_column("action").to_numpy().astype(np.int64)
        position = frame.get_column("position").to_numpy().astype(np.int64)
        return BanditLogs(action=action, position=position,
                          reward=frame.get_column("reward").to_numpy().astype(np.float64),
                          propensity=frame.get_column("propensity").to_numpy().astype(np.float64),
                          n_actions=int(action.max()) + 1 if n_actions is None else n_actions,
                          n_positions=int(position.max()) + 1,
                          name=f"service logs ({policy or 'all policies'})", source=redact(self.url))

    # ---------------------------------------------------------------- items
    def upsert_item(self, item_id: str, fields: dict) -> int:
        """Store an item's fields (replacing its older version); returns its new, ever-growing sequence number."""
        item_id = _text("item", "item_id", item_id)
        if not isinstance(fields, dict):
            raise InputError("item fields are not a dict", value=fields, expected="a dict of field -> text")
        fields = _json(f"the fields of item {item_id!r}", fields)
        t = items_table
        with self._write() as conn:
            if self.dialect == "postgresql":  # commit in seq order, so items_since never skips a later commit
                conn.exec_driver_sql("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
            conn.execute(t.delete().where(t.c.item_id == item_id))
            return int(conn.execute(t.insert().values(item_id=item_id, fields=fields, timestamp=time.time())
                                    .returning(t.c.seq)).scalar_one())

    def item_fields(self, item_id: str) -> dict | None:
        """The fields last stored for an item through :meth:`upsert_item`, or None."""
        t = items_table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.fields).where(t.c.item_id == item_id).order_by(t.c.seq.desc())
                               .limit(1)).first()
        return None if row is None else row[0]

    def items_since(self, seq: int) -> list[tuple[int, str, dict]]:
        """(seq, item_id, fields) of the items upserted after ``seq``, ascending; the newest version of each."""
        t = items_table
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.seq, t.c.item_id, t.c.fields).where(t.c.seq > seq)
                                .order_by(t.c.seq)).all()
        newest = {item: (int(s), item, fields) for s, item, fields in rows}
        return sorted(newest.values(), key=lambda row: row[0])

    # ----------------------------------------------------------------- keys
    def add_key(self, key_id: str, name: str, key_hash: str, scopes: list[str],
                rate_per_minute: int | None) -> None:
        """Store an API key's hash (never the key); InputError if the id or the hash is taken."""
        key_id = _text("key", "key_id", key_id)
        key_hash = _text("key", "key_hash", key_hash)
        if not isinstance(name, str):
            raise _bad("key", "name", "not a string", name, "a string")
        if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
            raise _bad("key", "scopes", "not a list of strings", scopes, "a list of scope names")
        if rate_per_minute is not None:
            _index("key", "rate_per_minute", rate_per_minute)
        try:
            with self._write() as conn:
                conn.execute(keys_table.insert().values(key_id=key_id, name=name, key_hash=key_hash,
                                                        scopes=list(scopes), rate_per_minute=rate_per_minute,
                                                        created=time.time(), revoked=None))
        except sa.exc.IntegrityError:
            raise InputError("an API key with this id (or this key) exists already", value=key_id,
                             expected="a new key id") from None

    @staticmethod
    def _key(row: Any) -> dict:
        return {"key_id": row.key_id, "name": row.name, "scopes": list(row.scopes),
                "rate_per_minute": row.rate_per_minute, "created": float(row.created),
                "revoked": None if row.revoked is None else float(row.revoked)}

    def find_key(self, key_hash: str) -> dict | None:
        """The key with this hash, unless revoked: key_id, name, scopes, rate_per_minute, created, revoked."""
        k = keys_table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(k).where(k.c.key_hash == key_hash, k.c.revoked.is_(None))).first()
        return None if row is None else self._key(row)

    def list_keys(self) -> list[dict]:
        """Every key, revoked ones too (``revoked``: when, or None), oldest first; never the hash."""
        k = keys_table
        with self._engine.connect() as conn:
            return [self._key(row) for row in conn.execute(sa.select(k).order_by(k.c.created, k.c.key_id))]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key from now on (a revoked key stays revoked since then); False if there is no such key."""
        k = keys_table
        with self._write() as conn:
            conn.execute(k.update().where(k.c.key_id == key_id, k.c.revoked.is_(None)).values(revoked=time.time()))
            return conn.execute(sa.select(k.c.key_id).where(k.c.key_id == key_id)).first() is not None

    # ---------------------------------------------------------- experiments
    def add_experiment(self, name: str, arms: list[dict]) -> dict:
        """Start an experiment (``arms``: [{"name", "policy", "model_version", "share"}]); InputError (409) if
        another one is running or the name was used before."""
        name = _text("experiment", "name", name, limit=MAX_ID_CHARS)
        arms = _json(f"the arms of experiment {name!r}", arms)
        x = experiments_table
        with self._write() as conn:
            if conn.execute(sa.select(x.c.name).where(x.c.name == name)).first() is not None:
                raise _conflict(f"an experiment named {name!r} exists", name, "a new experiment name")
            running = conn.execute(sa.select(x.c.name).where(x.c.stopped.is_(None))).first()
            if running is not None:
                raise _conflict(f"experiment {running[0]!r} is still running", running[0],
                                "stop it first (one experiment at a time)")
            conn.execute(x.insert().values(name=name, arms=arms, started=time.time(), stopped=None))
        return self.experiment(name)

    def stop_experiment(self, name: str) -> dict | None:
        """Stop a running experiment (a stopped one stays stopped); None if there is no such experiment."""
        x = experiments_table
        with self._write() as conn:
            conn.execute(x.update().where(x.c.name == name, x.c.stopped.is_(None)).values(stopped=time.time()))
        return self.experiment(name)

    def experiment(self, name: str) -> dict | None:
        """{"name", "arms", "started", "stopped", "active"} or None."""
        found = [x for x in self.experiments() if x["name"] == name]
        return found[0] if found else None

    def experiments(self) -> list[dict]:
        """Every experiment, newest first."""
        x = experiments_table
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(x).order_by(x.c.started.desc())).all()
        return [{"name": row.name, "arms": row.arms, "started": float(row.started),
                 "stopped": None if row.stopped is None else float(row.stopped), "active": row.stopped is None}
                for row in rows]

    # ------------------------------------------------------------- browsing
    def user_ids(self, prefix: str, limit: int) -> list[str]:
        """Users with events whose id starts with ``prefix`` (sorted, at most ``limit``)."""
        e = events_table
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(e.c.user_id).where(e.c.user_id.like(pattern, escape="\\")).distinct()
                                .order_by(e.c.user_id).limit(limit)).all()
        return [row[0] for row in rows]

    def item_activity(self, item_id: str, limit: int) -> tuple[int, list[str]]:
        """(the item's interaction events, up to ``limit`` of the users behind them, most recent first)."""
        e = events_table
        with self._engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(e)
                             .where(e.c.item_id == item_id, e.c.type.in_(INTERACTIONS))).scalar_one()
            last = sa.func.max(e.c.seq).label("last")
            rows = conn.execute(sa.select(e.c.user_id, last).where(e.c.item_id == item_id,
                                                                   e.c.type.in_(INTERACTIONS))
                                .group_by(e.c.user_id).order_by(last.desc()).limit(limit)).all()
        return int(n), [row[0] for row in rows]

    # -------------------------------------------------------------- privacy
    def forget_user(self, user_id: str, actor: str) -> dict[str, int]:
        """Delete the user's events and served slates, remember an HMAC of the id, audit it; one transaction.

        Returns ``{"events": n, "recommendations": m}``, which is also all the
        audit row holds (neither the id nor its hash).
        """
        user_id = _text("forget", "user_id", user_id)
        actor = _text("forget", "actor", actor)
        e, r, i = events_table, recommendations_table, impressions_table
        with self._write() as conn:
            n_events = conn.execute(e.delete().where(e.c.user_id == user_id)).rowcount
            theirs = sa.select(r.c.recommendation_id).where(r.c.user_id == user_id).scalar_subquery()
            conn.execute(i.delete().where(i.c.recommendation_id.in_(theirs)))
            n_recs = conn.execute(r.delete().where(r.c.user_id == user_id)).rowcount
            conn.execute(self._insert(forgotten_table).values(user_hmac=self._hmac(user_id), timestamp=time.time())
                         .on_conflict_do_nothing(index_elements=["user_hmac"]))
            counts = {"events": int(n_events), "recommendations": int(n_recs)}
            conn.execute(audit_table.insert().values(timestamp=time.time(), action="forget_user", actor=actor,
                                                     details=dict(counts)))
        return counts

    def is_forgotten(self, user_id: str) -> bool:
        return bool(self._select(_FORGOTTEN_SQL, (self._hmac(user_id),)))

    def forgotten_count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(forgotten_table)).scalar_one())

    def audit(self, action: str, actor: str, details: dict) -> None:
        """Append an audit row: what was done (``action``), by which key (``actor``), ``details`` as JSON."""
        action = _text("audit", "action", action)
        actor = _text("audit", "actor", actor)
        if not isinstance(details, dict):
            raise _bad("audit", "details", "not a dict", details, "a dict")
        details = _json("audit details", details)
        with self._write() as conn:
            conn.execute(audit_table.insert().values(timestamp=time.time(), action=action, actor=actor,
                                                     details=details))

    def audit_rows(self) -> list[dict]:
        """Every audit row, oldest first: id, timestamp, action, actor, details."""
        a = audit_table
        with self._engine.connect() as conn:
            return [{"id": int(row.id), "timestamp": float(row.timestamp), "action": row.action,
                     "actor": row.actor, "details": row.details}
                    for row in conn.execute(sa.select(a).order_by(a.c.id))]


def _conflict(problem: str, value: object, expected: str) -> InputError:
    error = InputError(problem, value=value, expected=expected)
    error.status = 409  # the app answers with this status
    return error


def _add_columns(conn: sa.Connection) -> None:
    """Add the columns of :data:`_ADDED_COLUMNS` and the item index to a store made before them (nothing else
    changes)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("recommendations")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE recommendations ADD COLUMN {name} {kind}")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_events_item ON events (item_id)")


def _placeholders(cursor: Any, sqlite: bool) -> Callable[..., Any]:
    """run(sql with ``?`` placeholders, params, many=False) on ``cursor``, in the driver's placeholder style."""

    def run(sql: str, params: Sequence = (), many: bool = False) -> Any:
        if not sqlite:
            sql = sql.replace("?", "%s")
        if many:
            cursor.executemany(sql, params)
            return None
        cursor.execute(sql, params)
        return cursor.fetchall()

    return run


def _present(run: Callable[..., Any], table: str, column: str, keys: list[str]) -> set[str]:
    """Those of ``keys`` already in ``table.column``."""
    found: set[str] = set()
    for start in range(0, len(keys), _PRESENT_CHUNK):
        chunk = keys[start:start + _PRESENT_CHUNK]
        rows = run(f"SELECT {column} FROM {table} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk)
        found.update(r[0] for r in rows)
    return found


class _Transaction:
    """``with``: a connection in a transaction, committed on success, rolled back on error, then closed."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sa.Connection:
        try:
            self._conn.begin()
        except BaseException:
            self._conn.close()
            raise
        return self._conn

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()


def _sqlite_pragmas(engine: sa.Engine) -> None:
    """WAL, synchronous=FULL, a 10 s busy timeout and foreign keys on every connection; BEGIN emitted by us.

    pysqlite's own transaction handling is turned off so that a write
    transaction can start with BEGIN IMMEDIATE (taking the write lock at once,
    so a busy database waits out the timeout instead of failing on upgrade).
    """

    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it (EventStore)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")
