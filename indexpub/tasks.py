"""indexpub's job application: the queues and job types its worker runs.

Both sides import this module: the registry backend to enqueue, ``indexpub worker`` to run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg

from indexpub.config import JOBS_SCHEMA
from indexpub.git_index import GitIndex
from jobs import App, Backoff, JobContext

log = logging.getLogger("indexpub.tasks")

app = App(schema=JOBS_SCHEMA)

# The git index has exactly one writer in the whole deployment; standbys wait on its lock.
INDEX_QUEUE = "index"
app.queue(INDEX_QUEUE, single_consumer=True)


@app.job_type(queue="default", backoff=Backoff(base=0.5, cap=30.0))
def demo(ctx: JobContext, payload: Any) -> None:
    """A no-op job that shows the queue working end to end (``indexpub demo``)."""
    row = ctx.conn.execute("SELECT now()").fetchone()
    log.info("demo job %s ran at %s: %s", ctx.job_ids[0], row[0] if row else "?", payload)


class _IndexTarget:
    """The index remote and local clone the sync job works on; set by ``indexpub worker``.

    Held at module level because the job types are declared at import time while the remote is
    configuration; the supervisor forks its workers after :func:`configure_index`.
    """

    remote_url: str | None = None
    clone_path: Path | None = None
    index: GitIndex | None = None


def configure_index(remote_url: str, clone_path: Path) -> None:
    _IndexTarget.remote_url = remote_url
    _IndexTarget.clone_path = clone_path
    _IndexTarget.index = None


def _index() -> GitIndex:
    if _IndexTarget.index is None:
        if _IndexTarget.remote_url is None or _IndexTarget.clone_path is None:
            raise RuntimeError("the index remote is not configured (see configure_index)")
        _IndexTarget.index = GitIndex.open(_IndexTarget.remote_url, _IndexTarget.clone_path)
    return _IndexTarget.index


@app.job_type(
    name="sync_crate",
    queue=INDEX_QUEUE,
    dedup=True,
    batch_size=100,
    max_attempts=None,
    backoff=Backoff(base=1.0, factor=2.0, cap=300.0),
    timeout=600.0,
)
def sync_crate(ctx: JobContext, payloads: list[Any]) -> None:
    """Make the index files of a batch of crates equal to the database (see indexpub.sync)."""
    from indexpub.sync import sync_crates

    result = sync_crates(ctx.conn, _index(), [str(p["name"]) for p in payloads])
    for message in result.commits:
        log.info("%s", message)


def sync_job(conn: psycopg.Connection[Any], name: str) -> None:
    """Enqueue the sync of one crate's index file in the caller's transaction."""
    app.enqueue(conn, sync_crate.job({"name": name}))
