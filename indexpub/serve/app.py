"""cargo's registry Web API and the sparse index over HTTP (``indexpub serve``).

A thin layer over the Python API that any registry backend calls
(:mod:`indexpub.registry.accounts`, :mod:`indexpub.registry.store`): it adds only what HTTP
needs — reading cargo's framed upload without trusting its lengths, tokens from the
``Authorization`` header, and errors in the shape cargo prints
(``{"errors": [{"detail": "..."}]}``). The index itself is never written here: a publish
records the version and enqueues its sync jobs in one transaction, and ``indexpub worker``
renders the git and sparse files from the database.

Blocking work (PostgreSQL, file writes, unpacking the ``.crate``) runs in Starlette's thread
pool, so one slow upload or query never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from indexpub import config
from indexpub.domain.crate_file import read_crate_bytes
from indexpub.domain.entries import IndexEntry, load_json, sort_dependencies
from indexpub.errors import InvalidInput
from indexpub.registry import accounts, store
from indexpub.registry.crate_storage import crate_file_path, store_crate_file
from indexpub.serve.db import Database

log = logging.getLogger("indexpub.serve.app")

KiB = 1024
MiB = 1024 * KiB
DEFAULT_MAX_CRATE_BYTES = 10 * MiB
# The publish JSON holds the manifest's metadata and the README's text; 1 MiB is generous.
DEFAULT_MAX_METADATA_BYTES = 1 * MiB
# PUT/DELETE .../owners bodies: a list of logins.
MAX_OWNERS_BODY_BYTES = 64 * KiB
MAX_OWNERS_PER_REQUEST = 100
# The longest wait for the next piece of a request body: a client that stalls mid-upload gets
# 408 and loses its connection instead of holding a worker slot and the body's memory forever.
DEFAULT_BODY_TIMEOUT = 30.0

Handler = Callable[[Request], Awaitable[Response]]

EMPTY_WARNINGS: dict[str, list[str]] = {"invalid_categories": [], "invalid_badges": [], "other": []}


class ApiError(Exception):
    """A refusal with its HTTP status; ``detail`` is shown to the person who ran cargo."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """cargo's error shape: it prints every ``detail``, whatever the status."""
    return JSONResponse({"errors": [{"detail": detail}]}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- request helpers


def _token(request: Request) -> str:
    """The raw token of the ``Authorization`` header (cargo sends it bare; "Bearer " is
    tolerated for hand-written clients)."""
    raw = request.headers.get("authorization", "").strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    if not raw:
        raise ApiError(
            403,
            "this request needs an API token in the Authorization header "
            "(an administrator makes one with `indexpub token create USER`)",
        )
    return raw


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ApiError(400, f"invalid Content-Length header {value[:40]!r}")
    return int(value)


class _Body:
    """The request body, read only as far as each step needs.

    Every length cargo declares is checked against the limits and against Content-Length
    before the bytes it announces are read, so an oversized or lying upload is refused without
    buffering it; a body without Content-Length (chunked) is cut off at ``limit``. Each wait for
    the next chunk is bounded by ``timeout``: a stalled client gets 408, not a slot for ever.
    """

    def __init__(self, request: Request, limit: int, timeout: float) -> None:
        self._chunks = request.stream().__aiter__()
        self._buffer = bytearray()
        self._ended = False
        self._limit = limit
        self._timeout = timeout
        self.received = 0

    async def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted and not self._ended:
            try:
                chunk = await asyncio.wait_for(self._chunks.__anext__(), self._timeout)
            except StopAsyncIteration:
                self._ended = True
                break
            except TimeoutError:
                raise ApiError(
                    408,
                    f"the request body stalled: no data for {self._timeout:g} s after "
                    f"{self.received} bytes",
                ) from None
            self.received += len(chunk)
            if self.received > self._limit:
                raise ApiError(
                    413, f"the request body is larger than the limit of {self._limit} bytes"
                )
            self._buffer += chunk

    async def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes; None when the body ends first."""
        await self._fill(size)
        if len(self._buffer) < size:
            return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def rest(self) -> int:
        """How many bytes remain (read to the end, within the limit)."""
        await self._fill(self._limit + 1)
        return len(self._buffer)


def _parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = load_json(data, what)
    except InvalidInput as exc:  # never a 500, whatever the bytes (deep, huge numbers)
        raise ApiError(400, str(exc)) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"{what} must be a JSON object, not {type(parsed).__name__}")
    return parsed


async def _read_limited_json(
    request: Request, limit: int, timeout: float, what: str
) -> dict[str, Any]:
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise ApiError(413, f"{what} of {declared} bytes is larger than the limit of {limit}")
    body = _Body(request, limit, timeout)
    data = await body.take(await body.rest()) or b""
    return _parse_json_object(data, what)


def _same_registry(entry: IndexEntry, urls: Sequence[str]) -> IndexEntry:
    """Map dependencies on any of this registry's URLs to ``registry: null``.

    A crate packaged for this registry names it in ``registry-index`` by whichever URL its
    author configured (the git index or the sparse one); all of them mean "this registry".
    """
    ours = {url.rstrip("/") for url in urls}
    if not any(dep.registry is not None and dep.registry.rstrip("/") in ours for dep in entry.deps):
        return entry
    deps = (
        replace(dep, registry=None)
        if dep.registry is not None and dep.registry.rstrip("/") in ours
        else dep
        for dep in entry.deps
    )
    return replace(entry, deps=sort_dependencies(deps))


# --------------------------------------------------------------------------- the sparse index


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


# --------------------------------------------------------------------------- the application


@dataclass(frozen=True)
class _Registry:
    """Everything the handlers need; one per application."""

    db: Database
    data_dir: Path
    public_url: str
    max_crate_bytes: int
    max_metadata_bytes: int
    index_urls: tuple[str, ...]
    body_timeout: float

    # ------------------------------------------------------------------ blocking parts

    def authenticate(self, token: str) -> accounts.User:
        """The token's user, in a transaction of its own committed at once.

        Kept out of the publish's transaction because ``authenticate`` updates the token's
        ``last_used_at``: holding that row lock until the publish commits would serialize every
        upload made with the same token.
        """
        with self.db.connection() as conn:
            user = accounts.authenticate(conn, token)
            conn.commit()
        if user is None:
            raise ApiError(403, "invalid or revoked API token")
        return user

    def validate(self, meta: dict[str, Any], crate: bytes) -> tuple[IndexEntry, list[str]]:
        """The entry to publish, from the ``.crate``, checked against the JSON cargo sent.

        The entry comes from the archive's normalized ``Cargo.toml`` (see
        :mod:`indexpub.domain.crate_file`), so the index describes the bytes that cargo will
        download rather than what a client claims; a JSON that disagrees in anything else than
        name and version (which must match) earns a warning, which cargo prints.
        """
        cksum = hashlib.sha256(crate).hexdigest()
        claimed = IndexEntry.from_publish_json(meta, cksum)
        entry = read_crate_bytes(
            crate,
            max_bytes=self.max_crate_bytes,
            index_url=self.index_urls[0],
            expected_name=claimed.name,
            expected_version=str(claimed.vers),
        )
        entry = _same_registry(entry, self.index_urls)
        warnings = []
        if entry.to_line() != _same_registry(claimed, self.index_urls).to_line():
            warnings.append(
                "the publish metadata differs from the Cargo.toml inside the .crate file "
                "(dependencies, features, links or rust-version); the index uses the .crate's"
            )
        return entry, warnings

    def publish(self, entry: IndexEntry, crate: bytes, user: accounts.User) -> store.Change:
        with self.db.connection() as conn:
            change = accounts.publish(conn, entry, user)
            # After the store accepted the entry and under its crate lock, before COMMIT.
            store_crate_file(self.data_dir, entry, crate)
            conn.commit()
        log.info("%s %s %s by %s", change.outcome.value, change.name, entry.vers, user.login)
        return change

    def set_yanked(self, token: str, name: str, version: str, yanked: bool) -> store.Change:
        user = self.authenticate(token)
        with self.db.connection() as conn:
            change = accounts.yank(conn, name, version, user, yanked=yanked)
            conn.commit()
        return change

    def list_owners(self, name: str) -> list[accounts.User]:
        with self.db.connection() as conn:
            return accounts.list_owners(conn, name)

    def change_owners(
        self, user: accounts.User, name: str, logins: list[str], add: bool
    ) -> list[str]:
        with self.db.connection() as conn:
            change = accounts.add_owners if add else accounts.remove_owners
            changed = change(conn, name, logins, user)
            conn.commit()
        return changed

    # ------------------------------------------------------------------ endpoints

    async def publish_endpoint(self, request: Request) -> Response:
        token = _token(request)
        limit = 8 + self.max_metadata_bytes + self.max_crate_bytes
        declared = _content_length(request)
        if declared is not None and declared > limit:
            raise ApiError(
                413,
                f"the upload of {declared} bytes is larger than the limit of {limit} bytes "
                f"(a .crate file may have at most {self.max_crate_bytes} bytes)",
            )
        user = await run_in_threadpool(self.authenticate, token)
        meta, crate = await self._read_upload(request, declared, limit)
        entry, warnings = await run_in_threadpool(self.validate, meta, crate)
        await run_in_threadpool(self.publish, entry, crate, user)
        return JSONResponse({"warnings": {**EMPTY_WARNINGS, "other": warnings}})

    async def _read_upload(
        self, request: Request, declared: int | None, limit: int
    ) -> tuple[dict[str, Any], bytes]:
        """cargo's framing: u32 LE JSON length, the JSON, u32 LE .crate length, the .crate."""
        body = _Body(request, limit, self.body_timeout)
        head = await body.take(4)
        if head is None:
            raise ApiError(
                400,
                f"invalid publish request: a body of {body.received} bytes is too short for "
                "the 4-byte length of the JSON metadata",
            )
        (json_len,) = struct.unpack("<I", head)
        if json_len > self.max_metadata_bytes:
            raise ApiError(
                413,
                f"the publish metadata (JSON) of {json_len} bytes is larger than the limit of "
                f"{self.max_metadata_bytes} bytes",
            )
        if declared is not None and 4 + json_len > declared:
            raise ApiError(
                400,
                f"invalid publish request: the JSON length {json_len} reaches past the end of "
                f"the {declared}-byte body",
            )
        meta_bytes = await body.take(json_len)
        if meta_bytes is None:
            raise ApiError(
                400, f"invalid publish request: the body ends inside the {json_len}-byte JSON"
            )
        crate_head = await body.take(4)
        if crate_head is None:
            raise ApiError(
                400,
                f"invalid publish request: the body ends after the JSON ({body.received} bytes "
                "in all), without the 4-byte length of the .crate file",
            )
        (crate_len,) = struct.unpack("<I", crate_head)
        if crate_len > self.max_crate_bytes:
            raise ApiError(
                413,
                f"the .crate file of {crate_len} bytes is larger than the limit of "
                f"{self.max_crate_bytes} bytes",
            )
        if declared is not None and 8 + json_len + crate_len > declared:
            raise ApiError(
                400,
                f"invalid publish request: the .crate length {crate_len} reaches past the end "
                f"of the {declared}-byte body",
            )
        crate = await body.take(crate_len)
        if crate is None:
            raise ApiError(
                400, f"invalid publish request: the body ends inside the {crate_len}-byte .crate"
            )
        extra = await body.rest()
        if extra:
            raise ApiError(
                400, f"invalid publish request: {extra} unexpected bytes after the .crate file"
            )
        return _parse_json_object(meta_bytes, "the publish metadata"), crate

    async def yank_endpoint(self, request: Request) -> Response:
        return await self._yank(request, True)

    async def unyank_endpoint(self, request: Request) -> Response:
        return await self._yank(request, False)

    async def _yank(self, request: Request, yanked: bool) -> Response:
        token = _token(request)
        name, version = request.path_params["name"], request.path_params["version"]
        await run_in_threadpool(self.set_yanked, token, name, version, yanked)
        return JSONResponse({"ok": True})

    async def owners_endpoint(self, request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "GET":
            owners = await run_in_threadpool(self.list_owners, name)
            return JSONResponse(
                {"users": [{"id": u.id, "login": u.login, "name": None} for u in owners]}
            )
        # Authenticated before a byte of the body is read: a stranger's request costs one
        # token lookup, never a wait for (or the memory of) a body.
        user = await run_in_threadpool(self.authenticate, _token(request))
        body = await _read_limited_json(
            request, MAX_OWNERS_BODY_BYTES, self.body_timeout, "the owners request"
        )
        logins = body.get("users")
        if (
            not isinstance(logins, list)
            or not logins
            or not all(isinstance(login, str) for login in logins)
        ):
            raise ApiError(400, 'the owners request must be {"users": ["login", ...]}')
        if len(logins) > MAX_OWNERS_PER_REQUEST:
            raise ApiError(400, f"at most {MAX_OWNERS_PER_REQUEST} users per request")
        add = request.method == "PUT"
        changed = await run_in_threadpool(self.change_owners, user, name, logins, add)
        who = ", ".join(changed)
        msg = (
            f"user(s) {who} added as owner(s) of crate {name}"
            if add
            else f"user(s) {who} removed from the owners of crate {name}"
        )
        return JSONResponse({"ok": True, "msg": msg})

    async def download_endpoint(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        path = crate_file_path(self.data_dir, name, version)
        if not await run_in_threadpool(path.is_file):
            raise ApiError(404, f"crate {name!r} has no version {version} to download")
        return FileResponse(path, media_type="application/gzip")

    async def config_endpoint(self, request: Request) -> Response:
        return JSONResponse({"dl": f"{self.public_url}/api/v1/crates", "api": self.public_url})


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


def registry_urls(public_url: str, index_urls: Sequence[str] = ()) -> tuple[str, ...]:
    """Every URL by which crates packaged for this registry may name it (``registry-index``).

    The sparse index's (``sparse+{public_url}/index/``) and the given ones, plus the
    ``file://`` form of an index given as a local path (which is how cargo writes it).
    """
    urls = [f"sparse+{public_url}/index/"]
    for url in index_urls:
        urls.append(url)
        if url.startswith("/"):
            urls.append(Path(url).as_uri())
    return tuple(dict.fromkeys(urls))


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
    registry = _Registry(
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
