"""INDEXPUB_GIT_TIMEOUT (``indexpub worker --git-timeout``): how long the worker lets a git
process run. A real worker with a timeout of 2 s against an HTTP remote that stalls every push
must fail the job with the timeout after about 2 s (the default, 60 s, would not), and leave no
git process behind; a value that is not a positive number stops the worker at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from support.git_http import GitHttpServer
from support.hung_remote import processes_mentioning
from support.index_helpers import Registry, fixture_entry
from support.net_remotes import clear_git_settings
from support.queue_helpers import stop, wait_for

TIMEOUT = 2.0
WORKER = [sys.executable, "-m", "indexpub", "worker", "--queue", "index"]


@pytest.fixture(autouse=True)
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_git_settings(monkeypatch)


def _last_error(reg: Registry) -> str | None:
    with psycopg.connect(reg.url) as conn:
        row = conn.execute(
            "SELECT last_error FROM indexpub_jobs.jobs WHERE queue = 'index'"
        ).fetchone()
    return None if row is None else row[0]


def test_the_worker_cuts_a_stalled_push_at_its_configured_git_timeout(
    reg: Registry, tmp_path: Path
) -> None:
    token = "tok-timeout-test-0001"
    with GitHttpServer(reg.remote.parent, tmp_path / "server", token=token, hang_push=True) as srv:
        url = srv.url(reg.remote.name)
        env = {
            **os.environ,
            "INDEXPUB_DATABASE_URL": reg.url,
            "INDEXPUB_INDEX_URL": url,
            "INDEXPUB_DATA_DIR": str(reg.data),
            "INDEXPUB_GIT_TOKEN": token,
            "INDEXPUB_GIT_TIMEOUT": f"{TIMEOUT:g}",
        }
        worker = subprocess.Popen(
            [*WORKER, "--poll-interval", "0.2", "--verify-every", "0"],
            env=env,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        try:
            # The worker's first job clones (fetches are served); only the push stalls.
            reg.publish(fixture_entry("plain", "0.1.0"))
            published = time.monotonic()
            error = wait_for(lambda: _last_error(reg), timeout=TIMEOUT + 25, interval=0.05)
            took = time.monotonic() - published
        finally:
            stop(worker, timeout=15)
            assert worker.stderr is not None
            log = worker.stderr.read().decode()
        assert f"git push timed out after {TIMEOUT:g} s" in error, (error, log)
        assert token not in error and token not in log
        print(f"git timeout {TIMEOUT:g} s: the job failed {took:.2f} s after the publish")
        assert TIMEOUT <= took < TIMEOUT + 20, took
        assert processes_mentioning(url) == []


@pytest.mark.parametrize("value", ["0", "-5", "abc", "inf", "1e999", "x" * 200, "600"])
def test_a_git_timeout_that_is_not_a_positive_number_stops_the_worker(
    reg: Registry, value: str
) -> None:
    done = subprocess.run(
        WORKER,
        env={**os.environ, "INDEXPUB_DATABASE_URL": reg.url, "INDEXPUB_GIT_TIMEOUT": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and len(errors[0]) < 200, done.stderr
    assert "INDEXPUB_GIT_TIMEOUT" in errors[0], errors
    if value == "600":
        assert "below the sync job's own timeout of 600 s" in errors[0], errors
    else:
        assert "must be a positive number of seconds" in errors[0], errors
