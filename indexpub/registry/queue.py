"""The job queue a registry change enqueues into, in the caller's transaction.

The job types are declared here, with everything their rows carry (queue, deduplication, batch
size, backoff), so that a registry backend enqueues without importing git or the job code; the
functions that run them are bound in :mod:`indexpub.pipeline.jobs`, which only the worker loads.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg

from indexpub.config import JOBS_SCHEMA
from jobs import App, Backoff, JobInfo

app = App(schema=JOBS_SCHEMA)

# The git index has exactly one writer in the whole deployment; standbys wait on its lock.
INDEX_QUEUE = "index"
app.queue(INDEX_QUEUE, single_consumer=True)

# The sparse index's files: many writers are fine (each file is renamed into place).
SPARSE_QUEUE = "sparse"

sync_crate = app.declare(
    "sync_crate",
    queue=INDEX_QUEUE,
    dedup=True,
    batch_size=500,
    max_attempts=None,
    backoff=Backoff(base=1.0, factor=2.0, cap=300.0),
    timeout=600.0,
)
"""Make the git index files of a batch of crates equal to the database."""

write_sparse = app.declare(
    "write_sparse",
    queue=SPARSE_QUEUE,
    dedup=True,
    batch_size=100,
    max_attempts=None,
    backoff=Backoff(base=1.0, factor=2.0, cap=60.0),
    timeout=300.0,
)
"""Write a batch of crates' files into the sparse index directory."""


rebuild_index = app.declare(
    "rebuild_index",
    queue=INDEX_QUEUE,
    max_attempts=3,
    backoff=Backoff(base=10.0, factor=2.0, cap=300.0),
    timeout=4 * 3600.0,
)
"""Regenerate every crate file from the database in commits of a batch size, and push once
(``indexpub rebuild``): on the index queue, so that nothing pushes beside the sync."""

# The periodic verify: a queue of its own, so that a verify never waits behind syncs nor holds
# them up, and any number of worker hosts may run it (one job per period across them all).
VERIFY_QUEUE = "verify"

verify_index = app.declare(
    "verify_index",
    queue=VERIFY_QUEUE,
    max_attempts=3,
    backoff=Backoff(base=30.0, factor=2.0, cap=300.0),
    timeout=3600.0,
)
"""Compare the remote's tip with the database crate by crate and record the result, for
``indexpub check``; periodic when the worker runs with ``--verify-every`` (by default hourly).
Its payload is the period's (jobs.Period)."""


def enqueue_crate_syncs(conn: psycopg.Connection[Any], name: str) -> None:
    """Enqueue, in the caller's transaction, both syncs of one crate's file: git and sparse."""
    app.enqueue_many(conn, [sync_crate.job({"name": name}), write_sparse.job({"name": name})])


# --- squashing the index (see indexpub.pipeline.squash and docs/architecture.md) ---------------

squash_index = app.declare(
    "squash_index",
    queue=INDEX_QUEUE,
    dedup=True,
    priority=10,
    max_attempts=None,
    backoff=Backoff(base=2.0, factor=2.0, cap=300.0),
    timeout=1800.0,
)
"""Replace the index branch by one commit holding its tip's tree. ``{"request": ID}`` keeps the
old history on a snapshot branch of the index remote; with ``"archive_url"``, ``"snapshot"`` and
``"archive_job"`` too (enqueued by ``archive_index`` once the archive holds it), on the archive
remote. ``request`` names the squash in its commit, so that a retry finds its own work."""

archive_index = app.declare(
    "archive_index",
    queue=INDEX_QUEUE,
    dedup=True,
    priority=10,
    max_attempts=None,
    backoff=Backoff(base=5.0, factor=2.0, cap=600.0),
    timeout=3600.0,
)
"""``{"request": ID, "archive_url": URL}``: push the index tip to a snapshot branch of the
archive remote, then enqueue the ``squash_index`` that relies on it. Retried on its own: an
archive that fails never squashes (so never twice), and the history stays on the index branch
until it succeeds."""

scheduled_squash = app.declare(
    "scheduled_squash",
    queue=INDEX_QUEUE,
    max_attempts=None,
    backoff=Backoff(base=2.0, factor=2.0, cap=300.0),
    timeout=60.0,
)
"""The periodic type behind ``indexpub worker --squash-every``: each period's job requests one
squash (see :func:`request_squash`). It has no schedule unless the worker gives it one."""

SQUASH_TYPES = (archive_index.name, squash_index.name)

# Serializes squash requests, so that two at once cannot both find none under way.
_SQUASH_REQUEST_LOCK = 0x1D9E_5A5A


def squash_under_way(conn: psycopg.Connection[Any]) -> JobInfo | None:
    """A squash or archive job that has not finished (dead ones aside), the oldest first."""
    found = [
        job
        for name in SQUASH_TYPES
        for job in app.store.list_jobs(conn, job_type=name, limit=100)
        if job.state != "dead"
    ]
    return min(found, key=lambda job: job.id, default=None)


def request_squash(conn: psycopg.Connection[Any], archive_url: str | None) -> tuple[JobInfo, bool]:
    """In the caller's transaction: the squash job under way, or a new one (an ``archive_index``
    job first when ``archive_url`` is given); and whether it is new.

    One squash at a time: a request while one is queued, running or failing joins it rather
    than squashing again right after it. (This is the deduplication: the payloads differ by
    their request id, so the queue's own would not fold them.)
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SQUASH_REQUEST_LOCK,))
    found = squash_under_way(conn)
    if found is not None:
        return found, False
    # A new id per request: a retry of its job recognizes its own squash commit by it.
    request = secrets.token_hex(8)
    if archive_url is None:
        job = squash_index.job({"request": request})
    else:
        job = archive_index.job({"request": request, "archive_url": archive_url})
    enqueued = app.enqueue(conn, job)
    (info,) = [j for j in app.store.list_jobs(conn, job_type=job.job_type) if j.id == enqueued.id]
    return info, True
