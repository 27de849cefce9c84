"""The one class that talks SQL to the queue's tables.

Everything the enqueuing side, the worker and the admin commands do to the database goes through
:class:`JobStore`, so the statements (in :mod:`jobs.queries`) and their transaction boundaries can
be read in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq
from psycopg.types.json import Jsonb

from jobs import queries
from jobs.backoff import Backoff
from jobs.periodic import DuePeriod
from jobs.registry import Job, JobType, Registry

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    job_type: str
    payload: Any
    attempt: int
    max_attempts: int | None
    # True when the claim found the job past its last attempt (its previous runner died) and
    # marked it dead instead of handing it out.
    dead: bool
    last_error: str | None


@dataclass(frozen=True)
class Failure:
    """A job of a run that failed: its error, and how long until it may run again."""

    id: int
    error: str
    delay: float


@dataclass(frozen=True)
class Enqueued:
    id: int
    # False when an identical job that had not started yet absorbed this one.
    inserted: bool


@dataclass(frozen=True)
class QueueStats:
    queue: str
    job_type: str
    state: str
    count: int


@dataclass(frozen=True)
class StateCount:
    """How many jobs of a queue and type are in a state (see JobStore.state_counts)."""

    queue: str
    job_type: str
    state: str
    count: int
    # Seconds since the oldest of them was enqueued, for the ready state; None for the others.
    oldest_ready_age: float | None


@dataclass(frozen=True)
class JobInfo:
    id: int
    queue: str
    job_type: str
    payload: Any
    priority: int
    attempts: int
    max_attempts: int | None
    run_at: datetime
    created_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None
    state: str


@dataclass(frozen=True)
class PeriodicEnqueued:
    """A job that a worker enqueued for a period of its periodic type."""

    id: int
    job_type: str
    payload: Any


@dataclass(frozen=True)
class PeriodMark:
    """A periodic type's row in the periodic table: the latest period enqueued, and the one
    before it."""

    job_type: str
    period_start: datetime
    previous_start: datetime | None
    enqueued_at: datetime


STATES = ("ready", "scheduled", "running", "failing", "dead")


# The columns that a batch of one job type with the same options has in common (see
# queries.ENQUEUE_UNIFORM).
_SHARED_IN_A_BATCH = ("queue", "job_type", "priority", "max_attempts", "delay")


@dataclass(frozen=True)
class TriedJob:
    """A live job that has failed: the one of its queue tried most often (see QueueHealth)."""

    id: int
    job_type: str
    attempts: int
    last_error: str


@dataclass(frozen=True)
class QueueHealth:
    """What a monitor alerts on, for one queue (see JobStore.health)."""

    queue: str
    ready: int
    # Seconds since the oldest ready job was enqueued; None when none is ready.
    oldest_ready_age: float | None
    running: int
    failing: int
    dead: int
    # The live job (not dead) tried most often without succeeding; None when none has failed.
    most_tried: TriedJob | None


@dataclass(frozen=True)
class Consumer:
    """The process that holds a single-consumer queue's lock, as PostgreSQL sees its session."""

    queue: str
    pid: int
    # The worker's application_name: "jobs worker QUEUE#N pid PID on HOST".
    application_name: str
    client_addr: str | None
    backend_start: datetime


def consumer_lock_key(schema: str, queue: str) -> int:
    """The session advisory lock that makes one process the queue's only active consumer."""
    digest = hashlib.sha256(f"consumer:{schema}:{queue}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def dedup_key(payload: Any) -> str:
    """Equal payloads give equal keys whatever their key order."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobStore:
    def __init__(self, registry: Registry, schema: str) -> None:
        self.registry = registry
        self.schema = schema
        self.channel = queries.channel_name(schema)
        # Filled on first use: job types are registered at import time, before any claim.
        self._backoff_cache: dict[str, tuple[bool, dict[str, Any]]] = {}

    def _sql(self, template: str) -> bytes:
        return queries.compiled(template, self.schema)

    # --- enqueue ------------------------------------------------------------------------------

    def enqueue(self, conn: Conn, job: Job) -> Enqueued:
        """Insert one job in the caller's transaction; never commits.

        The common case, kept apart from enqueue_many: building its columns and folding twins
        cost a single enqueue more client time than the statement's parameters."""
        job_type = self.registry[job.job_type]
        params: dict[str, Any] = {"payload": Jsonb(job.payload)}
        if job_type.dedup:
            params["dedup_key"] = dedup_key(job.payload)
        constants: queries.TypeConstants | None = None
        if job.priority is None and not job.delay:
            constants = (job_type.queue, job_type.name, job_type.priority, job_type.max_attempts)
        else:
            params["queue"] = job_type.queue
            params["job_type"] = job_type.name
            params["priority"] = job_type.priority if job.priority is None else job.priority
            params["max_attempts"] = job_type.max_attempts
            params["delay"] = float(job.delay)
        statement = queries.enqueue_one_statement(self.schema, job_type.dedup, constants)
        row = conn.execute(statement, params).fetchone()
        assert row is not None
        return Enqueued(int(row[0]), bool(row[1]))

    def enqueue_many(self, conn: Conn, jobs: Sequence[Job]) -> list[Enqueued]:
        """Insert the jobs in the caller's transaction; never commits.

        Duplicates of a deduplicated type within the same call are folded first: PostgreSQL
        refuses to let one INSERT ... ON CONFLICT touch a row twice.
        """
        if len(jobs) == 1:
            return [self.enqueue(conn, jobs[0])]
        columns: dict[str, list[Any]] = {
            "queue": [],
            "job_type": [],
            "payload": [],
            "priority": [],
            "max_attempts": [],
            "delay": [],
            "dedup_key": [],
        }
        positions: list[int] = []
        seen: dict[tuple[str, str], int] = {}
        for job in jobs:
            job_type = self.registry[job.job_type]
            key = dedup_key(job.payload) if job_type.dedup else None
            priority = job_type.priority if job.priority is None else job.priority
            if key is not None and (job_type.name, key) in seen:
                # Fold as the database folds twins of separate calls: the higher priority, the
                # earlier time.
                row = seen[(job_type.name, key)]
                columns["priority"][row] = max(columns["priority"][row], priority)
                columns["delay"][row] = min(columns["delay"][row], float(job.delay))
                positions.append(row)
                continue
            if key is not None:
                seen[(job_type.name, key)] = len(columns["queue"])
            positions.append(len(columns["queue"]))
            columns["queue"].append(job_type.queue)
            columns["job_type"].append(job_type.name)
            columns["payload"].append(job.payload)
            columns["priority"].append(priority)
            columns["max_attempts"].append(job_type.max_attempts)
            columns["delay"].append(float(job.delay))
            columns["dedup_key"].append(key)
        if not columns["queue"]:
            return []
        # Only a batch with a dedup key pays for ON CONFLICT (see queries._ABSORB_UNSTARTED_TWIN).
        dedup = bool(seen)
        if all(len(set(columns[name])) == 1 for name in _SHARED_IN_A_BATCH):
            params = {name: columns[name][0] for name in _SHARED_IN_A_BATCH}
            params.update(payload=Jsonb(columns["payload"]), dedup_key=columns["dedup_key"])
            statement = queries.ENQUEUE_UNIFORM_DEDUP if dedup else queries.ENQUEUE_UNIFORM
            rows = conn.execute(self._sql(statement), params).fetchall()
        else:
            columns["payload"] = [Jsonb(payload) for payload in columns["payload"]]
            statement = queries.ENQUEUE_DEDUP if dedup else queries.ENQUEUE
            rows = conn.execute(self._sql(statement), columns).fetchall()
        results = [Enqueued(int(row[0]), bool(row[1])) for row in rows]
        return [results[p] for p in positions]

    # --- claim and run ------------------------------------------------------------------------
    #
    # A run is: claim (its own committed transaction), then the run's transaction on the same
    # connection: open_run (BEGIN and the row locks), the job, then complete_run or fail_run
    # (which commit). complete_run can claim the next job in the same statement.

    def claim(
        self, conn: Conn, queue: str, limit: int = 1, job_type: str | None = None
    ) -> list[ClaimedJob]:
        """Claim and commit (``conn`` is in autocommit mode): the attempt counts from here."""
        return _claimed(conn.execute(*self._claim(queue, limit, job_type)).fetchall())

    def _claim(
        self, queue: str, limit: int = 1, job_type: str | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """The claim statement and its parameters (see claim)."""
        shared, backoff = self._backoff_params(queue)
        params = {**backoff, "queue": queue, "limit": limit, "job_type": job_type}
        statement = queries.claim(of_type=job_type is not None, shared_backoff=shared)
        return self._sql(statement), params

    def _backoff_params(self, queue: str) -> tuple[bool, dict[str, Any]]:
        """Whether the queue's job types share one backoff, and the claim's backoff parameters
        (see queries.claim), built once per queue."""
        cached = self._backoff_cache.get(queue)
        if cached is None:
            types = list(self.registry.types_of_queue(queue))
            shared = {t.backoff for t in types} or {Backoff()}
            if len(shared) == 1:
                (one,) = shared
                params: dict[str, Any] = {
                    "base": one.base,
                    "factor": one.factor,
                    "cap": one.cap,
                    "jitter": one.jitter,
                }
            else:
                default = Backoff()
                by_type = {
                    t.name: [t.backoff.base, t.backoff.factor, t.backoff.cap, t.backoff.jitter]
                    for t in types
                }
                params = {
                    "backoff": json.dumps(by_type),
                    "default_backoff": json.dumps(
                        [default.base, default.factor, default.cap, default.jitter]
                    ),
                }
            cached = self._backoff_cache[queue] = (len(shared) == 1, params)
        return cached

    def open_run(
        self, conn: Conn, claimed: Sequence[ClaimedJob], *, stop_waiting: str | None = None
    ) -> set[int]:
        """Begin the run's transaction and take the claimed rows' locks: one round trip.

        Returns the ids locked; a claimed job missing from it was claimed again by someone else
        after the claim's backoff had passed, and is theirs now. ``stop_waiting``: a queue this
        connection waits for (see start_waiting), whose listener row goes in the same round trip.
        """
        if len(claimed) == 1:
            query = self._sql(queries.LOCK_ONE)
            params: dict[str, Any] = {"id": claimed[0].id, "attempts": claimed[0].attempt}
        else:
            query = self._sql(queries.LOCK_CLAIMED)
            params = {"ids": [j.id for j in claimed], "attempts": [j.attempt for j in claimed]}
        with conn.pipeline() as pipeline:
            if stop_waiting is not None:
                conn.execute(self._sql(queries.STOP_WAITING), {"queue": stop_waiting})
                # Committed now, not with the run: a pipeline without a sync is one transaction.
                pipeline.sync()
            conn.execute(queries.BEGIN)
            cursor = conn.execute(query, params)
        return {int(row[0]) for row in cursor.fetchall()}

    def complete_run(
        self,
        conn: Conn,
        ids: Sequence[int],
        *,
        failed: Sequence[Failure] = (),
        claim_next: str | None = None,
        lock_next: bool = False,
    ) -> tuple[list[ClaimedJob], set[int] | None]:
        """Delete the finished jobs, write the failures of the ``failed`` ones of the same run
        (a batch whose jobs failed apart), and commit the run; with ``claim_next``, also claim
        the queue's next job in the same statement and return it (the attempt counts from here).

        With ``lock_next`` too, the same round trip begins the next job's run and takes its row
        lock, as open_run would: the second value is then the ids locked, and the run's
        transaction is open. It is None when no transaction was left open (nothing live was
        claimed, or its lock was not taken), and the next job, if any, needs open_run.
        """
        lock_cursor = None
        with conn.pipeline():
            if failed:
                conn.execute(self._sql(queries.FAIL_JOBS), _failure_params(failed))
            if claim_next is None:
                cursor = None
                conn.execute(self._sql(queries.DELETE_JOBS), {"ids": list(ids)})
            else:
                shared, backoff = self._backoff_params(claim_next)
                one = len(ids) == 1
                after = "one" if one else "many"
                statement = queries.claim(after_done=after, shared_backoff=shared, record=lock_next)
                done = ids[0] if one else list(ids)
                params = {**backoff, "queue": claim_next, "limit": 1, "done": done}
                cursor = conn.execute(self._sql(statement), params)
            conn.execute(queries.COMMIT)
            if claim_next is not None and lock_next:
                conn.execute(queries.BEGIN)
                lock_cursor = conn.execute(self._sql(queries.LOCK_RECORDED))
        # The recording claim returns one row of NULLs when it claimed nothing.
        claimed = (
            [] if cursor is None else _claimed([r for r in cursor.fetchall() if r[0] is not None])
        )
        if lock_cursor is None:
            return claimed, None
        locked = {int(row[0]) for row in lock_cursor.fetchall()}
        if not locked:
            conn.execute(queries.ROLLBACK)
            return claimed, None
        return claimed, locked

    def fail_run(self, conn: Conn, failed: Sequence[Failure]) -> None:
        """Write the failures and commit the run: a row is unlocked only with its failure
        written."""
        with conn.pipeline():
            conn.execute(self._sql(queries.FAIL_JOBS), _failure_params(failed))
            conn.execute(queries.COMMIT)

    def release(self, conn: Conn, claimed: Sequence[ClaimedJob]) -> None:
        """Undo claims whose jobs will not run (``conn`` in autocommit: commits)."""
        conn.execute(
            self._sql(queries.RELEASE_CLAIMED),
            {"ids": [j.id for j in claimed], "attempts": [j.attempt for j in claimed]},
        )

    def abort_run(self, conn: Conn) -> None:
        """Roll the run's transaction back, if the connection still has one."""
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.execute(queries.ROLLBACK)

    def seconds_until_next(self, conn: Conn, queue: str) -> float | None:
        """How long until the earliest live job of the queue is due; None when there is none."""
        row = conn.execute(self._sql(queries.NEXT_RUN_AT), {"queue": queue}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def enqueue_periods(
        self, conn: Conn, due: Sequence[DuePeriod]
    ) -> tuple[float, list[PeriodicEnqueued]]:
        """Enqueue the job of each period in ``due`` that no worker enqueued yet, if it is still
        the current period of its type by the database's clock and not past its misfire grace;
        return the database's clock (a Unix time) and the jobs enqueued.

        ``conn`` is in autocommit mode, with no transaction open: the statement commits in its
        own transaction, durably (see queries.DURABLE_COMMIT), in one round trip.
        """
        params: dict[str, list[Any]] = {
            "job_type": [],
            "queue": [],
            "period_start": [],
            "period_end": [],
            "grace": [],
            "priority": [],
            "max_attempts": [],
        }
        for period in sorted(due, key=lambda d: d.job_type.name):
            job_type = period.job_type
            assert job_type.schedule is not None
            params["job_type"].append(job_type.name)
            params["queue"].append(job_type.queue)
            params["period_start"].append(period.start)
            params["period_end"].append(period.end)
            params["grace"].append(job_type.schedule.misfire_grace)
            params["priority"].append(job_type.priority)
            params["max_attempts"].append(job_type.max_attempts)
        try:
            with conn.pipeline():
                conn.execute(queries.BEGIN)
                conn.execute(queries.DURABLE_COMMIT)
                cursor = conn.execute(self._sql(queries.ENQUEUE_PERIODS), params)
                conn.execute(queries.COMMIT)
            rows = cursor.fetchall()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                self.abort_run(conn)
            raise
        enqueued = [PeriodicEnqueued(int(r[1]), str(r[2]), r[3]) for r in rows if r[1] is not None]
        return float(rows[0][0]), enqueued

    def periods(self, conn: Conn) -> list[PeriodMark]:
        """Every periodic type's latest enqueued period (see PeriodMark)."""
        rows = conn.execute(self._sql(queries.LIST_PERIODS)).fetchall()
        return [PeriodMark(str(r[0]), r[1], r[2], r[3]) for r in rows]

    def listen(self, conn: Conn) -> None:
        """LISTEN on the schema's channel, and remove the listener rows of backends that are gone
        (see queries.REMOVE_GONE_LISTENERS): a worker does this whenever it connects."""
        conn.execute(queries.compose(queries.LISTEN, self.schema, self.channel))
        conn.execute(self._sql(queries.REMOVE_GONE_LISTENERS))

    def start_waiting(self, conn: Conn, queue: str) -> list[ClaimedJob]:
        """Note that this connection waits for jobs of ``queue``, then claim once more, each in
        its own transaction (``conn`` in autocommit, LISTENing): one round trip.

        From the commit of the listener row on, an enqueue of the queue sends a NOTIFY. A job
        whose enqueue statement read listeners before that commit got none, but if it
        committed before the claim's snapshot, the claim finds it; only one committed after
        that (its transaction was open through both) waits for the poll. The sync between the
        two statements ends the first one's transaction before the claim starts.
        """
        with conn.pipeline() as pipeline:
            conn.execute(self._sql(queries.START_WAITING), {"queue": queue})
            pipeline.sync()
            cursor = conn.execute(*self._claim(queue))
        return _claimed(cursor.fetchall())

    def stop_waiting(self, conn: Conn, queue: str) -> None:
        """Delete this connection's listener row of ``queue`` (see start_waiting)."""
        conn.execute(self._sql(queries.STOP_WAITING), {"queue": queue})

    def try_consumer_lock(self, conn: Conn, key: int) -> bool:
        row = conn.execute(queries.TRY_CONSUMER_LOCK, (key,)).fetchone()
        return bool(row and row[0])

    def consumer(self, conn: Conn, queue: str) -> Consumer | None:
        """Who holds the single-consumer lock of ``queue`` now; None when nobody does."""
        return self.consumers(conn, [queue]).get(queue)

    def consumers(self, conn: Conn, queues: Sequence[str]) -> dict[str, Consumer]:
        """Who holds the single-consumer lock of each of ``queues`` now, in one statement; a
        queue nobody holds is missing."""
        by_key = {consumer_lock_key(self.schema, queue): queue for queue in queues}
        if not by_key:
            return {}
        rows = conn.execute(queries.CONSUMER_HOLDERS, {"keys": list(by_key)}).fetchall()
        return {by_key[row[0]]: Consumer(by_key[row[0]], *row[1:]) for row in rows}

    # --- health -------------------------------------------------------------------------------

    def health(self, conn: Conn) -> dict[str, QueueHealth]:
        """Every queue's backlog, failures and dead jobs, in one statement: the registered
        queues (empty ones too) and any other queue that has rows, by name."""
        found = {
            queue: QueueHealth(queue, 0, None, 0, 0, 0, None) for queue in self.registry.queues
        }
        for row in conn.execute(self._sql(queries.QUEUE_HEALTH)).fetchall():
            tried = None if row[6] is None else TriedJob(int(row[6]), row[7], row[8], row[9])
            found[row[0]] = QueueHealth(
                row[0], int(row[1]), row[2], int(row[3]), int(row[4]), int(row[5]), tried
            )
        return dict(sorted(found.items()))

    def state_counts(self, conn: Conn) -> list[StateCount]:
        """The jobs of each queue, type and state that has any, with the age of the oldest
        ready one, in one scan of the table (see queries.STATE_COUNTS): what a metrics scrape
        reads."""
        rows = conn.execute(self._sql(queries.STATE_COUNTS)).fetchall()
        return [StateCount(str(r[0]), str(r[1]), str(r[2]), int(r[3]), r[4]) for r in rows]

    # --- admin --------------------------------------------------------------------------------

    def live_payloads(self, conn: Conn, job_type: str) -> list[Any]:
        """The payloads of ``job_type``'s jobs that are not dead (ready, scheduled, running or
        failing), oldest first, as the caller's transaction sees them."""
        rows = conn.execute(self._sql(queries.LIVE_PAYLOADS), {"job_type": job_type}).fetchall()
        return [row[0] for row in rows]

    def stats(self, conn: Conn) -> list[QueueStats]:
        """The counts of state_counts, by queue, type and state."""
        counts = sorted(self.state_counts(conn), key=lambda c: (c.queue, c.job_type, c.state))
        return [QueueStats(c.queue, c.job_type, c.state, c.count) for c in counts]

    def list_jobs(
        self,
        conn: Conn,
        *,
        queue: str | None = None,
        job_type: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[JobInfo]:
        if state is not None and state not in STATES:
            raise ValueError(f"unknown job state {state!r}; choose from {', '.join(STATES)}")
        rows = conn.execute(
            self._sql(queries.LIST_JOBS),
            {"queue": queue, "job_type": job_type, "state": state, "limit": limit},
        ).fetchall()
        return [JobInfo(*row) for row in rows]

    def retry(
        self,
        conn: Conn,
        ids: Sequence[int] = (),
        *,
        all_dead: bool = False,
        queue: str | None = None,
    ) -> int:
        """Revive jobs (dead or failing) so they run now with a fresh set of attempts."""
        row = conn.execute(
            self._sql(queries.RETRY_JOBS),
            {"ids": list(ids), "all_dead": all_dead, "queue": queue, "channel": self.channel},
        ).fetchone()
        return int(row[0]) if row else 0

    def delete(self, conn: Conn, ids: Sequence[int]) -> int:
        """Delete jobs that are not running; returns how many were deleted."""
        return conn.execute(self._sql(queries.DELETE_BY_ID), {"ids": list(ids)}).rowcount

    def purge_dead(
        self, conn: Conn, *, queue: str | None = None, older_than: float | None = None
    ) -> int:
        return conn.execute(
            self._sql(queries.PURGE_DEAD), {"queue": queue, "older_than": older_than}
        ).rowcount


def _failure_params(failed: Sequence[Failure]) -> dict[str, list[Any]]:
    return {
        "ids": [f.id for f in failed],
        "errors": [f.error for f in failed],
        "delays": [f.delay for f in failed],
    }


def _claimed(rows: Sequence[tuple[Any, ...]]) -> list[ClaimedJob]:
    return sorted((ClaimedJob(*row) for row in rows), key=lambda job: job.id)


def job_type_or_error(registry: Registry, name: str) -> JobType:
    job_type = registry.get(name)
    if job_type is None:
        raise LookupError(f"unknown job type {name!r}: no such type is registered in this worker")
    return job_type
