"""The job application of the queue health and metrics tests: one type per state a job can
reach (done, failing for minutes, failing briefly, dead) and one that blocks a single-consumer
queue until released."""

from __future__ import annotations

import threading
from typing import Any

from jobs import App, Backoff, JobContext

app = App(schema="health_jobs")
app.queue("solo", single_consumer=True)

# Long enough that no second attempt happens within a test.
SLOW_RETRY = Backoff(base=600.0, jitter=0.0)
started = threading.Event()
release = threading.Event()


@app.job_type(queue="work")
def fine(ctx: JobContext, payload: Any) -> None:
    pass


# Retried after 0.1 s the first time, after ten minutes the second.
@app.job_type(queue="work", max_attempts=None, backoff=Backoff(base=0.1, factor=6000, jitter=0))
def flaky(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError(f"flaky {payload['n']} failed")


@app.job_type(queue="work", max_attempts=None, backoff=SLOW_RETRY)
def stubborn(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError("stubborn failed")


@app.job_type(queue="work", max_attempts=1)
def doomed(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError("doomed")


@app.job_type(queue="solo")
def blocking(ctx: JobContext, payload: Any) -> None:
    started.set()
    release.wait(30)


def reset_blocking() -> None:
    """Before a test runs ``blocking``: the events are this module's, shared by every test that
    imports it, and the last one left ``release`` set."""
    started.clear()
    release.clear()
