"""Periodic jobs: schedules, one job per period across workers and restarts, misfires.

The schedules' arithmetic is tested on fixed times; everything else against a real PostgreSQL,
with workers in threads (to act at exact points) or in real supervisor processes (to kill them).
The job application is tests/support/periodicapp.py: one queue per periodic type.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from support.periodicapp import app, setup_database
from support.queue_helpers import scalar, start_worker, stop, wait_for

from jobs import App, Cron, Every, JobContext, JobStore, Period, Worker
from jobs.periodic import DuePeriod, Scheduler
from jobs.store import PeriodicEnqueued

UTC_NOON = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def url(database_url: str) -> str:
    setup_database(database_url)
    return database_url


def runs(url: str, job_type: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT period_start, period_end, previous_start, job_id, attempt, pid"
            " FROM public.periodic_runs WHERE job_type = %s ORDER BY id",
            (job_type,),
        )
        assert cur.description is not None
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def assert_one_run_per_period(found: list[dict[str, Any]]) -> None:
    """Each period ran once, in order, and each run's previous period is the one run before
    it: the chain of marks has no fork and no duplicate."""
    starts = [run["period_start"] for run in found]
    assert len(set(starts)) == len(starts), starts
    assert starts == sorted(starts)
    for before, after in itertools.pairwise(found):
        assert after["previous_start"] == before["period_start"]


class CountingStore(JobStore):
    """A store that counts the periodic statements its worker sends."""

    def __init__(self, application: App = app) -> None:
        super().__init__(application.registry, application.schema)
        self.period_statements = 0

    def enqueue_periods(
        self, conn: psycopg.Connection[Any], due: Any
    ) -> tuple[float, list[PeriodicEnqueued]]:
        self.period_statements += 1
        return super().enqueue_periods(conn, due)


@contextlib.contextmanager
def running(
    url: str,
    queue: str,
    *,
    application: App = app,
    store: JobStore | None = None,
    poll_interval: float = 1.0,
) -> Iterator[Worker]:
    worker = Worker(
        application.registry,
        store or JobStore(application.registry, application.schema),
        url,
        queue,
        poll_interval=poll_interval,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()


def drain(url: str, queue: str, application: App = app) -> Worker:
    worker = application.worker(url, queue, drain=True)
    worker.run()
    return worker


# --- schedules ----------------------------------------------------------------------------------


def test_every_counts_its_periods_from_the_epoch_in_utc() -> None:
    hourly = Every(hours=1)
    assert hourly.latest(UTC_NOON) == UTC_NOON
    assert hourly.latest(UTC_NOON - timedelta(microseconds=1)) == UTC_NOON - timedelta(hours=1)
    assert hourly.following(UTC_NOON) == UTC_NOON + timedelta(hours=1)
    quarter = Every(minutes=15)
    at = datetime(2026, 12, 5, 12, 44, 59, 999999, tzinfo=UTC)
    assert quarter.latest(at) == datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
    assert Every(days=1).latest(at) == datetime(2026, 12, 5, tzinfo=UTC)
    # Another zone's clock names the same instants.
    paris = at.astimezone(ZoneInfo("Europe/Paris"))
    assert quarter.latest(paris) == datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
    assert Every(hours=1) == Every(minutes=60) == Every(seconds=3600)


def test_cron_periods_are_its_ticks_in_its_time_zone() -> None:
    hourly = Cron("0 * * * *")
    assert hourly.latest(UTC_NOON) == UTC_NOON
    assert hourly.latest(UTC_NOON - timedelta(microseconds=1)) == UTC_NOON - timedelta(hours=1)
    assert hourly.following(UTC_NOON) == UTC_NOON + timedelta(hours=1)
    # 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer.
    paris = Cron("0 3 * * *", timezone="Europe/Paris")
    assert paris.latest(UTC_NOON) == datetime(2026, 12, 5, 2, tzinfo=UTC)
    assert paris.latest(datetime(2026, 7, 1, 12, tzinfo=UTC)) == datetime(2026, 7, 1, 1, tzinfo=UTC)
    seconds = Cron("* * * * * */10")
    assert seconds.latest(UTC_NOON + timedelta(seconds=19.5)) == UTC_NOON + timedelta(seconds=10)
    assert seconds.following(UTC_NOON + timedelta(seconds=10)) == UTC_NOON + timedelta(seconds=20)
    # A schedule with a last tick: no period before its first, no end after its last.
    once = Cron("0 0 1 1 * 0 2030")
    assert once.latest(UTC_NOON) is None
    assert once.following(datetime(2030, 1, 1, tzinfo=UTC)) is None


BAD_SCHEDULES = [
    ("61 * * * *", ValueError, "bad cron schedule '61 \\* \\* \\* \\*'"),
    ("* * *", ValueError, "bad cron schedule"),
    ("every hour", ValueError, "bad cron schedule"),
    ("0 0 31 2 *", ValueError, "never fires"),
    ("H * * * *", ValueError, "bad cron schedule"),
    (timedelta(milliseconds=1500), ValueError, "whole number of seconds"),
    (timedelta(0), ValueError, "at least 1"),
    (3600, TypeError, "not int"),
    (None, None, None),  # no schedule: not periodic, and fine
]


@pytest.mark.parametrize(("schedule", "error", "message"), BAD_SCHEDULES)
def test_bad_schedules_are_refused_at_declaration_with_one_line(
    schedule: Any, error: type[Exception] | None, message: str | None
) -> None:
    def decorated(application: App) -> object:
        def report(ctx: JobContext, payload: Any) -> None:
            pass

        return application.job_type(schedule=schedule)(report)

    def declared(application: App) -> object:
        return application.declare("report", schedule=schedule)

    def made_periodic(application: App) -> object:
        declared = application.declare("report")
        return declared if schedule is None else application.periodic(declared, schedule)

    for declare in (decorated, declared, made_periodic):
        application = App()
        if error is None:
            declare(application)
            continue
        with pytest.raises(error, match=message) as raised:
            declare(application)
        assert str(raised.value).startswith("job type 'report': ")
        assert "\n" not in str(raised.value)
        assert application.registry.scheduled("default") == []


def test_bad_schedule_objects_are_refused_when_made() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: Every(), "at least 1"),
        (lambda: Every(seconds=0.5), "whole number of seconds"),
        (lambda: Every(hours=-1), "at least 1"),
        (lambda: Every(hours=1, misfire_grace=-5), "misfire_grace"),
        (lambda: Cron("* * * * *", timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda: Cron("* * * * *", misfire_grace=float("nan")), "misfire_grace"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            make()
        assert "\n" not in str(raised.value)


def test_a_type_has_one_schedule_and_keeps_it_when_implemented() -> None:
    application = App()
    declared = application.declare("report", queue="reports")
    scheduled = application.periodic(declared, "0 * * * *")
    assert scheduled.schedule == Cron("0 * * * *")
    with pytest.raises(ValueError, match="has a schedule already") as raised:
        application.periodic("report", Every(hours=1))
    assert "\n" not in str(raised.value)
    implemented = application.implement("report")(lambda ctx, payload: None)
    assert implemented.schedule == Cron("0 * * * *") and implemented.func is not None
    assert application.registry.scheduled("reports") == [implemented]
    assert application.registry.scheduled("default") == []
    # A schedule from configuration replaces the one before, and keeps the function.
    replaced = application.periodic("report", Every(minutes=30), replace=True)
    assert replaced.schedule == Every(minutes=30) and replaced.func is implemented.func


def test_the_scheduler_corrects_its_clock_from_the_database() -> None:
    """The worker plans on its estimate of the database's clock; the statement's answer tells
    it whether it tried the current period, and when to try next."""
    job_type = app.registry["hourly"]
    scheduler = Scheduler([job_type])
    assert scheduler.is_due()
    # It tried the current period: due again at the period's end, by the database's clock.
    planned = [DuePeriod(job_type, UTC_NOON, UTC_NOON + timedelta(hours=1))]
    database_now = (UTC_NOON + timedelta(minutes=59)).timestamp()
    received = time.monotonic()
    scheduler.record(database_now, received, planned)
    assert not scheduler.is_due()
    assert 59 < scheduler.seconds_until_due() <= 60
    assert abs(scheduler.database_now() - database_now) < 1
    # Its estimate was behind: the database was already in the next period. Due at once.
    scheduler.record(database_now + 120, time.monotonic(), planned)
    assert scheduler.seconds_until_due() < 0.05
    # Its estimate was ahead: the database refused a period that had not started. Due then.
    early = [DuePeriod(job_type, UTC_NOON + timedelta(hours=1), UTC_NOON + timedelta(hours=2))]
    scheduler.record(database_now, time.monotonic(), early)
    assert 59 < scheduler.seconds_until_due() <= 60
    assert scheduler.plan() == planned


# --- one job per period ---------------------------------------------------------------------


def test_racing_enqueuers_enqueue_a_period_once_and_never_an_older_one(url: str) -> None:
    """Eight connections enqueue the same period at the same moment: one job. The mark then
    refuses the period again, and any older one, whoever asks."""
    job_type = app.registry["hourly"]
    store = JobStore(app.registry, app.schema)
    current = Every(hours=1).latest(scalar(url, "SELECT now()"))
    due = [DuePeriod(job_type, current, current + timedelta(hours=1))]
    barrier = threading.Barrier(8)
    results: list[list[PeriodicEnqueued]] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                barrier.wait()
                results.append(store.enqueue_periods(conn, due)[1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    enqueued = [job for found in results for job in found]
    assert len(enqueued) == 1
    stamp = current.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert enqueued[0].payload == {
        "period_start": stamp,
        "period_end": (current + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "previous_start": None,
    }
    assert Period.from_payload(enqueued[0].payload) == Period(
        current, current + timedelta(hours=1), None
    )
    with psycopg.connect(url, autocommit=True) as conn:
        older = [DuePeriod(job_type, current - timedelta(hours=1), current)]
        assert store.enqueue_periods(conn, due)[1] == []
        assert store.enqueue_periods(conn, older)[1] == []
        [mark] = store.periods(conn)
    assert (mark.job_type, mark.period_start, mark.previous_start) == ("hourly", current, None)
    assert scalar(url, "SELECT count(*) FROM jobs.jobs") == 1


def test_the_database_refuses_a_period_that_is_not_current_by_its_clock(url: str) -> None:
    """A worker whose clock is off cannot enqueue a period early, nor a stale one late."""
    job_type = app.registry["hourly"]
    store = JobStore(app.registry, app.schema)
    with psycopg.connect(url, autocommit=True) as conn:
        database_now, _ = store.enqueue_periods(conn, [])
        current = Every(hours=1).latest(datetime.fromtimestamp(database_now, UTC))
        hour = timedelta(hours=1)
        for start in (current + hour, current - hour):
            assert store.enqueue_periods(conn, [DuePeriod(job_type, start, start + hour)])[1] == []
        assert store.periods(conn) == []
    assert abs(database_now - time.time()) < 5


def test_two_supervisors_run_each_period_once(url: str) -> None:
    """Two supervisors (hosts) of two workers each, on a schedule of one second: every period
    runs once."""
    args = ("--queue", "periodic", "--concurrency", "2")
    hosts = [start_worker(url, *args, module="support.periodicapp") for _ in range(2)]
    try:
        wait_for(lambda: len(runs(url, "tick")) >= 4, timeout=30)
    finally:
        for host in hosts:
            stop(host)
    found = runs(url, "tick")
    assert_one_run_per_period(found)
    assert all(run["period_end"] - run["period_start"] == timedelta(seconds=1) for run in found)
    assert all(run["attempt"] == 1 for run in found)
    # Both hosts' workers were running; which of them enqueued and ran each period is chance.
    assert scalar(url, "SELECT count(*) FROM jobs.jobs WHERE job_type = 'tick' AND dead") == 0


def test_an_idle_worker_wakes_for_the_next_period_not_for_its_poll(url: str) -> None:
    """A poll of a minute, a schedule of a second: the worker sleeps until each period starts."""
    with running(url, "periodic", poll_interval=60.0):
        wait_for(lambda: len(runs(url, "tick")) >= 3, timeout=10)
    found = runs(url, "tick")
    assert_one_run_per_period(found)
    with psycopg.connect(url, autocommit=True) as conn:
        lags = conn.execute(
            "SELECT at - period_start FROM public.periodic_runs ORDER BY id OFFSET 1"
        ).fetchall()
    # Each run follows its period's start closely (generous bound: a loaded shared machine).
    assert all(lag < timedelta(seconds=1) for (lag,) in lags), lags


def test_an_idle_worker_sends_no_periodic_statement_between_periods(url: str) -> None:
    """Between periods the schedule costs a clock comparison, not a query per poll."""
    store = CountingStore()
    with running(url, "hourly", store=store, poll_interval=0.05) as worker:
        wait_for(lambda: len(runs(url, "hourly")) == 1)
        time.sleep(1.5)  # about thirty polls
        assert worker.jobs_run == 1
    # The first loop's statement, and at most one more if an hour began during the test.
    assert store.period_statements in (1, 2)


def test_a_busy_worker_enqueues_periods_between_its_jobs(url: str) -> None:
    """A worker that always has a next job (claimed and locked in the last run's round trip)
    still enqueues each period between two runs; the periodic type's priority runs it first."""
    with psycopg.connect(url) as conn:
        app.enqueue_many(conn, [app.registry["busy"].job({"sleep": 0.05}) for _ in range(80)])
    with running(url, "periodic"):
        wait_for(lambda: len(runs(url, "tick")) >= 3, timeout=20)
        left = scalar(url, "SELECT count(*) FROM jobs.jobs WHERE job_type = 'busy'")
    assert left > 0, "the backlog ran out before three periods: the test proved nothing"
    assert_one_run_per_period(runs(url, "tick"))


def test_an_interval_schedule_runs_every_period_in_order(url: str) -> None:
    with running(url, "periodic"):
        wait_for(lambda: len(runs(url, "tick")) >= 3, timeout=10)
    found = runs(url, "tick")
    assert_one_run_per_period(found)
    assert found[0]["previous_start"] is None
    assert all(run["period_start"].microsecond == 0 for run in found)


def test_a_cron_schedule_runs_each_tick_once(url: str) -> None:
    with running(url, "cron"):
        wait_for(lambda: len(runs(url, "every_other_second")) >= 3, timeout=15)
    found = runs(url, "every_other_second")
    assert_one_run_per_period(found)
    assert all(run["period_start"].second % 2 == 0 for run in found)
    assert all(run["period_end"] - run["period_start"] == timedelta(seconds=2) for run in found)


# --- restarts and misfires --------------------------------------------------------------------


def _waiting(url: str, queue: str, exclude: Collection[int] = ()) -> set[int]:
    """The backends of the workers of ``queue`` that went to sleep (their listener rows)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM jobs.listeners WHERE queue = %s", (queue,))
        return {int(pid) for (pid,) in rows} - set(exclude)


def test_a_restart_mid_period_does_not_run_the_period_again(url: str) -> None:
    worker = start_worker(url, "--queue", "hourly", module="support.periodicapp")
    try:
        wait_for(lambda: len(runs(url, "hourly")) == 1, timeout=20)
        first = wait_for(lambda: _waiting(url, "hourly"))
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
    worker = start_worker(url, "--queue", "hourly", module="support.periodicapp")
    try:
        # Asleep: its first loop tried the current period, before its first claim.
        wait_for(lambda: _waiting(url, "hourly", exclude=first), timeout=20)
    finally:
        stop(worker)
    found = runs(url, "hourly")
    # One run (two only if an hour began in between, and then of two periods).
    assert_one_run_per_period(found)
    assert len(found) == 1 or found[1]["period_start"] - found[0]["period_start"] == timedelta(
        hours=1
    )
    assert scalar(url, "SELECT count(*) FROM jobs.jobs") == 0


def test_a_worker_killed_mid_job_retries_the_periods_job_and_enqueues_no_other(url: str) -> None:
    """The first attempt kills its worker; the supervisor's new worker finds the period done
    (its mark) and runs the same job again, as a second attempt."""
    worker = start_worker(url, "--queue", "crashy", module="support.periodicapp")
    try:
        wait_for(lambda: len(runs(url, "crashy")) >= 2, timeout=30)
        wait_for(lambda: scalar(url, "SELECT count(*) FROM jobs.jobs") == 0)
    finally:
        stop(worker)
    found = runs(url, "crashy")
    if found[-1]["period_start"] != found[0]["period_start"]:
        pytest.skip("an hour began during the test")  # pragma: no cover
    assert [(run["job_id"], run["attempt"]) for run in found] == [
        (found[0]["job_id"], 1),
        (found[0]["job_id"], 2),
    ]
    assert found[0]["pid"] != found[1]["pid"]


def test_after_downtime_the_latest_missed_period_runs_once(url: str) -> None:
    """Workers were down for five hours: the latest period runs once, when a worker comes back;
    the four before it are not made up, and the job learns what it missed from its payload."""
    with psycopg.connect(url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        current = Every(hours=1).latest(now)
        last_run = current - timedelta(hours=5)
        conn.execute(
            "INSERT INTO jobs.periodic (job_type, period_start) VALUES ('hourly', %s)",
            (last_run,),
        )
    drain(url, "hourly")
    drain(url, "hourly")  # a second worker after it finds nothing to do
    found = runs(url, "hourly")
    if len(found) == 2 and found[1]["period_start"] == current + timedelta(hours=1):
        found = found[:1]  # pragma: no cover - an hour began between the two workers
    assert [(run["period_start"], run["previous_start"]) for run in found] == [(current, last_run)]
    with psycopg.connect(url, autocommit=True) as conn:
        [mark] = JobStore(app.registry, app.schema).periods(conn)
    assert mark.previous_start == last_run


def test_a_period_later_than_its_misfire_grace_is_skipped(url: str) -> None:
    """A yearly schedule with a minute's grace, found long after New Year: nothing runs, and the
    mark stays where it was (no row: never enqueued)."""
    worker = drain(url, "grace")
    assert worker.jobs_run == 0
    assert runs(url, "new_year") == []
    with psycopg.connect(url, autocommit=True) as conn:
        assert JobStore(app.registry, app.schema).periods(conn) == []


# --- declared types and single consumers ------------------------------------------------------


def test_a_type_declared_with_a_schedule_runs_once_implemented(url: str) -> None:
    """The enqueuing side declares the periodic type; the worker's process implements it."""
    application = App(schema="jobs")
    reports = application.declare(
        "report", queue="reports", schedule="* * * * * *", decode=Period.from_payload
    )
    hourly = application.declare("hourly_report", queue="reports")
    application.periodic(hourly, Every(hours=1))
    with pytest.raises(ValueError, match="no function in this process: hourly_report, report"):
        application.worker(url, "reports")
    seen: list[tuple[str, Any]] = []

    @application.implement(reports)
    def report(ctx: JobContext, period: Period) -> None:
        seen.append(("report", period))

    @application.implement("hourly_report")
    def hourly_report(ctx: JobContext, payload: Any) -> None:
        seen.append(("hourly_report", payload))

    with running(url, "reports", application=application):
        wait_for(lambda: len([s for s in seen if s[0] == "report"]) >= 2, timeout=10)
    periods = [period for name, period in seen if name == "report"]
    assert all(isinstance(period, Period) for period in periods)
    assert periods[1].previous_start == periods[0].start
    assert periods[0].end == periods[0].start + timedelta(seconds=1)
    hourly_payloads = [payload for name, payload in seen if name == "hourly_report"]
    assert len(hourly_payloads) in (1, 2) and set(hourly_payloads[0]) == {
        "period_start",
        "period_end",
        "previous_start",
    }


def test_standby_workers_of_a_single_consumer_queue_do_not_enqueue_periods(url: str) -> None:
    """Only the active consumer enqueues periods; a standby starts when it takes over."""
    stores = [CountingStore(), CountingStore()]
    with running(url, "solo_periodic", store=stores[0]) as first:
        wait_for(lambda: len(runs(url, "solo_tick")) >= 1, timeout=10)
        with running(url, "solo_periodic", store=stores[1]):
            time.sleep(2.5)
            assert stores[1].period_statements == 0
            assert stores[0].period_statements >= 2
            first.stop()
            # The standby takes the lock once the active worker's session ends.
            wait_for(lambda: stores[1].period_statements >= 1, timeout=10)
            before = len(runs(url, "solo_tick"))
            wait_for(lambda: len(runs(url, "solo_tick")) > before, timeout=10)
    assert_one_run_per_period(runs(url, "solo_tick"))


def test_a_periodic_enqueue_notifies_a_waiting_worker_of_its_queue(url: str) -> None:
    """The periodic enqueue sends its NOTIFY itself, as every enqueue statement does, and only
    for a period it enqueued."""
    job_type = app.registry["hourly"]
    store = JobStore(app.registry, app.schema)
    current = Every(hours=1).latest(scalar(url, "SELECT now()"))
    due = [DuePeriod(job_type, current, current + timedelta(hours=1))]
    with (
        psycopg.connect(url, autocommit=True) as ears,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        ears.execute('LISTEN "jobs.jobs"')
        store.start_waiting(ears, "hourly")
        assert len(store.enqueue_periods(conn, due)[1]) == 1
        assert [n.payload for n in ears.notifies(timeout=0.5, stop_after=1)] == ["hourly"]
        assert store.enqueue_periods(conn, due)[1] == []  # already enqueued: nothing new
        assert [n.payload for n in ears.notifies(timeout=0.3)] == []
