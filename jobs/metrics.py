"""Prometheus metrics of a jobs application: what a scrape reads from the table, and what the
workers measure as they run jobs.

Two halves, because they live in different processes:

* :class:`JobsCollector` reads the queue's state from the database when scraped: the jobs of
  each queue, type and state, the age of each queue's oldest ready job, and who holds each
  single-consumer lock. It runs two statements per refresh and keeps the result for
  ``interval`` seconds, so any number of scrapers cost at most one reading per interval.
* The workers count their runs (:func:`observe_run`): durations and outcomes by queue and type.
  A supervisor's workers are forked processes, so their instruments reach the scraped process
  through prometheus_client's multiprocess mode (:func:`use_multiprocess_dir`, before anything
  imports prometheus_client, then :func:`exposition_registry`).

prometheus_client is imported only when metrics are used, so that an application that never
asks for them pays nothing at import.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from jobs import queries
from jobs.store import STATES, Consumer, JobStore, StateCount

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

# Job runs last from milliseconds (a sparse file) to an hour (a verify of a big index).
RUN_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

# What happened to a job at the end of a run: "failed" will be retried, "dead" will not.
OUTCOMES = ("done", "failed", "dead")

# How the supervisor names its workers' sessions (App.supervisor): the host and pid of the
# process, which a lock's holder is known by.
_WORKER_NAME = re.compile(r" pid (\d+) on (.+)$")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class _Instruments:
    run_duration: Histogram
    outcomes: Counter


@cache
def _instruments() -> _Instruments:
    """Made on first use, in the process that runs jobs: in multiprocess mode each process
    writes its own file, which the scraped process sums."""
    from prometheus_client import Counter, Histogram

    return _Instruments(
        run_duration=Histogram(
            "jobs_run_duration_seconds",
            "How long a run of a job (or of a batch of jobs) took, its function's time.",
            ["queue", "job_type"],
            buckets=RUN_BUCKETS,
        ),
        outcomes=Counter(
            "jobs_outcomes_total",
            "Jobs that finished a run, by outcome: done (deleted), failed (will be retried) "
            "or dead (no attempt left).",
            ["queue", "job_type", "outcome"],
        ),
    )


def observe_run(
    queue: str, job_type: str, seconds: float | None, *, done: int, failed: int, dead: int
) -> None:
    """Count a run: its duration (None: it did not run, as for a job found dead at its claim)
    and how many of its jobs ended in each outcome."""
    instruments = _instruments()
    if seconds is not None:
        instruments.run_duration.labels(queue, job_type).observe(seconds)
    for outcome, count in (("done", done), ("failed", failed), ("dead", dead)):
        if count:
            instruments.outcomes.labels(queue, job_type, outcome).inc(count)


def declare_run_series(queue: str, job_types: Sequence[str]) -> None:
    """Create the series of a worker's job types at zero, so that a rate over them exists before
    the first failure (Prometheus cannot tell a missing series from a quiet one)."""
    instruments = _instruments()
    for job_type in job_types:
        instruments.run_duration.labels(queue, job_type)
        for outcome in OUTCOMES:
            instruments.outcomes.labels(queue, job_type, outcome)


# --- the state of the queue, read at scrape time --------------------------------------------


@dataclass
class _Snapshot:
    counts: list[StateCount] = field(default_factory=list)
    holders: dict[str, Consumer] = field(default_factory=dict)
    up: bool = False


class JobsCollector:
    """A prometheus_client collector of a jobs application's queue state (see the module).

    ``conninfo``: the database the queue lives in; the collector keeps one autocommit
    connection of its own, opened on first scrape (and again after an error), never shared
    with a forked child. ``interval``: how long one reading serves every scrape.
    """

    def __init__(
        self,
        store: JobStore,
        conninfo: str,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.conninfo = conninfo
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._owner = os.getpid()
        self._snapshot: _Snapshot | None = None
        self._taken = 0.0
        # Every (queue, type) seen so far: its states stay at zero when drained instead of
        # vanishing. Bounded by the job types that exist.
        self._seen: set[tuple[str, str]] = set()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._owner != os.getpid():
            # A connection inherited through fork belongs to the parent: never use or close it.
            self._conn, self._owner = None, os.getpid()
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                application_name="jobs metrics",
                connect_timeout=5,
            )
            self._conn.execute(queries.METRICS_SESSION_SETUP)
        return self._conn

    def _read(self) -> _Snapshot:
        """The counts and the lock holders: two statements (the second only when the
        application has a single-consumer queue)."""
        single = [q.name for q in self.store.registry.queues.values() if q.single_consumer]
        try:
            conn = self._connection()
            counts = self.store.state_counts(conn)
            holders = self.store.consumers(conn, single)
            return _Snapshot(counts, holders, True)
        except psycopg.Error:
            if self._conn is not None and self._owner == os.getpid():
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
            return _Snapshot()

    def snapshot(self) -> _Snapshot:
        """The last reading if younger than ``interval``, else a new one; scrapes that come
        together wait for one reading."""
        with self._lock:
            now = self._clock()
            if self._snapshot is None or now - self._taken >= self.interval:
                self._snapshot, self._taken = self._read(), now
            return self._snapshot

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._owner == os.getpid():
                self._conn.close()
            self._conn = None

    def describe(self) -> list[Metric]:
        # No query at registration: prometheus_client calls describe() when there is one.
        return list(self._families(_Snapshot(up=True)))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.snapshot())

    def _families(self, snapshot: _Snapshot) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "jobs_metrics_database_up",
            "1 when the last reading of the queue's state succeeded (the other jobs_queue_ and "
            "jobs_consumer_ series are missing while it is 0).",
        )
        up.add_metric([], 1.0 if snapshot.up else 0.0)
        yield up
        if not snapshot.up:
            return
        registry = self.store.registry
        jobs = GaugeMetricFamily(
            "jobs_queue_jobs",
            "Unfinished jobs by queue, job type and state (ready, scheduled, running, failing, "
            "dead), as the database says at most a few seconds ago.",
            labels=["queue", "job_type", "state"],
        )
        counted = {(c.queue, c.job_type, c.state): c.count for c in snapshot.counts}
        self._seen.update((t.queue, t.name) for t in registry.types.values())
        self._seen.update((c.queue, c.job_type) for c in snapshot.counts)
        for queue, job_type in sorted(self._seen):
            for state in STATES:
                jobs.add_metric([queue, job_type, state], counted.get((queue, job_type, state), 0))
        yield jobs
        oldest = GaugeMetricFamily(
            "jobs_queue_oldest_ready_age_seconds",
            "Seconds since the oldest ready job of the queue was enqueued (0: none ready).",
            labels=["queue"],
        )
        ages: dict[str, float] = dict.fromkeys(registry.queues, 0.0)
        ages.update(dict.fromkeys((queue for queue, _ in self._seen), 0.0))
        for count in snapshot.counts:
            if count.oldest_ready_age is not None:
                ages[count.queue] = max(ages[count.queue], count.oldest_ready_age)
        for queue, age in sorted(ages.items()):
            oldest.add_metric([queue], age)
        yield oldest
        held = GaugeMetricFamily(
            "jobs_consumer_lock_held",
            "1 when a process holds the single-consumer queue's lock.",
            labels=["queue"],
        )
        holder = GaugeMetricFamily(
            "jobs_consumer_lock_holder_since_timestamp_seconds",
            "The process holding a single-consumer queue's lock (host, pid), valued with the "
            "Unix time its database session started.",
            labels=["queue", "host", "pid"],
        )
        for queue in sorted(q.name for q in registry.queues.values() if q.single_consumer):
            found = snapshot.holders.get(queue)
            held.add_metric([queue], 0.0 if found is None else 1.0)
            if found is not None:
                host, pid = holder_of(found)
                holder.add_metric([queue, host, pid], found.backend_start.timestamp())
        yield held
        yield holder


def holder_of(consumer: Consumer) -> tuple[str, str]:
    """The host and pid of a lock's holder: from the session's name when a supervisor named it
    (App.supervisor), else its client address and its backend's pid."""
    named = _WORKER_NAME.search(consumer.application_name)
    if named is not None:
        return named.group(2), named.group(1)
    return consumer.client_addr or "local", f"backend {consumer.pid}"


# --- exposing them ----------------------------------------------------------------------------


def use_multiprocess_dir(path: Path) -> None:
    """Make the instruments of this process and of the ones it forks write to files in
    ``path`` (empty, the caller's to remove), which :func:`exposition_registry` sums.

    Must run before anything imports prometheus_client: the client chooses its storage then.
    """
    import sys

    if "prometheus_client" in sys.modules:
        raise RuntimeError("use_multiprocess_dir must run before prometheus_client is imported")
    os.environ[MULTIPROC_ENV] = str(path)


def exposition_registry(*collectors: object) -> CollectorRegistry:
    """The registry to expose: every process's instruments (in multiprocess mode, summed from
    the files; else this process's default registry) and ``collectors``."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry


def start_http_server(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread; the port bound
    (``port`` 0 picks a free one)."""
    from prometheus_client import start_http_server as start

    server, _ = start(port, addr=host, registry=registry)
    return int(server.server_address[1])
