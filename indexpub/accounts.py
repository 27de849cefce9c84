"""Users, API tokens and crate owners: who may publish, yank and change owners.

Like :mod:`indexpub.store`, every function runs in the caller's transaction and never commits.
The first publisher of a crate owns it; only owners publish new versions, yank, unyank and
change the owners.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from indexpub import queries, store
from indexpub.entries import IndexEntry
from indexpub.errors import InvalidInput
from indexpub.names import canonical_name, validate_crate_name

Conn = psycopg.Connection[Any]

TOKEN_PREFIX = "ipub_"


class NotAllowed(Exception):
    """The caller is authenticated but may not do this (HTTP 403)."""


class UnknownUser(store.NotFound):
    """No user has that login (``indexpub token create`` makes users)."""


@dataclass(frozen=True)
class User:
    id: int
    login: str


def _sql(template: str) -> psycopg.sql.Composed:
    return store.sql(template)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_login(login: str) -> str:
    if not login or len(login) > 64 or not all(c.isalnum() or c in "-_." for c in login):
        raise InvalidInput(
            f"invalid user name {login!r}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )
    return login


def create_token(conn: Conn, login: str, name: str = "") -> str:
    """A new token for ``login`` (created if new); the only time the token is ever visible."""
    row = conn.execute(_sql(queries.UPSERT_USER), (_check_login(login),)).fetchone()
    assert row is not None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(_sql(queries.INSERT_TOKEN), (int(row[0]), name, _hash(token)))
    return token


def revoke_tokens(conn: Conn, login: str, name: str | None = None) -> int:
    """Revoke the user's tokens (or only those with ``name``); how many were revoked."""
    return conn.execute(_sql(queries.REVOKE_TOKENS), {"login": login, "name": name}).rowcount


def authenticate(conn: Conn, token: str | None) -> User | None:
    """The user a raw token belongs to; None for a missing, unknown or revoked token."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(_sql(queries.AUTHENTICATE), (_hash(token),)).fetchone()
    return None if row is None else User(int(row[0]), str(row[1]))


def _crate(conn: Conn, name: str) -> tuple[int, str]:
    validate_crate_name(name)
    row = conn.execute(_sql(queries.CRATE_ID), (canonical_name(name),)).fetchone()
    if row is None:
        raise store.NotFound(f"no crate named {name!r}")
    return int(row[0]), str(row[1])


def require_owner(conn: Conn, name: str, user: User) -> str:
    """The crate's published name, if ``user`` owns it; otherwise NotAllowed."""
    crate_id, published = _crate(conn, name)
    if conn.execute(_sql(queries.IS_OWNER), (crate_id, user.id)).fetchone() is None:
        raise NotAllowed(f"user {user.login!r} is not an owner of crate {published!r}")
    return published


def publish(conn: Conn, entry: IndexEntry, user: User) -> store.Change:
    """Publish as ``user``: a new crate becomes theirs, an existing one must be theirs.

    A crate published without an owner (``indexpub publish`` on the command line) gets owners
    only through ``indexpub owner add``: the first API caller does not get to claim it.

    Ownership is decided after :func:`store.publish`, which holds the crate's row lock until the
    caller commits: two users racing to create the same crate serialize there, and the second
    finds an owner that is not them. On NotAllowed the caller must roll back, as after any error.
    """
    change = store.publish(conn, entry)
    crate_id, published = _crate(conn, entry.name)
    if change.new_crate:
        conn.execute(_sql(queries.ADD_OWNER), (crate_id, user.id))
    elif conn.execute(_sql(queries.IS_OWNER), (crate_id, user.id)).fetchone() is None:
        raise NotAllowed(f"user {user.login!r} is not an owner of crate {published!r}")
    return change


def list_owners(conn: Conn, name: str) -> list[User]:
    crate_id, _ = _crate(conn, name)
    return [
        User(int(r[0]), str(r[1])) for r in conn.execute(_sql(queries.LIST_OWNERS), (crate_id,))
    ]


def _add_owner(conn: Conn, crate_id: int, login: str) -> tuple[str, bool]:
    """Add an existing user as an owner: (their login, False if they already were one)."""
    row = conn.execute(_sql(queries.FIND_USER), (login,)).fetchone()
    if row is None:
        raise UnknownUser(f"no user named {login!r}")
    added = conn.execute(_sql(queries.ADD_OWNER), (crate_id, int(row[0]))).rowcount
    return str(row[1]), added == 1


def add_owners(conn: Conn, name: str, logins: list[str], by: User) -> list[str]:
    """Add existing users as owners (an owner may add others); the logins added."""
    require_owner(conn, name, by)
    crate_id, _ = _crate(conn, name)
    return [_add_owner(conn, crate_id, login)[0] for login in logins]


def add_owner_as_admin(conn: Conn, name: str, login: str) -> tuple[str, bool]:
    """Make ``login`` an owner without being one: the administrator's way to give an owner to
    a crate published from the command line (which has none).

    Returns the crate's published name and whether the user was added.
    """
    crate_id, published = _crate(conn, name)
    return published, _add_owner(conn, crate_id, login)[1]


def remove_owners(conn: Conn, name: str, logins: list[str], by: User) -> list[str]:
    """Remove owners; the last owner cannot be removed (the crate would be orphaned)."""
    require_owner(conn, name, by)
    crate_id, published = _crate(conn, name)
    current = {u.login: u for u in list_owners(conn, name)}
    missing = [login for login in logins if login not in current]
    if missing:
        raise store.NotFound(f"{missing[0]!r} is not an owner of crate {published!r}")
    if set(current) <= set(logins):
        raise store.Conflict(f"cannot remove every owner of crate {published!r}")
    for login in logins:
        conn.execute(_sql(queries.REMOVE_OWNER), (crate_id, current[login].id))
    return logins


def yank(conn: Conn, name: str, version: str, user: User, *, yanked: bool = True) -> store.Change:
    require_owner(conn, name, user)
    return (store.yank if yanked else store.unyank)(conn, name, version)
