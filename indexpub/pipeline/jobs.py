"""The functions ``indexpub worker`` runs for the job types :mod:`indexpub.registry.queue`
declares, and the index they write to.

Importing this module binds them; the worker imports it before it starts.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

from indexpub.config import DEFAULT_GIT_TIMEOUT
from indexpub.gitindex.index import GitIndex
from indexpub.gitindex.process import scrub_secrets
from indexpub.pipeline.git_sync import fetch, sync_crates
from indexpub.pipeline.rebuild import rebuild
from indexpub.pipeline.sparse_sync import sync_sparse
from indexpub.pipeline.squash import Archived, archive_tip, squash
from indexpub.pipeline.verify import VERIFY_GIT_TIMEOUT, verify_and_record
from indexpub.registry import render, runs
from indexpub.registry.queue import (
    app,
    archive_index,
    rebuild_index,
    request_squash,
    scheduled_squash,
    squash_index,
    sync_crate,
    verify_index,
    write_sparse,
)
from jobs import Failures, JobContext
from jobs.logcontext import add_fields

log = logging.getLogger(__name__)


class _IndexTarget:
    """The index remote, local clone and sparse directory the sync jobs work on; set by
    ``indexpub worker``.

    Held at module level because the job types are declared at import time while the remote is
    configuration; the supervisor forks its workers after :func:`configure_index`.
    """

    remote_url: str | None = None
    clone_path: Path | None = None
    sparse_dir: Path | None = None
    verify_clone: Path | None = None
    # Seconds each git process may run (INDEXPUB_GIT_TIMEOUT, ``indexpub worker --git-timeout``).
    git_timeout: float = DEFAULT_GIT_TIMEOUT
    index: GitIndex | None = None
    # Where a scheduled squash keeps the old history (``indexpub worker --squash-archive-url``):
    # None keeps it on a snapshot branch of the index remote.
    squash_archive_url: str | None = None


def configure_index(
    remote_url: str,
    clone_path: Path,
    sparse_dir: Path | None = None,
    verify_clone: Path | None = None,
    git_timeout: float = DEFAULT_GIT_TIMEOUT,
) -> None:
    """Where the jobs work: the remote, the worker's clone of it, the sparse index directory,
    and the clone the verify job reads the remote in (never the worker's: see
    gitindex.read_clone); and how long a git process may run before it is killed."""
    _IndexTarget.remote_url = remote_url
    _IndexTarget.clone_path = clone_path
    _IndexTarget.sparse_dir = sparse_dir
    _IndexTarget.verify_clone = verify_clone
    _IndexTarget.git_timeout = git_timeout
    _IndexTarget.index = None


def configure_squash(archive_url: str | None) -> None:
    """Where the squashes that ``scheduled_squash`` requests keep the old history."""
    _IndexTarget.squash_archive_url = archive_url


def _index() -> GitIndex:
    if _IndexTarget.index is None:
        if _IndexTarget.remote_url is None or _IndexTarget.clone_path is None:
            raise RuntimeError("the index remote is not configured (see configure_index)")
        _IndexTarget.index = GitIndex.open(
            _IndexTarget.remote_url, _IndexTarget.clone_path, timeout=_IndexTarget.git_timeout
        )
    return _IndexTarget.index


@app.implement(sync_crate)
def run_sync_crate(ctx: JobContext, payloads: list[Any]) -> Failures:
    """Make the index files of a batch of crates equal to the database; a crate whose file
    cannot be written fails its own job alone."""
    names = [str(p["name"]) for p in payloads]
    _log_crates(names)
    started = time.monotonic()
    index = _index()
    if any(p.get("fetch") for p in payloads):
        # `indexpub repair` found these files drifted: someone else wrote the remote, so the
        # tip of our last push is not the remote's (see git_sync.sync_crates).
        fetch(index)
    result = sync_crates(ctx.conn, index, names)
    for message in result.commits:
        log.info("%s", message)
    took = time.monotonic() - started
    log.info(
        "synced %d crate(s): %d commit(s), %d push(es) in %.3f s",
        len(names),
        len(result.commits),
        result.pushes,
        took,
        extra={"duration_s": took, "commits": len(result.commits), "pushes": result.pushes},
    )
    return _failures_of(names, result.failed)


@app.implement(write_sparse)
def run_write_sparse(ctx: JobContext, payloads: list[Any]) -> Failures:
    """Write a batch of crates' files into the sparse index directory; a crate whose file
    cannot be written fails its own job alone."""
    root = _IndexTarget.sparse_dir
    if root is None:
        raise RuntimeError("the sparse index directory is not configured (see configure_index)")
    names = [str(p["name"]) for p in payloads]
    _log_crates(names)
    return _failures_of(names, sync_sparse(ctx.conn, root, names).failed)


def _today(ctx: JobContext) -> date:
    """The database's date in UTC, which names a snapshot branch; ends the read transaction,
    so the job holds no snapshot while git runs."""
    row = ctx.conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    ctx.conn.rollback()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@app.implement(squash_index)
def run_squash_index(ctx: JobContext, payload: Any) -> None:
    """Replace the index branch by one commit holding its tip's tree (see pipeline.squash)."""
    archived = None
    if payload.get("archive_url") is not None:
        archived = Archived(str(payload["archive_url"]), str(payload["snapshot"]))
    started = time.monotonic()
    result = squash(
        _index(),
        day=_today(ctx),
        request=str(payload["request"]),
        archived=archived,
    )
    took = time.monotonic() - started
    if result.commit is None:
        log.info("squash: nothing to do at %s: %s", result.old_tip, result.reason)
        return
    where = "the index remote" if result.archive_url is None else result.archive_url
    log.info(
        "squashed the index into %s in %.3f s; the old tip %s is on %s of %s",
        result.commit,
        took,
        result.old_tip,
        result.snapshot,
        where,
        extra={"duration_s": took},
    )


@app.implement(archive_index)
def run_archive_index(ctx: JobContext, payload: Any) -> None:
    """Push the index tip to a snapshot branch of the archive remote, then enqueue the squash
    that relies on it (committed with this job: enqueued once the archive holds the tip)."""
    url = str(payload["archive_url"])
    started = time.monotonic()
    archived = archive_tip(_index(), url, _today(ctx))
    took = time.monotonic() - started
    if archived is None:
        log.info("archive: the index branch is one commit already; nothing to archive or squash")
        return
    tip, snapshot = archived
    follow = {
        "request": str(payload["request"]),
        "archive_url": url,
        "snapshot": snapshot,
        "archive_job": ctx.job_ids[0],
    }
    app.enqueue(ctx.conn, squash_index.job(follow))
    log.info(
        "archived the index tip %s as %s of %s in %.3f s; the squash follows",
        tip,
        snapshot,
        url,
        took,
        extra={"duration_s": took},
    )


# Seconds between two progress records of a rebuild (and its looks for a request to stop), and
# between two progress lines of the verify job in the log.
REBUILD_PROGRESS_SECONDS = 1.0
VERIFY_LOG_SECONDS = 10.0


@app.implement(rebuild_index)
def run_rebuild_index(ctx: JobContext, payload: Any) -> None:
    """Regenerate every crate file (see pipeline.rebuild) for the rebuild run the payload
    names, writing its progress into the run's row, where ``indexpub rebuild`` follows it and
    asks it to stop."""
    run_id = int(payload["run"])
    conn = ctx.conn
    run = runs.start_rebuild(conn, run_id, render.count_crates(conn))
    conn.commit()
    if run is None:
        found = runs.rebuild_run(conn, run_id)
        if found is not None and not found.ended and found.cancel_requested:
            runs.finish_rebuild(conn, run_id, state="cancelled")
        log.info("rebuild %d: %s, nothing to do", run_id, "gone" if found is None else found.state)
        return
    last = time.monotonic()

    def progress(done: int, final: bool) -> bool:
        nonlocal last
        if not final and time.monotonic() - last < REBUILD_PROGRESS_SECONDS:
            return False
        last = time.monotonic()
        stop = runs.rebuild_progress(conn, run_id, done)
        conn.commit()
        log.info("rebuild %d: %d of %d crates compared", run_id, done, run.total or 0)
        return stop

    started = time.monotonic()
    try:
        result = rebuild(conn, _index(), batch_size=run.batch_size, progress=progress)
    except Exception as exc:
        conn.rollback()
        runs.fail_rebuild(conn, run_id, scrub_secrets(f"{type(exc).__name__}: {exc}"))
        conn.commit()
        raise
    runs.finish_rebuild(
        conn,
        run_id,
        state=result.state,
        done=result.crates,
        changed=result.changed if result.state == "done" else 0,
        deleted=result.deleted if result.state == "done" else 0,
        skipped=len(result.skipped),
        commits=len(result.commits),
        tip=result.tip,
    )
    took = time.monotonic() - started
    log.info(
        "rebuild %d %s: %d crates, %d file(s) written, %d deleted, %d commit(s) in %.1f s",
        run_id,
        result.state,
        result.crates,
        result.changed,
        result.deleted,
        len(result.commits),
        took,
        extra={"duration_s": took},
    )


@app.implement(scheduled_squash)
def run_scheduled_squash(ctx: JobContext, payload: Any) -> None:
    """A period of ``indexpub worker --squash-every``: request one squash (joining one under
    way, see registry.queue.request_squash)."""
    job, new = request_squash(ctx.conn, _IndexTarget.squash_archive_url)
    log.info(
        "scheduled squash for the period from %s: %s %s job %d",
        payload.get("period_start") if isinstance(payload, dict) else payload,
        "enqueued" if new else "joined the",
        job.job_type,
        job.id,
    )


@app.implement(verify_index)
def run_verify_index(ctx: JobContext, payload: Any) -> None:
    """The periodic verify: compare the remote with the database and record the result for
    ``indexpub check``. A remote that cannot be read is recorded (and logged), not raised:
    it is a verify's answer, and a retry would only say it again."""
    remote, clone = _IndexTarget.remote_url, _IndexTarget.verify_clone
    if remote is None or clone is None:
        raise RuntimeError("the index remote is not configured (see configure_index)")
    last = time.monotonic()

    def progress(done: int) -> None:
        nonlocal last
        if time.monotonic() - last >= VERIFY_LOG_SECONDS:
            last = time.monotonic()
            log.info("verify: %d crates compared", done)

    # Verify's clone fetches the whole index: never less than its own floor.
    timeout = max(VERIFY_GIT_TIMEOUT, _IndexTarget.git_timeout)
    outcome = verify_and_record(
        ctx.conn, remote, clone, ran_by=runs.BY_JOB, progress=progress, timeout=timeout
    )
    result = outcome.result
    if result is None:
        log.warning("verify could not check the index remote: %s", outcome.error)
    elif result.drifted:
        log.warning(
            "verify: %d crate(s) drifted from the database at %s: %s (indexpub repair fixes them)",
            len(result.drifted),
            result.tip,
            ", ".join(f"{d.name} ({d.kind})" for d in result.drifted[:10]),
        )
    else:
        log.info(
            "verify: %d crate files at %s equal the database (%d pending) in %.1f s",
            result.files,
            result.tip,
            len(result.pending),
            result.duration,
            extra={"duration_s": result.duration},
        )


def _log_crates(names: list[str]) -> None:
    """The crates of this run, on its log records: ``crate`` for one, ``crates`` for a batch
    (see jobs.logcontext)."""
    if len(names) == 1:
        add_fields(crate=names[0])
    else:
        add_fields(crates=names)


def _failures_of(names: list[str], failed: dict[str, str]) -> Failures:
    """The positions of a batch's payloads whose crates (by lowercased name) failed."""
    return {i: failed[name.lower()] for i, name in enumerate(names) if name.lower() in failed}
