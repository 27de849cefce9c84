"""The database connections of ``indexpub serve``'s request handlers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg_pool import ConnectionPool

from indexpub.registry.sql import Conn


class Database:
    """Connections for the request handlers: from a pool, or with ``pool=False`` one
    ``psycopg.connect`` per use.

    The pool is opened by :meth:`open` (the application's lifespan) and closed by :meth:`close`.
    Either way a connection is a context whose transaction is committed on success and rolled
    back on an exception, as with ``psycopg.connect``.
    """

    def __init__(self, url: str, *, pool: bool = True, pool_size: int = 10) -> None:
        self.url = url
        self._pool: ConnectionPool | None = None
        if pool:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=10.0,
                name="indexpub-serve",
                # A connection broken by a PostgreSQL restart is replaced, not handed out.
                check=ConnectionPool.check_connection,
            )

    @property
    def pooled(self) -> bool:
        return self._pool is not None

    def open(self) -> None:
        """Start filling the pool, without waiting for its first connection."""
        if self._pool is not None:
            self._pool.open(wait=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        if self._pool is None:
            with psycopg.connect(self.url) as direct:
                yield direct
            return
        with self._pool.connection() as pooled:
            yield pooled
