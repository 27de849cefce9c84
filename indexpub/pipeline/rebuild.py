"""rebuild: every crate file regenerated from the database, in a few big commits and one push.

It runs as a job on the index queue (``rebuild_index``), in the worker that holds the queue, so
nothing pushes beside it. It compares as verify does (one ``git ls-tree -r`` of the tip, one
stream of renderings, blob shas compared), so an index that is right costs no write at all:
no blob, no commit, no push. A file that differs is stored as a blob as soon as it is found
(written in packs of builder.FLUSH_BYTES, so memory stays bounded), and remembered as a path and
a sha; files of crates the database does not have are removed. Then the changes become
commits of ``batch_size`` files each (one commit for them all by default, as crates.io's bulk
sync does), each built with GitIndex.commit_changes, which rewrites every directory once; and
one push publishes them.

Only crate files are written: ``config.json`` and anything outside the index layout are left
as they are, and a crate whose path is blocked by such a file (a file where its directory must
be, or a directory where its file must be) is left out and counted as skipped.

Nothing is pushed before the end: a rebuild that is stopped (cancelled, or its worker killed)
leaves the remote as it was, and objects nothing refers to in the clone for gc. The database is
read in chunks of crates, each in a snapshot of its own: a change made meanwhile enqueued its
own sync job, which runs after the rebuild and brings its file up to date.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from indexpub.domain.names import index_path, is_index_path
from indexpub.gitindex.index import GitIndex
from indexpub.gitindex.listing import Listing, parent_directories
from indexpub.gitindex.objects import object_sha
from indexpub.registry import render

log = logging.getLogger("indexpub.pipeline.rebuild")

# Crates rendered per statement (a snapshot each).
CHUNK = 2000

Progress = Callable[[int, bool], bool]
"""Called with the number of crates compared so far, after every chunk, and once more (with
True: the last moment to stop) before the push; True asks the rebuild to stop, which it does
before it pushes anything."""


@dataclass
class RebuildResult:
    state: str  # "done" or "cancelled"
    crates: int = 0  # compared
    changed: int = 0  # files created or rewritten
    deleted: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # path -> what is in its way
    commits: list[str] = field(default_factory=list)  # their messages, oldest first
    tip: str | None = None  # what the remote holds afterwards (pushed, or found equal)


def rebuild(
    conn: psycopg.Connection[Any],
    index: GitIndex,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> RebuildResult:
    """Make every crate file at the remote's tip what the database renders (see the module's
    docstring); ``batch_size`` files per commit, None for one commit."""
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    tip = index.fetch()  # rare and big: build on the remote as it is now
    listing = index.list_files(tip)
    directories = parent_directories(listing)
    result = RebuildResult("done", tip=tip)
    changes: dict[str, str | None] = {}
    after = 0
    with index.batch():
        while True:
            chunk = list(render.crate_files(conn, after=after, limit=CHUNK))
            conn.rollback()  # the next chunk reads a snapshot of its own
            for crate in chunk:
                path = index_path(crate.name)
                have = listing.pop(path.encode(), None)
                if have is not None and have.decode() == object_sha("blob", crate.data):
                    continue
                blocked = _in_the_way(path, listing, directories)
                if blocked is not None:
                    result.skipped[path] = blocked
                    continue
                changes[path] = index.add_blob(crate.data)
                result.changed += 1
            result.crates += len(chunk)
            if progress is not None and progress(result.crates, False):
                return RebuildResult("cancelled", result.crates, tip=tip)
            if len(chunk) < CHUNK:
                break
            after = chunk[-1].id
        for left in listing:
            path = left.decode(errors="replace")
            if is_index_path(path):
                changes[path] = None
                result.deleted += 1
        head = tip
        paths = sorted(changes)
        size = batch_size or max(len(paths), 1)
        groups = [paths[i : i + size] for i in range(0, len(paths), size)]
        for number, group in enumerate(groups, start=1):
            part = f" ({number} of {len(groups)})" if len(groups) > 1 else ""
            message = f"Rebuild index{part}: {len(group)} crate file{'s' * (len(group) != 1)}"
            new = index.commit_changes(head, {path: changes[path] for path in group}, message)
            if new != head:
                result.commits.append(message)
                head = new
    if result.skipped:
        log.warning(
            "rebuild: %d crate file(s) left out, something foreign is in their way: %s",
            len(result.skipped),
            "; ".join(f"{p}: {why}" for p, why in sorted(result.skipped.items())[:10]),
        )
    if head == tip:
        return result
    if progress is not None and progress(result.crates, True):  # the last moment to stop
        return RebuildResult("cancelled", result.crates, tip=tip)
    # A rejected push (another writer moved the remote) fails the job: the queue runs it again
    # after its backoff, on the new tip, with the blobs already stored.
    index.push(head)
    result.tip = head
    return result


def _in_the_way(path: str, listing: Listing, directories: set[bytes]) -> str | None:
    """What keeps a crate file from being written at ``path``: a file where one of its
    directories must be, or a directory where it must be; None when nothing does."""
    raw = path.encode()
    if raw in directories:
        return f"{path} is a directory"
    end = raw.find(b"/")
    while end > 0:
        if raw[:end] in listing:
            return f"{raw[:end].decode()} is a file"
        end = raw.find(b"/", end + 1)
    return None
