"""Users, API tokens and crate owners: who may publish, yank and change owners.

Like :mod:`indexpub.registry.store`, every function runs in the caller's transaction and never
commits. The first publisher of a crate owns it; only owners publish new versions, yank, unyank and
change the owners.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import canonical_name, validate_crate_name
from indexpub.errors import InvalidInput
from indexpub.errors import shorten as _shorten
from indexpub.registry import sql, store
from indexpub.registry.sql import Conn, statement

TOKEN_PREFIX = "ipub_"

# crates.io's logins are GitHub's: ASCII letters, digits and '-', starting with a letter or digit,
# at most 39 characters; '_' is allowed too (GitHub's managed users have it). ASCII only, so
# that a login cannot imitate another with look-alike letters.
LOGIN_MAX = 39
_LOGIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# A token's label is free text, but PostgreSQL cannot store NUL and no encoding stores a lone
# surrogate (Python decodes undecodable argv bytes to those).
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
LABEL_MAX = 100


class NotAllowed(Exception):
    """The caller is authenticated but may not do this (HTTP 403)."""


class UnknownUser(store.NotFound):
    """No user has that login (``indexpub token create`` makes users)."""


@dataclass(frozen=True)
class User:
    id: int
    login: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_login(login: str) -> str:
    """``login`` if it follows crates.io's rules; checked before any query, so that a NUL or a
    lone surrogate is a refusal naming the login and never a database or encoding error."""
    if len(login) > LOGIN_MAX or not _LOGIN_RE.fullmatch(login):
        raise InvalidInput(
            f"invalid user name {_shorten(login)}: use 1 to {LOGIN_MAX} ASCII letters, digits,"
            " '-' or '_', starting with a letter or digit"
        )
    return login


def _check_storable(text: str, what: str, limit: int) -> str:
    """``text`` if PostgreSQL can store it as text and it is not absurdly long."""
    if len(text) > limit or _UNSTORABLE_RE.search(text):
        raise InvalidInput(
            f"invalid {what} {_shorten(text)}: at most {limit} characters, no NUL and no"
            " unpaired surrogate"
        )
    return text


def create_token(conn: Conn, login: str, name: str = "") -> str:
    """A new token for ``login`` (created if new); the only time the token is ever visible."""
    _check_login(login)
    _check_storable(name, "token name", LABEL_MAX)
    row = conn.execute(statement(sql.UPSERT_USER), (login,)).fetchone()
    assert row is not None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(statement(sql.INSERT_TOKEN), (int(row[0]), name, _hash(token)))
    return token


def revoke_tokens(conn: Conn, login: str, name: str | None = None) -> int:
    """Revoke the user's tokens (or only those with ``name``); how many were revoked.

    Only storable text is asked for, not today's login rules: a user made under older, looser
    rules must stay revocable.
    """
    _check_storable(login, "user name", 64)
    if name is not None:
        _check_storable(name, "token name", LABEL_MAX)
    return conn.execute(statement(sql.REVOKE_TOKENS), {"login": login, "name": name}).rowcount


def authenticate(conn: Conn, token: str | None) -> User | None:
    """The user a raw token belongs to; None for a missing, unknown or revoked token."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(statement(sql.AUTHENTICATE), (_hash(token),)).fetchone()
    return None if row is None else User(int(row[0]), str(row[1]))


def _crate(conn: Conn, name: str, *, lock: bool = False) -> tuple[int, str]:
    """The crate's id and published name; with ``lock``, its row is locked until the caller's
    transaction ends, which serializes every change of its owners (see :func:`remove_owners`)."""
    validate_crate_name(name)
    query = sql.LOCK_CRATE if lock else sql.CRATE_ID
    row = conn.execute(statement(query), (canonical_name(name),)).fetchone()
    if row is None:
        raise store.NotFound(f"no crate named {name!r}")
    return int(row[0]), str(row[1])


def require_owner(conn: Conn, name: str, user: User) -> str:
    """The crate's published name, if ``user`` owns it; otherwise NotAllowed."""
    return _require_owner(conn, name, user)[1]


def _require_owner(conn: Conn, name: str, user: User, *, lock: bool = False) -> tuple[int, str]:
    crate_id, published = _crate(conn, name, lock=lock)
    if conn.execute(statement(sql.IS_OWNER), (crate_id, user.id)).fetchone() is None:
        raise NotAllowed(f"user {user.login!r} is not an owner of crate {published!r}")
    return crate_id, published


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
        conn.execute(statement(sql.ADD_OWNER), (crate_id, user.id))
    elif conn.execute(statement(sql.IS_OWNER), (crate_id, user.id)).fetchone() is None:
        raise NotAllowed(f"user {user.login!r} is not an owner of crate {published!r}")
    return change


def list_owners(conn: Conn, name: str) -> list[User]:
    return _owners(conn, _crate(conn, name)[0])


def _owners(conn: Conn, crate_id: int) -> list[User]:
    return [
        User(int(r[0]), str(r[1])) for r in conn.execute(statement(sql.LIST_OWNERS), (crate_id,))
    ]


def _add_owner(conn: Conn, crate_id: int, login: str) -> tuple[str, bool]:
    """Add an existing user as an owner: (their login, False if they already were one)."""
    row = conn.execute(statement(sql.FIND_USER), (_check_login(login),)).fetchone()
    if row is None:
        raise UnknownUser(f"no user named {login!r}")
    added = conn.execute(statement(sql.ADD_OWNER), (crate_id, int(row[0]))).rowcount
    return str(row[1]), added == 1


def add_owners(conn: Conn, name: str, logins: list[str], by: User) -> list[str]:
    """Add existing users as owners (an owner may add others); the logins added.

    Like every change of owners, it locks the crate's row first (see :func:`remove_owners`).
    """
    for login in logins:
        _check_login(login)
    crate_id, _ = _require_owner(conn, name, by, lock=True)
    return [_add_owner(conn, crate_id, login)[0] for login in logins]


def add_owner_as_admin(conn: Conn, name: str, login: str) -> tuple[str, bool]:
    """Make ``login`` an owner without being one: the administrator's way to give an owner to
    a crate published from the command line (which has none).

    Returns the crate's published name and whether the user was added.
    """
    crate_id, published = _crate(conn, name, lock=True)
    return published, _add_owner(conn, crate_id, login)[1]


def remove_owners(conn: Conn, name: str, logins: list[str], by: User) -> list[str]:
    """Remove owners; the last owner cannot be removed (the crate would be orphaned).

    The crate's row is locked before the owners are read: two owners removing each other at
    once would otherwise each see the other still there and leave the crate with nobody. The
    second waits for the first to commit, then reads the owners anew (READ COMMITTED takes a
    new snapshot per statement) and finds that it is no longer one.
    """
    for login in logins:
        _check_storable(login, "user name", 64)
    crate_id, published = _require_owner(conn, name, by, lock=True)
    current = {u.login: u for u in _owners(conn, crate_id)}
    missing = [login for login in logins if login not in current]
    if missing:
        raise store.NotFound(f"{_shorten(missing[0])} is not an owner of crate {published!r}")
    if set(current) <= set(logins):
        raise store.Conflict(
            f"cannot remove every owner of crate {published!r}: it must keep at least one"
        )
    for login in logins:
        conn.execute(statement(sql.REMOVE_OWNER), (crate_id, current[login].id))
    return logins


def yank(conn: Conn, name: str, version: str, user: User, *, yanked: bool = True) -> store.Change:
    require_owner(conn, name, user)
    return (store.yank if yanked else store.unyank)(conn, name, version)
