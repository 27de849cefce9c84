"""The job queue a registry change enqueues into, in the caller's transaction.

The job types are declared here, with everything their rows carry (queue, deduplication, batch
size, backoff), so that a registry backend enqueues without importing git or the job code; the
functions that run them are bound in :mod:`indexpub.pipeline.jobs`, which only the worker loads.
"""

from __future__ import annotations

from typing import Any

import psycopg

from indexpub.config import JOBS_SCHEMA
from jobs import App, Backoff

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
