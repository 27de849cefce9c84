"""``indexpub squash`` and ``indexpub worker --squash-every``, against a real database, real
bare remotes and the real worker process."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.git import git
from support.index_helpers import Registry, fixture_entry
from support.ops_cli import status_screen
from support.queue_helpers import wait_for

from indexpub.cli import main
from indexpub.registry.queue import app

BRANCH = "refs/heads/master"


def invoke(reg: Registry, *args: str) -> Result:
    options = ["--database-url", reg.url, "--index-url", str(reg.remote), "--data-dir"]
    return CliRunner().invoke(main, [*options, str(reg.data), *args])


def env_of(reg: Registry) -> dict[str, str]:
    return {
        **os.environ,
        "INDEXPUB_DATABASE_URL": reg.url,
        "INDEXPUB_INDEX_URL": str(reg.remote),
        "INDEXPUB_DATA_DIR": str(reg.data),
    }


def start_worker(reg: Registry, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexpub", "-v", "worker", "--poll-interval", "0.2", *args],
        env=env_of(reg),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def indexpub(reg: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexpub", *args],
        env=env_of(reg),
        capture_output=True,
        text=True,
        timeout=120,
    )


def commit_count(repo: Path) -> int:
    return int(git(f"--git-dir={repo}", "rev-list", "--count", BRANCH))


def test_squash_enqueues_one_job_and_a_second_request_joins_it(reg: Registry) -> None:
    first = invoke(reg, "squash")
    assert first.exit_code == 0, first.output
    match = re.search(r"enqueued squash_index job (\d+)", first.output)
    assert match is not None, first.output
    assert "no worker holds the index queue now" in first.output
    again = invoke(reg, "squash")
    assert again.exit_code == 0, again.output
    assert f"a squash is under way already: squash_index job {match[1]} (ready)" in again.output
    with reg.connect() as conn:
        assert [j.id for j in app.store.list_jobs(conn)] == [int(match[1])]


def test_squash_refuses_credentials_in_the_archive_url(reg: Registry) -> None:
    result = invoke(reg, "squash", "--archive-url", "https://me:s3cret-token@git.example/a.git")
    assert result.exit_code == 2
    assert "INDEXPUB_GIT_TOKEN" in result.output and "s3cret-token" not in result.output
    with reg.connect() as conn:
        assert app.store.list_jobs(conn) == []


def test_squash_wait_follows_the_job_and_the_archive_chain(reg: Registry, tmp_path: Path) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    worker = start_worker(reg, tmp_path / "worker.log")
    try:
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)
        assert commit_count(reg.remote) == 2
        done = indexpub(reg, "squash", "--wait")
        assert done.returncode == 0, done.stderr
        tip = git(f"--git-dir={reg.remote}", "rev-parse", BRANCH).strip()
        assert done.stdout.splitlines()[-1] == f"done: the index branch master is at {tip}"
        assert commit_count(reg.remote) == 1

        reg.publish(fixture_entry("xy", "0.1.0"))
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)
        archive = tmp_path / "archive.git"
        git("init", "--bare", "-q", str(archive))
        done = indexpub(reg, "squash", "--wait", "--archive-url", str(archive))
        assert done.returncode == 0, done.stderr
        assert "enqueued archive_index job" in done.stdout
        tip = git(f"--git-dir={reg.remote}", "rev-parse", BRANCH).strip()
        assert done.stdout.splitlines()[-1] == f"done: the index branch master is at {tip}"
        assert commit_count(reg.remote) == 1
        assert len(git(f"--git-dir={archive}", "for-each-ref").splitlines()) == 1
    finally:
        stop(worker)


def test_status_shows_the_last_verify_and_the_last_squash(reg: Registry, tmp_path: Path) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()

    def shown() -> dict[str, str]:
        return status_screen(reg)

    before = shown()
    assert before["last verify"].startswith("none recorded")
    assert before["last squash"] == "none (the branch was never squashed)"

    assert invoke(reg, "verify").exit_code == 0
    verified = shown()["last verify"]
    assert re.fullmatch(r"\S+ \S+ UTC, \d+ seconds ago, by command: clean \(1 files\)", verified)
    worker = start_worker(reg, tmp_path / "worker.log")
    try:
        assert indexpub(reg, "squash", "--wait").returncode == 0
    finally:
        stop(worker)
    tip = git(f"--git-dir={reg.remote}", "rev-parse", BRANCH).strip()
    squashed = shown()["last squash"]
    assert squashed.startswith(f"{tip[:12]}, ") and squashed.endswith(
        ": Collapse index into one commit"
    )


def test_squash_wait_gives_up_at_its_timeout_and_the_job_stays(reg: Registry) -> None:
    result = invoke(reg, "squash", "--wait", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "the squash is not done after 0.5 s; squash_index job" in result.output
    with reg.connect() as conn:
        assert [j.job_type for j in app.store.list_jobs(conn)] == ["squash_index"]


def test_squash_wait_says_it_is_still_waiting(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from indexpub.cli import squash

    monkeypatch.setattr(squash, "WAIT_LINE_EVERY", 0.3)
    result = invoke(reg, "squash", "--wait", "--timeout", "1.5")
    assert result.exit_code == 1
    waiting = re.findall(r"^squash: squash_index job \d+ ready, \d+ s$", result.output, re.M)
    assert len(waiting) >= 3, result.output


def test_worker_refuses_a_bad_squash_schedule(reg: Registry) -> None:
    result = invoke(reg, "worker", "--squash-every", "often")
    assert result.exit_code == 2
    assert "neither an interval" in result.output
    result = invoke(reg, "worker", "--squash-every", "61 * * * *")
    assert result.exit_code == 2 and "bad cron schedule" in result.output
    result = invoke(reg, "worker", "--squash-archive-url", "/tmp/a.git")
    assert result.exit_code == 2 and "--squash-archive-url needs --squash-every" in result.output


_SCHEDULED = re.compile(
    r"scheduled squash for the period from (\S+): (?:enqueued|joined the) squash_index job (\d+)"
)


def test_worker_squash_every_enqueues_one_squash_per_period(reg: Registry, tmp_path: Path) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    log = tmp_path / "worker.log"
    worker = start_worker(reg, log, "--squash-every", "2s")
    try:
        wait_for(lambda: len(_SCHEDULED.findall(log.read_text())) >= 3, timeout=30, interval=0.1)
        time.sleep(0.5)  # the last period's squash runs
    finally:
        stop(worker)
    text = log.read_text()
    periods = [
        (datetime.fromisoformat(p.replace("Z", "+00:00")), int(j))
        for p, j in _SCHEDULED.findall(text)
    ]
    starts = [start for start, _ in periods]
    assert len(set(starts)) == len(starts), text  # never two squashes for one period
    # Periods of 2 s from the epoch, in order; a loaded machine may skip one (the queue runs
    # the latest missed period once, not each), never repeat one.
    assert all(start.timestamp() % 2 == 0 for start in starts), text
    assert all((b - a).total_seconds() >= 2 for a, b in itertools.pairwise(starts)), text
    assert len({job for _, job in periods}) == len(periods), text
    # Each period's squash ran: the first squashed the index, the later ones found one commit.
    ran = text.count("squashed the index into ") + text.count("squash: nothing to do")
    assert ran >= len(periods) - 1 and text.count("squashed the index into ") == 1, text
    assert commit_count(reg.remote) == 1


@pytest.mark.parametrize("value", ["7d", "1w", "3600", "0 3 * * 0", "@weekly"])
def test_squash_schedules_read_intervals_and_cron(value: str) -> None:
    from indexpub.cli.squash import parse_squash_schedule
    from jobs import Cron, Every

    schedule = parse_squash_schedule(value)
    if value in ("7d", "1w"):
        assert schedule == Every(days=7)
    elif value == "3600":
        assert schedule == Every(hours=1)
    else:
        assert isinstance(schedule, Cron)
