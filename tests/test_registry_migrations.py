"""The registry's migrations on a database that has data: what an upgrade keeps."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from indexpub.registry import runs
from indexpub.registry.store import SCHEMA
from jobs import migrations


def _migrate(conn: psycopg.Connection[object], target: int) -> list[int]:
    return migrations.migrate(
        conn, SCHEMA, "indexpub.registry", directory="migrations", target=target
    )


def test_the_verify_targets_migration_keeps_the_remote_runs(database_url: str) -> None:
    """0005 on a database at 0004 with verify runs: they are the remote's, the remote's last
    run is still found, the sparse directory has none, and a sparse run (no tip) is allowed
    where a remote run must still have its tip."""
    started = datetime(2026, 12, 1, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        assert _migrate(conn, 4) == [1, 2, 3, 4]
        conn.execute(
            "INSERT INTO indexpub.verify_runs (started_at, finished_at, ran_by, remote, branch,"
            " tip, crates, files, drifted_count, pending_count)"
            " VALUES (%s, %s, 'job', '/srv/index.git', 'master', %s, 3, 3, 2, 0)",
            (started, started, "a" * 40),
        )
        conn.execute(
            "INSERT INTO indexpub.verify_runs (started_at, finished_at, ran_by, remote, error)"
            " VALUES (%s, %s, 'command', '/srv/index.git', 'unreachable')",
            (started, started.replace(hour=1)),
        )
        conn.commit()

        assert _migrate(conn, 5) == [5]
        targets = conn.execute("SELECT target FROM indexpub.verify_runs ORDER BY id").fetchall()
        assert targets == [("remote",), ("remote",)]
        remote = runs.latest_verifies(conn)
        assert remote.last is not None and remote.last.error == "unreachable"
        assert remote.checked is not None and remote.checked.tip == "a" * 40
        assert remote.checked.drifted_count == 2 and remote.checked.target == "remote"
        assert runs.latest_verifies(conn, runs.SPARSE).last is None

        sparse = runs.VerifyRun(
            started,
            "command",
            "/srv/sparse",
            crates=3,
            files=3,
            drifted_count=0,
            pending_count=0,
            target=runs.SPARSE,
        )
        run_id = runs.record_verify(conn, sparse)
        conn.commit()
        found = runs.latest_verifies(conn, runs.SPARSE).last
        assert found is not None and (found.id, found.tip) == (run_id, None)
        assert runs.latest_verifies(conn).checked == remote.checked

        with pytest.raises(psycopg.errors.CheckViolation):
            runs.record_verify(conn, runs.VerifyRun(started, "command", "x", drifted_count=0))
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            runs.record_verify(
                conn, runs.VerifyRun(started, "command", "x", error="e", target="elsewhere")
            )
        conn.rollback()
