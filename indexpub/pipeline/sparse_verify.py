"""verify --sparse: the sparse index directory against what the database says every crate file
must hold.

The sparse files are written without fsync (sparse_sync), so a power failure can lose a write
and leave a crate's file stale until its next change; this is how that is found. It works as
verify does for git, with a directory walk for ``git ls-tree``: one walk of the directory's
index layout, hashing each crate file as it is read (memory is the listing, a digest per file,
never the files' bytes), then one statement streaming every crate's rendering
(registry.render.crate_files), each hashed and compared with the listing. Whatever differs is
looked at again: rendered again in one snapshot that also lists the crates with a
``write_sparse`` job on the way (those are *pending*), and compared with the file read again
*after* that snapshot, which holds the write of every job that finished before it (a job
writes its files before its commit deletes it).

The directory is read without trusting it: files and directories are opened relative to their
parent's descriptor with O_NOFOLLOW, so a symlink is reported, never followed, and nothing
outside the directory is read; only the index layout's directories are walked (three levels);
names outside the layout (``config.json``, the ``.tmp-*`` temporaries of atomic writes, anything
hidden) are counted and never compared or shown.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from indexpub.domain.names import index_path, is_index_path
from indexpub.pipeline.sparse_sync import READ_FLAGS
from indexpub.pipeline.verify import (
    DETAILS,
    PROGRESS_EVERY,
    Comparison,
    Drift,
    Progress,
    VersionDiff,
    comparison_json,
    recorded_run,
    render_again,
    version_diff,
)
from indexpub.registry import render, runs
from indexpub.registry.queue import write_sparse

log = logging.getLogger("indexpub.pipeline.sparse_verify")

WHERE = "the sparse directory"
# Bytes read at a time while a file is hashed.
READ_CHUNK = 1 << 20
# A drifted file larger than this is not read whole to name its versions (a crate file is at
# most a few MB; a bigger one is someone else's).
NAMED_MAX_BYTES = 64 << 20
# A directory of the layout is opened as its files are (sparse_sync.READ_FLAGS): never through
# a symlink, never into a child process. The sparse directory itself may be a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class SparseUnreadable(Exception):
    """The directory (or one of its layout's directories) cannot be listed: nothing can be
    said about the files under it, so the verify could not check."""


class Seen(NamedTuple):
    """What is at a crate file's path: its digest, or why it could not be read (``note``);
    both None when there is no file. ``data``: the bytes, when asked for and small enough."""

    digest: bytes | None
    note: str | None = None
    data: bytes | None = None


ABSENT = Seen(None)


@dataclass
class SparseListing:
    """The walk's result: what is in the layout's directories of crate files, by path (each
    file's digest, or why it could not be read), and how many other entries there are."""

    # Candidates: whether each is at an index path is asked only of those no crate claims.
    files: dict[str, Seen] = field(default_factory=dict)
    other: int = 0  # entries outside the index layout's directories: not compared
    absent: bool = False  # the directory does not exist


@dataclass
class SparseVerifyResult(Comparison):
    directory: str
    absent: bool  # the directory does not exist (every crate's file is missing)

    def record(self, ran_by: str) -> runs.VerifyRun:
        return recorded_run(self, ran_by, self.directory, target=runs.SPARSE)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": runs.SPARSE,
            "directory": self.directory,
            "absent": self.absent,
            **comparison_json(self),
        }


def verify_sparse_and_record(
    conn: psycopg.Connection[Any],
    root: Path,
    *,
    ran_by: str,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> tuple[SparseVerifyResult, int]:
    """Compare the sparse directory with the database and record the result, committed, for
    `indexpub check`: its result and the run's id. A directory that cannot be listed is
    recorded as a verify that could not check, and SparseUnreadable raised again."""
    started = datetime.now(UTC)
    try:
        result = verify_sparse(conn, root, progress=progress, total=total)
    except SparseUnreadable as exc:
        conn.rollback()
        failed = runs.VerifyRun(started, ran_by, str(root), error=str(exc), target=runs.SPARSE)
        runs.record_verify(conn, failed)
        conn.commit()
        raise
    run_id = runs.record_verify(conn, result.record(ran_by))
    conn.commit()
    return result, run_id


def verify_sparse(
    conn: psycopg.Connection[Any],
    root: Path,
    *,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    details: int = DETAILS,
) -> SparseVerifyResult:
    """Compare the sparse directory with the database (see the module's docstring).
    ``total`` is told how many crates the registry has, ``progress`` how many crate files were
    read so far (reading is most of the time; the stream is told at its end).
    SparseUnreadable when the directory cannot be listed."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    if total is not None:
        total(render.count_crates(conn))
        conn.rollback()
    listing = walk(root, progress=progress)
    files = listing.files
    differ: dict[str, str] = {}  # name -> path
    crates = found = 0
    for crate in render.crate_files(conn):
        path = index_path(crate.name)
        have = files.pop(path, None)
        if have is not None:
            found += 1
        if have is None or have.digest != _digest(crate.data):
            differ[crate.name] = path
        crates += 1
    conn.rollback()
    if progress is not None:
        progress(crates)
    for path in files:  # crate files of crates without a rendering, and strays
        if is_index_path(path):
            differ[path.rpartition("/")[2]] = path
            found += 1
        else:
            listing.other += 1
    log.info(
        "verify --sparse: %d crates, %d crate files in %s; %d differ at first look",
        crates,
        found,
        root,
        len(differ),
    )
    drifted: list[Drift] = []
    pending: list[str] = []
    if differ:
        drifted, pending = _look_again(conn, root, differ, details)
    return SparseVerifyResult(
        started_at=started,
        duration=time.monotonic() - clock,
        crates=crates,
        files=found,
        other_files=listing.other,
        drifted=drifted,
        pending=pending,
        directory=str(root),
        absent=listing.absent,
    )


def walk(root: Path, *, progress: Progress | None = None) -> SparseListing:
    """Every entry of the directory's index layout: crate files hashed, the rest counted."""
    listing = SparseListing()
    top = _open_root(root)
    if top is None:
        listing.absent = True
        return listing
    try:
        _walk_dir(top, "", listing, progress)
    finally:
        os.close(top)
    return listing


def _open_root(root: Path) -> int | None:
    """A descriptor of the sparse directory; None when it does not exist, SparseUnreadable
    when it cannot be opened."""
    try:
        return os.open(root, _ROOT_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SparseUnreadable(f"cannot read the sparse directory {root}: {exc.strerror}") from None


def _walk_dir(fd: int, prefix: str, listing: SparseListing, progress: Progress | None) -> None:
    """One directory of the layout (``prefix``: its path, "" or ending in "/"), by its
    descriptor; its layout subdirectories recursively (at most three levels)."""
    try:
        entries = list(os.scandir(fd))
    except OSError as exc:
        raise SparseUnreadable(_unreadable_dir(prefix, exc)) from None
    # Crate files are in 1/, 2/, 3/x/ and ab/cd/ only.
    holds_files = prefix in ("1/", "2/") or prefix.count("/") == 2
    for entry in entries:
        name = entry.name
        relative = prefix + name  # no crate file's name has a dot: .tmp-* are others
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if not _layout_dir(relative):
                listing.other += 1
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise SparseUnreadable(_unreadable_dir(relative + "/", exc)) from None
            try:
                _walk_dir(sub, relative + "/", listing, progress)
            finally:
                os.close(sub)
        elif holds_files:  # is_index_path is asked of the few left over by the stream
            listing.files[relative] = _open_and_hash(fd, name, keep=False)
            if progress is not None and len(listing.files) % PROGRESS_EVERY == 0:
                progress(len(listing.files))
        else:
            listing.other += 1


def _layout_dir(relative: str) -> bool:
    """Whether a directory can hold crate files: 1, 2, 3, 3/x, ab, ab/cd (cargo's layout)."""
    parts = relative.split("/")
    if len(parts) == 1:
        return parts[0] in ("1", "2", "3") or len(parts[0]) == 2
    if len(parts) == 2:
        first, second = parts
        return (first == "3" and len(second) == 1) or (len(first) == 2 and len(second) == 2)
    return False


def _unreadable_dir(relative: str, exc: OSError) -> str:
    where = f"'s {relative.rstrip('/')!r}" if relative else ""
    return f"cannot list the sparse directory{where}: {exc.strerror}"


def look(root: Path, relative: str, *, keep: bool = False) -> Seen:
    """What is at ``relative`` (an index path) under ``root``, opened without following any
    symlink on the way: a file's digest (and bytes with ``keep``), a note, or nothing."""
    top = _open_root(root)
    if top is None:
        return ABSENT
    opened = [top]
    try:
        *folders, name = relative.split("/")
        for folder in folders:
            try:
                opened.append(os.open(folder, _DIR_FLAGS, dir_fd=opened[-1]))
            except FileNotFoundError:
                return ABSENT
            except OSError as exc:
                if _is_symlink(opened[-1], folder):
                    return Seen(None, f"{folder!r} in its path is a symlink: not followed")
                return Seen(None, f"{folder!r} in its path cannot be opened: {exc.strerror}")
        return _open_and_hash(opened[-1], name, keep=keep)
    finally:
        for fd in opened:
            os.close(fd)


def _open_and_hash(dir_fd: int, name: str, *, keep: bool) -> Seen:
    """The file ``name`` in the directory ``dir_fd``, hashed as it is read (its bytes too with
    ``keep``, unless it is bigger than NAMED_MAX_BYTES); a symlink or anything but a regular
    file is a note, never read."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        if _is_symlink(dir_fd, name):
            return Seen(b"", "a symlink, not a file: not followed")
        return Seen(b"", f"cannot be read: {exc.strerror}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):  # no file there: missing, and the writer fails on it
            return Seen(None, "a directory: not read")
        if not stat.S_ISREG(info.st_mode):
            return Seen(b"", "not a regular file: not read")
        keep = keep and info.st_size <= NAMED_MAX_BYTES
        digest = hashlib.blake2b(digest_size=16)
        chunks: list[bytes] = []
        # One read for a file up to READ_CHUNK: a short read of a regular file is its end (one
        # ended early by a signal would only make the file differ, and be read again).
        want = min(info.st_size + 1, READ_CHUNK)
        try:
            while True:
                chunk = os.read(fd, want)
                digest.update(chunk)
                if keep:
                    chunks.append(chunk)
                if len(chunk) < want:
                    break
                want = READ_CHUNK
        except OSError as exc:
            return Seen(b"", f"cannot be read: {exc.strerror}")
        return Seen(digest.digest(), None, b"".join(chunks) if keep else None)
    finally:
        os.close(fd)


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _look_again(
    conn: psycopg.Connection[Any], root: Path, differ: dict[str, str], details: int
) -> tuple[list[Drift], list[str]]:
    """The crates that differed, rendered again in one snapshot that also names the crates
    with a write_sparse job on the way, against their files read after that snapshot: the
    drifted crates and the pending ones, by name."""
    names = sorted(differ)
    wants, on_the_way = render_again(conn, names, write_sparse.name)
    drifted: list[Drift] = []
    pending: list[str] = []
    for name in names:
        want = wants.get(name)
        path = differ[name]
        have = look(root, path, keep=len(drifted) < details)
        if have.note is None and have.digest == (None if want is None else _digest(want)):
            continue  # it converged meanwhile
        if name in on_the_way:
            pending.append(name)
            continue
        kind = "missing" if have.digest is None else "extra" if want is None else "differs"
        drift = Drift(name, path, kind, where=WHERE)
        if len(drifted) < details:
            drift.versions = _versions_of(want, have)
        drifted.append(drift)
    if drifted or pending:
        log.info("verify --sparse: %d crate(s) drifted, %d pending", len(drifted), len(pending))
    return drifted, pending


def _versions_of(want: bytes | None, have: Seen) -> VersionDiff:
    """The versions that differ, when the file could be read whole; else why not."""
    if have.note is not None:
        diff = VersionDiff(other=WHERE)
        diff.notes.append(have.note)
        return diff
    if have.digest is not None and have.data is None:
        diff = VersionDiff(other=WHERE)
        diff.notes.append(f"larger than {NAMED_MAX_BYTES >> 20} MB: versions not named")
        return diff
    return version_diff(want, have.data, WHERE)
