"""The queue under real processes: kills, signals, timeouts, lost connections, restarts."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from support.jobapp import app
from support.queue_helpers import (
    children_of,
    enqueue,
    scalar,
    setup_database,
    start_worker,
    stop,
    wait_for,
)

from indexpub import embedded
from jobs import EXIT_TIMEOUT


def started(url: str, key: str) -> bool:
    return bool(scalar(url, "SELECT count(*) FROM runs WHERE job_key = %s", (key,)))


def worker_child(process: subprocess.Popen[bytes]) -> int:
    return wait_for(lambda: (children_of(process.pid) or [0])[0])


def test_sigkill_mid_job_counts_the_attempt_and_frees_the_job_within_a_second(
    queue_url: str,
) -> None:
    job_id = enqueue(queue_url, "record", {"key": "k1", "sleep": 30})
    worker = start_worker(queue_url, "--queue", "default")
    try:
        wait_for(lambda: started(queue_url, "k1"))
        child = worker_child(worker)
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        # FAST backoff: 0.2 s; the row lock went with the killed backend.
        with psycopg.connect(queue_url, autocommit=True) as conn:
            wait_for(
                lambda: scalar(
                    queue_url, "SELECT run_at <= now() FROM jobs.jobs WHERE id = %s", (job_id,)
                ),
                timeout=2,
            )
            stop(worker)
            claimed = app.store.claim(conn, "default")
            freed_after = time.monotonic() - killed_at
        assert [j.id for j in claimed] == [job_id]
        assert freed_after < 1.0, freed_after
        assert claimed[0].attempt == 2  # the killed run counted
        assert "died before it finished" in (claimed[0].last_error or "")
    finally:
        stop(worker)


def test_a_job_that_kills_its_worker_every_time_ends_dead(queue_url: str) -> None:
    job_id = enqueue(queue_url, "crash", {})
    good = enqueue(queue_url, "noop", {})
    worker = start_worker(queue_url, "--queue", "default", "--poll-interval", "0.1")
    try:
        wait_for(
            lambda: scalar(queue_url, "SELECT dead FROM jobs.jobs WHERE id = %s", (job_id,)),
            timeout=20,
        )
        row = (
            psycopg.connect(queue_url)
            .execute("SELECT attempts, last_error FROM jobs.jobs WHERE id = %s", (job_id,))
            .fetchone()
        )
        assert row is not None
        assert row[0] == 3
        assert "the worker running attempt 3 died" in row[1]
        assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs WHERE id = %s", (good,)) == 0
    finally:
        stop(worker)


def test_timeout_fails_the_job_and_really_stops_it(queue_url: str) -> None:
    job_id = enqueue(queue_url, "hang", {"sleep": 3600})
    after = enqueue(queue_url, "record", {"key": "after"})
    worker = start_worker(queue_url, "--queue", "default", "--poll-interval", "0.1")
    try:
        first_child = worker_child(worker)
        wait_for(lambda: started(queue_url, "after"), timeout=10)
        err = scalar(queue_url, "SELECT last_error FROM jobs.jobs WHERE id = %s", (job_id,))
        assert err is not None and "timed out" in err
        # The process that ran the hung job is gone (not a thread left sleeping beside the next).
        assert not Path(f"/proc/{first_child}").exists() or first_child not in children_of(
            worker.pid
        )
        wait_for(
            lambda: scalar(queue_url, "SELECT dead FROM jobs.jobs WHERE id = %s", (job_id,)),
            timeout=10,
        )
        assert scalar(queue_url, "SELECT attempts FROM jobs.jobs WHERE id = %s", (job_id,)) == 2
        assert after
    finally:
        stop(worker)
    assert EXIT_TIMEOUT == 70


def test_idle_worker_wakes_on_notify(queue_url: str) -> None:
    worker = start_worker(queue_url, "--queue", "default", "--poll-interval", "60")
    try:
        worker_child(worker)
        delays = []
        for i in range(5):
            # Enqueue once the worker waits (its listener row is visible): an enqueue whose
            # statement ran before that row committed may wait for the poll (docs/architecture.md,
            # "a NOTIFY only when a worker waits"), which a loaded machine makes likely enough.
            wait_for(lambda: scalar(queue_url, "SELECT count(*) FROM jobs.listeners") == 1)
            enqueue(queue_url, "record", {"key": f"w{i}"})
            t0 = time.monotonic()
            wait_for(lambda i=i: started(queue_url, f"w{i}"), timeout=5, interval=0.005)
            delays.append(time.monotonic() - t0)
        assert max(delays) < 1.0, delays  # far below the 60 s poll
    finally:
        stop(worker)


def test_listener_backend_terminated_worker_survives(queue_url: str) -> None:
    worker = start_worker(queue_url, "--queue", "default", "--poll-interval", "60")
    try:
        worker_child(worker)
        time.sleep(0.5)
        killed = scalar(
            queue_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name LIKE 'jobs worker%%' AND datname = current_database()",
        )
        assert killed >= 1
        enqueue(queue_url, "record", {"key": "after-kill"})
        wait_for(lambda: started(queue_url, "after-kill"), timeout=10)
        assert worker.poll() is None
    finally:
        stop(worker)


def test_postgres_restart_worker_survives_and_runs_jobs_enqueued_meanwhile(
    restartable_server: tuple[str, Path],
) -> None:
    _, pgdata = restartable_server
    url = embedded.database_url(pgdata, "restart_test")
    setup_database(url)
    worker = start_worker(url, "--queue", "default", "--poll-interval", "60")
    try:
        worker_child(worker)
        enqueue(url, "record", {"key": "before"})
        wait_for(lambda: started(url, "before"))
        embedded.restart(pgdata)
        enqueue(url, "record", {"key": "during"})  # the worker is still reconnecting
        wait_for(lambda: started(url, "during"), timeout=15)
        assert worker.poll() is None
        assert children_of(worker.pid)
    finally:
        stop(worker)


def test_sigterm_idle_worker_exits_within_a_second(queue_url: str) -> None:
    worker = start_worker(queue_url, "--queue", "default", "--poll-interval", "60")
    worker_child(worker)
    time.sleep(0.5)
    t0 = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(5) == 0
    assert time.monotonic() - t0 < 1.0


def test_three_workers_of_one_queue_run_every_job_exactly_once(queue_url: str) -> None:
    """Three processes draining one queue, each claiming and locking its next job with its last
    commit: no job runs twice, none is left, and they really shared the work."""
    with psycopg.connect(queue_url) as conn:
        # 10 ms each: long enough that all three are running before one could drain the queue.
        jobs = [app.registry["record"].job({"key": str(i), "sleep": 0.01}) for i in range(300)]
        app.enqueue_many(conn, jobs)
    worker = start_worker(queue_url, "--queue", "default", "--concurrency", "3", "--drain")
    try:
        assert worker.wait(60) == 0
    finally:
        stop(worker)
    with psycopg.connect(queue_url) as conn:
        keys = [r[0] for r in conn.execute("SELECT job_key FROM runs WHERE ended_at IS NOT NULL")]
        pids = conn.execute("SELECT count(DISTINCT pid) FROM runs").fetchone()
    assert sorted(keys, key=int) == [str(i) for i in range(300)]
    assert pids is not None and pids[0] >= 2
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0


def test_sigterm_busy_worker_finishes_its_job_and_leaves_nothing_claimed(queue_url: str) -> None:
    job_id = enqueue(queue_url, "record", {"key": "busy", "sleep": 1.5})
    waiting = enqueue(queue_url, "noop", {})
    worker = start_worker(queue_url, "--queue", "default")
    try:
        wait_for(lambda: started(queue_url, "busy"))
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(10) == 0
        assert scalar(queue_url, "SELECT ended_at IS NOT NULL FROM runs WHERE job_key = 'busy'")
        assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs WHERE id = %s", (job_id,)) == 0
        # It stopped claiming: the queued job is untouched.
        assert scalar(queue_url, "SELECT attempts FROM jobs.jobs WHERE id = %s", (waiting,)) == 0
    finally:
        stop(worker)


def test_second_signal_exits_at_once_and_the_job_runs_again_later(queue_url: str) -> None:
    job_id = enqueue(queue_url, "record", {"key": "twice", "sleep": 30})
    worker = start_worker(queue_url, "--queue", "default")
    wait_for(lambda: started(queue_url, "twice"))
    os.killpg(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.killpg(worker.pid, signal.SIGTERM)
    t0 = time.monotonic()
    worker.wait(5)
    assert time.monotonic() - t0 < 2.0
    row = (
        psycopg.connect(queue_url)
        .execute("SELECT attempts, dead FROM jobs.jobs WHERE id = %s", (job_id,))
        .fetchone()
    )
    assert row == (1, False)  # rolled back, still there, will run again


def test_single_consumer_three_processes_under_random_sigkills(queue_url: str) -> None:
    """No two runs of the single-consumer queue overlap, no job is lost, failover is fast."""
    rng = random.Random(7)
    count = 40
    with psycopg.connect(queue_url) as conn:
        app.enqueue_many(
            conn,
            [
                app.registry["solo_record"].job({"key": f"s{i}", "sleep": 0.05})
                for i in range(count)
            ],
        )
    workers = [
        start_worker(queue_url, "--queue", "solo", "--poll-interval", "0.2") for _ in range(3)
    ]
    gaps: list[float] = []
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.2, 0.5))
            active = scalar(
                queue_url,
                "SELECT pid FROM runs WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1",
            )
            if active is None:
                continue
            try:
                os.kill(active, signal.SIGKILL)
            except ProcessLookupError:
                continue  # the latest unended run was the one killed last time
            killed_at = time.time()
            next_start = wait_for(
                lambda killed_at=killed_at: scalar(
                    queue_url,
                    "SELECT extract(epoch FROM min(started_at)) FROM runs WHERE started_at >"
                    " to_timestamp(%s)",
                    (killed_at,),
                ),
                timeout=5,
            )
            gaps.append(float(next_start) - killed_at)
        wait_for(
            lambda: (
                scalar(queue_url, "SELECT count(*) FROM jobs.jobs WHERE job_type = 'solo_record'")
                == 0
            ),
            timeout=60,
        )
    finally:
        for worker in workers:
            stop(worker)
    with psycopg.connect(queue_url) as conn:
        runs = conn.execute(
            "SELECT job_key, started_at, ended_at FROM runs ORDER BY started_at"
        ).fetchall()
    done = {key for key, _, ended in runs if ended is not None}
    assert done == {f"s{i}" for i in range(count)}  # none lost
    # No overlap: each run starts after every earlier run ended (a killed run never writes its
    # end; the failover gaps below show the next one started only after the kill).
    latest_end = None
    for key, start, end in runs:
        if latest_end is not None:
            assert start >= latest_end, key
        if end is not None:
            latest_end = end if latest_end is None else max(latest_end, end)
    assert gaps, "no kill happened"
    # Failover: the FAST backoff (0.2 s) is part of the gap; the standby polls every 0.2 s.
    assert max(gaps) < 1.0, gaps
