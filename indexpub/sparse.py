"""The sparse index: each crate's file in a directory, served over HTTP by ``indexpub serve``.

Files hold the same bytes as in git. They are written by their own job type on their own queue,
so the git job never waits on it and a slow disk never holds up the single git writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from indexpub import store
from indexpub.atomic_file import write_atomically
from indexpub.names import index_path


def write_file(root: Path, relative: str, content: bytes | None) -> bool:
    """Make ``root/relative`` hold ``content`` (None: absent); True if it changed.

    Written to a temporary file and renamed over the old one, so a reader (and cargo's
    conditional request) sees the old bytes or the new ones, never a torn file. Unchanged bytes
    are not rewritten, so the file's mtime, which the server's Last-Modified and ETag come from,
    only moves on a real change.
    """
    target = root / relative
    try:
        current: bytes | None = target.read_bytes()
    except FileNotFoundError:
        current = None
    if current == content:
        return False
    if content is None:
        target.unlink(missing_ok=True)
        return True
    write_atomically(target, content)
    return True


def sync_sparse(conn: psycopg.Connection[Any], root: Path, names: Sequence[str]) -> list[str]:
    """Render each crate's file from the database into the sparse directory; the changed."""
    changed = []
    unique = list(dict.fromkeys(names))
    wants = store.render_crate_files(conn, [name.lower() for name in unique])
    for name in unique:
        relative = index_path(name)
        if write_file(root, relative, wants[name.lower()]):
            changed.append(relative)
    conn.rollback()
    return changed
