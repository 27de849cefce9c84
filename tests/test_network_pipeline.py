"""The whole index pipeline against network remotes: smart HTTPS (git http-backend behind a
server that wants a token for pushes, a CA of the test's own) and SSH (OpenSSH's sshd, a deploy
key, the host key pinned). Publish, yank, another writer's push, the remote down and back, the
worker SIGKILLed at each step, and a token rotated under a running worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.git import git
from support.index_helpers import Registry, fixture_entry
from support.net_remotes import NetRemote, clear_git_settings, serve_remote
from support.queue_helpers import wait_for
from support.sshd import unavailable

from indexpub import config
from indexpub.pipeline import jobs
from indexpub.pipeline.faults import ENV as CRASH_ENV
from indexpub.registry import store
from indexpub.registry.queue import INDEX_QUEUE, SPARSE_QUEUE, app

SSHD_MISSING = unavailable()


def kinds() -> list[object]:
    ssh = pytest.param(
        "ssh", marks=pytest.mark.skipif(SSHD_MISSING is not None, reason=str(SSHD_MISSING))
    )
    return ["https", ssh]


@pytest.fixture(params=kinds())
def net(
    request: pytest.FixtureRequest, reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NetRemote]:
    """``reg``'s bare remote served over the network; the worker settings for it are in this
    process's environment (for in-process drains) and in ``net.env`` (for worker processes)."""
    clear_git_settings(monkeypatch)
    with serve_remote(request.param, reg.remote, tmp_path / "net") as remote:
        for var, value in remote.env.items():
            monkeypatch.setenv(var, value)
        yield remote


def drain(reg: Registry, url: str) -> int:
    """Run the git and sparse queues in this process, publishing to ``url``, until nothing is
    ready. The GitIndex stays open from one drain to the next, as in a running worker."""
    clone = config.clone_path(reg.data, url)
    if (jobs._IndexTarget.remote_url, jobs._IndexTarget.clone_path) != (url, clone):
        jobs.configure_index(url, clone, reg.sparse)
    ran = 0
    for queue in (INDEX_QUEUE, SPARSE_QUEUE):
        worker = app.worker(reg.url, queue, drain=True)
        worker.run()
        ran += worker.jobs_run
    return ran


def index_jobs(reg: Registry) -> list[tuple[int, bool, str | None]]:
    with psycopg.connect(reg.url) as conn:
        rows = conn.execute(
            "SELECT attempts, dead, last_error FROM indexpub_jobs.jobs WHERE queue = 'index'"
        ).fetchall()
    return [(int(a), bool(d), e) for a, d, e in rows]


def retry_now(reg: Registry) -> None:
    with psycopg.connect(reg.url) as conn:
        conn.execute("UPDATE indexpub_jobs.jobs SET run_at = now()")


def test_publish_yank_and_another_writers_push_over_the_network(
    net: NetRemote, reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q, xy = fixture_entry("q", "0.1.0"), fixture_entry("xy", "0.1.0")
    reg.publish(q, xy)
    drain(reg, net.url)
    assert reg.pending_jobs() == 0
    for name in ("q", "xy"):
        assert reg.remote_file(name) == reg.expected_file(name)
    assert jobs._IndexTarget.index is not None
    assert jobs._IndexTarget.index.last_push_mode == "git"  # never the local direct publish

    with reg.connect() as conn:
        store.yank(conn, "q", "0.1.0")
    drain(reg, net.url)
    assert reg.remote_file("q") == q.with_yanked(True).to_line() + "\n"

    # Another writer pushes (on the server's own disk); our clone's tip is stale now.
    other = tmp_path / "other"
    git("clone", "-q", str(reg.remote), str(other))
    git("config", "user.email", "ops@example.org", cwd=other)
    git("config", "user.name", "ops", cwd=other)
    config_json = other / "config.json"
    config_json.write_text(config_json.read_text().replace("}", ', "auth-required": false}', 1))
    git("commit", "-qam", "Edit config.json", cwd=other)
    git("push", "-q", "origin", "HEAD", cwd=other)

    reg.publish(fixture_entry("abc", "0.1.0"))
    with caplog.at_level(logging.INFO, logger="indexpub.pipeline.git_sync"):
        drain(reg, net.url)
    assert "push rejected (the remote moved); fetching and rebuilding" in caplog.text
    assert reg.messages() == [
        "Create crate `q`",
        "Create crate `xy`",
        "Update crate `q`",
        "Edit config.json",
        "Create crate `abc`",
    ]
    assert '"auth-required": false' in git(f"--git-dir={reg.remote}", "show", "HEAD:config.json")
    assert reg.remote_file("abc") == reg.expected_file("abc")


def test_the_remote_down_and_back(net: NetRemote, reg: Registry) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    drain(reg, net.url)
    net.stop()
    reg.publish(fixture_entry("xy", "0.1.0"))
    drain(reg, net.url)
    [(attempts, dead, error)] = index_jobs(reg)
    assert attempts == 1 and not dead and error is not None
    # curl: "Failed to connect to 127.0.0.1 port N"; ssh: "connect to host 127.0.0.1 port N".
    assert "GitError: git push failed" in error and "connect to" in error, error
    for token in net.tokens:
        assert token not in error
    assert reg.remote_file("xy") is None

    net.start()
    retry_now(reg)
    drain(reg, net.url)
    assert reg.pending_jobs() == 0
    assert reg.remote_file("xy") == reg.expected_file("xy")
    assert reg.messages() == ["Create crate `q`", "Create crate `xy`"]


# --------------------------------------------------------------------------- worker processes


def start_worker(reg: Registry, net: NetRemote, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    environment.update(
        INDEXPUB_DATABASE_URL=reg.url,
        INDEXPUB_INDEX_URL=net.url,
        INDEXPUB_DATA_DIR=str(reg.data),
        **net.env,
        **env,
    )
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "indexpub", "-v", "worker", "--poll-interval", "0.2"],
            env=environment,
            start_new_session=True,
            stderr=sink,
        )


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


CRATES = [("q", "0.1.0"), ("xy", "0.1.0"), ("abc", "0.1.0"), ("MixedCase", "0.1.0")]


@pytest.mark.parametrize(
    "point", ["sync-started", "sync-mid-batch", "sync-committed", "sync-pushed"]
)
def test_a_worker_killed_at_each_step_converges_over_the_network(
    net: NetRemote, reg: Registry, tmp_path: Path, point: str
) -> None:
    marker = tmp_path / "crashed"
    log = tmp_path / "worker.log"
    reg.publish(*(fixture_entry(n, v) for n, v in CRATES))
    worker = start_worker(reg, net, log, **{CRASH_ENV: f"{point}:{marker}"})
    try:
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)
    finally:
        stop(worker)
    said = log.read_text()
    assert marker.exists(), f"the crash point {point} never fired:\n{said}"
    assert "died before it finished" in said or "exited with -9" in said, said
    for name, _ in CRATES:
        assert reg.remote_file(name) == reg.expected_file(name)
    # Every crate was created exactly once: no duplicate commits, no lost ones.
    assert sorted(reg.messages()) == sorted(f"Create crate `{n}`" for n, _ in CRATES)


@pytest.mark.parametrize("net", ["https"], indirect=True)
def test_a_running_worker_picks_up_a_rotated_token_and_never_logs_one(
    net: NetRemote, reg: Registry, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(reg, net, log)
    try:
        reg.publish(fixture_entry("q", "0.1.0"))
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.05)
        assert reg.remote_file("q") == reg.expected_file("q")

        # The server rotates the token: the worker's is refused from now on.
        net.rotate_token()
        reg.publish(fixture_entry("xy", "0.1.0"))
        wait_for(lambda: "HTTP 401" in log.read_text(), timeout=60, interval=0.05)
        [(attempts, dead, error)] = index_jobs(reg)
        assert attempts >= 1 and not dead and error is not None
        assert "AuthRejected: git push refused: the index remote answered HTTP 401" in error
        assert reg.remote_file("xy") is None

        # The new token reaches the worker as a file; no restart.
        net.hand_out_token()
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.05)
        assert worker.poll() is None
        assert reg.remote_file("xy") == reg.expected_file("xy")
    finally:
        stop(worker)
    said = log.read_text()
    failures = [line for line in said.splitlines() if "failed: " in line]
    assert failures and all("HTTP 401 (authentication failed)" in line for line in failures)
    assert "(INDEXPUB_GIT_TOKEN_FILE): the token (or INDEXPUB_GIT_USERNAME) is wrong" in said
    for token in net.tokens:
        assert token not in said
    with psycopg.connect(reg.url) as conn:
        stored = conn.execute("SELECT string_agg(last_error, '') FROM indexpub_jobs.jobs")
        text = str(stored.fetchone())
    for token in net.tokens:
        assert token not in text
