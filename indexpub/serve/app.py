"""The ASGI application of ``indexpub serve``: its routes, how refusals become responses, and
its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from indexpub import config
from indexpub.errors import InvalidInput
from indexpub.registry import accounts, store
from indexpub.serve.api import RegistryApi, registry_urls
from indexpub.serve.db import Database
from indexpub.serve.errors import ApiError, error_response
from indexpub.serve.upload import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_CRATE_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
)

log = logging.getLogger("indexpub.serve.app")

Handler = Callable[[Request], Awaitable[Response]]


class _SparseFiles(StaticFiles):
    """The sparse index's files, with ETag and Last-Modified from each file's stat.

    StaticFiles answers ``If-None-Match``/``If-Modified-Since`` with 304, which is how cargo
    revalidates its cache. A missing directory (no crate synced yet) means every file is
    missing, not a server error, and the writer's temporary ``.tmp-*`` files are never served.
    """

    async def check_config(self) -> None:
        return None

    async def get_response(self, path: str, scope: Scope) -> Response:
        if any(part.startswith(".") for part in Path(path).parts):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def _api(handler: Handler) -> Handler:
    """Turn every refusal into cargo's error shape with a fitting status; never leak a bug.

    The order matters: ``NotFound`` and ``Conflict`` are kinds of ``InvalidInput``. A refusal
    of a request that may carry a body closes the connection: the refusal may come before the
    body was read (a bad token, a stalled or oversized upload), and the unread rest would
    otherwise keep the connection busy for as long as the client cares to trickle it.
    """

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            status, detail = _refusal(request, exc)
        close = {"connection": "close"} if request.method in ("PUT", "DELETE") else None
        return error_response(status, detail, close)

    return wrapped


def _refusal(request: Request, exc: Exception) -> tuple[int, str]:
    """The status and detail for an exception of a handler; bugs are logged, never shown."""
    if isinstance(exc, ApiError):
        return exc.status, exc.detail
    if isinstance(exc, store.NotFound):
        return 404, str(exc)
    if isinstance(exc, store.Conflict):
        return 409, str(exc)
    if isinstance(exc, accounts.NotAllowed):
        return 403, str(exc)
    if isinstance(exc, InvalidInput):
        return 400, str(exc)
    if isinstance(exc, ClientDisconnect):
        return 400, "the client disconnected before sending the whole body"
    if isinstance(exc, psycopg.OperationalError):
        log.exception("database unavailable in %s %s", request.method, request.url.path)
        return 503, "the registry's database is unavailable; try again"
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return 500, "internal server error"


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed, a missing sparse file)."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


def create_app(
    database_url: str,
    data_dir: Path,
    *,
    public_url: str,
    max_crate_bytes: int = DEFAULT_MAX_CRATE_BYTES,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    index_urls: Sequence[str] = (),
    pool: bool = True,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """The registry Web API and the sparse index as an ASGI application.

    ``public_url`` is where clients reach this server (``http://host:port``): the sparse
    index's ``config.json`` sends cargo there for the API and the downloads. ``index_urls`` are
    the other URLs of this registry's index (its git remote), so that dependencies of uploaded
    crates on this registry become ``registry: null`` in the index. ``pool``: False connects once
    per use instead of keeping a pool. ``body_timeout``: the longest wait, in seconds, for the
    next piece of a request body (then 408).
    """
    public_url = public_url.rstrip("/")
    if not public_url.startswith(("http://", "https://")):
        raise ValueError(f"the public URL {public_url!r} must start with http:// or https://")
    if max_crate_bytes < 1 or max_metadata_bytes < 1:
        raise ValueError("the upload limits must be positive")
    if not body_timeout > 0:
        raise ValueError("the body read timeout must be positive")
    database = Database(database_url, pool=pool)
    registry = RegistryApi(
        db=database,
        data_dir=data_dir,
        public_url=public_url,
        max_crate_bytes=max_crate_bytes,
        max_metadata_bytes=max_metadata_bytes,
        index_urls=registry_urls(public_url, index_urls),
        body_timeout=body_timeout,
    )
    crate = "/api/v1/crates/{name}"
    routes = [
        Route("/api/v1/crates/new", _api(registry.publish_endpoint), methods=["PUT"]),
        Route(f"{crate}/{{version}}/yank", _api(registry.yank_endpoint), methods=["DELETE"]),
        Route(f"{crate}/{{version}}/unyank", _api(registry.unyank_endpoint), methods=["PUT"]),
        Route(f"{crate}/owners", _api(registry.owners_endpoint), methods=["GET", "PUT", "DELETE"]),
        Route(f"{crate}/{{version}}/download", _api(registry.download_endpoint), methods=["GET"]),
        Route("/index/config.json", _api(registry.config_endpoint), methods=["GET"]),
        Mount(
            "/index",
            app=_SparseFiles(directory=config.sparse_dir(data_dir), check_dir=False),
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan
    )
    app.state.registry = registry
    return app
