"""Throughput and pickup latency of the ``jobs`` queue against procrastinate and pgqueuer.

Run ``python bench/queue.py [--database-url URL] [--jobs N] [--quick]``; see bench/README.md for
what each number means and how the peers are configured. Every system gets its own fresh
database on the same server, no-op jobs and one worker process; throughput figures are the
median of ``--repeat`` runs, interleaved across the systems so that a noisy moment on a shared
machine does not land on one system only.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path (bench/queue.py would shadow ``queue``); root and tests/ on
# (This file does not import ``queue`` itself: a type checker would take it for this file.)
import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from jobs import App, JobContext

# --- the job application of our queue ---------------------------------------------------------

APP = App(schema="jobs")
QUEUE = "bench"
BATCH_QUEUE = "bench_batch"
BATCH_SIZE = 10
ENQUEUE_BATCH = 1_000
PICKUP_BUDGET = 60.0
MEASUREMENTS = (
    "enqueue",
    "enqueue_concurrent",
    "enqueue_batch",
    "process",
    "process_batch",
    "pickup",
)
# Enqueuing processes in the concurrent enqueue: a web backend enqueues from several requests at
# once, each on its own pooled connection.
PRODUCERS = 4

TARGETS = {
    "process": 1_500.0,
    "process_vs_procrastinate": 3.0,
    "process_batch": 5_000.0,
    "enqueue_batch": 50_000.0,
    "pickup_p95_ms": 5.0,
    # Ratios to the durable-commit floor measured in the same run (see FLOOR_INSERT), with no
    # worker waiting (every worker busy: no NOTIFY). They replace the single enqueue's absolute
    # 3,000/s, above this disk's floor on some days (the rate is reported, not targeted).
    "enqueue_vs_floor": 0.85,
    "enqueue_concurrent_vs_floor": 0.8,
}


class _Recorder:
    """What the worker process notes about the jobs it runs (all no-ops)."""

    def __init__(self) -> None:
        self.first_start: float | None = None
        self.cpu_first = 0.0
        self.last_end = 0.0
        self.count = 0
        # Set in --worker serve mode: each job writes "sample-number start-time" to this pipe.
        self.pickup_fd: int | None = None

    def start(self, ids: Sequence[int]) -> None:
        now = time.time()
        if self.first_start is None:
            self.first_start = now
            self.cpu_first = time.process_time()
        if self.pickup_fd is not None:
            os.write(self.pickup_fd, "".join(f"{i} {now!r}\n" for i in ids).encode())

    def end(self, n: int) -> None:
        self.last_end = time.time()
        self.count += n


REC = _Recorder()


@APP.job_type(queue=QUEUE)
def noop(ctx: JobContext, payload: Any) -> None:
    REC.start([payload["i"]])
    REC.end(1)


# A diagnostic, not a target: the single enqueue of a deduplicated type (as every job type of
# indexpub's pipeline is), with distinct payloads so that each is a new row. It also hashes the
# payload on the client and inserts speculatively (ON CONFLICT) into one more unique index.
@APP.job_type(queue=QUEUE, dedup=True)
def noop_dedup(ctx: JobContext, payload: Any) -> None:
    REC.start([payload["i"]])
    REC.end(1)


@APP.job_type(queue=BATCH_QUEUE, batch_size=BATCH_SIZE)
def noop_batch(ctx: JobContext, payloads: list[Any]) -> None:
    REC.start([p["i"] for p in payloads])
    REC.end(len(payloads))


# --- the systems ------------------------------------------------------------------------------


class System(ABC):
    name: str
    # Tables emptied before every measurement.
    tables: tuple[str, ...]
    batch_claim = True

    @abstractmethod
    def setup(self, url: str) -> None:
        """Install the system's schema in an empty database."""

    def enqueue_each(self, url: str, n: int) -> float:
        """Enqueue n jobs, one per transaction, through ``enqueuer``; the seconds it took."""
        with self.enqueuer(url) as enqueue_one:

            def run() -> None:
                for i in range(n):
                    enqueue_one(i)

            return _timed(run)

    @abstractmethod
    def enqueue_batches(self, url: str, n: int, size: int, batch: bool = False) -> float:
        """Enqueue n jobs with the bulk API, ``size`` per call (one transaction each).

        ``batch``: jobs for the batch-claim run. Only jobs has a job type for that; the peers'
        batch claim is a worker setting, so they enqueue the same jobs either way.
        """

    @abstractmethod
    def enqueuer(self, url: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A function that enqueues job number i and commits, over one open connection."""

    @abstractmethod
    def run_worker(self, url: str, mode: str) -> None:
        """In the worker process: run one worker (modes: drain, drain-batch, serve)."""

    def reset(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in self.tables)
                )
            )
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")


# The floor under any enqueue of one job per transaction: a bare one-row INSERT with RETURNING
# into a table with only a primary key, committed durably, on the same server and connection
# settings. It is what the disk's flush of one commit costs plus the least a statement costs.
FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS public.bench_floor (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL
)"""
FLOOR_INSERT = "INSERT INTO public.bench_floor (payload) VALUES (%s) RETURNING id"

# A diagnostic beside the floor: our enqueue while a worker of the queue waits, so that every
# enqueuing transaction sends a NOTIFY, as every one did before the enqueue looked at
# jobs.listeners. The row stands for a sleeping worker (the enqueue does not look at who LISTENs).
# (No worker runs during the other enqueue measurements: they send no NOTIFY, as with every
# worker busy.)
LISTENER_ROW = "INSERT INTO jobs.listeners (queue, pid) VALUES (%s, pg_backend_pid())"
NO_LISTENER_ROW = "DELETE FROM jobs.listeners WHERE pid = pg_backend_pid()"


@contextlib.contextmanager
def worker_waiting(url: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LISTENER_ROW, (QUEUE,))
        try:
            yield
        finally:
            conn.execute(NO_LISTENER_ROW)


def floor_reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FLOOR_TABLE)
        conn.execute("TRUNCATE public.bench_floor")
        conn.execute("CHECKPOINT")


@contextlib.contextmanager
def floor_enqueuer(url: str) -> Iterator[Callable[[int], None]]:
    """The floor's insert as an enqueuer, over one connection (the table must exist)."""
    with psycopg.connect(url, autocommit=True) as conn:

        def insert_one(i: int) -> None:
            conn.execute(FLOOR_INSERT, (Jsonb({"i": i}),)).fetchone()

        yield insert_one


def floor_each(url: str, n: int) -> float:
    """Insert n rows into the floor table, one per transaction; the seconds it took."""
    floor_reset(url)
    with floor_enqueuer(url) as insert_one:

        def run() -> None:
            for i in range(n):
                insert_one(i)

        return _timed(run)


Enqueuer = Callable[[str], contextlib.AbstractContextManager[Callable[[int], None]]]

# Commits per turn when the floor and our enqueue take turns (see paired_each).
PAIRED_CHUNK = 100


def paired_each(enqueuer: Enqueuer, url: str, n: int) -> tuple[float, float]:
    """n enqueues and n floor inserts, one per transaction, in turns of PAIRED_CHUNK on two open
    connections; the jobs/s of each, counting only its own turns.

    The disk of a shared VM changes speed from one second to the next, which moved the floor by
    2x between the runs of one report; taking turns puts both under the same moments, so their
    ratio is the enqueue's own cost and not when it ran. The tables must be empty.
    """
    spent = [0.0, 0.0]
    with enqueuer(url) as enqueue_one, floor_enqueuer(url) as insert_one:
        for start in range(0, n, PAIRED_CHUNK):
            stop = min(n, start + PAIRED_CHUNK)
            for side, action in enumerate((enqueue_one, insert_one)):

                def turn(
                    action: Callable[[int], None] = action, turns: range = range(start, stop)
                ) -> None:
                    for i in turns:
                        action(i)

                spent[side] += _timed(turn)
    return n / spent[0], n / spent[1]


def _produce(enqueuer: Enqueuer, url: str, first: int, count: int, barrier: Any, out: Any) -> None:
    """One producer process: connect, wait for the others, enqueue its share, report its span."""
    try:
        with enqueuer(url) as enqueue_one:
            barrier.wait(60)
            start = time.time()
            for i in range(first, first + count):
                enqueue_one(i)
            out.put(((start, time.time()), None))
    except BaseException as error:  # reported to the parent, which fails the run
        out.put((None, repr(error)))


def _produce_in_turns(
    enqueuer: Enqueuer, url: str, first: int, count: int, barrier: Any, out: Any
) -> None:
    """One producer of paired_concurrently: its share in turns of PAIRED_CHUNK commits, ours then
    the floor's, every producer starting each turn together; reports when each turn ran."""
    try:
        spans: list[tuple[int, float, float]] = []
        with enqueuer(url) as enqueue_one, floor_enqueuer(url) as insert_one:
            for start in range(first, first + count, PAIRED_CHUNK):
                stop = min(first + count, start + PAIRED_CHUNK)
                for side, action in enumerate((enqueue_one, insert_one)):
                    barrier.wait(60)
                    began = time.time()
                    for i in range(start, stop):
                        action(i)
                    spans.append((side, began, time.time()))
        out.put((spans, None))
    except BaseException as error:  # reported to the parent, which fails the run
        out.put((None, repr(error)))


def _run_producers(
    producer: Callable[..., None], enqueuer: Enqueuer, url: str, n: int, producers: int
) -> tuple[int, list[Any]]:
    """Run ``producer`` in ``producers`` processes at once, each with an equal share of n jobs
    and its own connection, as the requests of a web backend have theirs; the jobs they made and
    what each reported. Processes, not threads, so that no producer waits on another's Python.
    """
    import multiprocessing

    # fork: the producers inherit the job types registered in this module, however it was run.
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(producers)
    out = ctx.Queue()
    share = n // producers
    procs = [
        ctx.Process(target=producer, args=(enqueuer, url, k * share, share, barrier, out))
        for k in range(producers)
    ]
    for proc in procs:
        proc.start()
    # A producer that died without a word (killed) must not hang the run.
    reports = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    errors = [error for _, error in reports if error]
    if errors:
        raise RuntimeError(f"a producer failed: {errors[0]}")
    return share * producers, [report for report, _ in reports]


def enqueue_concurrently(enqueuer: Enqueuer, url: str, n: int, producers: int) -> float:
    """n jobs enqueued one per transaction by ``producers`` processes at once; the jobs/s. The
    span runs from the first producer's start to the last one's end, taken after all of them
    have connected."""
    total, spans = _run_producers(_produce, enqueuer, url, n, producers)
    return total / (max(end for _, end in spans) - min(start for start, _ in spans))


def paired_concurrently(
    enqueuer: Enqueuer, url: str, n: int, producers: int
) -> tuple[float, float]:
    """enqueue_concurrently and the floor's, taking turns as paired_each does: every producer
    enqueues PAIRED_CHUNK jobs, then inserts as many floor rows, and so on, all of them starting
    each turn at once; the jobs/s of each side over its own turns (a turn lasts from its first
    producer's start to its last one's end). The tables must be empty."""
    total, reports = _run_producers(_produce_in_turns, enqueuer, url, n, producers)
    spent = [0.0, 0.0]
    # Every producer has the same turns in the same order: the k-th span of each is one turn.
    for turn in zip(*reports, strict=True):
        side = turn[0][0]
        spent[side] += max(end for _, _, end in turn) - min(began for _, began, _ in turn)
    return total / spent[0], total / spent[1]


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


class Ours(System):
    name = "jobs"
    tables = ("jobs.jobs",)

    def setup(self, url: str) -> None:
        with psycopg.connect(url) as conn:
            APP.migrate(conn)

    @staticmethod
    def _type(batch: bool) -> Any:
        return noop_batch if batch else noop

    def enqueue_each_in_transaction(self, url: str, n: int) -> float:
        """As an application enqueues beside its own writes: BEGIN, INSERT, COMMIT."""
        with psycopg.connect(url) as conn:

            def run() -> None:
                for i in range(n):
                    APP.enqueue(conn, noop.job({"i": i}))
                    conn.commit()

            return _timed(run)

    def enqueue_batches(self, url: str, n: int, size: int, batch: bool = False) -> float:
        job_type = self._type(batch)
        with psycopg.connect(url) as conn:

            def run() -> None:
                for start in range(0, n, size):
                    stop = min(n, start + size)
                    APP.enqueue_many(conn, [job_type.job({"i": i}) for i in range(start, stop)])
                    conn.commit()

            return _timed(run)

    @contextlib.contextmanager
    def enqueuer(self, url: str, job_type: Any = noop) -> Iterator[Callable[[int], None]]:
        # Autocommit: the INSERT is its own transaction, as the peers' enqueue calls are.
        with psycopg.connect(url, autocommit=True) as conn:

            def enqueue_one(i: int) -> None:
                APP.enqueue(conn, job_type.job({"i": i}))

            yield enqueue_one

    def dedup_enqueuer(self, url: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """The same for the deduplicated type (see noop_dedup)."""
        return self.enqueuer(url, noop_dedup)

    def run_worker(self, url: str, mode: str) -> None:
        queue_name = BATCH_QUEUE if mode == "drain-batch" else QUEUE
        worker = APP.worker(url, queue_name, drain=mode != "serve")
        if mode == "serve":
            worker.install_signal_handlers()
        worker.run()


def _procrastinate_app(url: str) -> tuple[Any, Any]:
    import logging

    import procrastinate

    # It warns that an app defined in __main__ cannot be found by a worker that imports tasks by
    # their path; this worker is the same script and names the task explicitly.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue=QUEUE)
    async def pnoop(i: int) -> None:
        REC.start([i])
        REC.end(1)

    return app, pnoop


class Procrastinate(System):
    name = "procrastinate"
    tables = ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers")
    batch_claim = False

    def setup(self, url: str) -> None:
        app, _ = _procrastinate_app(url)
        with app.open():
            app.schema_manager.apply_schema()

    def enqueue_batches(self, url: str, n: int, size: int, batch: bool = False) -> float:
        app, task = _procrastinate_app(url)
        with app.open():

            def run() -> None:
                for start in range(0, n, size):
                    task.batch_defer(*({"i": i} for i in range(start, min(n, start + size))))

            return _timed(run)

    @contextlib.contextmanager
    def enqueuer(self, url: str) -> Iterator[Callable[[int], None]]:
        app, task = _procrastinate_app(url)
        with app.open():

            def enqueue_one(i: int) -> None:
                task.defer(i=i)

            yield enqueue_one

    def run_worker(self, url: str, mode: str) -> None:
        app, _ = _procrastinate_app(url)

        async def main() -> None:
            async with app.open_async():
                await app.run_worker_async(queues=[QUEUE], wait=mode == "serve", concurrency=1)

        asyncio.run(main())


class PgQueuer(System):
    name = "pgqueuer"
    tables = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")

    def setup(self, url: str) -> None:
        from pgqueuer import PsycopgDriver, Queries

        async def install() -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await Queries(PsycopgDriver(conn)).install()

        asyncio.run(install())

    @staticmethod
    def _queries(conn: psycopg.Connection[Any]) -> Any:
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        return SyncQueries(SyncPsycopgDriver(conn))

    def enqueue_batches(self, url: str, n: int, size: int, batch: bool = False) -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            queries = self._queries(conn)

            def run() -> None:
                for start in range(0, n, size):
                    stop = min(n, start + size)
                    queries.enqueue(
                        ["noop"] * (stop - start),
                        [json.dumps({"i": i}).encode() for i in range(start, stop)],
                        [0] * (stop - start),
                    )

            return _timed(run)

    @contextlib.contextmanager
    def enqueuer(self, url: str) -> Iterator[Callable[[int], None]]:
        with psycopg.connect(url, autocommit=True) as conn:
            queries = self._queries(conn)

            def enqueue_one(i: int) -> None:
                queries.enqueue("noop", json.dumps({"i": i}).encode())

            yield enqueue_one

    def run_worker(self, url: str, mode: str) -> None:
        from datetime import timedelta

        from pgqueuer import Job, PsycopgDriver, Queries, QueueManager
        from pgqueuer.domain.types import QueueExecutionMode

        async def main() -> None:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            manager = QueueManager(Queries(PsycopgDriver(conn)))

            @manager.entrypoint("noop")
            async def pnoop(job: Job) -> None:
                REC.start([json.loads(job.payload or b"{}")["i"]])
                REC.end(1)

            if mode == "serve":
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, manager.shutdown.set)
                await manager.run()
            else:
                await manager.run(
                    batch_size=BATCH_SIZE if mode == "drain-batch" else 1,
                    mode=QueueExecutionMode.drain,
                    # Only bounds the wait for the drain check after the last job; the worker
                    # re-polls at once while work is queued either way.
                    dequeue_timeout=timedelta(seconds=0.2),
                )
            await conn.close()

        asyncio.run(main())


SYSTEMS: dict[str, System] = {s.name: s for s in (Ours(), Procrastinate(), PgQueuer())}


def worker_main(system: str, url: str, mode: str, fd: int) -> None:
    """The worker process: run the system's worker, then report what the jobs recorded."""
    if mode == "serve":
        REC.pickup_fd = fd
    SYSTEMS[system].run_worker(url, mode)
    returned = time.time()
    report = {
        "count": REC.count,
        "first": REC.first_start,
        "last": REC.last_end,
        "returned": returned,
        "cpu": time.process_time() - REC.cpu_first,
    }
    os.write(fd, ("result " + json.dumps(report) + "\n").encode())
    os.close(fd)


# --- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    admin_url: str
    # The postmaster's pid when the server is ours (embedded): its CPU time can then be read.
    postmaster: int | None


@contextlib.contextmanager
def embedded_server(fsync: bool = True) -> Iterator[Server]:
    """A throwaway embedded server as the tests start it, but durable: fsync stays on.

    ``fsync=False`` applies the tests' tuning (fsync and full_page_writes off) instead, only to
    compare with figures taken that way; it is not the benchmark.
    """
    from support.embedded_servers import postmaster_pid, throwaway_server

    with throwaway_server("indexpub-bench-pg-", durable=fsync) as (url, pgdata):
        yield Server(url, postmaster_pid(pgdata))


def database(server: Server, system: str) -> contextlib.AbstractContextManager[str]:
    from support.embedded_servers import throwaway_database

    return throwaway_database(server.admin_url, f"bench_{system}_")


def postgres_cpu(server: Server) -> float | None:
    """CPU seconds used by the server so far: live processes plus reaped backends."""
    if server.postmaster is None:
        return None
    import psutil

    try:
        master = psutil.Process(server.postmaster)
        times = master.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in master.children():
            with contextlib.suppress(psutil.Error):
                ct = child.cpu_times()
                total += ct.user + ct.system
        return float(total)
    except psutil.Error:
        return None


@dataclass
class DbCounters:
    commits: int
    wal_bytes: int
    wal_fsyncs: int | None


def db_counters(url: str) -> DbCounters:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        commits = int(row[0]) if row else 0
        wal = conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()
        fsyncs: int | None = None
        with contextlib.suppress(psycopg.Error):
            io = conn.execute("SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'").fetchone()
            fsyncs = int(io[0]) if io and io[0] is not None else None
        return DbCounters(commits, int(wal[0]) if wal else 0, fsyncs)


# --- worker processes -------------------------------------------------------------------------


class WorkerProcess:
    """A worker in its own interpreter, with a pipe that carries what its jobs record."""

    def __init__(self, system: str, url: str, mode: str) -> None:
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                system,
                "--worker-mode",
                mode,
                "--worker-fd",
                str(write_fd),
                "--database-url",
                url,
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(write_fd)
        self._fd = read_fd
        self._buffer = b""
        self._eof = False
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for chunk in self.process.stderr:
            self._stderr.append(chunk)

    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-3000:]

    def next_line(self, timeout: float) -> str | None:
        """The next line from the pipe; None on timeout or once the worker closed it."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 65536)
            self._eof = not chunk
            self._buffer += chunk
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ProcessRun:
    rate: float  # jobs/s from the first job's start to the last job's end
    drained_rate: float  # jobs/s from the first job's start until the worker's run() returned
    worker_cpu_us: float  # worker process CPU per job
    postgres_cpu_us: float | None  # server CPU per job (all its processes)
    commits: float  # transactions committed in the database per job
    wal_bytes: float
    wal_fsyncs: float | None


def run_process(
    server: Server,
    system: System,
    url: str,
    n: int,
    *,
    batch: bool,
    timeout: float,
    reset: Callable[[], None],
) -> ProcessRun:
    reset()
    system.enqueue_batches(url, n, ENQUEUE_BATCH, batch=batch)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    before = db_counters(url)
    cpu_before = postgres_cpu(server)
    worker = WorkerProcess(system.name, url, "drain-batch" if batch else "drain")
    result: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            line = worker.next_line(left)
            if line is None:
                break
            if line.startswith("result "):
                result = json.loads(line.removeprefix("result "))
        worker.process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        worker.stop()
    time.sleep(0.3)  # let the worker's backends exit and flush their statistics
    cpu_after = postgres_cpu(server)
    after = db_counters(url)
    if result is None or result["count"] != n or result["first"] is None:
        raise RuntimeError(
            f"{system.name} worker did not process {n} jobs within {timeout:.0f}s "
            f"(report: {result}); stderr:\n{worker.stderr()}"
        )
    span = result["last"] - result["first"]
    drained = result["returned"] - result["first"]
    pg_cpu = None
    if cpu_before is not None and cpu_after is not None:
        pg_cpu = (cpu_after - cpu_before) / n * 1e6
    fsyncs = None
    if before.wal_fsyncs is not None and after.wal_fsyncs is not None:
        fsyncs = (after.wal_fsyncs - before.wal_fsyncs) / n
    return ProcessRun(
        rate=n / span,
        drained_rate=n / drained,
        worker_cpu_us=result["cpu"] / n * 1e6,
        postgres_cpu_us=pg_cpu,
        commits=(after.commits - before.commits) / n,
        wal_bytes=(after.wal_bytes - before.wal_bytes) / n,
        wal_fsyncs=fsyncs,
    )


def run_pickup(
    system: System,
    url: str,
    samples: int,
    spacing: float,
    budget: float,
    reset: Callable[[], None],
) -> list[float]:
    """Commit-to-start latencies in ms: one job at a time to an idle, listening worker.

    Stops early, with fewer samples, once ``budget`` seconds have gone by.
    """
    reset()
    worker = WorkerProcess(system.name, url, "serve")
    try:
        with system.enqueuer(url) as enqueue_one:
            latencies: list[float] = []
            warmup = 5
            deadline: float | None = None
            for i in range(-warmup, samples):
                if i == 0:
                    deadline = time.monotonic() + budget
                if deadline is not None and time.monotonic() > deadline:
                    break
                enqueue_one(i + warmup)
                committed = time.time()
                line = worker.next_line(60.0 if i == -warmup else 10.0)
                if line is None:
                    raise RuntimeError(
                        f"{system.name}: job {i + warmup} did not start; stderr:\n{worker.stderr()}"
                    )
                number, started = line.split()
                if int(number) != i + warmup:
                    raise RuntimeError(f"{system.name}: expected job {i + warmup}, got {line!r}")
                if i >= 0:
                    latencies.append((float(started) - committed) * 1000.0)
                time.sleep(spacing)
            return latencies
    finally:
        worker.stop()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    enqueue: dict[str, list[float]] = field(default_factory=dict)
    enqueue_in_transaction: dict[str, list[float]] = field(default_factory=dict)
    # The durable-commit floor (see FLOOR_INSERT), measured beside each run of ours.
    enqueue_floor: list[float] = field(default_factory=list)
    # Ours and the floor in turns on one connection each (see paired_each): (ours, floor).
    enqueue_paired: list[tuple[float, float]] = field(default_factory=list)
    # The same for the deduplicated type (see noop_dedup): a diagnostic, not a target.
    enqueue_dedup_paired: list[tuple[float, float]] = field(default_factory=list)
    # Ours while a worker waits: a NOTIFY with every enqueue (see worker_waiting).
    enqueue_notifying: list[float] = field(default_factory=list)
    # The same four, with PRODUCERS processes enqueuing at once.
    enqueue_concurrent: dict[str, list[float]] = field(default_factory=dict)
    enqueue_concurrent_floor: list[float] = field(default_factory=list)
    enqueue_concurrent_notifying: list[float] = field(default_factory=list)
    enqueue_concurrent_paired: list[tuple[float, float]] = field(default_factory=list)
    enqueue_batch: dict[str, list[float]] = field(default_factory=dict)
    process: dict[str, list[ProcessRun]] = field(default_factory=dict)
    process_batch: dict[str, list[ProcessRun]] = field(default_factory=dict)
    pickup: dict[str, list[float]] = field(default_factory=dict)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def server_facts(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        facts = []
        for setting in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
        ):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts.append(f"{setting}={row[0] if row else '?'}")
        return ", ".join(facts)


def measure(args: argparse.Namespace, server: Server, urls: dict[str, str]) -> Results:
    results = Results()
    names = list(urls)
    n, n_batch, reps = args.jobs, args.batch_jobs, args.repeat

    def reset_all() -> None:
        # Every system's tables, not only the measured one's: leftovers of the previous run in
        # another database would otherwise draw autovacuum into the middle of this one.
        for name in names:
            SYSTEMS[name].reset(urls[name])

    def each_rep(label: str, action: Callable[[str], None]) -> None:
        for rep in range(reps):
            for name in names:
                log(f"  {label}: {name} run {rep + 1}/{reps}")
                action(name)

    def enqueue(name: str) -> None:
        system = SYSTEMS[name]
        reset_all()
        seconds = system.enqueue_each(urls[name], n)
        results.enqueue.setdefault(name, []).append(n / seconds)
        if isinstance(system, Ours):
            reset_all()
            seconds = system.enqueue_each_in_transaction(urls[name], n)
            results.enqueue_in_transaction.setdefault(name, []).append(n / seconds)
            # The floor after the same reset as every enqueue run: the reset's writes slow the
            # fsyncs of the seconds after it on a shared disk, and only the enqueues met them.
            reset_all()
            results.enqueue_floor.append(n / floor_each(urls[name], n))
            reset_all()
            floor_reset(urls[name])
            results.enqueue_paired.append(paired_each(system.enqueuer, urls[name], n))
            reset_all()
            floor_reset(urls[name])
            results.enqueue_dedup_paired.append(paired_each(system.dedup_enqueuer, urls[name], n))
            reset_all()
            with worker_waiting(urls[name]):
                seconds = system.enqueue_each(urls[name], n)
            results.enqueue_notifying.append(n / seconds)

    def enqueue_concurrent(name: str) -> None:
        system = SYSTEMS[name]
        url, k = urls[name], args.producers
        reset_all()
        rate = enqueue_concurrently(system.enqueuer, url, n, k)
        results.enqueue_concurrent.setdefault(name, []).append(rate)
        if isinstance(system, Ours):
            reset_all()  # as before every enqueue run (see enqueue above)
            floor_reset(url)
            results.enqueue_concurrent_floor.append(enqueue_concurrently(floor_enqueuer, url, n, k))
            reset_all()
            floor_reset(url)
            results.enqueue_concurrent_paired.append(
                paired_concurrently(system.enqueuer, url, n, k)
            )
            reset_all()
            with worker_waiting(url):
                rate = enqueue_concurrently(system.enqueuer, url, n, k)
            results.enqueue_concurrent_notifying.append(rate)

    def enqueue_batch(name: str) -> None:
        system = SYSTEMS[name]
        reset_all()
        seconds = system.enqueue_batches(urls[name], n_batch, ENQUEUE_BATCH)
        results.enqueue_batch.setdefault(name, []).append(n_batch / seconds)

    def process(name: str) -> None:
        run = run_process(
            server, SYSTEMS[name], urls[name], n, batch=False, timeout=args.timeout, reset=reset_all
        )
        results.process.setdefault(name, []).append(run)

    def process_batch(name: str) -> None:
        if not SYSTEMS[name].batch_claim:
            return
        run = run_process(
            server, SYSTEMS[name], urls[name], n, batch=True, timeout=args.timeout, reset=reset_all
        )
        results.process_batch.setdefault(name, []).append(run)

    wanted = set(args.measurements)
    if "enqueue" in wanted:
        each_rep(f"enqueue {n} one per transaction", enqueue)
    if "enqueue_concurrent" in wanted:
        each_rep(
            f"enqueue {n} one per transaction, {args.producers} processes at once",
            enqueue_concurrent,
        )
    if "enqueue_batch" in wanted:
        each_rep(f"enqueue {n_batch} in batches of {ENQUEUE_BATCH}", enqueue_batch)
    if "process" in wanted:
        each_rep(f"process {n}, one per transaction", process)
    if "process_batch" in wanted:
        each_rep(f"process {n}, batch claim of {BATCH_SIZE}", process_batch)

    def pickup(name: str) -> None:
        # The samples are taken in ``reps`` rounds, interleaved like the other measurements, and
        # pooled: a noisy minute then spreads over all systems.
        samples = -(-args.samples // reps)
        latencies = run_pickup(
            SYSTEMS[name], urls[name], samples, args.spacing, args.pickup_budget / reps, reset_all
        )
        results.pickup.setdefault(name, []).extend(latencies)

    if "pickup" in wanted:
        each_rep(f"pickup latency, up to {-(-args.samples // reps)} samples", pickup)
    return results


def _median_rate(runs: Sequence[ProcessRun]) -> float:
    return statistics.median(r.rate for r in runs)


def _median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return "-"
    return f"{ours / peer:.2f}x"


def report(results: Results, args: argparse.Namespace, facts: str) -> tuple[str, bool]:
    names = ["jobs", "procrastinate", "pgqueuer"]

    def med(values: dict[str, list[float]], name: str) -> float | None:
        return statistics.median(values[name]) if values.get(name) else None

    def med_process(values: dict[str, list[ProcessRun]], name: str) -> float | None:
        return _median_rate(values[name]) if values.get(name) else None

    pick: dict[str, dict[int, float | None]] = {}
    for name in names:
        samples = results.pickup.get(name)
        pick[name] = {p: (percentile(samples, p) if samples else None) for p in (50, 95, 99)}

    rows: list[tuple[str, dict[str, float | None], bool]] = [
        (
            "enqueue, one per transaction (jobs/s)",
            {x: med(results.enqueue, x) for x in names},
            True,
        ),
        (
            f"enqueue, one per transaction, {args.producers} processes at once (jobs/s)",
            {x: med(results.enqueue_concurrent, x) for x in names},
            True,
        ),
        (
            f"enqueue, batches of {ENQUEUE_BATCH:,} (jobs/s)",
            {x: med(results.enqueue_batch, x) for x in names},
            True,
        ),
        (
            "process, one per transaction (jobs/s)",
            {x: med_process(results.process, x) for x in names},
            True,
        ),
        (
            f"process, batch claim of {BATCH_SIZE} (jobs/s)",
            {x: med_process(results.process_batch, x) for x in names},
            True,
        ),
    ]
    for p in (50, 95, 99):
        rows.append(
            (
                f"pickup p{p}, commit to start (ms; lower is better)",
                {x: pick[x][p] for x in names},
                False,
            )
        )

    out: list[str] = []
    out.append(
        f"Queue benchmark: N={args.jobs:,} jobs per processing/enqueue run, "
        f"{args.batch_jobs:,} per batch-enqueue run, median of {args.repeat} run(s), "
        f"pickup samples {args.spacing * 1000:.0f} ms apart ("
        + ", ".join(f"{x} {len(results.pickup.get(x, []))}" for x in names)
        + f"; at most {args.samples} or {args.pickup_budget:.0f} s each)."
    )
    out.append(
        f"Server: {facts}. Machine: {os.cpu_count()} CPUs, load average "
        f"{results.load_before:.2f} before and {os.getloadavg()[0]:.2f} after the run "
        "(other work on the machine makes the figures noisier)."
    )
    out.append("")
    out.append(
        "| measurement | jobs | procrastinate | pgqueuer | jobs/procrastinate | jobs/pgqueuer |"
    )
    out.append("|---|---:|---:|---:|---:|---:|")
    for label, values, is_rate in rows:
        fmt = _fmt_rate if is_rate else _fmt_ms
        out.append(
            f"| {label} | {fmt(values['jobs'])} | {fmt(values['procrastinate'])} "
            f"| {fmt(values['pgqueuer'])} | {_ratio(values['jobs'], values['procrastinate'])} "
            f"| {_ratio(values['jobs'], values['pgqueuer'])} |"
        )
    out.append("")
    out.append("Throughput ratios above 1 favour jobs; latency ratios below 1 favour jobs.")
    out.append("")

    ours_process = med_process(results.process, "jobs")
    proc_process = med_process(results.process, "procrastinate")
    checks: list[tuple[str, float | None, str, bool | None]] = []

    def check(
        label: str,
        value: float | None,
        target: float,
        *,
        at_most: bool = False,
        fmt: Callable[[float | None], str] = _fmt_rate,
    ) -> None:
        ok = None if value is None else (value <= target if at_most else value >= target)
        sign = "<=" if at_most else ">="
        checks.append((f"{label} {sign} {fmt(target)}", value, fmt(value), ok))

    check("process, one per transaction (jobs/s)", ours_process, TARGETS["process"])
    vs = None if ours_process is None or not proc_process else ours_process / proc_process
    check(
        "process vs procrastinate (x)",
        vs,
        TARGETS["process_vs_procrastinate"],
        fmt=lambda v: "-" if v is None else f"{v:.2f}",
    )
    check(
        "process, batch claim (jobs/s)",
        med_process(results.process_batch, "jobs"),
        TARGETS["process_batch"],
    )
    ours_enqueue = med(results.enqueue, "jobs")
    floor = statistics.median(results.enqueue_floor) if results.enqueue_floor else None
    floor_k = _median_or_none(results.enqueue_concurrent_floor)
    ours_k = med(results.enqueue_concurrent, "jobs")

    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    paired = _median_or_none([ours / base for ours, base in results.enqueue_paired])
    paired_k = _median_or_none([ours / base for ours, base in results.enqueue_concurrent_paired])
    for label, ours, base, target in (
        ("enqueue / its floor, one connection (x)", ours_enqueue, floor, "enqueue_vs_floor"),
        ("the same, taking turns with the floor (x)", paired, 1.0, "enqueue_vs_floor"),
        (
            f"enqueue / its floor, {args.producers} processes (x)",
            ours_k,
            floor_k,
            "enqueue_concurrent_vs_floor",
        ),
        (
            f"{args.producers} processes taking turns with the floor (x)",
            paired_k,
            1.0,
            "enqueue_concurrent_vs_floor",
        ),
    ):
        if base is not None:
            check(label, None if ours is None else ours / base, TARGETS[target], fmt=x)
    check("enqueue, batched (jobs/s)", med(results.enqueue_batch, "jobs"), TARGETS["enqueue_batch"])
    check("pickup p95 (ms)", pick["jobs"][95], TARGETS["pickup_p95_ms"], at_most=True, fmt=_fmt_ms)
    out.append("| target for jobs | measured | result |")
    out.append("|---|---:|---|")
    all_ok = True
    for label, _, shown, ok in checks:
        all_ok = all_ok and bool(ok)
        out.append(f"| {label} | {shown} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} |")
    out.append("")
    if floor is not None:
        out.append(
            f"Durable-commit floor on this server (a bare one-row INSERT ... RETURNING per "
            f"transaction, same connection): {floor:,.0f}/s; jobs' one-per-transaction enqueue "
            f"is {_ratio(ours_enqueue, floor)} of it. No enqueue that commits durably once per "
            "job can pass the floor on one connection."
        )
        if results.enqueue_paired:
            out.append(
                f"Taking turns with the floor ({PAIRED_CHUNK} commits each, one connection each, "
                "so that both meet the same moments of the disk), jobs / floor per run: "
                + ", ".join(
                    f"{ours:,.0f} / {base:,.0f} = {ours / base:.2f}x"
                    for ours, base in results.enqueue_paired
                )
                + "."
            )
        if results.enqueue_dedup_paired:
            out.append(
                "A deduplicated type's single enqueue (distinct payloads, so each is a new row: "
                "the client hashes the payload, the insert is speculative, one more unique "
                "index), taking turns with the floor the same way: "
                + ", ".join(
                    f"{ours:,.0f} / {base:,.0f} = {ours / base:.2f}x"
                    for ours, base in results.enqueue_dedup_paired
                )
                + " (reported, not a target)."
            )
        loud = _median_or_none(results.enqueue_notifying)
        if loud is not None:
            out.append(
                f"While a worker of the queue waits, every enqueue sends a NOTIFY: "
                f"{loud:,.0f}/s, {_ratio(loud, floor)} of the floor."
            )
        out.append("")
    if results.enqueue_concurrent_floor:
        ours_concurrent = med(results.enqueue_concurrent, "jobs")
        floor_k = statistics.median(results.enqueue_concurrent_floor)
        loud_k = _median_or_none(results.enqueue_concurrent_notifying)
        out.append(
            f"With {args.producers} processes enqueuing at once, the floor is {floor_k:,.0f}/s "
            "(the server flushes the commits of several connections at once) and jobs' "
            f"enqueue (no worker waiting: no NOTIFY) {_ratio(ours_concurrent, floor_k)} of it; "
            f"while a worker waits, so that every enqueue notifies, {_fmt_rate(loud_k)}/s "
            f"({_ratio(loud_k, floor_k)}). A transaction that has sent a NOTIFY holds a "
            "server-wide lock from just before its commit until the commit is flushed, so such "
            "commits do not share flushes (docs/architecture.md)."
        )
        if results.enqueue_concurrent_paired:
            out.append(
                f"Taking turns with the floor ({PAIRED_CHUNK} commits each per process, every "
                "process starting each turn together), jobs / floor per run: "
                + ", ".join(
                    f"{ours:,.0f} / {base:,.0f} = {ours / base:.2f}x"
                    for ours, base in results.enqueue_concurrent_paired
                )
                + "."
            )
        out.append("")

    out.append(
        "Per-job cost while processing (medians; worker CPU is the worker process, "
        "postgres CPU is every server process; commits and WAL from pg_stat_*):"
    )
    out.append("")
    out.append(
        "| run | system | jobs/s (to last job end) | jobs/s (to worker exit) "
        "| worker CPU µs | postgres CPU µs | commits | WAL fsyncs | WAL bytes |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, by_system in (
        ("one per transaction", results.process),
        (f"batch claim of {BATCH_SIZE}", results.process_batch),
    ):
        for name in names:
            runs = by_system.get(name)
            if not runs:
                continue

            def mid(
                get: Callable[[ProcessRun], float | None], runs: list[ProcessRun] = runs
            ) -> str:
                got = [v for r in runs if (v := get(r)) is not None]
                return "-" if not got else f"{statistics.median(got):,.2f}"

            out.append(
                f"| {label} | {name} | {_median_rate(runs):,.0f} "
                f"| {statistics.median(r.drained_rate for r in runs):,.0f} "
                f"| {mid(lambda r: r.worker_cpu_us)} | {mid(lambda r: r.postgres_cpu_us)} "
                f"| {mid(lambda r: r.commits)} | {mid(lambda r: r.wal_fsyncs)} "
                f"| {mid(lambda r: r.wal_bytes)} |"
            )
    out.append("")
    out.append("Every run (jobs/s):")
    out.append("")
    for label, rates in (
        ("enqueue (autocommit)", results.enqueue),
        (
            "enqueue in an explicit transaction (BEGIN, INSERT, COMMIT)",
            results.enqueue_in_transaction,
        ),
        ("durable-commit floor (bare INSERT)", {"jobs": results.enqueue_floor}),
        ("enqueue while a worker waits (NOTIFY)", {"jobs": results.enqueue_notifying}),
        (f"enqueue, {args.producers} processes at once", results.enqueue_concurrent),
        (
            f"durable-commit floor, {args.producers} processes at once",
            {"jobs": results.enqueue_concurrent_floor},
        ),
        (
            f"enqueue, {args.producers} processes at once, while a worker waits (NOTIFY)",
            {"jobs": results.enqueue_concurrent_notifying},
        ),
        ("enqueue batched", results.enqueue_batch),
        ("process", {k: [r.rate for r in v] for k, v in results.process.items()}),
        ("process batch", {k: [r.rate for r in v] for k, v in results.process_batch.items()}),
    ):
        parts = [
            f"{name} " + ", ".join(f"{v:,.0f}" for v in rates[name])
            for name in names
            if rates.get(name)
        ]
        if parts:
            out.append(f"- {label}: " + "; ".join(parts))
    return "\n".join(out), all_ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", help="an existing server (default: embedded, fsync on)")
    parser.add_argument("--jobs", type=int, help="jobs per enqueue and processing run")
    parser.add_argument("--batch-jobs", type=int, help="jobs per batch-enqueue run (10 x N)")
    parser.add_argument("--repeat", type=int, help="runs per throughput figure (median)")
    parser.add_argument("--samples", type=int, help="pickup latency samples (200)")
    parser.add_argument("--spacing", type=float, default=0.02, help="seconds between samples")
    parser.add_argument(
        "--pickup-budget",
        type=float,
        default=PICKUP_BUDGET,
        help="seconds of pickup sampling per system at most (fewer samples past it)",
    )
    parser.add_argument(
        "--systems", default="jobs,procrastinate,pgqueuer", help="comma-separated subset to run"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a processing run may take"
    )
    parser.add_argument(
        "--measurements",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated subset of {','.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=PRODUCERS,
        help=f"processes enqueuing at once in enqueue_concurrent ({PRODUCERS})",
    )
    parser.add_argument("--quick", action="store_true", help="small N, one run: a smoke test")
    parser.add_argument(
        "--fsync",
        choices=("on", "off"),
        default="on",
        help="embedded server only; 'off' is the tests' tuning, for comparison",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-mode", help=argparse.SUPPRESS)
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.measurements = [m.strip() for m in args.measurements.split(",") if m.strip()]
    unknown = sorted(set(args.measurements) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"unknown measurements: {', '.join(unknown)}")
    quick = args.quick
    args.jobs = args.jobs or (200 if quick else 5_000)
    args.batch_jobs = args.batch_jobs or max(ENQUEUE_BATCH, 10 * args.jobs)
    args.repeat = args.repeat or (1 if quick else 3)
    args.samples = args.samples or (40 if quick else 200)
    if quick and args.pickup_budget == PICKUP_BUDGET:
        args.pickup_budget = 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.database_url, args.worker_mode, args.worker_fd)
        return 0
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(unknown)}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.database_url:
            server = Server(args.database_url, None)
        else:
            log(f"starting an embedded PostgreSQL server (fsync {args.fsync})")
            server = stack.enter_context(embedded_server(fsync=args.fsync == "on"))
        facts = server_facts(server.admin_url)
        log(f"server: {facts}")
        urls: dict[str, str] = {}
        for name in names:
            urls[name] = stack.enter_context(database(server, name))
            SYSTEMS[name].setup(urls[name])
        results = measure(args, server, urls)
    text, ok = report(results, args, facts)
    print(text)
    log(f"done in {time.monotonic() - started:.0f}s; targets {'met' if ok else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
