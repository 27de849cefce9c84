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


def enqueue_crate_syncs(conn: psycopg.Connection[Any], name: str) -> None:
    """Enqueue, in the caller's transaction, both syncs of one crate's file: git and sparse."""
    app.enqueue_many(conn, [sync_crate.job({"name": name}), write_sparse.job({"name": name})])
