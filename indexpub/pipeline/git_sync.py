"""The sync job: make crate files in the git index equal to what the database says.

The job does not apply a change (append a line, flip a flag); it renders each crate's whole file
from the database and compares it with the blob at the tip (by sha: the rendered file's blob sha
against the one in the tip's tree). That is what makes it idempotent and
order-free: a job that runs twice, late, or after a crash at any step finds either nothing to do
or the same thing to do.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from indexpub.domain.names import index_path
from indexpub.gitindex.index import GitIndex
from indexpub.gitindex.objects import object_sha
from indexpub.gitindex.process import GitError, GitTimeout, PushRejected
from indexpub.pipeline import metrics
from indexpub.pipeline.faults import crash_point
from indexpub.registry import render

log = logging.getLogger("indexpub.pipeline.git_sync")

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
    # The crates (by lowercased name) whose files could not be written, with why: the others'
    # commits were pushed without them (see docs/architecture.md, "a batch fails crate by crate").
    failed: dict[str, str] = field(default_factory=dict)


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
    A crate whose file cannot be read or committed at the tip is left out and named in
    ``failed``; failures that are not one crate's raise.
    """
    result = SyncResult()
    # One entry per file: names that differ only in case share one (foo-bar and foo_bar don't).
    unique = sorted({name.lower(): name for name in names}.values(), key=str.lower)
    metrics.batch_size(len(unique))
    crash_point("sync-started")
    tip = index.tip()
    fetched = tip is None
    if tip is None:
        tip = fetch(index)
    paths = [index_path(name) for name in unique]
    while True:
        failed: dict[str, str] = {}
        changes: list[tuple[str, str, bytes | None, str]] = []
        # The tip's blob sha of every file of the batch, with at most one git process (which
        # also reads the trees the commits will need); a file whose rendering hashes to the
        # same sha is unchanged, so no file is read.
        haves = _file_shas(index, paths, tip, unique, failed)
        rendered = render.read_crate_files(conn, [name.lower() for name in unique])
        read_at = time.monotonic()
        wants = rendered.files
        for name, path, have in zip(unique, paths, haves, strict=True):
            want = wants[name.lower()]
            if (
                name.lower() not in failed
                and (None if want is None else object_sha("blob", want)) != have
            ):
                message = commit_message(name, have is not None, want is not None)
                changes.append((name, path, want, message))
        # End the read transaction: the job holds no snapshot or lock while git runs.
        conn.rollback()
        head = tip
        committed: list[str] = []
        published: list[str] = []
        # The batch's commits are built in memory and written as one pack when it ends.
        with metrics.timed("commit") if changes else contextlib.nullcontext(), index.batch():
            for number, (name, path, content, message) in enumerate(changes):
                if number == 1:
                    crash_point("sync-mid-batch")
                try:
                    head = index.commit_file(head, path, content, message)
                except GitTimeout:
                    raise
                except GitError as problem:
                    # Checked before anything is built: the batch goes on from the same head.
                    failed[name.lower()] = f"cannot commit {path}: {problem}"
                    continue
                committed.append(message)
                published.append(name.lower())
        if failed and not fetched:
            # What blocks a crate may be gone from the remote already (a foreign push fixed it):
            # our tip is only as fresh as our last push, so look once more at the real one.
            log.info(
                "%d crate(s) cannot be written at our tip; fetching to look again", len(failed)
            )
            tip, fetched = fetch(index), True
            continue
        result.failed = failed
        if head == tip:
            return result
        crash_point("sync-committed")
        try:
            with metrics.timed("push"):
                index.push(head)
        except PushRejected:
            result.rejected += 1
            metrics.push_rejected(rebuilding=result.rejected < MAX_PUSHES)
            if result.rejected == MAX_PUSHES:
                raise SyncError(
                    f"the index remote moved under us {MAX_PUSHES} times in a row; giving up "
                    "this attempt (the job will be retried after its backoff)"
                ) from None
            log.info("push rejected (the remote moved); fetching and rebuilding")
            tip, fetched = fetch(index), True
            continue
        pushed_at = time.monotonic()
        metrics.pushed(
            rendered.ages[n] + pushed_at - read_at for n in published if n in rendered.ages
        )
        _record_tip(index, head)
        crash_point("sync-pushed")
        result.pushes += 1
        result.commits.extend(committed)
        return result


def fetch(index: GitIndex) -> str:
    """Fetch the remote's tip, timed and dated for the metrics."""
    with metrics.timed("fetch"):
        tip = index.fetch()
    _record_tip(index, tip)
    return tip


def _record_tip(index: GitIndex, tip: str) -> None:
    """The tip's commit time for the tip-age metric: one object read from the clone."""
    try:
        metrics.tip_time(index.commit_info(tip).committed_at)
    except GitError as problem:
        log.warning("cannot date the tip %s: %s", tip[:12], problem)


def _file_shas(
    index: GitIndex, paths: list[str], tip: str, names: list[str], failed: dict[str, str]
) -> list[str | None]:
    """``index.file_shas``, asked path by path when the batch's question fails, so that a path
    the tip cannot answer (a directory where the crate's file must be) fails its crate alone."""
    try:
        return index.file_shas(paths, tip)
    except GitTimeout:
        raise
    except GitError:
        shas: list[str | None] = []
        for name, path in zip(names, paths, strict=True):
            try:
                shas.extend(index.file_shas([path], tip))
            except GitTimeout:
                raise
            except GitError as problem:
                failed[name.lower()] = f"cannot read {path} at the tip: {problem}"
                shas.append(None)
        return shas
