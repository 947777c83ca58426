"""The event store on SQLite and PostgreSQL: idempotent, durable group-committed feedback, exports, privacy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from llm4rec.data.logs import load_bandit_logs
from llm4rec.errors import InputError
from llm4rec.serving.store import EventStore, normalise_url, redact


def event(event_id: str, kind: str = "click", user: str = "u1", item: str = "i1", ts: float = 1.0,
          rec: str | None = None, position: int | None = None, value: float | None = None) -> dict:
    return {"event_id": event_id, "type": kind, "user_id": user, "item_id": item, "timestamp": ts,
            "recommendation_id": rec, "position": position, "value": value}


def slate(store: EventStore, rid: str, user: str | None = "u1", policy: str = "greedy", ts: float = 10.0,
          items: tuple[str, ...] = ("a", "b", "c"), actions: tuple[int, ...] = (0, 1, 2),
          propensities: tuple[float, ...] = (1.0, 0.5, 0.25)) -> None:
    store.log_recommendation(rid, user, policy, "v1", list(items), list(actions), list(propensities), ts)


def rows_containing(url: str, needle: str) -> dict[str, int]:
    """Per (table.column): rows whose value, as text, contains ``needle``; every column of every table."""
    engine = sa.create_engine(normalise_url(url))
    try:
        inspector = sa.inspect(engine)
        found = {}
        with engine.connect() as conn:
            for table in inspector.get_table_names():
                for column in inspector.get_columns(table):
                    n = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}" '
                                             f'WHERE CAST("{column["name"]}" AS TEXT) LIKE :pattern'),
                                     {"pattern": f"%{needle}%"}).scalar_one()
                    if n:
                        found[f"{table}.{column['name']}"] = n
        return found
    finally:
        engine.dispose()


# ------------------------------------------------------------------ URLs
def test_normalise_url_forms(tmp_path: Path) -> None:
    assert normalise_url(str(tmp_path / "e.db")) == f"sqlite:///{tmp_path}/e.db"
    assert normalise_url("sqlite:////tmp/e.db") == "sqlite:////tmp/e.db"
    assert normalise_url("postgresql://u:pw@h:5433/db") == "postgresql+psycopg://u:pw@h:5433/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    for bad in ("mysql://u@h/db", "sqlite://", "postgresql+psycopg2://u@h/db", "postgresql://u@h/", ""):
        with pytest.raises(InputError, match="expected a SQLite file path"):
            normalise_url(bad)
    with pytest.raises(InputError) as caught:
        normalise_url("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    assert redact("postgresql+psycopg://u:hunter2@h/db") == "postgresql+psycopg://u:***@h/db"


def test_unreachable_postgres_names_the_redacted_url() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="expected a reachable database") as caught:
        EventStore(f"postgresql://u:hunter2@127.0.0.1:{port}/db")
    assert f"u:***@127.0.0.1:{port}/db" in str(caught.value) and "hunter2" not in str(caught.value)


def test_sqlite_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory does not exist") as caught:
        EventStore(tmp_path / "missing" / "events.db")
    assert str(tmp_path / "missing") in str(caught.value)


def test_sqlite_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    with EventStore(tmp_path / "events.db") as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


# ------------------------------------------------------------- feedback
def test_add_events_is_idempotent(store: EventStore) -> None:
    batch = [event(f"e{i}", ts=float(i)) for i in range(5)]
    assert store.add_events(batch) == (5, 0)
    assert store.add_events(batch) == (0, 5)
    assert store.add_events([event("e9"), event("e9"), event("e0")]) == (1, 2)  # once new, twice duplicate
    assert store.count_events() == 6
    assert store.add_events([]) == (0, 0)


def test_concurrent_callers_are_each_stored_exactly_once(store: EventStore, store_url: str) -> None:
    """8 threads x 50 batches on two stores sharing the database (as two processes would), overlapping ids."""
    other = EventStore(store_url)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        target = store if t % 2 else other
        try:
            for b in range(50):
                batch = [event(f"t{t}-b{b}-{j}", user=f"u{t}", ts=float(b)) for j in range(3)]
                batch.append(event(f"shared-{b}", user="shared"))  # every thread sends this one
                r = target.add_events(batch)
                with lock:
                    results.append(r)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    other.close()
    assert not errors
    expected = 8 * 50 * 3 + 50
    assert sum(n for n, _ in results) == expected
    assert sum(d for _, d in results) == 7 * 50
    assert store.count_events() == expected
    ids = store.events_frame().get_column("event_id")
    assert ids.n_unique() == expected
    assert [item for item, _ in store.user_history("u3")][:3] == ["i1"] * 3


def test_group_commit_batches_the_callers_that_wait(store: EventStore) -> None:
    """While the writer is busy, 7 callers queue up; they are then committed in one transaction."""
    groups: list[int] = []
    gate = threading.Event()
    real = store._commit_group

    def spy(group: list) -> list:
        groups.append(len(group))
        if len(groups) == 1:
            gate.wait(10)
        return real(group)

    store._commit_group = spy
    results: dict[int, tuple[int, int]] = {}

    def call(i: int) -> None:
        results[i] = store.add_events([event(f"e{i}"), event(f"e{i}-x")])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not groups:
        time.sleep(0.001)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 8)]
    for th in rest:
        th.start()
    deadline = time.monotonic() + 10
    while store._queue.qsize() < 7 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for th in [first, *rest]:
        th.join()
    assert groups == [1, 7]
    assert results == {i: (2, 0) for i in range(8)}
    assert store.count_events() == 16


def test_group_failure_reaches_every_caller_and_writes_nothing(store: EventStore) -> None:
    gate = threading.Event()
    calls: list[int] = []
    real = store._insert_group

    def spy(run, group: list) -> list:
        calls.append(len(group))
        if len(calls) == 1:
            gate.wait(10)
            return real(run, group)
        real(run, group)  # written, then the transaction fails
        raise RuntimeError("disk on fire")

    store._insert_group = spy
    outcome: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            outcome[i] = store.add_events([event(f"e{i}")])
        except RuntimeError as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    threads[0].start()
    while not calls:
        time.sleep(0.001)
    for th in threads[1:]:
        th.start()
    while store._queue.qsize() < 3:
        time.sleep(0.001)
    gate.set()
    for th in threads:
        th.join()
    assert calls == [1, 3]
    assert outcome[0] == (1, 0)
    assert all(isinstance(outcome[i], RuntimeError) and "disk on fire" in str(outcome[i]) for i in (1, 2, 3))
    assert store.events_frame().get_column("event_id").to_list() == ["e0"]  # the failed group was rolled back


def test_everything_survives_reopening(store_url: str) -> None:
    first = EventStore(store_url)
    first.add_events([event("e1", item="x", ts=2.0), event("e2", item="y", ts=3.0)])
    slate(first, "r1")
    seq = first.upsert_item("new", {"title": "New"})
    first.add_key("k1", "ops", "h" * 64, ["read"], 60)
    first.forget_user("gone", actor="k1")
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.add_events([event("e3")])
    with EventStore(store_url) as again:  # the secret is kept in the store, so HMACs still match
        assert again.count_events() == 2
        assert again.user_history("u1") == [("x", 2.0), ("y", 3.0)]
        assert again.recommendation("r1")["items"] == ["a", "b", "c"]
        assert again.items_since(0) == [(seq, "new", {"title": "New"})]
        assert again.find_key("h" * 64)["key_id"] == "k1"
        assert again.is_forgotten("gone") and not again.is_forgotten("u1")


@pytest.mark.parametrize(("index", "change", "field", "shown"), [
    (3, {"type": "view"}, "type", "'view'"),
    (1, {"timestamp": float("nan")}, "timestamp", "nan"),
    (2, {"position": -1}, "position", "-1"),
    (0, {"event_id": "x" * 129}, "event_id", "'xxx"),
    (3, {"user_id": ""}, "user_id", "''"),
    (2, {"colour": "red"}, "colour", "'colour'"),
])
def test_bad_event_names_index_field_and_value_and_writes_nothing(store: EventStore, index: int, change: dict,
                                                                  field: str, shown: str) -> None:
    batch = [event(f"e{i}") for i in range(5)]
    batch[index] = {**batch[index], **change}
    with pytest.raises(InputError) as caught:
        store.add_events(batch)
    message = str(caught.value)
    assert message.startswith(f"event {index}, field {field!r}:") and f"got {shown}" in message
    assert "expected" in message
    assert store.count_events() == 0


def test_missing_field_and_bad_slate_are_refused(store: EventStore) -> None:
    bad = event("e1")
    del bad["item_id"]
    with pytest.raises(InputError, match="event 0, field 'item_id': missing"):
        store.add_events([bad])
    with pytest.raises(InputError, match=r"propensities\[1\]': not a probability"):
        store.log_recommendation("r", "u", "greedy", "v1", ["a", "b"], [0, 1], [0.5, 0.0], 1.0)
    with pytest.raises(InputError, match="'actions': 1 values for 2 items"):
        store.log_recommendation("r", "u", "greedy", "v1", ["a", "b"], [0], [0.5, 0.5], 1.0)
    assert store.recommendation("r") is None


def test_user_history_is_interactions_oldest_first(store: EventStore) -> None:
    store.add_events([
        event("e1", "click", item="late", ts=5.0),
        event("e2", "impression", item="seen-only", ts=1.0),
        event("e3", "rating", item="tie-first", ts=2.0, value=4.0),
        event("e4", "dwell", item="tie-second", ts=2.0, value=30.0),
        event("e5", "purchase", item="early", ts=0.5),
        event("e6", "click", user="u2", item="someone-else", ts=0.1),
    ])
    assert store.user_history("u1") == [("early", 0.5), ("tie-first", 2.0), ("tie-second", 2.0), ("late", 5.0)]
    assert store.user_history("nobody") == []


# --------------------------------------------------------------- slates
def test_recommendation_round_trip_and_repeated_id_is_ignored(store: EventStore) -> None:
    slate(store, "r1", user=None, policy="thompson", ts=3.5)
    assert store.recommendation("r1") == {"recommendation_id": "r1", "user_id": None, "policy": "thompson",
                                          "model_version": "v1", "items": ["a", "b", "c"], "actions": [0, 1, 2],
                                          "propensities": [1.0, 0.5, 0.25], "timestamp": 3.5}
    slate(store, "r1", items=("z", "z", "z"))
    assert store.recommendation("r1")["items"] == ["a", "b", "c"]
    store.log_recommendations([{"recommendation_id": f"w{i}", "user_id": "u9", "policy": "uniform",
                                "model_version": "v2", "items": ["p"], "actions": [np.int64(7)],
                                "propensities": [np.float32(0.5)], "timestamp": float(i)} for i in range(3)])
    assert store.recommendation("w2")["actions"] == [7]
    assert store.impressions_frame().height == 6


def test_impressions_frame_rewards_only_the_clicked_position(store: EventStore) -> None:
    slate(store, "r2", policy="uniform", ts=20.0, items=("d", "e"), actions=(3, 4), propensities=(0.5, 0.5))
    slate(store, "r1", ts=10.0)
    store.add_events([
        event("c1", "click", item="b", rec="r1", position=1),
        event("c2", "click", item="b", rec="r1", position=1),  # a second click: still one row, reward 1
        event("c3", "click", item="a"),  # no slate: rewards nothing
        event("c4", "rating", item="c", rec="r1", position=2, value=5.0),  # not a rewarding type
        event("c5", "impression", item="a", rec="r1", position=0),
        event("p1", "purchase", item="e", rec="r2", position=1),
    ])
    frame = store.impressions_frame()
    assert frame.columns == ["recommendation_id", "policy", "model_version", "timestamp", "item_id", "action",
                             "position", "propensity", "reward"]
    assert dict(zip(frame.columns, frame.dtypes))["action"] == pl.Int64
    assert frame.schema["position"] == pl.Int64 and frame.schema["reward"] == pl.Float64
    assert frame.get_column("recommendation_id").to_list() == ["r1", "r1", "r1", "r2", "r2"]
    assert frame.get_column("position").to_list() == [0, 1, 2, 0, 1]
    assert frame.get_column("reward").to_list() == [0.0, 1.0, 0.0, 0.0, 1.0]
    uniform = store.impressions_frame("uniform")
    assert uniform.get_column("item_id").to_list() == ["d", "e"]
    assert store.impressions_frame("nobody").height == 0
    assert store.policy_ctr() == {"greedy": (3, 1), "uniform": (2, 1)}


# -------------------------------------------------------------- exports
def test_export_parquet_round_trip_and_refuses_to_overwrite(store: EventStore, tmp_path: Path) -> None:
    store.add_events([event("e1", ts=1.0), event("e2", "rating", item="i2", ts=2.0, rec="r1", position=0,
                                                 value=3.5)])
    slate(store, "r1")
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "events.parquet"
    assert store.export(out) == 2
    back = pl.read_parquet(out)
    assert back.equals(store.events_frame())
    assert back.get_column("value").to_list() == [None, 3.5]
    with pytest.raises(InputError, match="the export file exists") as caught:
        store.export(out)
    assert str(out) in str(caught.value)
    assert store.export(out, "impressions", overwrite=True) == 3
    assert pl.read_parquet(out).equals(store.impressions_frame())
    csv = folder / "impressions.csv"
    assert store.export(csv, "impressions", policy="greedy") == 3
    assert pl.read_csv(csv).get_column("item_id").to_list() == ["a", "b", "c"]
    with pytest.raises(InputError, match="unknown export format"):
        store.export(folder / "x.json")
    assert sorted(p.name for p in folder.iterdir()) == ["events.parquet", "impressions.csv"]  # no temporary left


def test_bandit_logs_match_the_exported_impressions(store: EventStore, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no logged impressions"):
        store.bandit_logs()
    slate(store, "r1", ts=1.0)
    slate(store, "r2", ts=2.0, actions=(4, 0, 1), propensities=(0.2, 0.3, 0.4))
    slate(store, "r3", policy="uniform", ts=3.0, items=("q",), actions=(9,), propensities=(0.1,))
    store.add_events([event("c1", rec="r2", position=2), event("c2", "purchase", rec="r1", position=0)])
    logs = store.bandit_logs("greedy")
    assert logs.action.tolist() == [0, 1, 2, 4, 0, 1]
    assert logs.position.tolist() == [0, 1, 2, 0, 1, 2]
    assert logs.reward.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert logs.propensity.tolist() == [1.0, 0.5, 0.25, 0.2, 0.3, 0.4]
    assert (logs.n_actions, logs.n_positions) == (5, 3)
    assert logs.name == "service logs (greedy)" and logs.source == redact(store.url)
    assert store.bandit_logs(n_actions=20).n_actions == 20
    every = store.bandit_logs()
    assert every.n_rounds == 7 and every.n_actions == 10 and every.name == "service logs (all policies)"
    path = tmp_path / "impressions.parquet"
    store.export(path, "impressions")
    loaded = load_bandit_logs(path)
    for field in ("action", "position", "reward", "propensity"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(every, field))
    assert (loaded.n_actions, loaded.n_positions) == (every.n_actions, every.n_positions)


# ---------------------------------------------------------------- items
def test_upserted_items_come_back_newest_version_only(store: EventStore) -> None:
    assert store.items_since(0) == []
    s1 = store.upsert_item("m1", {"title": "One"})
    s2 = store.upsert_item("m2", {"title": "Two", "categories": "Drama|Comedy"})
    s3 = store.upsert_item("m1", {"title": "One, revised"})
    assert s1 < s2 < s3
    assert store.items_since(0) == [(s2, "m2", {"title": "Two", "categories": "Drama|Comedy"}),
                                    (s3, "m1", {"title": "One, revised"})]
    assert store.items_since(s2) == [(s3, "m1", {"title": "One, revised"})]
    assert store.items_since(s3) == []
    s4 = store.upsert_item("m2", {"title": "Two"})
    assert s4 > s3 and store.items_since(s3) == [(s4, "m2", {"title": "Two"})]
    with pytest.raises(InputError, match="cannot be stored as JSON"):
        store.upsert_item("m3", {"title": object()})


# ----------------------------------------------------------------- keys
def test_keys_add_find_revoke_list_without_hashes(store: EventStore) -> None:
    h1, h2 = "a" * 64, "b" * 64
    store.add_key("k1", "ingest", h1, ["write"], 600)
    store.add_key("k2", "admin", h2, ["admin", "read"], None)
    found = store.find_key(h1)
    assert found is not None and found["key_id"] == "k1" and found["scopes"] == ["write"]
    assert found["rate_per_minute"] == 600 and found["revoked"] is None
    assert set(found) == {"key_id", "name", "scopes", "rate_per_minute", "created", "revoked"}
    assert store.find_key("c" * 64) is None
    with pytest.raises(InputError, match="exists already"):
        store.add_key("k1", "again", "d" * 64, ["read"], None)
    assert store.revoke_key("k1") is True
    assert store.revoke_key("nope") is False
    assert store.find_key(h1) is None and store.find_key(h2)["key_id"] == "k2"
    listed = store.list_keys()
    assert [k["key_id"] for k in listed] == ["k1", "k2"]
    assert listed[0]["revoked"] is not None and listed[1]["revoked"] is None
    assert h1 not in repr(listed) and h2 not in repr(listed)


# -------------------------------------------------------------- privacy
def test_forget_user_leaves_no_trace_of_the_id(store: EventStore, store_url: str) -> None:
    who = "person-7f3a9c"
    store.add_events([event("e1", user=who, item="i1", rec="r1", position=0),
                      event("e2", "impression", user=who, item="i2"),
                      event("e3", user="someone", item="i1", rec="r2", position=0)])
    slate(store, "r1", user=who)
    slate(store, "r1b", user=who, ts=11.0)
    slate(store, "r2", user="someone")
    store.audit("add_key", "k-admin", {"key_id": "k7"})
    assert rows_containing(store_url, who)  # the scan finds the id before
    assert not store.is_forgotten(who)

    assert store.forget_user(who, actor="k-admin") == {"events": 2, "recommendations": 2}

    assert rows_containing(store_url, who) == {}
    secret_hash = store._hmac(who)
    assert set(rows_containing(store_url, secret_hash)) == {"forgotten.user_hmac"}
    assert store.is_forgotten(who) and not store.is_forgotten("someone") and store.forgotten_count() == 1
    assert store.user_history(who) == [] and store.recommendation("r1") is None
    assert store.impressions_frame().get_column("recommendation_id").to_list() == ["r2"] * 3
    assert store.user_history("someone") == [("i1", 1.0)]
    last = store.audit_rows()[-1]
    assert (last["action"], last["actor"], last["details"]) == ("forget_user", "k-admin",
                                                                {"events": 2, "recommendations": 2})
    assert [r["action"] for r in store.audit_rows()] == ["add_key", "forget_user"]
    assert store.forget_user(who, actor="k-admin") == {"events": 0, "recommendations": 0}
    assert store.forgotten_count() == 1
    slate(store, "r-late", user=who)  # served before the forgetting, reaching the store after it
    assert store.recommendation("r-late") is None and rows_containing(store_url, who) == {}
