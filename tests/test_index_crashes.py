"""The index worker as real processes: crashes at each step, two workers, failover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.index_helpers import Registry, fixture_entry, index_consumer_pid
from support.queue_helpers import children_of, stop, wait_for

from indexpub.pipeline.faults import ENV as CRASH_ENV


def start_index_worker(reg: Registry, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "INDEXPUB_DATABASE_URL": reg.url,
        "INDEXPUB_INDEX_URL": str(reg.remote),
        "INDEXPUB_DATA_DIR": str(reg.data),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "indexpub", "-v", "worker", "--poll-interval", "0.2"],
        env=environment,
        start_new_session=True,
        stderr=subprocess.PIPE,
    )


def stop_and_read(process: subprocess.Popen[bytes]) -> str:
    """Stop the worker's process group; what it wrote to stderr."""
    stop(process, timeout=15)
    assert process.stderr is not None
    return process.stderr.read().decode()


CRATES = [("q", "0.1.0"), ("xy", "0.1.0"), ("abc", "0.1.0"), ("MixedCase", "0.1.0")]


@pytest.mark.parametrize(
    "point", ["sync-started", "sync-mid-batch", "sync-committed", "sync-pushed"]
)
def test_worker_killed_at_each_step_converges(reg: Registry, tmp_path: Path, point: str) -> None:
    marker = tmp_path / "crashed"
    reg.publish(*(fixture_entry(n, v) for n, v in CRATES))
    worker = start_index_worker(reg, **{CRASH_ENV: f"{point}:{marker}"})
    try:
        wait_for(lambda: reg.pending_jobs() == 0, timeout=30, interval=0.1)
    finally:
        log = stop_and_read(worker)
    assert marker.exists(), f"the crash point {point} never fired:\n{log}"
    assert "died before it finished" in log or "exited with -9" in log, log
    for name, _ in CRATES:
        assert reg.remote_file(name) == reg.expected_file(name)
    # Every crate was created exactly once: no duplicate commits, no lost ones.
    assert sorted(reg.messages()) == sorted(f"Create crate `{n}`" for n, _ in CRATES)


def test_two_workers_never_push_at_once_and_the_standby_takes_over(
    reg: Registry, tmp_path: Path
) -> None:
    journal = tmp_path / "pushes.log"
    hook = reg.remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "start $(date +%s.%N)" >> {journal}\n'
        "sleep 0.2\n"
        f'echo "end $(date +%s.%N)" >> {journal}\n'
    )
    hook.chmod(0o755)
    workers = [start_index_worker(reg), start_index_worker(reg)]
    names = [
        ("q", "0.1.0"),
        ("xy", "0.1.0"),
        ("abc", "0.1.0"),
        ("plain", "0.1.0"),
        ("plain", "0.2.0"),
        ("feats", "0.1.0"),
    ]
    try:
        for name, version in names[:3]:
            reg.publish(fixture_entry(name, version))
            time.sleep(0.1)
        wait_for(lambda: reg.pending_jobs() == 0, timeout=20, interval=0.05)

        # Kill the active one (the process group holding the consumer lock) outright.
        active_child = index_consumer_pid(reg.url)
        assert active_child is not None
        active = next(w for w in workers if active_child in children_of(w.pid))
        os.killpg(active.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for name, version in names[3:]:
            reg.publish(fixture_entry(name, version))
        wait_for(lambda: reg.pending_jobs() == 0, timeout=20, interval=0.05)
        took_over = time.monotonic() - killed_at
    finally:
        for worker in workers:
            stop_and_read(worker)
    assert took_over < 3.0, took_over  # standby's 0.2 s lock poll + one push with a 0.2 s hook
    for name in {n for n, _ in names}:
        assert reg.remote_file(name) == reg.expected_file(name)
    windows = journal.read_text().split()
    events = [(windows[i], float(windows[i + 1])) for i in range(0, len(windows), 2)]
    depth = 0
    for kind, _ in sorted(events, key=lambda e: e[1]):
        depth += 1 if kind == "start" else -1
        assert depth <= 1, "two pushes overlapped"
    assert sum(1 for kind, _ in events if kind == "start") >= 2
