"""What the Prometheus instrumentation costs the queue: the same no-op jobs drained by a
supervisor and its one worker process, in three modes, interleaved in one run.

    python bench/metrics.py [--jobs 5000] [--repeat 3]

1. ``off``: the workers' run counting replaced by a no-op (the queue as it was before metrics):
   the baseline;
2. ``memory``: as every worker runs by default, counting in memory, nothing served;
3. ``scraped``: as ``indexpub worker --metrics-port`` runs: multiprocess mode (each run's counts
   written to a memory-mapped file), the supervisor serving /metrics, scraped by this process
   every 0.2 s (five times the rate of the most eager Prometheus) with the queue state's reading
   kept 5 s, as shipped.

Each run starts a fresh supervisor process, waits until its worker waits, enqueues N jobs in one
commit and times until the table is empty (polled every 20 ms): start-up is not timed.
Reported: the median jobs/s of each mode, its ratio to ``off``, and the load average before and
after.
"""

# ruff: noqa: E402

from __future__ import annotations

import _paths

_paths.setup()

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("off", "memory", "scraped")
QUEUE = "bench"


def make_app() -> Any:
    from jobs import App, JobContext

    app = App(schema="metrics_bench")

    @app.job_type(queue=QUEUE, max_attempts=3)
    def noop(ctx: JobContext, payload: Any) -> None:
        pass

    return app


def worker_main(url: str, mode: str, port: int) -> int:
    """The supervisor process of one run (``--worker``)."""
    metrics_dir = None
    if mode == "scraped":
        from jobs.metrics import use_multiprocess_dir

        metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
        use_multiprocess_dir(Path(metrics_dir))
    import jobs.metrics

    if mode == "off":
        jobs.metrics.observe_run = lambda *args, **kwargs: None  # type: ignore[assignment]
        jobs.metrics.declare_run_series = lambda *args, **kwargs: None  # type: ignore[assignment]
    app = make_app()
    supervisor = app.supervisor(url, [QUEUE], poll_interval=0.05)
    if mode == "scraped":
        registry = jobs.metrics.exposition_registry(jobs.metrics.JobsCollector(app.store, url))
        jobs.metrics.start_http_server(registry, port)
    try:
        return supervisor.run()
    finally:
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def one_run(url: str, mode: str, jobs_count: int) -> float:
    """Start a supervisor, wait until its worker waits, enqueue N jobs in one commit and time
    until the table is empty (polled every 20 ms); jobs/s. Process start-up is not timed."""
    import httpx
    import psycopg
    from support.cargo_registry import free_port

    app = make_app()
    with psycopg.connect(url) as conn:
        app.migrate(conn)
        conn.execute("TRUNCATE metrics_bench.jobs")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE metrics_bench.jobs")
    port = free_port()
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        # One client for the run, as a Prometheus keeps its connection.
        with httpx.Client(timeout=2) as client:
            while not stop.wait(0.2):
                try:
                    client.get(f"http://127.0.0.1:{port}/metrics")
                    scrapes[0] += 1
                except httpx.HTTPError:
                    pass

    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", mode, "--url", url, "--port", str(port)]
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while not _count(conn, "metrics_bench.listeners"):
                assert time.monotonic() < deadline and worker.poll() is None, "no worker"
                time.sleep(0.02)
            scraper = threading.Thread(target=scrape, daemon=True)
            if mode == "scraped":
                scraper.start()
            payloads = [app.registry["noop"].job({"i": i}) for i in range(jobs_count)]
            with conn.transaction():
                app.enqueue_many(conn, payloads)
            started = time.monotonic()
            while _count(conn, "metrics_bench.jobs"):
                time.sleep(0.02)
            took = time.monotonic() - started
    finally:
        stop.set()
        worker.terminate()
        worker.wait(30)
    if mode == "scraped":
        assert scrapes[0] > 0, "never scraped"
    return jobs_count / took


def _count(conn: Any, table: str) -> int:
    query = {
        "metrics_bench.jobs": "SELECT count(*) FROM metrics_bench.jobs",
        "metrics_bench.listeners": "SELECT count(*) FROM metrics_bench.listeners",
    }[table]
    row = conn.execute(query).fetchone()
    return int(row[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.url, args.worker, args.port)
    from support.embedded_servers import throwaway_server

    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with throwaway_server("indexpub-bench-metrics-", durable=True) as (url, _):
        for repeat in range(args.repeat):
            for mode in MODES:
                rate = one_run(url, mode, args.jobs)
                rates[mode].append(rate)
                print(f"run {repeat + 1} {mode}: {rate:,.0f} jobs/s", file=sys.stderr)
    load_after = os.getloadavg()
    base = statistics.median(rates["off"])
    print(f"{args.jobs:,} no-op jobs, {args.repeat} runs each, interleaved")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| mode | jobs/s (median) | runs | ratio to off |")
    print("| --- | --- | --- | --- |")
    for mode in MODES:
        median = statistics.median(rates[mode])
        runs = ", ".join(f"{r:,.0f}" for r in rates[mode])
        print(f"| {mode} | {median:,.0f} | {runs} | {median / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
