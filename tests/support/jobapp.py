"""A job application for the queue's tests: job types whose effects the tests can observe."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from jobs import App, Backoff, Failures, JobContext

app = App(schema="jobs")
app.queue("solo", single_consumer=True)

FAST = Backoff(base=0.2, factor=2.0, cap=0.5, jitter=0.0)

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS public.runs (
    id bigserial PRIMARY KEY,
    job_key text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
)"""


@app.job_type(queue="default")
def noop(ctx: JobContext, payload: Any) -> None:
    pass


@app.job_type(queue="default", max_attempts=3, backoff=FAST)
def fail(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError(f"boom {payload.get('n', '')}".strip())


@app.job_type(queue="default", max_attempts=3, backoff=Backoff(base=60.0, jitter=0.0))
def fail_later(ctx: JobContext, payload: Any) -> None:
    """Fails and backs off for a minute: no second attempt can happen within a test."""
    raise RuntimeError("failed")


def _record(ctx: JobContext, payload: Any) -> None:
    """Write a start row (committed at once), sleep, write the end: the tests' run journal."""
    conn = ctx.conn
    row = conn.execute(
        "INSERT INTO public.runs (job_key, pid) VALUES (%s, %s) RETURNING id",
        (payload["key"], os.getpid()),
    ).fetchone()
    assert row is not None
    conn.commit()
    time.sleep(float(payload.get("sleep", 0)))
    if payload.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    conn.execute("UPDATE public.runs SET ended_at = clock_timestamp() WHERE id = %s", (row[0],))


@app.job_type(queue="default", backoff=FAST)
def record(ctx: JobContext, payload: Any) -> None:
    _record(ctx, payload)


@app.job_type(name="solo_record", queue="solo", max_attempts=None, backoff=FAST)
def solo_record(ctx: JobContext, payload: Any) -> None:
    _record(ctx, payload)


@app.job_type(queue="default", max_attempts=3, backoff=FAST)
def crash(ctx: JobContext, payload: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@app.job_type(queue="default", max_attempts=2, backoff=FAST, timeout=1.0)
def hang(ctx: JobContext, payload: Any) -> None:
    time.sleep(float(payload.get("sleep", 3600)))


@app.job_type(queue="default", dedup=True)
def dedup(ctx: JobContext, payload: Any) -> None:
    pass


@app.job_type(queue="batch", batch_size=10)
def batched(ctx: JobContext, payloads: list[Any]) -> None:
    conn = ctx.conn
    conn.execute(
        "INSERT INTO public.runs (job_key, pid, ended_at)"
        " SELECT unnest(%s::text[]), %s, clock_timestamp()",
        ([f"batch:{len(payloads)}:{p['key']}" for p in payloads], os.getpid()),
    )


# A minute's backoff with no jitter: a failed job's run_at tells its own attempt's delay.
MINUTE = Backoff(base=60.0, factor=2.0, cap=3600.0, jitter=0.0)


@app.job_type(queue="picky", batch_size=10, max_attempts=2, backoff=MINUTE)
def picky(ctx: JobContext, payloads: list[Any]) -> Failures | Any:
    """Records every payload, and fails the ones that ask for it (``fail``: a message,
    ``exc``: an exception), or returns ``payloads[0]["return"]`` when that is given."""
    ctx.conn.execute(
        "INSERT INTO public.runs (job_key, pid, ended_at)"
        " SELECT unnest(%s::text[]), %s, clock_timestamp()",
        ([p["key"] for p in payloads], os.getpid()),
    )
    if "return" in payloads[0]:
        return payloads[0]["return"]
    failures: dict[int, str | BaseException] = {}
    for position, payload in enumerate(payloads):
        if "fail" in payload:
            failures[position] = f"{payload['key']}: {payload['fail']}"
        elif "exc" in payload:
            failures[position] = LookupError(f"{payload['key']}: {payload['exc']}")
    return failures


def _strict_decode(payload: Any) -> Any:
    if not isinstance(payload, dict) or "key" not in payload:
        raise ValueError(f"a strict job needs an object with a 'key', got {payload!r}")
    return payload


@app.job_type(queue="default", decode=_strict_decode, max_attempts=1)
def strict(ctx: JobContext, payload: Any) -> None:
    pass
