"""The index's Prometheus instruments: what the sync jobs measure as they publish.

They are made on first use in the process that runs the jobs (a forked worker: see
:mod:`jobs.metrics` for how the supervisor's metrics port sums its workers), and prometheus_client
is imported only then, so that the CLI's import stays fast. No label names a crate: the series
are bounded by the three git operations and two push results.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

# From a publish to the push that carries it: a fraction of a second when the worker keeps up,
# minutes behind a backlog, hours when the remote is down.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
GIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A sync job's batch holds up to 500 crates (registry.queue).
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500)

OPERATIONS = ("fetch", "commit", "push")
PUSH_RESULTS = ("pushed", "rejected")


@dataclass(frozen=True)
class _Instruments:
    lag: Histogram
    git: Histogram
    pushes: Counter
    rebuilds: Counter
    batch: Histogram
    tip: Gauge


@cache
def _instruments() -> _Instruments:
    from prometheus_client import Counter, Gauge, Histogram

    made = _Instruments(
        lag=Histogram(
            "indexpub_index_lag_seconds",
            "From a version's change in the database (publish, yank, unyank) to the end of the "
            "push that published it, one observation per crate file pushed.",
            buckets=LAG_BUCKETS,
        ),
        git=Histogram(
            "indexpub_index_git_duration_seconds",
            "How long the sync jobs' git operations took: fetch, commit (a batch's commits "
            "built and written) and push (rejected ones too).",
            ["operation"],
            buckets=GIT_BUCKETS,
        ),
        pushes=Counter(
            "indexpub_index_pushes_total",
            "Pushes of the sync jobs, by result: pushed, or rejected (the remote moved).",
            ["result"],
        ),
        rebuilds=Counter(
            "indexpub_index_rebuilds_total",
            "Batches rebuilt on a fetched tip after a rejected push.",
        ),
        batch=Histogram(
            "indexpub_index_batch_crates",
            "Crates per sync job batch.",
            buckets=BATCH_BUCKETS,
        ),
        tip=Gauge(
            "indexpub_index_tip_timestamp_seconds",
            "The committer time of the index tip the worker last pushed or fetched (its age: "
            "time() - this).",
            multiprocess_mode="mostrecent",
        ),
    )
    for operation in OPERATIONS:
        made.git.labels(operation)
    for result in PUSH_RESULTS:
        made.pushes.labels(result)
    return made


def declare_index_series() -> None:
    """Make the instruments now, their series at zero: the metrics port shows them before the
    first sync job, and a rate over rejected pushes exists before the first rejection."""
    _instruments()


@contextlib.contextmanager
def timed(operation: str) -> Iterator[None]:
    """Observe how long the block's git ``operation`` took, whether it succeeded or not."""
    started = time.monotonic()
    try:
        yield
    finally:
        _instruments().git.labels(operation).observe(time.monotonic() - started)


def push_rejected(*, rebuilding: bool) -> None:
    """A rejected push; ``rebuilding``: the batch is built again on the fetched tip."""
    made = _instruments()
    made.pushes.labels("rejected").inc()
    if rebuilding:
        made.rebuilds.inc()


def pushed(lags: Iterable[float]) -> None:
    """A push that went through, with the lag of each crate file it published."""
    made = _instruments()
    made.pushes.labels("pushed").inc()
    for lag in lags:
        made.lag.observe(lag)


def batch_size(crates: int) -> None:
    _instruments().batch.observe(crates)


def tip_time(committed_at: float | None) -> None:
    """The commit time of the tip the worker now has (None: not known)."""
    if committed_at is not None:
        _instruments().tip.set(committed_at)
