"""The sparse index: each crate's file in a directory, served over HTTP by ``indexpub serve``.

Files hold the same bytes as in git. They are written by their own job type on their own queue,
so the git job never waits on it and a slow disk never holds up the single git writer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
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

    Nothing in the directory is followed out of it: a symlink in the place of one of the
    file's directories fails the crate (OSError), and a symlink, FIFO or other non-file at the
    file's own path is never read (a FIFO would block) but replaced by the file.
    """
    target = root / relative
    _refuse_linked_folders(root, relative)
    current = _current_bytes(target)
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


# How a file of the sparse directory is opened to be read (here and by sparse_verify): never
# follow a symlink, never wait on a FIFO, never leak into a child process.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What a path holds when it is not a regular file: never equal to a rendering.
_NOT_A_FILE = b"\0not a regular file"


def _refuse_linked_folders(root: Path, relative: str) -> None:
    """OSError when a directory of ``relative`` under ``root`` is a symlink: writing through
    it would write outside the sparse directory."""
    folder = root
    for part in relative.split("/")[:-1]:
        folder = folder / part
        try:
            mode = folder.lstat().st_mode
        except FileNotFoundError:
            return  # made by the write, as a directory
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, "a symlink in the path, not followed", str(folder))


def _current_bytes(target: Path) -> bytes | None:
    """The file's bytes; None when there is nothing; _NOT_A_FILE for a symlink or a special
    file (a directory raises, as writing over it would)."""
    try:
        fd = os.open(target, READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _NOT_A_FILE
        raise
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        return file.read() if stat.S_ISREG(mode) else _NOT_A_FILE


def crate_lock_key(name: str) -> int:
    """The advisory lock key of a crate's file: one per lowercased name, as the file is."""
    digest = hashlib.sha256(f"indexpub.crate-file:{name.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
