"""The fixtures shared by the test modules; the helpers behind them are in ``support``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from support import pg
from support.cargo_registry import CargoRegistry
from support.index_helpers import Registry, make_registry
from support.queue_helpers import setup_database

from indexpub.gitindex.index import GitIndex
from indexpub.registry import store

# These machines are shared: one test's examples can take seconds while other suites run, so
# Hypothesis judges no test by its speed (a slow example is not a failing one). Set before the
# test modules are imported, so their own @settings start from it.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

# --------------------------------------------------------------------------- PostgreSQL


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


@pytest.fixture
def registry_url(database_url: str) -> str:
    """``database_url`` with indexpub's tables (``store.migrate``)."""
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
    return database_url


@pytest.fixture
def queue_url(database_url: str) -> str:
    """``database_url`` with the test job application's queue tables and its runs table."""
    setup_database(database_url)
    return database_url


# --------------------------------------------------------------------------- registries


@pytest.fixture
def reg(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A migrated database, a bare index remote and a data directory in ``tmp_path``. The sparse
    index and the crate files go to the data directory whatever ``INDEXPUB_SPARSE_DIR`` and
    ``INDEXPUB_CRATE_DIR`` say outside the test."""
    monkeypatch.delenv("INDEXPUB_SPARSE_DIR", raising=False)
    monkeypatch.delenv("INDEXPUB_CRATE_DIR", raising=False)
    return make_registry(database_url, tmp_path)


@pytest.fixture
def alice(reg: Registry) -> str:
    """An API token of user alice on ``reg``."""
    return reg.token("alice")


@pytest.fixture
def bob(reg: Registry) -> str:
    """An API token of user bob on ``reg``."""
    return reg.token("bob")


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[CargoRegistry]:
    """A whole registry for the real cargo: ``indexpub serve`` and ``indexpub worker`` running."""
    running = CargoRegistry(tmp_path, database_url)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def index(remote: Path, tmp_path: Path) -> GitIndex:
    """A GitIndex with its clone in ``tmp_path``, of ``remote``: a bare index remote that the
    test's module provides (as a fixture of that name)."""
    return GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
