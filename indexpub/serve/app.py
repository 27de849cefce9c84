"""The ASGI application of ``indexpub serve``: its routes, how refusals become responses, and
its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import HTTPExceptionHandler, Scope

from indexpub import config
from indexpub.domain.limits import DEFAULT_MAX_BYTES as DEFAULT_MAX_CRATE_BYTES
from indexpub.domain.limits import DEFAULT_MAX_METADATA_BYTES
from indexpub.errors import InvalidInput
from indexpub.registry import accounts, store
from indexpub.serve.api import RegistryApi, registry_urls
from indexpub.serve.db import Database
from indexpub.serve.errors import ApiError, error_response
from indexpub.serve.metrics import MetricsMiddleware, ServeMetrics, route_templates
from indexpub.serve.upload import DEFAULT_BODY_TIMEOUT

log = logging.getLogger("indexpub.serve.app")


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


def _refuse(request: Request, status: int, detail: str) -> Response:
    """A refusal of an API request, in cargo's error shape.

    A refusal of a request that may carry a body closes the connection: the refusal may come
    before the body was read (a bad token, a stalled or oversized upload), and the unread rest
    would otherwise keep the connection busy for as long as the client cares to trickle it.
    """
    close = {"connection": "close"} if request.method in ("PUT", "DELETE") else None
    return error_response(status, detail, close)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _refuse(request, exc.status, exc.detail)


def _refused_with(status: int) -> HTTPExceptionHandler:
    """A handler that refuses with ``status`` and the exception's message as the detail."""

    async def refuse(request: Request, exc: Exception) -> Response:
        return _refuse(request, status, str(exc))

    return refuse


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    return _refuse(request, 400, "the client disconnected before sending the whole body")


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.error("database unavailable in %s %s", request.method, request.url.path, exc_info=exc)
    return _refuse(request, 503, "the registry's database is unavailable; try again")


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: logged, never shown."""
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return _refuse(request, 500, "internal server error")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed, a missing sparse file)."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


# Starlette picks the handler of the nearest class in the exception's MRO, so the registry's
# NotFound and Conflict win over InvalidInput, of which they are kinds.
EXCEPTION_HANDLERS: dict[Any, HTTPExceptionHandler] = {
    HTTPException: _http_error,
    ApiError: _api_error,
    store.NotFound: _refused_with(404),
    store.Conflict: _refused_with(409),
    accounts.NotAllowed: _refused_with(403),
    InvalidInput: _refused_with(400),
    ClientDisconnect: _client_disconnect,
    psycopg.OperationalError: _database_unavailable,
}


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
    metrics = ServeMetrics(database_url)
    crate = "/api/v1/crates/{name}"
    routes = [
        Route("/api/v1/crates/new", registry.publish_endpoint, methods=["PUT"]),
        Route(f"{crate}/{{version}}/yank", registry.yank_endpoint, methods=["DELETE"]),
        Route(f"{crate}/{{version}}/unyank", registry.unyank_endpoint, methods=["PUT"]),
        Route(f"{crate}/owners", registry.owners_endpoint, methods=["GET", "PUT", "DELETE"]),
        Route(f"{crate}/{{version}}/download", registry.download_endpoint, methods=["GET"]),
        Route("/index/config.json", registry.config_endpoint, methods=["GET"]),
        Mount(
            "/index",
            app=_SparseFiles(directory=config.sparse_dir(data_dir), check_dir=False),
        ),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()
            metrics.jobs.close()

    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        # Any other exception is a bug. Starlette gives an Exception handler to its outermost
        # middleware, which answers and then raises the exception again for the server to log a
        # second time; this ExceptionMiddleware, around the one of the handlers above, answers
        # and logs it once.
        # The metrics middleware is outside it, and so sees the status of the answer it gave.
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics, templates=route_templates(routes)),
            Middleware(ExceptionMiddleware, handlers={Exception: _internal_error}),
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry
    return app
