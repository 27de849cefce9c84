"""Connection limits of ``indexpub serve`` that uvicorn does not have: a header read timeout.

uvicorn bounds a connection's idle time between requests (``timeout_keep_alive``), how many
connections it serves at once (``limit_concurrency``, 503 beyond) and how large an incomplete
header block may grow (``h11_max_incomplete_event_size``), but not how long a client may take to
send its headers: a client that opens connections and sends a few header bytes now and then
(slowloris) holds each one for ever. :func:`h11_with_header_timeout` makes an h11 protocol
that closes a connection whose request line and headers are not complete ``seconds`` after they
began (or after the connection opened). The body read timeout lives in
:mod:`indexpub.serve.upload`, where the body is read.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("indexpub.serve.app")

DEFAULT_HEADER_TIMEOUT = 20.0
# Idle time between two requests of one connection; uvicorn's default.
DEFAULT_KEEP_ALIVE_TIMEOUT = 5
# Connections served at once; requests beyond get uvicorn's 503. The database pool has 10
# connections and the thread pool 40 threads, so more would only queue.
DEFAULT_LIMIT_CONCURRENCY = 100


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers.

    The timer runs while h11 waits for a request (``their_state`` IDLE) and some of it, or the
    connection itself, has arrived: from the connection's start, and from the first byte of each
    later request (uvicorn's keep-alive timer covers the silence between requests). Once the
    headers are complete, the body's own timeout applies.
    """

    header_timeout = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection whose headers took over %g s", self.header_timeout)
            self.transport.close()


def h11_with_header_timeout(seconds: float) -> type[H11Protocol]:
    """uvicorn's ``http=`` protocol class: h11 (never httptools) with this header timeout."""
    if not seconds > 0:
        raise ValueError("the header read timeout must be positive")
    return type("HeaderTimeoutH11", (_HeaderTimeoutH11,), {"header_timeout": seconds})
