"""A backoff counts from when it is written, not from when the run's transaction began.

The claim that follows a finished run, and the failure of a run, are written inside the run's
transaction, whose ``now()`` is the moment the run began. A backoff computed from it was shorter
by the run's length: after a batch that ran longer than the backoff, the next batch's head,
claimed at the end of the run, was ready again at once; the follower claim of its own batch
took it a second time, with a second attempt and a false "died before it finished" (seen with
the index job over a network remote, whose batches run for seconds). A failed run's backoff was
likewise eaten by the run's length.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobs import App, Backoff, JobContext

app = App(schema="backoff_test_jobs")
app.queue("slow", single_consumer=True)
RUN_SECONDS = 1.2
# Shorter than a run: 0.5 to 1 s with the default jitter.
BACKOFF = Backoff(base=1.0, factor=2.0, cap=300.0)


@app.job_type(queue="slow", batch_size=5, backoff=BACKOFF, max_attempts=None)
def slow_batch(ctx: JobContext, payloads: list[Any]) -> None:
    time.sleep(RUN_SECONDS)


@app.job_type(queue="slow", backoff=Backoff(base=1.0, jitter=0.0), max_attempts=None)
def slow_failure(ctx: JobContext, payload: Any) -> None:
    time.sleep(RUN_SECONDS)
    raise RuntimeError("failed after a long run")


@pytest.fixture
def url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
    return database_url


@pytest.fixture
def worker(url: str) -> Iterator[None]:
    running = app.worker(url, "slow", poll_interval=0.1)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    try:
        yield
    finally:
        running.stop()
        thread.join(30)


def rows(url: str) -> list[tuple[int, int, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, attempts, last_error FROM backoff_test_jobs.jobs ORDER BY id"
        ).fetchall()


def test_batches_longer_than_the_backoff_claim_each_job_once(url: str, worker: None) -> None:
    with psycopg.connect(url) as conn:
        app.enqueue_many(conn, [slow_batch.job({"i": i}) for i in range(12)])
    deadline = time.monotonic() + 30
    seen: list[tuple[int, int, str | None]] = []
    while time.monotonic() < deadline:
        now = rows(url)
        seen += [row for row in now if row[1] > 1 or row[2] is not None]
        if not now:
            break
        time.sleep(0.05)
    assert rows(url) == []
    assert seen == []  # no job claimed twice, none said to have died


def test_a_failed_runs_backoff_starts_when_it_failed(url: str, worker: None) -> None:
    with psycopg.connect(url) as conn:
        app.enqueue(conn, slow_failure.job({}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT EXTRACT(EPOCH FROM run_at - now()), attempts FROM backoff_test_jobs.jobs"
                " WHERE last_error IS NOT NULL"
            ).fetchone()
        if row is not None:
            break
        time.sleep(0.02)
    assert row is not None
    left, attempts = float(row[0]), row[1]
    # Written at the end of a 1.2 s run with a 1 s backoff: most of that second is still to
    # come (from the run's start it would be long gone).
    assert attempts == 1 and left > 0.5, left
