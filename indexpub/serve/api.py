"""The endpoints of cargo's registry Web API: publish, yank and unyank, owners, downloads, and
the sparse index's ``config.json``.

Blocking work (PostgreSQL, file writes, unpacking the ``.crate``) runs in Starlette's thread
pool, so one slow upload or query never stalls the event loop. Refusals are raised (as
:class:`~indexpub.serve.errors.ApiError` or the registry's own exceptions) and turned into
responses by :mod:`indexpub.serve.app`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from indexpub.domain.crate_file import read_crate_bytes
from indexpub.domain.entries import IndexEntry, own_registry_as_null
from indexpub.domain.limits import KiB
from indexpub.registry import accounts, store
from indexpub.registry.crate_storage import crate_file_path, store_crate_file
from indexpub.serve.db import Database
from indexpub.serve.errors import ApiError
from indexpub.serve.upload import (
    declared_publish_length,
    read_limited_json,
    read_publish,
)

# All of `indexpub serve` logs under this one name.
log = logging.getLogger("indexpub.serve.app")

# PUT/DELETE .../owners bodies: a list of logins.
MAX_OWNERS_BODY_BYTES = 64 * KiB
MAX_OWNERS_PER_REQUEST = 100

EMPTY_WARNINGS: dict[str, list[str]] = {"invalid_categories": [], "invalid_badges": [], "other": []}


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


@dataclass(frozen=True)
class RegistryApi:
    """The endpoints and everything they need; one per application."""

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
        entry = own_registry_as_null(entry, self.index_urls)
        warnings = []
        if entry.to_line() != own_registry_as_null(claimed, self.index_urls).to_line():
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
        declared = declared_publish_length(request, self.max_metadata_bytes, self.max_crate_bytes)
        user = await run_in_threadpool(self.authenticate, token)
        meta, crate = await read_publish(
            request,
            declared,
            max_metadata_bytes=self.max_metadata_bytes,
            max_crate_bytes=self.max_crate_bytes,
            timeout=self.body_timeout,
        )
        entry, warnings = await run_in_threadpool(self.validate, meta, crate)
        await run_in_threadpool(self.publish, entry, crate, user)
        return JSONResponse({"warnings": {**EMPTY_WARNINGS, "other": warnings}})

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
        body = await read_limited_json(
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
