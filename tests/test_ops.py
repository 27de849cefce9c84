"""``indexpub verify``, ``repair`` and ``rebuild`` on a real database and a real bare remote that
other writers push to, and ``indexpub check``'s reading of the last verify."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.git import git
from support.index_helpers import Registry, foreign_push
from support.ops_cli import cli as _cli
from support.ops_cli import common as _common
from support.ops_cli import entry as _entry
from support.ops_cli import env as _env
from support.ops_cli import ops as _ops
from support.ops_cli import ops_json as _ops_json

from indexpub import config
from indexpub.gitindex.index import GitIndex
from indexpub.pipeline.rebuild import rebuild
from indexpub.registry import runs, store
from indexpub.registry.queue import app

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- verify


def test_verify_is_clean_after_a_normal_sync(reg: Registry) -> None:
    reg.publish(_entry("alpha"), _entry("beta"), _entry("beta", "1.1.0"), _entry("Gamma-X"))
    with reg.connect() as conn:
        store.yank(conn, "beta", "1.0.0")
    reg.drain()

    done = _ops(reg, "verify")
    assert done.exit_code == 0, done.output
    tip = _tip(reg)
    (line,) = done.stdout.splitlines()
    assert line.startswith(
        f"clean: the 3 crate files at master at {tip[:12]} equal the database's 3 crates ("
    )
    report = _ops_json(reg, "verify")
    assert report["exit_code"] == 0
    assert {k: report[k] for k in ("state", "tip", "crates", "files", "other_files")} == {
        "state": "clean",
        "tip": tip,
        "crates": 3,
        "files": 3,
        "other_files": 1,  # config.json
    }
    assert report["drifted"] == [] and report["pending"] == []
    # Recorded, for indexpub check.
    with reg.connect() as conn:
        latest = runs.latest_verifies(conn)
    assert latest.last is not None and latest.last.id == report["run_id"]
    assert (latest.last.ran_by, latest.last.tip, latest.last.drifted_count) == ("command", tip, 0)
    # It read the remote in a clone of its own, not the worker's.
    verify_clone = config.verify_clone_path(reg.data, str(reg.remote))
    assert (
        git(f"--git-dir={verify_clone}", "rev-parse", "refs/remotes/origin/master").strip() == tip
    )
    assert verify_clone != reg.clone


def test_verify_names_every_kind_of_drift_a_foreign_push_makes(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(_entry("alpha"), _entry("alpha", "1.1.0"), _entry("beta"), _entry("gamma"))
    reg.publish(_entry("delta"))
    with reg.connect() as conn:
        store.yank(conn, "alpha", "1.0.0")
    reg.drain()

    def edit(tree: Path) -> None:
        # alpha: 1.0.0 unyanked, 1.1.0 gone, 9.9.9 added.
        alpha = tree / "al" / "ph" / "alpha"
        first = alpha.read_text().splitlines()[0].replace('"yanked":true', '"yanked":false')
        alpha.write_text(first + "\n" + _entry("alpha", "9.9.9").to_line() + "\n")
        (tree / "be" / "ta" / "beta").unlink()  # beta: missing
        gamma = tree / "ga" / "mm" / "gamma"  # gamma: its line's checksum changed
        gamma.write_text(gamma.read_text().replace("0" * 64, "1" * 64))
        (tree / "ze" / "ta").mkdir(parents=True)  # zeta: a file no crate has
        (tree / "ze" / "ta" / "zeta").write_text(_entry("zeta").to_line() + "\n")
        # Not crate files: never compared.
        config_json = tree / "config.json"
        config_json.write_text(config_json.read_text().replace('"dl"', '"api": "x", "dl"'))
        (tree / "README.md").write_text("an index\n")

    foreign_push(reg, tmp_path, edit, "Foreign edits")
    report = _ops_json(reg, "verify")
    assert report["exit_code"] == 1 and report["state"] == "drift"
    assert report["other_files"] == 2  # config.json and README.md
    assert [(d["name"], d["kind"], d["path"]) for d in report["drifted"]] == [
        ("alpha", "differs", "al/ph/alpha"),
        ("beta", "missing", "be/ta/beta"),
        ("gamma", "differs", "ga/mm/gamma"),
        ("zeta", "extra", "ze/ta/zeta"),
    ]
    versions = {d["name"]: d["versions"] for d in report["drifted"]}
    assert versions["alpha"] == {
        "missing": ["1.1.0"],
        "extra": ["9.9.9"],
        "changed": [{"version": "1.0.0", "how": "yanked in the database, not in the remote"}],
        "notes": [],
    }
    assert versions["beta"]["missing"] == ["1.0.0"]
    assert versions["gamma"]["changed"] == [{"version": "1.0.0", "how": "its line differs"}]
    assert versions["zeta"]["extra"] == ["1.0.0"]

    done = _ops(reg, "verify")
    assert done.exit_code == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"drift: 4 crates at master at {_tip(reg)[:12]} differ from")
    assert lines[1].split() == [
        "alpha",
        "differs",
        "al/ph/alpha",
        "differs:",
        "1.0.0:",
        "yanked",
        "in",
        "the",
        "database,",
        "not",
        "in",
        "the",
        "remote;",
        "1.1.0:",
        "missing",
        "from",
        "the",
        "remote;",
        "9.9.9:",
        "not",
        "in",
        "the",
        "database",
    ]
    assert "beta   missing  the remote has no file be/ta/beta" in lines[2]
    assert "zeta   extra    the remote has ze/ta/zeta, the database has no such crate" in lines[4]
    assert lines[-1] == "`indexpub repair` enqueues their sync jobs."
    with reg.connect() as conn:
        last = runs.latest_verifies(conn).last
    assert last is not None and last.drifted_count == 4
    assert [(d["name"], d["kind"]) for d in last.sample] == [
        ("alpha", "differs"),
        ("beta", "missing"),
        ("gamma", "differs"),
        ("zeta", "extra"),
    ]


def test_a_change_whose_sync_job_waits_is_pending_not_drift(reg: Registry) -> None:
    reg.publish(_entry("alpha"))
    reg.drain()
    reg.publish(_entry("alpha", "1.1.0"))  # its jobs wait: no worker runs

    report = _ops_json(reg, "verify")
    assert report["exit_code"] == 0 and report["state"] == "clean"
    assert report["pending"] == ["alpha"] and report["drifted"] == []

    # Without its job, the same difference is drift.
    with reg.connect() as conn:
        conn.execute("DELETE FROM indexpub_jobs.jobs")
    report = _ops_json(reg, "verify")
    assert report["exit_code"] == 1 and report["pending"] == []
    assert [(d["name"], d["versions"]["missing"]) for d in report["drifted"]] == [
        ("alpha", ["1.1.0"])
    ]


def test_verify_could_not_check_an_unreachable_remote_or_database(
    reg: Registry, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.git"
    done = _ops(reg, "verify", index=missing)
    assert done.exit_code == 2, done.output
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: verify could not check: the index remote cannot be used: ")
    assert str(missing) in line
    assert "Traceback" not in done.output
    with reg.connect() as conn:
        last = runs.latest_verifies(conn)
    assert last.last is not None and last.checked is None
    assert last.last.error is not None and last.last.tip is None
    # indexpub check says so.
    _, report = _check(reg, index=missing)
    (verify,) = [c for c in report["checks"] if (c["check"], c["target"]) == ("verify", "remote")]
    assert verify["state"] == "UNKNOWN"
    assert verify["detail"].startswith("the last verify, ")
    assert " could not check: " in verify["detail"]

    gone = "postgresql://nobody:secret@127.0.0.1:1/none"
    result = _cli("--data-dir", str(reg.data), "--database-url", gone, "verify", index=reg.remote)
    assert result.exit_code == 2
    assert "Error: verify could not check: cannot reach the database" in result.stderr
    assert "secret" not in result.output


# --------------------------------------------------------------------------- repair


def test_repair_enqueues_the_syncs_that_make_the_remote_converge(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(_entry("alpha"), _entry("beta"), _entry("gamma"))
    reg.drain()

    def edit(tree: Path) -> None:
        (tree / "al" / "ph" / "alpha").write_text("not what the database says\n")
        (tree / "be" / "ta" / "beta").unlink()
        (tree / "ze" / "ta").mkdir(parents=True)
        (tree / "ze" / "ta" / "zeta").write_text(_entry("zeta").to_line() + "\n")
        (tree / "config.json").write_text('{"dl": "https://elsewhere.example/{crate}"}\n')

    foreign_push(reg, tmp_path, edit, "Foreign edits")
    dry = _ops(reg, "repair", "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "would enqueue sync_crate for 3 crate(s): alpha, beta, zeta" in dry.stdout
    assert reg.pending_jobs() == 0

    done = _ops(reg, "repair", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["enqueued"] == ["alpha", "beta", "zeta"] and report["dry_run"] is False
    assert reg.pending_jobs() == 3
    reg.drain()

    assert _ops(reg, "verify").exit_code == 0
    assert reg.messages()[-3:] == [
        "Update crate `alpha`",
        "Create crate `beta`",
        "Delete crate `zeta`",
    ]
    for name in ("alpha", "beta", "gamma"):
        assert reg.remote_file(name) == reg.expected_file(name)
    # Not a crate file: left as the other writer made it.
    assert "elsewhere.example" in git(f"--git-dir={reg.remote}", "show", "HEAD:config.json")
    again = _ops(reg, "repair")
    assert again.exit_code == 0 and "enqueued" not in again.stdout


# --------------------------------------------------------------------------- rebuild


def test_rebuild_makes_every_file_byte_identical_in_one_commit_and_nothing_when_equal(
    reg: Registry, tmp_path: Path
) -> None:
    names = ["alpha", "beta", "gamma", "delta", "x", "ab", "abc"]
    reg.publish(*(_entry(n) for n in names), _entry("alpha", "1.1.0"))
    with reg.connect() as conn:
        store.yank(conn, "alpha", "1.0.0")
    reg.drain()

    def edit(tree: Path) -> None:
        (tree / "al" / "ph" / "alpha").write_text("wrong\n")
        (tree / "be" / "ta" / "beta").unlink()
        (tree / "1" / "x").write_text(_entry("x", "7.0.0").to_line() + "\n")
        (tree / "ze" / "ta").mkdir(parents=True)
        (tree / "ze" / "ta" / "zeta").write_text("a crate the database never had\n")
        (tree / "notes.txt").write_text("not a crate file\n")

    foreign_push(reg, tmp_path, edit, "Foreign edits")
    before = git(f"--git-dir={reg.remote}", "show", "HEAD:config.json")
    queued = _ops(reg, "rebuild", "--no-wait")
    assert queued.exit_code == 0, queued.output
    assert queued.stdout.startswith("rebuild 1 queued (job ")
    reg.drain()

    assert reg.messages()[-2:] == ["Foreign edits", "Rebuild index: 4 crate files"]
    for name in names:
        assert reg.remote_file(name) == reg.expected_file(name), name
    assert reg.remote_file("zeta") is None
    assert git(f"--git-dir={reg.remote}", "show", "HEAD:config.json") == before
    assert git(f"--git-dir={reg.remote}", "show", "HEAD:notes.txt") == "not a crate file\n"
    with reg.connect() as conn:
        run = runs.rebuild_run(conn, 1)
    assert run is not None
    assert (run.state, run.total, run.done, run.changed, run.deleted, run.commits) == (
        "done",
        7,
        7,
        3,
        1,
        1,
    )
    assert run.tip == _tip(reg)

    # Nothing differs now: no commit, no push.
    tip = _tip(reg)
    _ops(reg, "rebuild", "--no-wait")
    reg.drain()
    assert _tip(reg) == tip
    with reg.connect() as conn:
        run = runs.rebuild_run(conn, 2)
    assert run is not None and (run.state, run.changed, run.deleted, run.commits) == (
        "done",
        0,
        0,
        0,
    )
    assert _ops(reg, "verify").exit_code == 0


def test_rebuild_in_commits_of_batch_size_files(reg: Registry, tmp_path: Path) -> None:
    names = [f"crate{i}" for i in range(5)]
    reg.publish(*(_entry(n) for n in names))
    reg.drain()

    def edit(tree: Path) -> None:
        for name in names:
            (tree / "cr" / "at" / name).unlink()
        (tree / "ex" / "tr").mkdir(parents=True)
        (tree / "ex" / "tr" / "extra").write_text("x\n")

    foreign_push(reg, tmp_path, edit, "Foreign edits")
    # Every update of the remote's branch, as update-ref and receive-pack both report it.
    updates = tmp_path / "updates"
    hook = reg.remote / "hooks" / "reference-transaction"
    hook.write_text(f'#!/bin/sh\n[ "$1" = committed ] && cat >> {updates}\nexit 0\n')
    hook.chmod(0o755)
    assert _ops(reg, "rebuild", "--batch-size", "2", "--no-wait").exit_code == 0
    reg.drain()
    # The three commits went out in one push.
    moves = [
        line for line in updates.read_text().splitlines() if line.endswith(" refs/heads/master")
    ]
    assert len(moves) == 1, moves
    assert reg.messages()[-3:] == [
        "Rebuild index (1 of 3): 2 crate files",
        "Rebuild index (2 of 3): 2 crate files",
        "Rebuild index (3 of 3): 2 crate files",
    ]
    for name in names:
        assert reg.remote_file(name) == reg.expected_file(name)
    assert reg.remote_file("extra") is None


def test_rebuild_leaves_out_a_crate_whose_path_a_foreign_file_blocks(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(_entry("serde"), _entry("tokio"))
    reg.drain()

    def edit(tree: Path) -> None:
        (tree / "se" / "rd" / "serde").unlink()
        (tree / "se" / "rd").rmdir()
        (tree / "se").rmdir()
        (tree / "se").write_text("a file where serde's directory must be\n")
        (tree / "to" / "ki" / "tokio").write_text("wrong\n")

    foreign_push(reg, tmp_path, edit, "Block serde")
    _ops(reg, "rebuild", "--no-wait")
    reg.drain()
    assert reg.remote_file("tokio") == reg.expected_file("tokio")
    assert git(f"--git-dir={reg.remote}", "show", "HEAD:se").startswith("a file where")
    with reg.connect() as conn:
        run = runs.rebuild_run(conn, 1)
    assert run is not None and (run.state, run.changed, run.skipped) == ("done", 1, 1)


def test_rebuild_asked_to_stop_pushes_nothing(reg: Registry, tmp_path: Path) -> None:
    reg.publish(_entry("alpha"), _entry("beta"))
    reg.drain()
    foreign_push(reg, tmp_path, lambda t: (t / "al" / "ph" / "alpha").unlink(), "Foreign")
    tip = _tip(reg)
    index = GitIndex.open(str(reg.remote), reg.clone)
    asked: list[tuple[int, bool]] = []

    def stop_at_the_last_moment(done: int, final: bool) -> bool:
        asked.append((done, final))
        return final

    with reg.connect() as conn:
        result = rebuild(conn, index, progress=stop_at_the_last_moment)
        assert result.state == "cancelled"
        assert asked == [(2, False), (2, True)]
        assert _tip(reg) == tip
        # Asked after the first chunk: stops there.
        result = rebuild(conn, index, progress=lambda done, final: True)
        assert result.state == "cancelled" and _tip(reg) == tip
        # Not asked: it converges.
        assert rebuild(conn, index).state == "done"
    assert reg.remote_file("alpha") == reg.expected_file("alpha")


def test_a_rebuild_cancelled_before_its_job_runs_does_nothing(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(_entry("alpha"))
    reg.drain()
    foreign_push(reg, tmp_path, lambda t: (t / "al" / "ph" / "alpha").unlink(), "Foreign")
    tip = _tip(reg)
    with reg.connect() as conn:
        run = runs.request_rebuild(conn, None)
        assert runs.cancel_rebuild(conn, run.id) == "queued"
    reg.drain()  # the job runs, finds the request, and ends the run
    with reg.connect() as conn:
        found = runs.rebuild_run(conn, run.id)
        assert found is not None and found.state == "cancelled"
        assert not app.store.live_payloads(conn, "rebuild_index")
    assert _tip(reg) == tip


def test_rebuild_waits_for_the_worker_and_ctrl_c_stops_it_before_it_pushes(
    reg: Registry, tmp_path: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    reg.publish(_entry("alpha"), _entry("beta"))
    reg.drain()
    # Without a worker holding the index queue, the command refuses (the job would wait).
    refused = _ops(reg, "rebuild")
    assert refused.exit_code == 1
    assert "no worker holds the index queue" in refused.stderr

    worker = _start(reg, "worker", "--verify-every", "0", "--poll-interval", "0.1")
    workers.append(worker)
    _wait_for(lambda: _held(reg))
    # A waiting rebuild with nothing to change.
    done = _run(reg, "rebuild", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["state"], report["commits"], report["tip"]) == ("done", 0, _tip(reg))
    assert "rebuild: 2 crates" in done.stderr  # progress lines: stderr is not a terminal

    # The worker is stopped (SIGSTOP: it still holds the queue) while the rebuild job waits:
    # Ctrl-C deletes the job that has not started.
    foreign_push(reg, tmp_path, lambda t: (t / "al" / "ph" / "alpha").unlink(), "Foreign")
    tip = _tip(reg)
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        waiting = _start(reg, "rebuild")
        _wait_for(lambda: _rebuild_state(reg) == "queued")
        time.sleep(0.3)
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert waiting.returncode == 130, err
    assert b"cancelled before it started: nothing was pushed" in err
    assert _rebuild_state(reg) == "cancelled"
    with reg.connect() as conn:
        assert not app.store.live_payloads(conn, "rebuild_index")
    assert _tip(reg) == tip


def test_check_reads_the_last_verify(reg: Registry, tmp_path: Path) -> None:
    reg.publish(_entry("alpha"), _entry("beta"), _entry("gamma"))
    reg.drain()
    code, report = _check(reg)
    (verify,) = [c for c in report["checks"] if (c["check"], c["target"]) == ("verify", "remote")]
    assert verify["state"] == "SKIPPED"
    assert verify["detail"].startswith("no verify was ever recorded")

    assert _ops(reg, "verify").exit_code == 0
    code, report = _check(reg)
    assert code == 0, report["summary"]
    (verify,) = [c for c in report["checks"] if (c["check"], c["target"]) == ("verify", "remote")]
    assert verify["state"] == "OK" and verify["value"] == 0
    assert report["verify"]["last"]["ran_by"] == "command"

    def edit(tree: Path) -> None:
        (tree / "al" / "ph" / "alpha").unlink()
        (tree / "be" / "ta" / "beta").write_text("wrong\n")

    foreign_push(reg, tmp_path, edit, "Foreign edits")
    assert _ops(reg, "verify").exit_code == 1
    code, report = _check(reg)
    assert code == 1, report["summary"]
    (verify,) = [c for c in report["checks"] if (c["check"], c["target"]) == ("verify", "remote")]
    assert (verify["state"], verify["value"], verify["warn"], verify["crit"]) == (
        "WARNING",
        2,
        1,
        10,
    )
    assert "found 2 crates drifted from the database" in verify["detail"]
    assert "alpha (missing), beta (differs)" in verify["detail"]
    assert "verify_drift=2;1;10" in report["summary"]
    code, report = _check(reg, "--crit-drift", "2")
    assert code == 2 and report["state"] == "CRITICAL"

    # Stale: the last verify that could check is older than --verify-age.
    with reg.connect() as conn:
        conn.execute("UPDATE indexpub.verify_runs SET finished_at = now() - interval '4 hours'")
    assert _ops(reg, "repair").exit_code == 0  # records a fresh verify, enqueues the syncs
    reg.drain()
    assert _ops(reg, "verify").exit_code == 0
    with reg.connect() as conn:
        conn.execute("UPDATE indexpub.verify_runs SET finished_at = now() - interval '4 hours'")
    code, report = _check(reg)
    (verify,) = [c for c in report["checks"] if (c["check"], c["target"]) == ("verify", "remote")]
    assert code == 1 and verify["state"] == "WARNING"
    assert "older than 3h: is a worker running the verify queue?" in verify["detail"]
    code, report = _check(reg, "--verify-age", "5h")
    assert code == 0


def test_the_worker_verifies_on_its_own_queue_unless_told_not_to(reg: Registry) -> None:
    reg.publish(_entry("alpha"))
    off = _ops(reg, "worker", "--drain", "--verify-every", "0")
    assert off.exit_code == 0, off.output
    assert _verifies(reg) == []
    refused = _ops(reg, "worker", "--queue", "verify", "--verify-every", "0")
    assert refused.exit_code == 2
    assert "--queue verify runs nothing with --verify-every 0" in refused.output
    bad = _ops(reg, "worker", "--drain", "--verify-every", "1.5")
    assert bad.exit_code == 2

    on = _ops(reg, "worker", "--drain")  # the default: hourly, and a new type runs at once
    assert on.exit_code == 0, on.output
    assert _verifies(reg) == [("job", 0)]


def test_verify_shows_a_progress_bar_on_a_terminal(reg: Registry) -> None:
    reg.publish(*(_entry(f"crate{i}") for i in range(30)))
    reg.drain()
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "indexpub", *_common(reg), "verify"],
            env=_env(index=reg.remote),
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        shown = b""
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            shown += chunk
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert process.returncode == 0
    assert out.decode().startswith("clean: the 30 crate files")
    text = shown.decode(errors="replace")
    assert "verify" in text and "30/30" in text and "100%" in text and "crates/s" in text, text


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _check(reg: Registry, *args: str, index: Path | None = None) -> tuple[int, dict[str, Any]]:
    done = _ops(reg, "check", "--json", *args, index=index)
    report: dict[str, Any] = json.loads(done.stdout)
    return done.exit_code, report


def _start(reg: Registry, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexpub", *_common(reg), *args],
        env=_env(index=reg.remote),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _run(reg: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexpub", *_common(reg), *args],
        env=_env(index=reg.remote),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tip(reg: Registry) -> str:
    return git(f"--git-dir={reg.remote}", "rev-parse", "HEAD").strip()


def _held(reg: Registry) -> bool:
    with psycopg.connect(reg.url, autocommit=True) as conn:
        return app.store.consumer(conn, "index") is not None


def _rebuild_state(reg: Registry) -> str | None:
    with psycopg.connect(reg.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state FROM indexpub.rebuild_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return None if row is None else str(row[0])


def _verifies(reg: Registry) -> list[tuple[str, int]]:
    with psycopg.connect(reg.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ran_by, drifted_count FROM indexpub.verify_runs ORDER BY id"
        ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def _wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s")
        time.sleep(0.05)
