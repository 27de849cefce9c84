"""What ``indexpub verify`` and ``indexpub rebuild`` did, in the database: the verify runs that
``indexpub check`` reads, and the rebuild runs through which the command and the job that does
the work (on the index queue, in the worker) talk: progress one way, a request to stop the other.

Every function runs in the caller's transaction and commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from indexpub.registry import sql
from indexpub.registry.queue import app, rebuild_index
from indexpub.registry.sql import Conn, statement

__all__ = [
    "LatestVerify",
    "RebuildRun",
    "VerifyRun",
    "cancel_rebuild",
    "fail_rebuild",
    "finish_rebuild",
    "latest_verifies",
    "rebuild_progress",
    "rebuild_run",
    "record_verify",
    "request_rebuild",
    "start_rebuild",
]

# Who ran a verify.
BY_COMMAND = "command"
BY_JOB = "job"
# Which copy of the index it compared with the database: each is graded by `indexpub check`
# on its own, so that one's clean run never hides the other's drift.
REMOTE = "remote"
SPARSE = "sparse"
TARGETS = (REMOTE, SPARSE)


@dataclass(frozen=True)
class VerifyRun:
    """One verify: what it compared and what it found, or why it could not (``error``)."""

    started_at: datetime
    ran_by: str
    # The remote's URL without credentials; for a sparse run (no branch, no tip), its directory.
    remote: str
    branch: str | None = None
    tip: str | None = None
    crates: int | None = None
    files: int | None = None
    drifted_count: int | None = None
    pending_count: int | None = None
    # The first drifted crates, each {"name", "kind", "path", "versions"}.
    sample: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    id: int | None = None
    finished_at: datetime | None = None
    target: str = REMOTE


@dataclass(frozen=True)
class LatestVerify:
    """The newest verify, the newest that could check (the same run unless the last failed),
    and the database's clock."""

    last: VerifyRun | None
    checked: VerifyRun | None
    now: datetime


def record_verify(conn: Conn, run: VerifyRun) -> int:
    """Record a verify (and forget those older than 90 days); its id."""
    row = conn.execute(
        statement(sql.INSERT_VERIFY_RUN),
        {
            "started_at": run.started_at,
            "ran_by": run.ran_by,
            "remote": run.remote,
            "branch": run.branch,
            "tip": run.tip,
            "crates": run.crates,
            "files": run.files,
            "drifted_count": run.drifted_count,
            "pending_count": run.pending_count,
            "sample": Jsonb(list(run.sample)),
            "error": run.error,
            "target": run.target,
        },
    ).fetchone()
    assert row is not None
    conn.execute(statement(sql.PRUNE_VERIFY_RUNS))
    return int(row[0])


def latest_verifies(conn: Conn, target: str = REMOTE) -> LatestVerify:
    """The newest runs of one target: another target's runs say nothing about this copy."""
    rows = conn.execute(statement(sql.LATEST_VERIFY_RUNS), {"target": target}).fetchall()
    found: dict[str, VerifyRun] = {}
    now: datetime | None = None
    for which, run_id, started, finished, ran_by, remote, branch, tip, *rest in rows:
        crates, files, drifted, pending, sample, error, run_target, now = rest
        found[which] = VerifyRun(
            started,
            ran_by,
            remote,
            branch,
            tip,
            crates,
            files,
            drifted,
            pending,
            tuple(sample or ()),
            error,
            run_id,
            finished,
            run_target,
        )
    if now is None:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now = row[0]
    assert now is not None
    return LatestVerify(found.get("last"), found.get("checked"), now)


@dataclass(frozen=True)
class RebuildRun:
    id: int
    state: str  # queued, running, done, cancelled, failed
    batch_size: int | None
    job_id: int | None
    total: int | None
    done: int
    changed: int | None
    deleted: int | None
    skipped: int | None
    commits: int | None
    tip: str | None
    cancel_requested: bool
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.state in ("done", "cancelled")


def request_rebuild(conn: Conn, batch_size: int | None) -> RebuildRun:
    """A new rebuild run and the job that will do it, enqueued in the caller's transaction."""
    row = conn.execute(statement(sql.INSERT_REBUILD_RUN), (batch_size,)).fetchone()
    assert row is not None
    run_id = int(row[0])
    enqueued = app.enqueue(conn, rebuild_index.job({"run": run_id}))
    conn.execute(statement(sql.SET_REBUILD_JOB), (enqueued.id, run_id))
    found = rebuild_run(conn, run_id)
    assert found is not None
    return found


def rebuild_run(conn: Conn, run_id: int) -> RebuildRun | None:
    row = conn.execute(statement(sql.GET_REBUILD_RUN), (run_id,)).fetchone()
    return None if row is None else RebuildRun(*row)


def start_rebuild(conn: Conn, run_id: int, total: int) -> RebuildRun | None:
    """Mark the run as running with ``total`` crates to go through; None when it must not run
    (it ended already, which a job run again finds, or its cancel was asked for)."""
    row = conn.execute(statement(sql.START_REBUILD_RUN), {"id": run_id, "total": total}).fetchone()
    return None if row is None else RebuildRun(*row)


def rebuild_progress(conn: Conn, run_id: int, done: int) -> bool:
    """Record how many crates were compared; whether the command asked the run to stop."""
    row = conn.execute(statement(sql.REBUILD_PROGRESS), {"id": run_id, "done": done}).fetchone()
    return bool(row and row[0])


def finish_rebuild(
    conn: Conn,
    run_id: int,
    *,
    state: str,
    done: int = 0,
    changed: int = 0,
    deleted: int = 0,
    skipped: int = 0,
    commits: int = 0,
    tip: str | None = None,
    error: str | None = None,
) -> None:
    """Record how a run ended: "done" or "cancelled" (nothing pushed)."""
    conn.execute(
        statement(sql.FINISH_REBUILD_RUN),
        {
            "id": run_id,
            "state": state,
            "done": done,
            "changed": changed,
            "deleted": deleted,
            "skipped": skipped,
            "commits": commits,
            "tip": tip,
            "error": error,
        },
    )


def fail_rebuild(conn: Conn, run_id: int, error: str) -> None:
    """Record why an attempt failed (the job is retried by the queue's backoff)."""
    conn.execute(statement(sql.FAIL_REBUILD_RUN), {"id": run_id, "error": error})


def cancel_rebuild(conn: Conn, run_id: int) -> str | None:
    """Ask the run to stop; its state, None when there is no such run."""
    row = conn.execute(statement(sql.CANCEL_REBUILD_RUN), (run_id,)).fetchone()
    return None if row is None else str(row[0])
