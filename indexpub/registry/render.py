"""The projection the index jobs read: the bytes each crate's index file must hold."""

from __future__ import annotations

from collections.abc import Sequence

from indexpub.domain.entries import set_yanked_flag
from indexpub.registry import sql
from indexpub.registry.sql import Conn, statement


def render_crate_files(conn: Conn, lower_names: Sequence[str]) -> dict[str, bytes | None]:
    """The bytes each (lowercased) crate name's index file must hold; None: no file.

    Stored lines are trusted, never parsed or validated again: they were checked when they were
    stored, and a check that could fail here would stop the crate's file, and every crate synced
    with it, until someone edited the database. A yank only flips the line's flag.
    """
    wanted = list(dict.fromkeys(lower_names))
    rows = conn.execute(
        statement(sql.CRATE_FILES_LINES),
        {"lower_names": wanted, "canonical": [n.replace("-", "_") for n in wanted]},
    ).fetchall()
    lines: dict[str, list[str]] = {}
    for name, line, yanked in rows:
        lines.setdefault(name, []).append(set_yanked_flag(line, yanked))
    return {
        name: ("\n".join(lines[name]) + "\n").encode() if name in lines else None for name in wanted
    }


def render_crate_file(conn: Conn, lower_name: str) -> bytes | None:
    """The bytes the index file of this (lowercased) crate name must hold; None: no file."""
    return render_crate_files(conn, [lower_name])[lower_name]


def all_crate_names(conn: Conn) -> list[str]:
    """Every crate's lowercased name: what ``verify`` and ``rebuild`` walk."""
    return [str(row[0]) for row in conn.execute(statement(sql.ALL_CRATE_NAMES)).fetchall()]
