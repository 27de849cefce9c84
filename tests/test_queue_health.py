"""JobStore.health: a monitor's facts about every queue, from real jobs run by real workers."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from support.healthapp import (
    app,
    blocking,
    doomed,
    fine,
    flaky,
    release,
    reset_blocking,
    started,
    stubborn,
)

from jobs import App


def enqueue(url: str, job_type: Any, *payloads: Any) -> list[int]:
    with psycopg.connect(url) as conn:
        return [e.id for e in app.enqueue_many(conn, [job_type.job(p) for p in payloads])]


def health(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return app.store.health(conn)


def test_an_empty_queue_reports_nothing_waiting(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
    found = health(database_url)
    assert list(found) == ["solo", "work"]
    for queue, one in found.items():
        assert (one.queue, one.ready, one.oldest_ready_age) == (queue, 0, None)
        assert (one.running, one.failing, one.dead, one.most_tried) == (0, 0, 0, None)


def test_health_counts_ready_running_failing_dead_and_the_most_tried(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
    # A job that fails twice, one that fails once, one that dies.
    (twice,) = enqueue(database_url, flaky, {"n": 1})
    app.worker(database_url, "work", drain=True).run()
    time.sleep(0.3)
    enqueue(database_url, stubborn, {})
    enqueue(database_url, doomed, {})
    app.worker(database_url, "work", drain=True).run()
    # Ready jobs nobody has run yet, enqueued a measured time ago.
    enqueued_at = time.monotonic()
    enqueue(database_url, fine, {"a": 1}, {"a": 2})
    # A job running now, in a real worker thread holding its row lock.
    reset_blocking()
    enqueue(database_url, blocking, {})
    worker = app.worker(database_url, "solo")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        time.sleep(0.3)
        found = health(database_url)
        waited = time.monotonic() - enqueued_at
    finally:
        worker.stop()
        release.set()
        thread.join(30)

    work = found["work"]
    assert work.ready == 2
    assert work.oldest_ready_age is not None and 0.3 <= work.oldest_ready_age <= waited + 0.5
    assert (work.running, work.failing, work.dead) == (0, 2, 1)
    assert work.most_tried is not None
    assert (work.most_tried.id, work.most_tried.job_type) == (twice, "flaky")
    assert work.most_tried.attempts == 2
    assert "RuntimeError: flaky 1 failed" in work.most_tried.last_error
    solo = found["solo"]
    assert (solo.ready, solo.oldest_ready_age, solo.running, solo.failing, solo.dead) == (
        0,
        None,
        1,
        0,
        0,
    )
    assert solo.most_tried is None


def test_a_queue_no_worker_of_this_app_knows_is_reported_too(database_url: str) -> None:
    other = App(schema="health_jobs")
    other.declare("elsewhere", queue="foreign")
    with psycopg.connect(database_url) as conn:
        other.migrate(conn)
        other.enqueue(conn, other.registry["elsewhere"].job({}))
    found = health(database_url)
    assert found["foreign"].ready == 1
