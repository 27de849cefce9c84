"""Wake-up: an enqueue notifies a queue only while a worker of that queue waits.

The workers here run in a thread of the test, so that the test can act at exact points of their
loop (just before they ask to be notified, once they sleep) instead of guessing with sleeps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from support.jobapp import app
from support.queue_helpers import enqueue, scalar, wait_for

from jobs import JobStore, Worker
from jobs.store import ClaimedJob

# Far above every wait of the NOTIFY path, so that a pickup by the poll cannot pass for one by a
# NOTIFY, nor the other way round.
POLL = 2.0
AT_ONCE = 0.5


class SteppedStore(JobStore):
    """A store that runs ``before_waiting`` (once) just before a worker asks to be notified,
    and keeps what each claim after asking found."""

    def __init__(self) -> None:
        super().__init__(app.registry, app.schema)
        self.before_waiting: Callable[[], None] | None = None
        self.found_after_asking: list[list[int]] = []

    def start_waiting(self, conn: psycopg.Connection[Any], queue: str) -> list[ClaimedJob]:
        hook, self.before_waiting = self.before_waiting, None
        if hook is not None:
            hook()
        found = super().start_waiting(conn, queue)
        self.found_after_asking.append([job.id for job in found])
        return found


class SteppedWorker(Worker):
    """A worker that says when it goes to sleep."""

    def __init__(self, url: str, store: JobStore, poll_interval: float) -> None:
        super().__init__(app.registry, store, url, "default", poll_interval=poll_interval)
        self.sleeping = threading.Event()

    def _wait(self) -> None:
        self.sleeping.set()
        super()._wait()

    @property
    def pid(self) -> int:
        assert self._control is not None
        return self._control.info.backend_pid


@contextlib.contextmanager
def running(
    url: str, *, poll_interval: float = 60.0, store: JobStore | None = None
) -> Iterator[SteppedWorker]:
    worker = SteppedWorker(url, store or SteppedStore(), poll_interval)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()


def listeners(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT queue, pid FROM jobs.listeners ORDER BY 1, 2").fetchall()
    return [(str(queue), int(pid)) for queue, pid in rows]


@contextlib.contextmanager
def channel(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection listening on the queue's channel, as a worker's does."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('LISTEN "jobs.jobs"')
        yield conn


def heard(
    conn: psycopg.Connection[Any], timeout: float = 0.3, stop_after: int | None = None
) -> list[str]:
    """The notifications that arrive within ``timeout`` (or the first ``stop_after``)."""
    return [n.payload for n in conn.notifies(timeout=timeout, stop_after=stop_after)]


def pickup_after(worker: Worker, runs: int, started: float) -> float:
    """Seconds from ``started`` until the worker has run ``runs`` jobs."""
    wait_for(lambda: worker.jobs_run >= runs, timeout=POLL + 3, interval=0.005)
    return time.monotonic() - started


def test_a_sleeping_worker_has_a_listener_row_and_deletes_it_when_it_exits(queue_url: str) -> None:
    with running(queue_url) as worker:
        assert worker.sleeping.wait(10)
        assert listeners(queue_url) == [("default", worker.pid)]
    assert listeners(queue_url) == []


def test_a_worker_that_sleeps_before_a_job_is_enqueued_is_notified_at_once(queue_url: str) -> None:
    """The listener row is visible before the enqueue statement runs: the enqueue notifies."""
    with running(queue_url, poll_interval=POLL) as worker, channel(queue_url) as ears:
        assert worker.sleeping.wait(10)
        assert listeners(queue_url) == [("default", worker.pid)]
        enqueue(queue_url, "noop", {})
        delay = pickup_after(worker, 1, time.monotonic())
        assert delay < AT_ONCE, delay
        assert heard(ears) == ["default"]


def test_a_job_committed_before_the_listener_row_is_found_by_the_last_claim(queue_url: str) -> None:
    """The worker's first claim found nothing; the job commits, without a NOTIFY, before the
    worker's row is written: the claim after the row finds it."""
    store = SteppedStore()
    committed: list[tuple[int, float]] = []

    def enqueue_now() -> None:
        committed.append((enqueue(queue_url, "noop", {}), time.monotonic()))

    store.before_waiting = enqueue_now
    with channel(queue_url) as ears, running(queue_url, poll_interval=POLL, store=store) as worker:
        delay = pickup_after(worker, 1, wait_for(lambda: committed)[0][1])
        assert delay < AT_ONCE, delay
        assert heard(ears) == []  # nobody was waiting when its enqueue ran
    assert store.found_after_asking[0] == [committed[0][0]]


def test_a_job_whose_enqueue_ran_before_the_listener_row_waits_for_the_poll_not_longer(
    queue_url: str,
) -> None:
    """The race: the enqueue statement runs (no listener row yet: no NOTIFY), the worker writes
    its row and claims once more (the job is not committed yet), sleeps, and only then does the
    job commit. The poll picks it up, within the poll interval."""
    with psycopg.connect(queue_url) as enqueuer, channel(queue_url) as ears:
        app.enqueue(enqueuer, app.registry["noop"].job({}))  # run, not committed
        with running(queue_url, poll_interval=POLL) as worker:
            assert worker.sleeping.wait(10)
            assert listeners(queue_url) == [("default", worker.pid)]
            assert worker.jobs_run == 0
            enqueuer.commit()
            delay = pickup_after(worker, 1, time.monotonic())
        assert heard(ears, timeout=0.1) == []
    assert AT_ONCE < delay < POLL + AT_ONCE, delay


def test_enqueues_send_no_notify_while_no_worker_of_the_queue_waits(queue_url: str) -> None:
    with channel(queue_url) as ears:
        enqueue(queue_url, "noop", {})  # no worker at all
        assert heard(ears) == []
        with running(queue_url) as worker:
            assert worker.sleeping.wait(10)  # after it ran the first job
            enqueue(queue_url, "record", {"key": "busy", "sleep": 2.0})
            assert heard(ears, stop_after=1) == ["default"]  # it woke it
            wait_for(lambda: scalar(queue_url, "SELECT count(*) FROM runs WHERE job_key = 'busy'"))
            # Its claim found work: the run that followed deleted its row (and committed that).
            assert listeners(queue_url) == []
            enqueue(queue_url, "noop", {})
            assert heard(ears) == []  # the only worker is busy
            wait_for(lambda: worker.jobs_run == 3, timeout=10)
            wait_for(lambda: listeners(queue_url) == [("default", worker.pid)])
            enqueue(queue_url, "noop", {})
            assert heard(ears, timeout=5, stop_after=1) == ["default"]  # idle again: notified


def test_rows_of_gone_backends_are_removed_when_a_worker_connects(queue_url: str) -> None:
    with psycopg.connect(queue_url, autocommit=True) as gone:
        gone_pid = gone.info.backend_pid
    wait_for(
        lambda: (
            not scalar(
                queue_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (gone_pid,)
            )
        )
    )
    with psycopg.connect(queue_url, autocommit=True) as alive, channel(queue_url) as ears:
        alive.execute(
            "INSERT INTO jobs.listeners (queue, pid) VALUES ('default', %s), ('other', %s)",
            (gone_pid, alive.info.backend_pid),
        )
        # Meanwhile the gone backend's row costs an enqueue a NOTIFY nobody needs, no more.
        enqueue(queue_url, "noop", {})
        assert heard(ears) == ["default"]
        with running(queue_url) as worker:
            assert worker.sleeping.wait(10)
            assert listeners(queue_url) == sorted(
                [("default", worker.pid), ("other", alive.info.backend_pid)]
            )


def test_the_listener_row_commits_before_the_claim_after_it_starts(queue_url: str) -> None:
    """start_waiting sends the row and the claim in one round trip but as two transactions: a
    claim in the row's transaction would run before the row is visible to enqueues."""
    job_id = enqueue(queue_url, "noop", {})
    with psycopg.connect(queue_url, autocommit=True) as conn:
        assert [job.id for job in app.store.start_waiting(conn, "default")] == [job_id]
        row = conn.execute(
            "SELECT l.xmin::text::bigint, j.xmin::text::bigint"
            " FROM jobs.listeners AS l, jobs.jobs AS j WHERE j.id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None and row[0] < row[1], row


def test_each_enqueue_statement_notifies_only_queues_that_got_a_job_and_have_a_waiting_worker(
    queue_url: str,
) -> None:
    """The NOTIFY is the enqueue statement's own (sql/0005): one job, a uniform batch, a mixed
    batch, with and without a dedup key. A job absorbed by its twin is no new job: a batch of
    them wakes nobody, while a single one wakes a waiting worker all the same (its statement
    decides before the insert, see queries.ENQUEUE_ONE). A row that other SQL inserts wakes
    nobody (its worker claims it at the next poll)."""
    registry = app.registry

    def notes(*jobs: Any) -> list[str]:
        with psycopg.connect(queue_url, autocommit=True) as conn:
            if len(jobs) == 1:
                app.enqueue(conn, jobs[0])
            else:
                app.enqueue_many(conn, list(jobs))
        return heard(ears)

    with channel(queue_url) as ears:
        app.store.start_waiting(ears, "default")  # a worker of "default" waits; none of "solo"
        assert notes(registry["noop"].job({})) == ["default"]
        assert notes(registry["solo_record"].job({"key": "a"})) == []
        assert notes(registry["dedup"].job({"k": 1})) == ["default"]
        assert notes(registry["dedup"].job({"k": 1})) == ["default"]  # absorbed by its twin
        assert notes(registry["dedup"].job({"k": 1}, priority=5)) == ["default"]
        assert notes(registry["solo_record"].job({"key": "a"}, delay=0.5)) == []
        assert notes(*[registry["noop"].job({"i": i}) for i in range(3)]) == ["default"]
        assert notes(*[registry["dedup"].job({"k": i}) for i in range(2, 4)]) == ["default"]
        assert notes(*[registry["solo_record"].job({"key": k}) for k in "bc"]) == []
        mixed = [registry["solo_record"].job({"key": "d"}), registry["noop"].job({})]
        assert notes(*mixed) == ["default"]
        absorbed = [registry["dedup"].job({"k": 1}), registry["solo_record"].job({"key": "e"})]
        assert notes(*absorbed) == []
        ears.execute(
            "INSERT INTO jobs.jobs (queue, job_type, payload) VALUES ('default', 'noop', '{}')"
        )
        assert heard(ears) == []
        app.store.stop_waiting(ears, "default")
        assert notes(registry["noop"].job({})) == []
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 16
