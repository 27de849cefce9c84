"""The functions ``indexpub worker`` runs for the job types :mod:`indexpub.registry.queue`
declares, and the index they write to.

Importing this module binds them; the worker imports it before it starts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from indexpub.gitindex.index import GitIndex
from indexpub.pipeline.git_sync import sync_crates
from indexpub.pipeline.sparse_sync import sync_sparse
from indexpub.registry.queue import app, sync_crate, write_sparse
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


@app.implement(sync_crate)
def run_sync_crate(ctx: JobContext, payloads: list[Any]) -> Failures:
    """Make the index files of a batch of crates equal to the database; a crate whose file
    cannot be written fails its own job alone."""
    names = [str(p["name"]) for p in payloads]
    _log_crates(names)
    started = time.monotonic()
    result = sync_crates(ctx.conn, _index(), names)
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
