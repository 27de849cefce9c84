"""Versioned schema migrations, shared by every package that keeps tables in PostgreSQL.

Each migration is a numbered ``.sql`` file (``0001_name.sql``) inside a package directory, written
with a ``{schema}`` placeholder that is filled in as a quoted identifier. Migrations run in one
transaction under a transaction-scoped advisory lock, so two processes that migrate at once
serialize: the second finds the work done and applies nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from jobs import queries

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


class MigrationError(RuntimeError):
    """The database's recorded migrations do not fit the code's (a newer or edited schema)."""


def load_migrations(package: str, directory: str = "sql") -> list[Migration]:
    """The package's migrations in version order; a gap or a duplicate version is a bug."""
    found: list[Migration] = []
    for entry in resources.files(package).joinpath(directory).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{package}: migration {migration.version:04d} found where {expected:04d} belongs"
            )
    return found


def _lock_key(schema: str) -> int:
    """A stable 63-bit advisory lock key per schema, so migrations of two schemas don't wait."""
    digest = hashlib.sha256(f"migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def migrate(
    conn: psycopg.Connection[Any],
    schema: str,
    package: str,
    *,
    directory: str = "sql",
    target: int | None = None,
) -> list[int]:
    """Apply the pending migrations of ``package``'s ``directory`` into ``schema``; return the
    versions applied.

    Commits on its own (a migration is an administrative act, not part of a caller's unit of
    work). ``target`` stops at that version, which the tests use to migrate step by step.
    """
    migrations = load_migrations(package, directory)
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(queries.ADVISORY_XACT_LOCK, (_lock_key(schema),))
        conn.execute(queries.compose(queries.CREATE_SCHEMA, schema))
        conn.execute(queries.compose(queries.CREATE_MIGRATIONS_TABLE, schema))
        rows = conn.execute(queries.compose(queries.APPLIED_MIGRATIONS, schema)).fetchall()
        done: dict[int, str] = {int(row[0]): str(row[1]) for row in rows}
        known = {m.version: m.name for m in migrations}
        for version, name in done.items():
            if known.get(version) != name:
                raise MigrationError(
                    f"schema {schema!r} has migration {version:04d}_{name}, which this code does "
                    "not know: is a newer version of the code running against it?"
                )
        for migration in migrations:
            if migration.version in done:
                continue
            if target is not None and migration.version > target:
                break
            conn.execute(queries.compose(migration.text, schema))
            conn.execute(
                queries.compose(queries.RECORD_MIGRATION, schema),
                (migration.version, migration.name),
            )
            applied_now.append(migration.version)
    return applied_now


def applied_versions(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """The versions recorded in ``schema``, empty when it was never migrated."""
    exists = conn.execute(queries.MIGRATIONS_TABLE, (schema,)).fetchone()
    if exists is None or exists[0] is None:
        return []
    rows = conn.execute(queries.compose(queries.APPLIED_MIGRATIONS, schema)).fetchall()
    return [int(row[0]) for row in rows]
