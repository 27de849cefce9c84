"""jobs.metrics: the queue's state read from the real table, and the workers' run counts."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.healthapp import (
    app,
    blocking,
    doomed,
    fine,
    release,
    reset_blocking,
    started,
    stubborn,
)

from jobs.metrics import JobsCollector
from jobs.store import STATES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(collector: JobsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the collector gives, as text through prometheus_client's parser."""
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[Any, float]:
    return {
        (labels["queue"], labels["job_type"], labels["state"]): value
        for (name, pairs) in samples
        if name == "jobs_queue_jobs"
        for labels in [dict(pairs)]
        for value in [samples[(name, pairs)]]
    }


def migrated(url: str) -> None:
    with psycopg.connect(url) as conn:
        app.migrate(conn)


def enqueue(url: str, *jobs: Any) -> None:
    with psycopg.connect(url) as conn:
        app.enqueue_many(conn, list(jobs))


def table_counts(url: str) -> dict[tuple[str, str, str], int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {(s.queue, s.job_type, s.state): s.count for s in app.store.stats(conn)}


def test_the_counts_match_the_table_and_drop_to_zero_when_drained(database_url: str) -> None:
    migrated(database_url)
    collector = JobsCollector(app.store, database_url, interval=0)
    # Empty: every registered type in every state, at zero.
    first = scrape(collector)
    assert first[("jobs_metrics_database_up", ())] == 1
    assert counts(first) == {
        (t.queue, t.name, state): 0 for t in app.registry.types.values() for state in STATES
    }
    # Ready, scheduled, failing and dead jobs.
    enqueue(database_url, fine.job({"n": 1}), fine.job({"n": 2}), fine.job({"n": 3}, delay=600))
    enqueue(database_url, stubborn.job({}), doomed.job({}))
    app.worker(database_url, "work", drain=True).run()
    enqueue(database_url, fine.job({"n": 4}), fine.job({"n": 5}))
    found = counts(scrape(collector))
    table = table_counts(database_url)
    assert table == {
        ("work", "fine", "ready"): 2,
        ("work", "fine", "scheduled"): 1,
        ("work", "stubborn", "failing"): 1,
        ("work", "doomed", "dead"): 1,
    }
    assert {key: value for key, value in found.items() if value} == table
    ages = scrape(collector)
    age = ages[("jobs_queue_oldest_ready_age_seconds", (("queue", "work"),))]
    assert 0 < age < 60
    assert ages[("jobs_queue_oldest_ready_age_seconds", (("queue", "solo"),))] == 0
    # Drained (the scheduled, failing and dead jobs deleted too): every state back to zero, the
    # series still there.
    app.worker(database_url, "work", drain=True).run()
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM health_jobs.jobs")
    drained = scrape(collector)
    assert set(counts(drained)) == set(found)
    assert not any(counts(drained).values())
    assert drained[("jobs_queue_oldest_ready_age_seconds", (("queue", "work"),))] == 0
    collector.close()


def test_scrapes_within_the_interval_share_one_reading(database_url: str) -> None:
    migrated(database_url)
    clock = Clock()
    collector = JobsCollector(app.store, database_url, interval=5.0, clock=clock)
    key = ("work", "fine", "ready")
    assert counts(scrape(collector))[key] == 0
    enqueue(database_url, fine.job({"n": 1}))
    clock.now += 4.9
    # The table changed, but the reading is younger than the interval: the same sample.
    assert counts(scrape(collector))[key] == 0
    clock.now += 0.2
    assert counts(scrape(collector))[key] == 1
    collector.close()


def test_a_database_that_cannot_be_reached_is_reported_not_raised(database_url: str) -> None:
    collector = JobsCollector(app.store, "postgresql://127.0.0.1:1/none", interval=0)
    samples = scrape(collector)
    assert samples == {("jobs_metrics_database_up", ()): 0}


def test_the_lock_holder_is_the_process_running_the_single_consumer_queue(
    database_url: str,
) -> None:
    migrated(database_url)
    collector = JobsCollector(app.store, database_url, interval=0)
    assert scrape(collector)[("jobs_consumer_lock_held", (("queue", "solo"),))] == 0
    reset_blocking()
    enqueue(database_url, blocking.job({}))
    worker = app.worker(database_url, "solo", name="jobs worker solo#0 pid 4242 on testhost")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(30)
        samples = scrape(collector)
        assert samples[("jobs_consumer_lock_held", (("queue", "solo"),))] == 1
        holders = [
            dict(labels)
            for name, labels in samples
            if name == "jobs_consumer_lock_holder_since_timestamp_seconds"
        ]
        assert holders == [{"queue": "solo", "host": "testhost", "pid": "4242"}]
        assert counts(samples)[("solo", "blocking", "running")] == 1
    finally:
        worker.stop()
        release.set()
        thread.join(30)
    # The lock goes with the worker's session, whose server process ends a moment after the
    # worker has closed its connection.
    deadline = time.monotonic() + 10
    while scrape(collector)[("jobs_consumer_lock_held", (("queue", "solo"),))] != 0:
        assert time.monotonic() < deadline, "the stopped worker's lock is still held"
        time.sleep(0.05)
    collector.close()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_worker_counts_its_runs_by_outcome(database_url: str) -> None:
    migrated(database_url)
    before = {
        outcome: value("jobs_outcomes_total", queue="work", job_type=name, outcome=outcome)
        for name, outcome in [("fine", "done"), ("stubborn", "failed"), ("doomed", "dead")]
    }
    runs = value("jobs_run_duration_seconds_count", queue="work", job_type="fine")
    enqueue(database_url, fine.job({"n": 1}), fine.job({"n": 2}), stubborn.job({}), doomed.job({}))
    app.worker(database_url, "work", drain=True).run()
    assert value("jobs_outcomes_total", queue="work", job_type="fine", outcome="done") == (
        before["done"] + 2
    )
    assert value("jobs_outcomes_total", queue="work", job_type="stubborn", outcome="failed") == (
        before["failed"] + 1
    )
    assert value("jobs_outcomes_total", queue="work", job_type="doomed", outcome="dead") == (
        before["dead"] + 1
    )
    assert value("jobs_run_duration_seconds_count", queue="work", job_type="fine") == runs + 2
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM health_jobs.jobs")
