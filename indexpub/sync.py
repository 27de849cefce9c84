"""The sync job: make crate files in the git index equal to what the database says.

The job does not apply a change (append a line, flip a flag); it renders each crate's whole file
from the database and compares it with the blob at the tip (by sha: the rendered file's blob sha
against the one in the tip's tree). That is what makes it idempotent and
order-free: a job that runs twice, late, or after a crash at any step finds either nothing to do
or the same thing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from indexpub import store
from indexpub.faults import crash_point
from indexpub.git_index import GitIndex, PushRejected
from indexpub.git_objects import object_sha
from indexpub.names import index_path

log = logging.getLogger("indexpub.sync")

# A rejected push means another writer moved the remote; after this many rebuilds in one job the
# job fails and the queue's backoff spaces out the next try.
MAX_PUSHES = 3


class SyncError(RuntimeError):
    pass


@dataclass
class SyncResult:
    commits: list[str] = field(default_factory=list)
    pushes: int = 0
    rejected: int = 0


def commit_message(name: str, existed: bool, exists: bool) -> str:
    if not existed:
        return f"Create crate `{name}`"
    if not exists:
        return f"Delete crate `{name}`"
    return f"Update crate `{name}`"


def sync_crates(conn: psycopg.Connection[Any], index: GitIndex, names: Sequence[str]) -> SyncResult:
    """Commit every listed crate whose file differs from the database, and push once.

    The first try builds on the tip as of our last fetch or push (we are the only writer of crate
    files, so it is usually current); a rejected push fetches, re-reads the database and rebuilds.
    """
    result = SyncResult()
    # One entry per file: names that differ only in case share one (foo-bar and foo_bar don't).
    unique = sorted({name.lower(): name for name in names}.values(), key=str.lower)
    crash_point("sync-started")
    tip = index.tip() or index.fetch()
    for _ in range(MAX_PUSHES):
        changes: list[tuple[str, bytes | None, str]] = []
        paths = [index_path(name) for name in unique]
        # The tip's blob sha of every file of the batch, with at most one git process (which
        # also reads the trees the commits will need); a file whose rendering hashes to the
        # same sha is unchanged, so no file is read.
        haves = index.file_shas(paths, tip)
        wants = store.render_crate_files(conn, [name.lower() for name in unique])
        for name, path, have in zip(unique, paths, haves, strict=True):
            want = wants[name.lower()]
            if (None if want is None else object_sha("blob", want)) != have:
                message = commit_message(name, have is not None, want is not None)
                changes.append((path, want, message))
        # End the read transaction: the job holds no snapshot or lock while git runs.
        conn.rollback()
        if not changes:
            return result
        head = tip
        # The batch's commits are built in memory and written as one pack when it ends.
        with index.batch():
            for number, (path, content, message) in enumerate(changes):
                if number == 1:
                    crash_point("sync-mid-batch")
                head = index.commit_file(head, path, content, message)
        crash_point("sync-committed")
        try:
            index.push(head)
        except PushRejected:
            result.rejected += 1
            log.info("push rejected (the remote moved); fetching and rebuilding")
            tip = index.fetch()
            continue
        crash_point("sync-pushed")
        result.pushes += 1
        result.commits.extend(message for _, _, message in changes)
        return result
    raise SyncError(
        f"the index remote moved under us {MAX_PUSHES} times in a row; giving up this attempt "
        "(the job will be retried after its backoff)"
    )
