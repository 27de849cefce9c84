"""A job application with periodic job types, for tests/test_queue_periodic.py.

Each periodic type has a queue of its own, so that a test runs the workers of exactly the
schedules it looks at. Every run writes a row into public.periodic_runs. Run from tests/ as
``python -m support.periodicapp URL [--queue Q]... [--concurrency N]``, it is a supervisor of
this application.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

import psycopg

from jobs import App, Backoff, Cron, Every, JobContext, Period

app = App(schema="jobs")
app.queue("solo_periodic", single_consumer=True)

FAST = Backoff(base=0.2, factor=2.0, cap=0.5, jitter=0.0)

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS public.periodic_runs (
    id bigserial PRIMARY KEY,
    job_type text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz,
    previous_start timestamptz,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


def setup_database(url: str) -> None:
    with psycopg.connect(url) as conn:
        app.migrate(conn)
        conn.execute(RUNS_TABLE)


def record(ctx: JobContext, period: Period) -> None:
    ctx.conn.execute(
        "INSERT INTO public.periodic_runs"
        " (job_type, period_start, period_end, previous_start, job_id, attempt, pid)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            ctx.job_type,
            period.start,
            period.end,
            period.previous_start,
            ctx.job_ids[0],
            ctx.attempts[0],
            os.getpid(),
        ),
    )


@app.job_type(queue="periodic", schedule=Every(seconds=1), decode=Period.from_payload, priority=10)
def tick(ctx: JobContext, period: Period) -> None:
    record(ctx, period)


@app.job_type(queue="periodic")
def busy(ctx: JobContext, payload: Any) -> None:
    """Ordinary work in the periodic queue: keeps its worker busy."""
    time.sleep(float(payload["sleep"]))


@app.job_type(queue="hourly", schedule=Every(hours=1), decode=Period.from_payload)
def hourly(ctx: JobContext, period: Period) -> None:
    record(ctx, period)


@app.job_type(
    queue="crashy", schedule="0 * * * *", decode=Period.from_payload, backoff=FAST, max_attempts=3
)
def crashy(ctx: JobContext, period: Period) -> None:
    """Hourly; its first attempt kills its worker process after recording itself."""
    record(ctx, period)
    ctx.conn.commit()
    if ctx.attempts[0] == 1:
        os.kill(os.getpid(), signal.SIGKILL)


@app.job_type(queue="cron", schedule=Cron("* * * * * */2"), decode=Period.from_payload)
def every_other_second(ctx: JobContext, period: Period) -> None:
    record(ctx, period)


@app.job_type(
    queue="grace", schedule=Cron("0 0 1 1 *", misfire_grace=60), decode=Period.from_payload
)
def new_year(ctx: JobContext, period: Period) -> None:
    record(ctx, period)


@app.job_type(queue="solo_periodic", schedule=Every(seconds=1), decode=Period.from_payload)
def solo_tick(ctx: JobContext, period: Period) -> None:
    record(ctx, period)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--queue", action="append")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(name)s %(message)s"
    )
    supervisor = app.supervisor(
        args.url, args.queue, concurrency=args.concurrency, poll_interval=args.poll_interval
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
