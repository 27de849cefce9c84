"""The registry's source of truth, and the Python API that registry backends call.

Every function takes the caller's psycopg connection and runs in the caller's transaction: it
records the change and enqueues ``sync_crate`` for the crate's index file in the same
transaction, and never commits. Either both become visible at the caller's COMMIT, or neither
does — the gap that lost updates in the old "commit, then push" design is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from indexpub.domain.entries import IndexEntry, check_line_size
from indexpub.domain.names import canonical_name, validate_crate_name
from indexpub.domain.versions import parse_version
from indexpub.errors import InvalidInput
from indexpub.registry import sql
from indexpub.registry.queue import app, enqueue_crate_syncs
from indexpub.registry.sql import SCHEMA, Conn, statement
from jobs import migrations


class Conflict(InvalidInput):
    """The input is valid on its own but contradicts what the registry already holds."""


class NotFound(InvalidInput):
    """The named crate or version does not exist."""


class Outcome(Enum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    DELETED = "deleted"


@dataclass(frozen=True)
class Change:
    outcome: Outcome
    # The crate's name as first published (the spelling in the index).
    name: str
    # Whether a sync job was enqueued (or absorbed by a waiting one).
    enqueued: bool
    # Whether this call created the crate itself (its first version).
    new_crate: bool = False


@dataclass(frozen=True)
class ChangesAfter:
    """When the registry's versions changed after a moment, by the database server's clock."""

    # The first publish, yank or unyank after the moment; None when there was none.
    first: datetime | None
    # The newest change of all; None when no version exists.
    newest: datetime | None
    # The server's now(), to measure ages against on the same clock.
    now: datetime


def changes_after(conn: Conn, moment: datetime) -> ChangesAfter:
    """Publishes, yanks and unyanks made after ``moment`` (for `indexpub check`, which asks
    whether the index remote's tip is older than them). Deletions are not dated."""
    row = conn.execute(statement(sql.CHANGES_AFTER), {"after": moment}).fetchone()
    assert row is not None
    return ChangesAfter(row[0], row[1], row[2])


def migrate(conn: Conn) -> dict[str, list[int]]:
    """Create or upgrade the registry tables and the job queue's; commits on its own.

    Returns the versions applied now, by schema.
    """
    return {
        SCHEMA: migrations.migrate(conn, SCHEMA, "indexpub.registry", directory="migrations"),
        app.schema: app.migrate(conn),
    }


def publish(conn: Conn, entry: IndexEntry) -> Change:
    """Record a new version.

    Publishing a byte-identical entry again succeeds and changes nothing (a retried upload). The
    same version with other content, a version equal to an existing one once build metadata is
    ignored, and a name that differs from an existing crate's only in case or ``-``/``_`` are
    refused with :class:`Conflict`.
    """
    name = validate_crate_name(entry.name)
    canonical = canonical_name(name)
    # Refused here, where the line is first built, whatever it was built from: a line stored
    # now is rendered as it is for ever after (see indexpub.registry.render).
    line = check_line_size(entry.with_yanked(False).to_line())
    num = str(entry.vers)
    num_no_build = str(entry.vers.without_build())

    crate = conn.execute(statement(sql.LOCK_CRATE), (canonical,)).fetchone()
    new_crate = False
    if crate is None:
        crate = conn.execute(statement(sql.INSERT_CRATE), (name, canonical)).fetchone()
        new_crate = crate is not None
        if crate is None:  # a concurrent publish created it first: wait for it, then compare
            crate = conn.execute(statement(sql.LOCK_CRATE), (canonical,)).fetchone()
    assert crate is not None
    crate_id, existing_name = int(crate[0]), str(crate[1])
    if existing_name != name:
        raise Conflict(
            f"crate name {name!r} collides with the existing crate {existing_name!r}: names "
            "that differ only in case or in '-' versus '_' are the same crate; publish it "
            f"as {existing_name!r}"
        )

    found = conn.execute(statement(sql.FIND_VERSION), (crate_id, num_no_build)).fetchone()
    if found is not None:
        found_num, found_line = str(found[0]), str(found[1])
        if found_num == num and found_line == line:
            return Change(Outcome.UNCHANGED, name, enqueued=False)
        if found_num == num:
            raise Conflict(
                f"crate {name!r} version {num} is already published with different content "
                "(a published version can never change; publish a new version)"
            )
        raise Conflict(
            f"crate {name!r} version {num} equals the published version {found_num} once build "
            "metadata is ignored; cargo would treat them as one version"
        )
    conn.execute(statement(sql.INSERT_VERSION), (crate_id, num, num_no_build, line))
    enqueue_crate_syncs(conn, name)
    return Change(Outcome.CREATED, name, enqueued=True, new_crate=new_crate)


def _set_yanked(conn: Conn, name: str, version: str, yanked: bool) -> Change:
    validate_crate_name(name)
    vers = str(parse_version(version))
    row = conn.execute(statement(sql.LOCK_VERSION), (canonical_name(name), vers)).fetchone()
    if row is None:
        raise NotFound(f"crate {name!r} has no version {vers}")
    version_id, was_yanked, published_name = int(row[0]), bool(row[1]), str(row[2])
    if was_yanked == yanked:
        return Change(Outcome.UNCHANGED, published_name, enqueued=False)
    conn.execute(statement(sql.SET_YANKED), (yanked, version_id))
    enqueue_crate_syncs(conn, published_name)
    return Change(Outcome.CHANGED, published_name, enqueued=True)


def yank(conn: Conn, name: str, version: str) -> Change:
    """Mark a version yanked; yanking a yanked version succeeds and changes nothing."""
    return _set_yanked(conn, name, version, True)


def unyank(conn: Conn, name: str, version: str) -> Change:
    """Undo a yank; unyanking a version that is not yanked succeeds and changes nothing."""
    return _set_yanked(conn, name, version, False)


def delete_version(conn: Conn, name: str, version: str) -> Change:
    """Remove a version (an administrative act: lockfiles that pin it stop resolving)."""
    validate_crate_name(name)
    vers = str(parse_version(version))
    row = conn.execute(statement(sql.LOCK_VERSION), (canonical_name(name), vers)).fetchone()
    if row is None:
        raise NotFound(f"crate {name!r} has no version {vers}")
    conn.execute(statement(sql.DELETE_VERSION), (int(row[0]),))
    enqueue_crate_syncs(conn, str(row[2]))
    return Change(Outcome.DELETED, str(row[2]), enqueued=True)


def delete_crate(conn: Conn, name: str) -> Change:
    """Remove a crate and all its versions; its index file is deleted by the sync job."""
    validate_crate_name(name)
    row = conn.execute(statement(sql.DELETE_CRATE), (canonical_name(name),)).fetchone()
    if row is None:
        raise NotFound(f"no crate named {name!r}")
    enqueue_crate_syncs(conn, str(row[0]))
    return Change(Outcome.DELETED, str(row[0]), enqueued=True)
