from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import pg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, Path | None]]:
    with pg.admin_server() as server:
        yield server


@pytest.fixture
def database_url(pg_server: tuple[str, Path | None]) -> Iterator[str]:
    """A fresh, empty database for this test alone."""
    with pg.fresh_database(pg_server[0]) as url:
        yield url


@pytest.fixture
def restartable_server() -> Iterator[tuple[str, Path]]:
    """A server of the test's own that it may restart; only with the embedded default."""
    import os

    if os.environ.get("INDEXPUB_TEST_DATABASE_URL"):
        pytest.skip("restarting PostgreSQL needs the embedded server")
    with pg.embedded_server("indexpub-restart-") as server:
        yield server
