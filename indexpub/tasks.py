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
from jobs import App, Backoff, Failures, JobContext

log = logging.getLogger("indexpub.tasks")

app = App(schema=JOBS_SCHEMA)

# The git index has exactly one writer in the whole deployment; standbys wait on its lock.
INDEX_QUEUE = "index"
app.queue(INDEX_QUEUE, single_consumer=True)


# The sparse index's files: many writers are fine (each file is renamed into place).
SPARSE_QUEUE = "sparse"


class _IndexTarget:
    """The index remote, local clone and sparse directory the sync jobs work on; set by
    ``indexpub worker``.

    Held at module level because the job types are declared at import time while the remote is
    configuration; the supervisor forks its workers after :func:`configure_index`.
    """

    remote_url: str | None = None
    clone_path: Path | None = None
    sparse_dir: Path | None = None
    index: GitIndex | None = None


def configure_index(remote_url: str, clone_path: Path, sparse_dir: Path | None = None) -> None:
    _IndexTarget.remote_url = remote_url
    _IndexTarget.clone_path = clone_path
    _IndexTarget.sparse_dir = sparse_dir
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
    batch_size=500,
    max_attempts=None,
    backoff=Backoff(base=1.0, factor=2.0, cap=300.0),
    timeout=600.0,
)
def sync_crate(ctx: JobContext, payloads: list[Any]) -> Failures:
    """Make the index files of a batch of crates equal to the database (see indexpub.sync);
    a crate whose file cannot be written fails its own job alone."""
    from indexpub.sync import sync_crates

    names = [str(p["name"]) for p in payloads]
    result = sync_crates(ctx.conn, _index(), names)
    for message in result.commits:
        log.info("%s", message)
    return _failures_of(names, result.failed)


@app.job_type(
    name="write_sparse",
    queue=SPARSE_QUEUE,
    dedup=True,
    batch_size=100,
    max_attempts=None,
    backoff=Backoff(base=1.0, factor=2.0, cap=60.0),
    timeout=300.0,
)
def write_sparse(ctx: JobContext, payloads: list[Any]) -> Failures:
    """Write a batch of crates' files into the sparse index directory (see indexpub.sparse);
    a crate whose file cannot be written fails its own job alone."""
    from indexpub.sparse import sync_sparse

    root = _IndexTarget.sparse_dir
    if root is None:
        raise RuntimeError("the sparse index directory is not configured (see configure_index)")
    names = [str(p["name"]) for p in payloads]
    return _failures_of(names, sync_sparse(ctx.conn, root, names).failed)


def _failures_of(names: list[str], failed: dict[str, str]) -> Failures:
    """The positions of a batch's payloads whose crates (by lowercased name) failed."""
    return {i: failed[name.lower()] for i, name in enumerate(names) if name.lower() in failed}


def sync_job(conn: psycopg.Connection[Any], name: str) -> None:
    """Enqueue, in the caller's transaction, the syncs of one crate's file: git and sparse."""
    app.enqueue_many(conn, [sync_crate.job({"name": name}), write_sparse.job({"name": name})])
