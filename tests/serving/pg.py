"""A throw-away PostgreSQL server from the Debian binaries (for the service tests and bench/serving.py).

Started in a temporary directory, on 127.0.0.1 and a free port, with trust
auth, as the ``postgres`` user when run as root (the server refuses root);
stopped and removed on exit. fsync stays on: durability is what is tested.
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
from collections.abc import Iterator
from pathlib import Path

NOT_FOUND = "PostgreSQL server not found: apt-get install postgresql"


def postgres_bin() -> Path | None:
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


def admin_url(base: str, database: str) -> str:
    """``base`` (a server URL) pointed at ``database``, as a plain ``postgresql://`` URL (for psycopg)."""
    from sqlalchemy.engine import make_url

    return make_url(base).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """A running server for the block: its base URL, ``postgresql://postgres@127.0.0.1:PORT/``.

    A RuntimeError says why when it cannot start.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError(NOT_FOUND)
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
                               "apt-get install postgresql") from None
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
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        for _ in range(3):  # another process may take the free port first
            port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
            done = run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
            if done.returncode == 0:
                started = True
                break
        if not started:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"the PostgreSQL server did not start:\n{done.stdout}\n{done.stderr}\n{text}")
        yield f"postgresql://postgres@127.0.0.1:{port}/"
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(base: str, name: str) -> str:
    """A new, empty database on the server at ``base``: its URL."""
    import psycopg

    with psycopg.connect(admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url(base, name)


def drop_database(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
