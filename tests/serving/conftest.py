"""Fixtures of the service tests: a PostgreSQL server for the session, a fresh event store URL per test.

``postgres_server`` is the server named by ``LLM4REC_TEST_POSTGRES_URL`` if
set; otherwise one started here from the PostgreSQL binaries (as the
``postgres`` user when the tests run as root, since the server refuses to run
as root), in a temporary directory, on 127.0.0.1 and a free port, with trust
auth, stopped and removed at the end of the session. Without the binaries
the tests that need it fail (they are not skipped).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL_VARIABLE = "LLM4REC_TEST_POSTGRES_URL"
NOT_FOUND = "PostgreSQL server not found: apt-get install postgresql"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0)
    for directory in reversed(candidates):
        if (Path(directory) / "pg_ctl").is_file() and (Path(directory) / "initdb").is_file():
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_url(base: str, database: str) -> str:
    """``base`` (a server URL) pointed at ``database``, as a plain ``postgresql://`` URL (for psycopg)."""
    from sqlalchemy.engine import make_url

    return make_url(base).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session: its base URL, ``postgresql://postgres@127.0.0.1:PORT/``."""
    given = os.environ.get(POSTGRES_URL_VARIABLE)
    if given:
        yield given
        return
    bindir = _postgres_bin()
    if bindir is None:
        pytest.fail(NOT_FOUND)
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
                        "apt-get install postgresql")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="llm4rec-pg-"))
    if as_root:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, str(bindir / args[0]), *args[1:]], check=False,
                              capture_output=True, text=True, timeout=120)

    started = False
    try:
        done = run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                   "--no-sync")
        if done.returncode != 0:
            pytest.fail(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        for _ in range(3):  # another process may take the free port first
            port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
            done = run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
            if done.returncode == 0:
                started = True
                break
        if not started:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"the PostgreSQL server did not start:\n{done.stdout}\n{done.stderr}\n{text}")
        yield f"postgresql://postgres@127.0.0.1:{port}/"
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty event store, once per backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    import psycopg

    base = request.getfixturevalue("postgres_server")
    name = f"llm4rec_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _admin_url(base, name)
    finally:
        with psycopg.connect(_admin_url(base, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(store_url: str) -> Iterator:
    """An :class:`~llm4rec.serving.store.EventStore` on ``store_url`` with a fixed secret, closed afterwards."""
    from llm4rec.serving.store import EventStore

    s = EventStore(store_url, secret=b"test-secret")
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            s.close()
