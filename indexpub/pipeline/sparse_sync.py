"""The sparse index: each crate's file in a directory, served over HTTP by ``indexpub serve``.

Files hold the same bytes as in git. They are written by their own job type on their own queue,
so the git job never waits on it and a slow disk never holds up the single git writer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from indexpub.atomic_file import write_atomically
from indexpub.domain.names import index_path
from indexpub.registry import render, sql


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


@dataclass
class SparseResult:
    # The files rewritten or removed, relative to the sparse root.
    changed: list[str] = field(default_factory=list)
    # The crates (by lowercased name) whose files could not be written, with why.
    failed: dict[str, str] = field(default_factory=dict)


def sync_sparse(conn: psycopg.Connection[Any], root: Path, names: Sequence[str]) -> SparseResult:
    """Render each crate's file from the database into the sparse directory.

    Each crate is rendered and written under a transaction-scoped advisory lock of its own, so
    two writers of one crate (the ``sparse`` queue may run several) never interleave as "render
    A, the yank commits, render B, write B, write A", which would leave the file without the
    yank. The locks are taken in key order, so two batches never wait on each other in a cycle,
    and released by the rollback that ends the job's read. A crate whose file cannot be written
    (a directory in its place, a file where its directory must be) fails alone.
    """
    result = SparseResult()
    unique = list(dict.fromkeys(names))
    keys = sorted({crate_lock_key(name) for name in unique})
    try:
        conn.execute(sql.LOCK_CRATE_FILES, (keys,))
        wants = render.render_crate_files(conn, [name.lower() for name in unique])
        for name in unique:
            relative = index_path(name)
            try:
                if write_file(root, relative, wants[name.lower()]):
                    result.changed.append(relative)
            except OSError as problem:
                result.failed[name.lower()] = f"cannot write {relative}: {problem}"
    finally:
        conn.rollback()
    return result


def crate_lock_key(name: str) -> int:
    """The advisory lock key of a crate's file: one per lowercased name, as the file is."""
    digest = hashlib.sha256(f"indexpub.crate-file:{name.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
