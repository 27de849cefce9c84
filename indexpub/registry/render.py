"""The projection the index jobs read: the bytes each crate's index file must hold."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.sql import Composed

from indexpub.domain.entries import set_yanked_flag
from indexpub.registry import sql
from indexpub.registry.sql import Conn, statement

# Crates per chunk of a stream of every file: bounds the memory of crate_files.
STREAM_CHUNK = 1000


class CrateFile(NamedTuple):
    """A crate's index file as the database renders it."""

    id: int  # the crate's id: crate_files goes in this order
    name: str  # lowercased: the file's name
    data: bytes


class Rendered(NamedTuple):
    """Crate files as the database renders them, with how old their newest change is."""

    # The bytes each (lowercased) crate name's file must hold; None: no file.
    files: dict[str, bytes | None]
    # Seconds from each crate's newest change (a publish, a yank or an unyank) to the read, by
    # the database's clock; a crate without versions has none. A deleted version leaves no row
    # to date it: a file changed only by a delete is dated by its newest remaining change.
    ages: dict[str, float]


def render_crate_files(conn: Conn, lower_names: Sequence[str]) -> dict[str, bytes | None]:
    """The bytes each (lowercased) crate name's index file must hold; None: no file."""
    return read_crate_files(conn, lower_names).files


def read_crate_files(conn: Conn, lower_names: Sequence[str]) -> Rendered:
    """The files of render_crate_files, dated (see Rendered), from one statement.

    Stored lines are trusted, never parsed or validated again: they were checked when they were
    stored, and a check that could fail here would stop the crate's file, and every crate synced
    with it, until someone edited the database. A yank only flips the line's flag.
    """
    wanted = list(dict.fromkeys(lower_names))
    rows = conn.execute(
        statement(sql.CRATE_FILES_LINES),
        {"lower_names": wanted, "canonical": [n.replace("-", "_") for n in wanted]},
    ).fetchall()
    lines: dict[str, list[tuple[str, bool]]] = {}
    ages: dict[str, float] = {}
    for name, line, yanked, age in rows:
        lines.setdefault(name, []).append((line, yanked))
        ages[name] = min(age, ages.get(name, age))
    files = {name: _file(lines[name]) if name in lines else None for name in wanted}
    return Rendered(files, ages)


def _file(lines: Iterable[tuple[str, bool]]) -> bytes:
    """A crate file from its stored lines and yanked flags, in publish order: the one rule."""
    return ("\n".join([set_yanked_flag(line, yanked) for line, yanked in lines]) + "\n").encode()


def render_crate_file(conn: Conn, lower_name: str) -> bytes | None:
    """The bytes the index file of this (lowercased) crate name must hold; None: no file."""
    return render_crate_files(conn, [lower_name])[lower_name]


def crate_files(conn: Conn, *, after: int = 0, limit: int | None = None) -> Iterator[CrateFile]:
    """Every crate's file in crate id order, from the crate after id ``after`` (at most
    ``limit`` crates), streamed from one statement: its memory is a chunk of STREAM_CHUNK
    crates, whatever the registry's size, and it reads one snapshot.

    The bytes are render_crate_files' (the same rule, ``_file``); crates without versions have
    no file and are not in it. The connection is busy until the iterator is exhausted or
    closed: nothing else may run on it meanwhile.
    """
    query = statement(sql.ALL_CRATE_FILES)
    params = {"after": after, "limit": limit}
    # Binary: the arrays of lines arrive without text parsing (a third of the time).
    with conn.cursor(binary=True) as cur:
        # libpq 17's chunked rows: one statement, no FETCH round trips.
        rows: Iterator[Row] = cur.stream(query, params, size=STREAM_CHUNK)
        try:
            first = next(rows, None)
        except psycopg.NotSupportedError:  # an older libpq: a server-side cursor instead
            conn.rollback()
            rows = _rows_by_cursor(conn, query, params)
            first = next(rows, None)
        if first is None:
            return
        yield _crate_file(first)
        for row in rows:
            yield _crate_file(row)


Row = tuple[int, str, list[str], list[bool]]


def _crate_file(row: Row) -> CrateFile:
    crate_id, name, lines, flags = row
    return CrateFile(crate_id, name, _file(zip(lines, flags, strict=True)))


def _rows_by_cursor(conn: Conn, query: Composed, params: dict[str, Any]) -> Iterator[Row]:
    with conn.cursor(name="indexpub_crate_files", binary=True) as cur:
        cur.itersize = STREAM_CHUNK
        cur.execute(query, params)
        yield from cur


def count_crates(conn: Conn) -> int:
    """How many crates the registry has (crate_files yields at most that many): a progress
    bar's total."""
    row = conn.execute(statement(sql.COUNT_CRATES)).fetchone()
    return 0 if row is None else int(row[0])


def published_names(conn: Conn, lower_names: Sequence[str]) -> dict[str, str]:
    """The published spelling of each crate among ``lower_names`` (its file's name) that the
    registry has."""
    wanted = list(dict.fromkeys(lower_names))
    rows = conn.execute(
        statement(sql.PUBLISHED_NAMES),
        {"lower_names": wanted, "canonical": [n.replace("-", "_") for n in wanted]},
    ).fetchall()
    return {str(lower): str(name) for lower, name in rows}


def all_crate_names(conn: Conn) -> list[str]:
    """Every crate's lowercased name: what ``verify`` and ``rebuild`` walk."""
    return [str(row[0]) for row in conn.execute(statement(sql.ALL_CRATE_NAMES)).fetchall()]
