"""The sparse index's writer: one crate's file never takes the others down, and two writers of
one crate never interleave so that an older rendering lands last."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.index_helpers import Registry, fixture_entry

from indexpub.domain.names import index_path
from indexpub.pipeline import sparse_sync as sparse
from indexpub.registry import store


def test_a_crate_whose_file_cannot_be_written_fails_alone(reg: Registry) -> None:
    reg.publish(fixture_entry("q", "0.1.0"), fixture_entry("xy", "0.1.0"))
    (reg.sparse / index_path("q")).mkdir(parents=True)  # a directory where q's file must be
    with reg.connect() as conn:
        result = sparse.sync_sparse(conn, reg.sparse, ["q", "xy"])
    assert result.changed == [index_path("xy")]
    assert list(result.failed) == ["q"]
    assert result.failed["q"].startswith("cannot write 1/q: [Errno 21] Is a directory")
    assert (reg.sparse / index_path("xy")).read_text() == reg.expected_file("xy")


def test_the_jobs_fail_only_the_crate_whose_file_cannot_be_written(reg: Registry) -> None:
    reg.publish(fixture_entry("q", "0.1.0"), fixture_entry("xy", "0.1.0"))
    (reg.sparse / index_path("q")).mkdir(parents=True)
    reg.drain()
    with reg.connect() as conn:
        rows = conn.execute(
            "SELECT job_type, payload->>'name', last_error FROM indexpub_jobs.jobs"
        ).fetchall()
    assert [row[:2] for row in rows] == [("write_sparse", "q")]
    assert "Is a directory" in rows[0][2]
    (reg.sparse / index_path("q")).rmdir()
    with reg.connect() as conn:
        conn.execute("UPDATE indexpub_jobs.jobs SET run_at = now()")  # skip the backoff
    reg.drain()
    assert reg.pending_jobs() == 0
    assert (reg.sparse / index_path("q")).read_text() == reg.expected_file("q")


def test_two_writers_of_one_crate_never_lose_a_yank(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer A renders the crate, then stalls before writing; the yank commits; writer B
    starts. Unserialized, B renders the yank and writes it, and A's stale file lands last. With
    the per-crate lock B waits for A, then renders and writes the yank."""
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.sparse.mkdir()
    a_rendered, release_a = threading.Event(), threading.Event()
    real_write = sparse.write_file

    def write_file(root: Path, relative: str, content: bytes | None) -> bool:
        if threading.current_thread().name == "writer-a":
            a_rendered.set()
            assert release_a.wait(30)
        return real_write(root, relative, content)

    monkeypatch.setattr(sparse, "write_file", write_file)
    errors: list[BaseException] = []

    def writer(name: str) -> threading.Thread:
        def run() -> None:
            try:
                with reg.connect() as conn:
                    sparse.sync_sparse(conn, reg.sparse, ["q"])
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=name)
        thread.start()
        return thread

    a = writer("writer-a")
    assert a_rendered.wait(30)
    with reg.connect() as conn:
        store.yank(conn, "q", "0.1.0")
    b = writer("writer-b")
    # B either finished (no serialization: the bug) or waits on A's advisory lock.
    with psycopg.connect(reg.url, autocommit=True) as watcher:
        for _ in range(3000):
            if not b.is_alive() or _waits_on_an_advisory_lock(watcher):
                break
            threading.Event().wait(0.01)
    release_a.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    expected = fixture_entry("q", "0.1.0").with_yanked(True).to_line() + "\n"
    assert (reg.sparse / index_path("q")).read_text() == expected


def _waits_on_an_advisory_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return row is not None and int(row[0]) > 0


def test_the_writer_never_follows_a_symlink_out_of_the_directory(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(fixture_entry("q", "0.1.0"), fixture_entry("xy", "0.1.0"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "q").write_text(reg.expected_file("q") or "")  # q's very bytes, outside
    (reg.sparse / "1").mkdir(parents=True)
    (reg.sparse / index_path("q")).symlink_to(outside / "q")
    (reg.sparse / "2").symlink_to(outside)  # xy's directory
    with reg.connect() as conn:
        result = sparse.sync_sparse(conn, reg.sparse, ["q", "xy"])
    # q: the link replaced by the file (read through it, it looked written already).
    assert result.changed == [index_path("q")]
    assert not (reg.sparse / index_path("q")).is_symlink()
    assert (reg.sparse / index_path("q")).read_text() == reg.expected_file("q")
    # xy: refused, nothing written through the link.
    assert list(result.failed) == ["xy"]
    assert "a symlink in the path, not followed" in result.failed["xy"]
    assert sorted(p.name for p in outside.iterdir()) == ["q"]


@pytest.mark.timeout(60)
def test_the_writer_replaces_a_fifo_without_waiting_on_it(reg: Registry) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    (reg.sparse / "1").mkdir(parents=True)
    os.mkfifo(reg.sparse / index_path("q"))  # a plain open for reading would wait forever
    with reg.connect() as conn:
        result = sparse.sync_sparse(conn, reg.sparse, ["q"])
    assert result.changed == [index_path("q")] and not result.failed
    assert (reg.sparse / index_path("q")).read_text() == reg.expected_file("q")
