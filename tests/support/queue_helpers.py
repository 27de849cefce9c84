"""Shared pieces of the queue tests: a migrated connection, worker processes, polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from support.jobapp import RUNS_TABLE, app

TESTS = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def setup_database(url: str) -> None:
    with psycopg.connect(url) as conn:
        app.migrate(conn)
        conn.execute(RUNS_TABLE)


def start_worker(
    url: str, *args: str, module: str = "support.run_worker"
) -> subprocess.Popen[bytes]:
    """A real supervisor process, in its own process group so tests can signal the whole tree;
    ``module``: the one that runs it (the test job application's by default)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, url, *args],
        cwd=TESTS,  # -m puts the working directory on sys.path: tests/, where support is
        start_new_session=True,
        stderr=subprocess.PIPE,
    )


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def wait_for(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    end = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
        value = check()
    return value


def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def enqueue(url: str, job_type: str, payload: Any, **options: Any) -> int:
    with psycopg.connect(url) as conn:
        return app.enqueue(conn, app.registry[job_type].job(payload, **options)).id


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if process.poll() is None:
        os.killpg(process.pid, 15)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        return process.wait()
