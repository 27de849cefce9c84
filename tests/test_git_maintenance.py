"""The clone's and the remote's maintenance runs beside the publishes, never in their way:
publishes land while the background repack runs, a failure is logged, a stop leaves no git
behind.

To make the repack and the publishes interleave at many points, the test stops the repack's
process group (SIGSTOP) and lets it go on for a moment between publishes: real git, paused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from support.git import git
from support.index_helpers import Registry, fixture_entry
from support.queue_helpers import stop, wait_for
from test_git_index import crate_path, fast_import_crates
from test_index_crashes import start_index_worker

from indexpub.gitindex.direct_publish import LOCAL_PUSH_ENV
from indexpub.gitindex.index import MAINTENANCE_EVERY_ENV, GitIndex, init_index
from indexpub.gitindex.maintenance import BackgroundMaintenance

DL = "https://dl.example/crates"


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCAL_PUSH_ENV, raising=False)


def processes_naming(*paths: Path) -> list[str]:
    """The command lines of the live processes that name any of ``paths``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(p) in cmdline for p in paths):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def running(maintenance: BackgroundMaintenance | None) -> int | None:
    """The process group of a background repack that has not exited yet."""
    proc = None if maintenance is None else maintenance._proc
    if proc is None or proc.poll() is not None:
        return None
    return proc.pid


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def test_publishes_land_while_the_clone_and_the_remote_are_repacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAINTENANCE_EVERY_ENV, "6")
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None)
    fast_import_crates(remote, "master", 2000)
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=30)
    # Every gc --auto of the clone acts (a full repack by reachability), which must never meet
    # a publish (the remote's stays quick, so that the clone's repack still runs when push
    # returns).
    git(f"--git-dir={index.path}", "config", "gc.autoPackLimit", "1")
    published: dict[str, str] = {}
    during = {"remote": 0, "clone": 0}
    for n in range(60):
        groups = {
            "remote": running(index._remote_maintenance),
            "clone": running(index._clone_maintenance),
        }
        for pgid in groups.values():
            if pgid is not None:
                # Let the repack go on a little, then hold it where it is for this publish.
                signal_group(pgid, signal.SIGCONT)
                time.sleep(0.003 * (n % 4))
                signal_group(pgid, signal.SIGSTOP)
        tip = index.tip()
        assert tip is not None
        path = crate_path(f"mx{n:04d}")
        index.push(index.commit_file(tip, path, f"{n}\n".encode(), f"Create {path}"))
        assert index.last_push_mode == "direct"
        published[path] = f"{n}\n"
        for where in during:
            maintenance = (
                index._remote_maintenance if where == "remote" else index._clone_maintenance
            )
            during[where] += running(maintenance) is not None
    for maintenance in (index._remote_maintenance, index._clone_maintenance):
        pgid = running(maintenance)
        if pgid is not None:
            signal_group(pgid, signal.SIGCONT)
    # Publishes were made while each repack ran: none waited for it.
    assert during["remote"] >= 5 and during["clone"] >= 5, during
    check_published(index, remote, published, tmp_path / "work")


def check_published(index: GitIndex, remote: Path, published: dict[str, str], work: Path) -> None:
    """Nothing a repack did lost an object of a publish, and the packs are few again."""
    index.finish_maintenance()
    assert index._clone_maintenance.failed == 0
    git(f"--git-dir={remote}", "fsck", "--connectivity-only", "--no-dangling")
    git(f"--git-dir={index.path}", "fsck", "--connectivity-only", "--no-dangling")
    git("clone", "--quiet", str(remote), str(work))
    for path, content in published.items():
        assert (work / path).read_text() == content, path
    # The one-pack-per-publish pile is gone.
    assert len(list((remote / "objects" / "pack").glob("*.pack"))) < len(published) // 2


def test_publishes_go_on_while_slowed_repacks_run_freely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repacks progress between any two steps of a publish (between its pack write and
    its ref update too), slowed down so that each spans several publishes."""
    monkeypatch.setenv(MAINTENANCE_EVERY_ENV, "4")
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None)
    fast_import_crates(remote, "master", 2000)
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=30)
    for repo in (remote, index.path):
        git(f"--git-dir={repo}", "config", "gc.autoPackLimit", "1")
    done = threading.Event()

    def slow_down() -> None:
        while not done.is_set():
            groups = [running(index._remote_maintenance), running(index._clone_maintenance)]
            for pgid in groups:
                if pgid is not None:
                    signal_group(pgid, signal.SIGCONT)
            time.sleep(0.002)
            for pgid in groups:
                if pgid is not None:
                    signal_group(pgid, signal.SIGSTOP)
            time.sleep(0.004)
        for pgid in (running(index._remote_maintenance), running(index._clone_maintenance)):
            if pgid is not None:
                signal_group(pgid, signal.SIGCONT)

    thread = threading.Thread(target=slow_down)
    thread.start()
    published: dict[str, str] = {}
    try:
        for n in range(120):
            tip = index.tip()
            assert tip is not None
            path = crate_path(f"fr{n:04d}")
            index.push(index.commit_file(tip, path, f"{n}\n".encode(), f"Create {path}"))
            published[path] = f"{n}\n"
    finally:
        done.set()
        thread.join()
    assert index._clone_maintenance.started >= 3 and index._remote_maintenance is not None
    assert index._remote_maintenance.started >= 3
    check_published(index, remote, published, tmp_path / "work")


def test_a_failing_maintenance_is_logged_and_publishes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MAINTENANCE_EVERY_ENV, "2")
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None)
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=30)
    for repo in (remote, index.path):
        # gc refuses to run at all with the first, the repack with the second.
        git(f"--git-dir={repo}", "config", "gc.pruneExpire", "not-a-date")
        git(f"--git-dir={repo}", "config", "repack.packKeptObjects", "not-a-bool")
    caplog.set_level(logging.WARNING, logger="indexpub.gitindex.maintenance")
    for n in range(7):
        tip = index.tip()
        assert tip is not None
        commit = index.commit_file(tip, crate_path(f"fail{n}"), b"x\n", "c")
        index.push(commit)
        assert git(f"--git-dir={remote}", "rev-parse", "refs/heads/master").strip() == commit
    index.finish_maintenance()
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    for where in (f"the remote {remote}", f"the clone {index.path}"):
        for what, why in (("git gc", "gc.pruneexpire"), ("git repack", "repack.packkeptobjects")):
            mine = [m for m in failures if f"maintenance of {where} failed: {what}" in m]
            assert mine, failures
            assert why in mine[0] and "\n" not in mine[0] and len(mine[0]) < 1000, mine[0]


CRATES = [("q", "0.1.0"), ("xy", "0.1.0"), ("abc", "0.1.0"), ("plain", "0.1.0")]


def git_repack_of(repo: Path) -> int | None:
    """The pid of a ``git repack`` running in ``repo``, if there is one."""
    for line in processes_naming(repo):
        pid, _, cmdline = line.partition(": ")
        if cmdline.startswith("git ") and " repack " in cmdline:
            return int(pid)
    return None


def test_a_worker_stopped_during_maintenance_leaves_no_git_behind(
    reg: Registry, tmp_path: Path
) -> None:
    # Loose objects, which the geometric repack packs: it takes long enough to be seen. (gc
    # --auto would pack them first, in the publish's path: off here.)
    source = tmp_path / "source.git"
    init_index(source, DL, None)
    fast_import_crates(source, "master", 4000)
    (pack,) = (source / "objects" / "pack").glob("*.pack")
    git(f"--git-dir={reg.remote}", "unpack-objects", "-q", input=pack.read_bytes(), text=False)
    git(f"--git-dir={reg.remote}", "config", "gc.auto", "0")
    worker = start_index_worker(reg, **{MAINTENANCE_EVERY_ENV: "2"})
    try:
        for name, version in CRATES[:2]:
            reg.publish(fixture_entry(name, version))
            wait_for(lambda: reg.pending_jobs() == 0, timeout=30, interval=0.05)
        # The second direct publish started the remote's repack: hold it there.
        pid = wait_for(lambda: git_repack_of(reg.remote), timeout=20, interval=0.005)
        os.kill(pid, signal.SIGSTOP)
        # Publishes land meanwhile.
        for name, version in CRATES[2:]:
            reg.publish(fixture_entry(name, version))
        wait_for(lambda: reg.pending_jobs() == 0, timeout=20, interval=0.05)
        assert git_repack_of(reg.remote) == pid
    finally:
        stop(worker, timeout=15)
    assert worker.returncode == 0
    # The stop took the repack with it, and every git of the repositories.
    wait_for(lambda: not processes_naming(reg.remote, reg.data), timeout=5)
    git(f"--git-dir={reg.remote}", "fsck", "--connectivity-only", "--no-dangling")
    for name, _ in CRATES:
        assert reg.remote_file(name) == reg.expected_file(name)
