"""The ``indexpub`` CLI's queue commands against a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from indexpub.cli import main
from indexpub.registry.queue import app


def run(url: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def url(database_url: str) -> str:
    assert run(database_url, "migrate").strip() == (
        "applied migrations: indexpub 1, 2, 3, 4, 5; indexpub_jobs 1, 2, 3, 4, 5, 6"
    )
    assert run(database_url, "migrate").strip() == "up to date"
    return database_url


def insert(url: str, job_type: str, *, dead: bool = False, error: str | None = None) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO indexpub_jobs.jobs (queue, job_type, payload, dead, attempts, last_error)"
            " VALUES ('index', %s, '{}', %s, %s, %s) RETURNING id",
            (job_type, dead, 3 if dead else 0, error),
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_stats_list_retry_delete_purge(url: str) -> None:
    dead = insert(url, "sync_crate", dead=True, error="Traceback...\nRuntimeError: remote down")
    other_dead = insert(url, "sync_crate", dead=True, error="boom")
    ready = insert(url, "sync_crate")
    stats = json.loads(run(url, "jobs", "stats", "--json"))
    assert {(s["state"], s["count"]) for s in stats} == {("dead", 2), ("ready", 1)}
    listed = run(url, "jobs", "list", "--state", "dead")
    assert "last error: RuntimeError: remote down" in listed
    assert str(ready) not in listed.split()
    assert run(url, "jobs", "retry", str(dead)).strip() == "retried 1 job(s)"
    assert run(url, "jobs", "purge").strip() == "purged 1 dead job(s)"
    assert run(url, "jobs", "delete", str(ready)).strip() == "deleted 1 job(s)"
    remaining = json.loads(run(url, "jobs", "stats", "--json"))
    assert remaining == [{"queue": "index", "job_type": "sync_crate", "state": "ready", "count": 1}]
    assert other_dead not in {j.id for j in app.store.list_jobs(psycopg.connect(url))}


def test_worker_drain_runs_the_jobs_and_exits(url: str, tmp_path: Path) -> None:
    with psycopg.connect(url) as conn:
        app.enqueue_many(
            conn, [app.registry["sync_crate"].job({"name": f"c{i}"}) for i in range(3)]
        )
    data = ["--data-dir", str(tmp_path / "data")]
    done = subprocess.run(
        [sys.executable, "-m", "indexpub", *data, "--database-url", url, "worker", "--drain"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(run(url, "jobs", "stats", "--json")) == []


def test_bad_arguments_get_one_clear_line(url: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", url, "worker", "--queue", "nope"])
    assert result.exit_code == 2
    assert "unknown queue 'nope'" in result.output
    result = CliRunner().invoke(main, ["--database-url", url, "jobs", "retry"])
    assert result.exit_code == 2
    assert "name job ids, or pass --all-dead" in result.output
