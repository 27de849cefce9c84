"""One worker: a loop that claims jobs of one queue and runs them, one claim at a time.

A worker owns two connections. The control connection (autocommit) listens for NOTIFY, claims,
and holds the run's transaction with the row locks; the job connection is the job's own, opened
on first use. A worker runs in its own process (see :mod:`jobs.supervisor`), because the only
way to really stop a job that overran its timeout is to end the process it runs in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

import psycopg
from psycopg import pq

from jobs import metrics
from jobs.backoff import Backoff
from jobs.connections import connect
from jobs.context import JobContext
from jobs.logcontext import job_fields
from jobs.periodic import Scheduler
from jobs.registry import JobType, Registry
from jobs.store import ClaimedJob, Failure, JobStore, consumer_lock_key

log = logging.getLogger("jobs.worker")

# Exit codes a supervisor tells apart.
EXIT_TIMEOUT = 70  # a job overran its timeout; its failure was written and the process ended
EXIT_GRACE_EXPIRED = 71  # asked to stop, the running job did not finish within the grace period
EXIT_SECOND_SIGNAL = 72  # asked to stop twice: ended at once, the job rolls back and runs later

# How often a blocked wait looks at the stop flag: the bound on an idle worker's exit time.
_WAIT_SLICE = 0.2


class Worker:
    def __init__(
        self,
        registry: Registry,
        store: JobStore,
        conninfo: str,
        queue: str,
        *,
        drain: bool = False,
        poll_interval: float = 1.0,
        standby_interval: float = 0.2,
        grace_period: float = 30.0,
        reconnect_max_delay: float = 5.0,
        name: str | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.conninfo = conninfo
        self.queue = queue
        self.drain = drain
        self.poll_interval = poll_interval
        self.standby_interval = standby_interval
        self.grace_period = grace_period
        self.reconnect_max_delay = reconnect_max_delay
        self.name = name or f"jobs worker {queue} {os.getpid()}"
        self.single_consumer = registry.queue(queue).single_consumer
        if missing := registry.unimplemented(queue):
            raise ValueError(
                f"queue {queue!r} has job types with no function in this process: "
                f"{', '.join(missing)} (import the module that implements them)"
            )
        self._consumer_key = consumer_lock_key(store.schema, queue)
        # The queue's periodic types, if it has any (see jobs.periodic): this worker enqueues
        # their periods, unless it stands by for a single-consumer queue.
        scheduled = registry.scheduled(queue)
        self._scheduler = Scheduler(scheduled) if scheduled else None
        self._control: psycopg.Connection[Any] | None = None
        self._job_conn: psycopg.Connection[Any] | None = None
        self._is_consumer = False
        self._stopping = False
        self._signals = 0
        # Held while the outcome of the current run is written, so that the timeout watchdog and
        # the main thread never both write it.
        self._finish_lock = threading.Lock()
        self._current: tuple[ClaimedJob, ...] | None = None
        # Claimed by the last run's commit, to run next; with the ids whose row locks the next
        # run's transaction, opened in the same round trip, already holds (None: not opened).
        self._next: list[ClaimedJob] = []
        self._next_locked: set[int] | None = None
        # This worker's listener row for its queue is committed (see JobStore.start_waiting):
        # enqueues of the queue notify it. Set from before its last claim that found nothing
        # until a claim finds work again.
        self._waiting = False
        self.jobs_run = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def stop(self) -> None:
        """Stop claiming; the running job, if any, finishes first."""
        self._stopping = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("%s: second signal, exiting at once", self.name)
            os._exit(EXIT_SECOND_SIGNAL)
        self._stopping = True
        if self._current is not None:
            log.info("%s: stopping after the running job (grace %ss)", self.name, self.grace_period)
            timer = threading.Timer(self.grace_period, self._grace_expired)
            timer.daemon = True
            timer.start()

    def _grace_expired(self) -> None:
        log.error("%s: the running job did not finish within the grace period", self.name)
        os._exit(EXIT_GRACE_EXPIRED)

    def run(self) -> None:
        """Run until stopped (or, with ``drain``, until nothing is ready)."""
        delay = 0.05
        metrics.declare_run_series(
            self.queue, [t.name for t in self.registry.types_of_queue(self.queue)]
        )
        try:
            while not self._stopping:
                try:
                    self._ensure_connected()
                    if not self._ensure_consumer():
                        self._sleep(self.standby_interval)
                        continue
                    delay = 0.05
                    self._enqueue_due_periods()
                    if self.run_once():
                        continue
                    if self.drain:
                        break
                    if not self._waiting and self._start_waiting():
                        continue
                    self._wait()
                except psycopg.OperationalError as exc:
                    # The database went away (restart, failover, a killed backend): keep the
                    # process, reconnect with backoff, and claim at once after reconnecting.
                    log.warning(
                        "%s: database connection lost (%s); retrying in %.2fs",
                        self.name,
                        str(exc).strip(),
                        delay,
                    )
                    self._disconnect()
                    self._sleep(delay)
                    delay = min(delay * 2, self.reconnect_max_delay)
        finally:
            self._release_next()
            self._stop_waiting()
            self._disconnect()

    def _release_next(self) -> None:
        """Give back a job that the last run claimed for this worker to run next."""
        claimed, self._next, self._next_locked = self._next, [], None
        if claimed and self._control is not None and not self._control.closed:
            try:
                self.store.abort_run(self._control)
                self.store.release(self._control, claimed)
            except psycopg.Error as exc:
                # It is claimed again once the claim's backoff has passed, with the attempt counted.
                log.warning("%s: could not release claimed jobs: %s", self.name, exc)

    def _start_waiting(self) -> bool:
        """Ask to be notified, then claim once more (a job committed before the listener row was
        visible got no NOTIFY); True when that claim found a job, to run next."""
        assert self._control is not None
        self._waiting = True
        self._next = self.store.start_waiting(self._control, self.queue)
        return bool(self._next)

    def _stop_waiting(self) -> None:
        """Delete this worker's listener row, if it has one and its connection is alive."""
        if self._waiting and self._control is not None and not self._control.closed:
            try:
                self.store.stop_waiting(self._control, self.queue)
            except psycopg.Error as exc:
                # The next worker that connects removes it; until then it costs a NOTIFY or two.
                log.warning("%s: could not delete its listener row: %s", self.name, exc)
        self._waiting = False

    # --- connections --------------------------------------------------------------------------

    def _ensure_connected(self) -> None:
        if self._control is not None and not self._control.closed:
            return
        self._control = connect(
            self.conninfo, autocommit=True, application_name=self.name, control=True
        )
        self.store.listen(self._control)
        self._is_consumer = False

    def _ensure_consumer(self) -> bool:
        if not self.single_consumer or self._is_consumer:
            return True
        assert self._control is not None
        self._is_consumer = self.store.try_consumer_lock(self._control, self._consumer_key)
        if self._is_consumer:
            log.info("%s: active consumer of single-consumer queue %r", self.name, self.queue)
        return self._is_consumer

    def _disconnect(self) -> None:
        for conn in (self._control, self._job_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._control = None
        self._job_conn = None
        self._is_consumer = False
        self._next, self._next_locked = [], None
        # A listener row of the closed session is removed by the next worker that connects.
        self._waiting = False

    def _job_connection(self) -> psycopg.Connection[Any]:
        if self._job_conn is None or self._job_conn.closed:
            self._job_conn = connect(
                self.conninfo, autocommit=False, application_name=f"{self.name} job"
            )
        return self._job_conn

    # --- periodic jobs ------------------------------------------------------------------------

    def _period_due(self) -> bool:
        return self._scheduler is not None and self._scheduler.is_due()

    def _enqueue_due_periods(self) -> None:
        """Enqueue the jobs of the periods that started, if one may have (no query otherwise).

        Only between runs: a run's transaction may be open on the control connection (the next
        job locked in the last run's round trip), and the periodic marks must not wait in it
        for the job to end. _run leaves none open once a period is due.
        """
        scheduler = self._scheduler
        control = self._control
        if scheduler is None or control is None or not scheduler.is_due():
            return
        if control.info.transaction_status != pq.TransactionStatus.IDLE:
            return
        planned = scheduler.plan()
        database_now, enqueued = self.store.enqueue_periods(control, planned)
        scheduler.record(database_now, time.monotonic(), planned)
        for job in enqueued:
            log.info(
                "%s: enqueued job %s (%s) for the period starting %s",
                self.name,
                job.id,
                job.job_type,
                job.payload.get("period_start"),
            )

    # --- waiting ------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, _WAIT_SLICE))

    def _wait(self) -> None:
        """Sleep until a NOTIFY for this queue, the next scheduled job, the start of the next
        period of a periodic type, or the poll interval.

        An enqueue notifies only while the listener row is there (see _start_waiting); a job
        whose enqueue statement ran before the row was visible and committed
        after the last claim began is left to the poll interval."""
        assert self._control is not None
        timeout = self.poll_interval
        due = self.store.seconds_until_next(self._control, self.queue)
        if due is not None:
            timeout = min(timeout, max(due, 0.0))
        if self._scheduler is not None:
            timeout = min(timeout, self._scheduler.seconds_until_due())
        end = time.monotonic() + timeout
        while not self._stopping and (left := end - time.monotonic()) > 0:
            for notify in self._control.notifies(timeout=min(left, _WAIT_SLICE)):
                if notify.payload == self.queue:
                    return

    # --- claiming and running -----------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim and run one job (or one batch); False when nothing was ready."""
        assert self._control is not None
        # The previous run's commit may have claimed this one already, and locked it (see
        # complete_run).
        claimed, locked = self._next, self._next_locked
        self._next, self._next_locked = [], None
        if not claimed:
            claimed = self.store.claim(self._control, self.queue)
        if not claimed:
            return False
        head = claimed[0]
        job_type = self.registry.get(head.job_type)
        if not head.dead and job_type is not None and job_type.batch_size > 1:
            if locked is not None:
                # The followers must be claimed, and committed, before the batch is locked.
                self.store.abort_run(self._control)
                locked = None
            claimed += self.store.claim(
                self._control, self.queue, job_type.batch_size - 1, job_type=head.job_type
            )
        for job in claimed:
            if job.dead:
                metrics.observe_run(self.queue, job.job_type, None, done=0, failed=0, dead=1)
                with job_fields(**_log_fields([job], job.job_type, self.queue)):
                    log.error(
                        "%s: job %s (%s) is dead after %s attempts: %s",
                        self.name,
                        job.id,
                        job.job_type,
                        job.attempt,
                        job.last_error,
                    )
        live = [job for job in claimed if not job.dead]
        if live:
            # (``locked`` is only ever set for live jobs: the recording claim leaves dead ones out.)
            # Records logged during the run carry the job's fields (see jobs.logcontext).
            with job_fields(**_log_fields(live, head.job_type, self.queue)):
                self._run(live, job_type, head.job_type, locked)
        return True

    def _run(
        self,
        claimed: Sequence[ClaimedJob],
        job_type: JobType | None,
        type_name: str,
        locked: set[int] | None = None,
    ) -> None:
        """Run claimed jobs; ``locked``: their run's transaction is open and holds these locks."""
        control = self._control
        assert control is not None
        try:
            if locked is None:
                # The first run after waiting also deletes the listener row: a busy worker
                # costs enqueues no NOTIFY.
                stop_waiting = self.queue if self._waiting else None
                locked = self.store.open_run(control, claimed, stop_waiting=stop_waiting)
                self._waiting = False
            batch = tuple(job for job in claimed if job.id in locked)
            if not batch:
                self.store.abort_run(control)
                return
            started = time.monotonic()
            errors = self._call(batch, job_type, type_name)
            ran = time.monotonic() - started
            with self._finish_lock:
                self._current = None
                backoff = job_type.backoff if job_type is not None else Backoff()
                failed = [
                    Failure(job.id, errors[job.id], backoff.delay(job.attempt))
                    for job in batch
                    if job.id in errors
                ]
                done = [job.id for job in batch if job.id not in errors]
                if done:
                    # Claim the next job in the same commit, unless about to stop: a job
                    # claimed and then left would wait out the claim's backoff and count an attempt.
                    claim_next = None if self._stopping else self.queue
                    # Lock the next job in the same round trip too, unless this queue runs
                    # batches (a batch's followers are claimed after its head) or a period is
                    # due (its marks are written between runs, see _enqueue_due_periods).
                    lock_next = (
                        job_type is None or job_type.batch_size == 1
                    ) and not self._period_due()
                    self._next, self._next_locked = self.store.complete_run(
                        control, done, failed=failed, claim_next=claim_next, lock_next=lock_next
                    )
                else:
                    self.store.fail_run(control, failed)
                # Written after the commit: a run counts once its outcome is the table's.
                self._count_run(batch, failed, ran, type_name)
                for failure in failed:
                    with job_fields(job_id=failure.id):
                        log.warning(
                            "%s: job %s (%s) failed: %s",
                            self.name,
                            failure.id,
                            type_name,
                            _last_line(failure.error),
                            extra={"duration_s": ran},
                        )
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.abort_run(control)
            raise
        self.jobs_run += len(batch)

    def _count_run(
        self,
        batch: Sequence[ClaimedJob],
        failed: Sequence[Failure],
        seconds: float,
        type_name: str,
    ) -> None:
        failed_ids = {f.id for f in failed}
        dead = sum(1 for j in batch if j.id in failed_ids and _last_attempt(j))
        metrics.observe_run(
            self.queue,
            type_name,
            seconds,
            done=len(batch) - len(failed_ids),
            failed=len(failed_ids) - dead,
            dead=dead,
        )

    def _call(
        self, batch: tuple[ClaimedJob, ...], job_type: JobType | None, type_name: str
    ) -> dict[int, str]:
        """Run the job function; the failed jobs' ids with their errors (empty: all done).

        A function that raises fails the whole batch with its traceback; one that returns
        :data:`jobs.Failures` fails only the jobs at those positions, and its transaction is
        committed for the rest.
        """
        if job_type is None:
            error = (
                f"unknown job type {type_name!r}: no job type of that name is registered in "
                f"this worker (queue {self.queue!r})"
            )
            return dict.fromkeys((job.id for job in batch), error)
        try:
            payloads = [
                job.payload if job_type.decode is None else job_type.decode(job.payload)
                for job in batch
            ]
        except Exception as exc:
            error = f"cannot decode the payload of a {type_name!r} job: {exc!r}"
            return dict.fromkeys((job.id for job in batch), error)

        deadline = None if job_type.timeout is None else time.monotonic() + job_type.timeout
        context = JobContext(
            conn_factory=self._job_connection,
            queue=self.queue,
            job_type=type_name,
            job_ids=tuple(job.id for job in batch),
            attempts=tuple(job.attempt for job in batch),
            deadline=deadline,
        )
        watchdog = None
        self._current = batch
        if job_type.timeout is not None:
            watchdog = threading.Timer(job_type.timeout, self._timed_out, (batch, job_type))
            watchdog.daemon = True
            watchdog.start()
        try:
            assert job_type.func is not None  # checked when the worker started
            returned = job_type.func(context, payloads if job_type.batch_size > 1 else payloads[0])
            errors = _failures_by_id(batch, returned, type_name)
            self._end_job_transaction(commit=True)
            return errors
        except (Exception, SystemExit):
            error = traceback.format_exc()
            self._end_job_transaction(commit=False)
            return dict.fromkeys((job.id for job in batch), error)
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _end_job_transaction(self, *, commit: bool) -> None:
        conn = self._job_conn
        if conn is None or conn.closed:
            return
        try:
            if conn.info.transaction_status == pq.TransactionStatus.IDLE:
                return
            if commit:
                conn.commit()
            else:
                conn.rollback()
        except psycopg.Error:
            # A broken job connection is the job's problem, not the worker's: the commit error
            # propagates as the job's failure below, and the next job gets a new connection.
            with contextlib.suppress(Exception):
                conn.close()
            self._job_conn = None
            if commit:
                raise

    def _timed_out(self, batch: tuple[ClaimedJob, ...], job_type: JobType) -> None:
        """Watchdog thread: write the failure under the row lock, then end the process.

        A Python thread cannot be stopped from outside, so the only sure way to stop the job is
        to end the process; the supervisor starts a fresh one.
        """
        with self._finish_lock:
            if self._current is not batch:
                return
            control = self._control
            try:
                if control is not None:
                    error = (
                        f"timed out: the job ran longer than its timeout of {job_type.timeout}s "
                        "and its worker process was ended"
                    )
                    failures = [
                        Failure(job.id, error, job_type.backoff.delay(job.attempt)) for job in batch
                    ]
                    self.store.fail_run(control, failures)
                    self._count_run(batch, failures, float(job_type.timeout or 0), job_type.name)
            except Exception:
                log.exception("%s: could not record the timeout of jobs %s", self.name, batch)
            finally:
                log.error(
                    "%s: job %s (%s) timed out after %ss; ending the process",
                    self.name,
                    [job.id for job in batch],
                    job_type.name,
                    job_type.timeout,
                )
                os._exit(EXIT_TIMEOUT)


def _failures_by_id(
    batch: Sequence[ClaimedJob], returned: object, type_name: str
) -> dict[int, str]:
    """The failures a job function returned (see :data:`jobs.Failures`), by job id.

    Anything else than None or a mapping of the batch's positions is a bug in the job, and
    raises: the whole batch fails with it, rather than some jobs being deleted as done by
    mistake.
    """
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        raise TypeError(
            f"job type {type_name!r} returned a {type(returned).__name__}; a job function returns"
            " None, or a mapping of the positions of its failed payloads to their errors"
        )
    errors: dict[int, str] = {}
    for position, problem in returned.items():
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"job type {type_name!r} returned a failure keyed {position!r}")
        if not 0 <= position < len(batch):
            raise IndexError(
                f"job type {type_name!r} returned a failure at position {position}, "
                f"outside its batch of {len(batch)}"
            )
        if isinstance(problem, BaseException):
            problem = "".join(traceback.format_exception(problem))
        errors[batch[position].id] = str(problem)
    return errors


def _last_attempt(job: ClaimedJob) -> bool:
    """Whether a failure of this run leaves the job dead (as queries.FAIL_JOBS decides)."""
    return job.max_attempts is not None and job.attempt >= job.max_attempts


def _log_fields(jobs: Sequence[ClaimedJob], type_name: str, queue: str) -> dict[str, Any]:
    """The fields of a run's log records (see jobs.logcontext)."""
    if len(jobs) == 1:
        return {
            "job_id": jobs[0].id,
            "job_type": type_name,
            "queue": queue,
            "attempt": jobs[0].attempt,
        }
    return {
        "job_ids": [job.id for job in jobs],
        "job_type": type_name,
        "queue": queue,
        "attempts": [job.attempt for job in jobs],
    }


def _last_line(error: str) -> str:
    lines = error.strip().splitlines()
    return lines[-1] if lines else error
