"""``indexpub verify --sparse`` and ``repair --sparse``: the sparse index directory against the
database, on a real database and real files, and repaired by the worker's own sparse jobs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from support.index_helpers import Registry, foreign_push
from support.ops_cli import entry, ops, ops_json, status_screen

from indexpub.domain.names import index_path
from indexpub.registry import runs, store


def _sparse_file(reg: Registry, name: str) -> Path:
    return reg.sparse / index_path(name)


def _verify_runs(reg: Registry) -> int:
    with reg.connect() as conn:
        row = conn.execute("SELECT count(*) FROM indexpub.verify_runs").fetchone()
    assert row is not None
    return int(row[0])


def test_a_clean_sparse_directory_verifies_clean(reg: Registry) -> None:
    reg.publish(entry("alpha"), entry("beta"), entry("beta", "1.1.0"), entry("Gamma-X"))
    with reg.connect() as conn:
        store.yank(conn, "beta", "1.0.0")
    reg.drain()
    # Not crate files: never compared.
    (reg.sparse / "config.json").write_text('{"dl": "x"}\n')
    (reg.sparse / "be" / "ta" / ".tmp-abc123").write_text("half a rendering")

    done = ops(reg, "verify", "--sparse")
    assert done.exit_code == 0, done.output
    (line,) = done.stdout.splitlines()
    assert line.startswith(
        f"clean: the 3 crate files in {reg.sparse} equal the database's 3 crates ("
    )
    report = ops_json(reg, "verify", "--sparse")
    assert {k: report[k] for k in ("state", "target", "crates", "files", "other_files")} == {
        "state": "clean",
        "target": "sparse",
        "crates": 3,
        "files": 3,
        "other_files": 2,
    }
    assert report["drifted"] == [] and report["pending"] == [] and report["absent"] is False
    # Recorded as the sparse directory's run (for indexpub check), never as the remote's.
    assert _verify_runs(reg) == 2
    with reg.connect() as conn:
        assert runs.latest_verifies(conn).last is None
        last = runs.latest_verifies(conn, runs.SPARSE).last
    assert last is not None and last.id == report["run_id"]
    assert (last.target, last.ran_by, last.remote, last.tip, last.files, last.drifted_count) == (
        "sparse",
        "command",
        str(reg.sparse),
        None,
        3,
        0,
    )


def test_each_kind_of_sparse_drift_is_named_and_repaired_by_the_sparse_jobs(
    reg: Registry,
) -> None:
    reg.publish(entry("alpha"), entry("alpha", "1.1.0"), entry("beta"), entry("gamma"))
    reg.publish(entry("delta"), entry("epsilon"))
    with reg.connect() as conn:
        store.yank(conn, "alpha", "1.0.0")
    reg.drain()
    delta_file = _sparse_file(reg, "delta").read_bytes()
    with reg.connect() as conn:
        store.delete_version(conn, "delta", "1.0.0")  # a crate with no visible version
    reg.drain()
    assert not _sparse_file(reg, "delta").exists()

    # A yank lost: the rendering from before it.
    alpha = _sparse_file(reg, "alpha")
    alpha.write_text(alpha.read_text().replace('"yanked":true', '"yanked":false'))
    beta = _sparse_file(reg, "beta")  # truncated
    beta.write_bytes(beta.read_bytes()[:40])
    _sparse_file(reg, "gamma").unlink()  # lost
    _sparse_file(reg, "delta").write_bytes(delta_file)  # its removal lost
    zeta = _sparse_file(reg, "zeta")  # a crate the database never had
    zeta.parent.mkdir(parents=True)
    zeta.write_text(entry("zeta").to_line() + "\n")

    report = ops_json(reg, "verify", "--sparse")
    assert report["exit_code"] == 1 and report["state"] == "drift"
    assert report["crates"] == 4 and report["files"] == 5
    assert [(d["name"], d["kind"], d["path"]) for d in report["drifted"]] == [
        ("alpha", "differs", "al/ph/alpha"),
        ("beta", "differs", "be/ta/beta"),
        ("delta", "extra", "de/lt/delta"),
        ("gamma", "missing", "ga/mm/gamma"),
        ("zeta", "extra", "ze/ta/zeta"),
    ]
    versions = {d["name"]: d["versions"] for d in report["drifted"]}
    assert versions["alpha"] == {
        "missing": [],
        "extra": [],
        "changed": [
            {"version": "1.0.0", "how": "yanked in the database, not in the sparse directory"}
        ],
        "notes": [],
    }
    assert versions["beta"]["missing"] == ["1.0.0"]
    assert versions["beta"]["notes"] == [
        "1 line(s) without a readable version in the sparse directory"
    ]
    assert versions["delta"]["extra"] == ["1.0.0"]
    assert versions["gamma"]["missing"] == ["1.0.0"]
    assert versions["zeta"]["extra"] == ["1.0.0"]

    done = ops(reg, "verify", "--sparse")
    assert done.exit_code == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"drift: 5 crates in {reg.sparse} differ from the database (")
    assert lines[4] == "  gamma  missing  the sparse directory has no file ga/mm/gamma: " + (
        "1.0.0: missing from the sparse directory"
    )
    assert lines[-1] == "`indexpub repair --sparse` enqueues their write_sparse jobs."

    dry = ops(reg, "repair", "--sparse", "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert (
        "would enqueue write_sparse for 5 crate(s): alpha, beta, delta, gamma, zeta" in dry.stdout
    )
    assert reg.pending_jobs() == 0

    done = ops(reg, "repair", "--sparse", "--json")
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    assert found["enqueued"] == ["alpha", "beta", "delta", "gamma", "zeta"]
    with reg.connect() as conn:
        queued = conn.execute("SELECT DISTINCT job_type FROM indexpub_jobs.jobs").fetchall()
    assert queued == [("write_sparse",)]
    reg.drain()

    assert ops(reg, "verify", "--sparse").exit_code == 0
    for name in ("alpha", "beta", "gamma", "epsilon"):
        assert _sparse_file(reg, name).read_text() == reg.expected_file(name)
    assert not _sparse_file(reg, "delta").exists() and not zeta.exists()
    again = ops(reg, "repair", "--sparse")
    assert again.exit_code == 0 and "enqueued" not in again.stdout


def test_a_pending_write_sparse_job_is_pending_not_drift(reg: Registry) -> None:
    reg.publish(entry("alpha"))
    reg.drain()
    reg.publish(entry("alpha", "1.1.0"))  # its jobs wait: no worker runs

    report = ops_json(reg, "verify", "--sparse")
    assert report["exit_code"] == 0 and report["state"] == "clean"
    assert report["pending"] == ["alpha"] and report["drifted"] == []
    repaired = ops_json(reg, "repair", "--sparse")
    assert repaired["enqueued"] == [] and repaired["pending"] == ["alpha"]

    # Its sync_crate job is no write of the sparse file: without write_sparse, it is drift.
    with reg.connect() as conn:
        conn.execute("DELETE FROM indexpub_jobs.jobs WHERE job_type = 'write_sparse'")
    report = ops_json(reg, "verify", "--sparse")
    assert report["exit_code"] == 1 and report["pending"] == []
    assert [(d["name"], d["versions"]["missing"]) for d in report["drifted"]] == [
        ("alpha", ["1.1.0"])
    ]


def test_symlinks_and_hostile_names_are_reported_never_followed(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(entry("alpha"), entry("beta"), entry("gamma"), entry("delta"))
    reg.drain()
    outside = tmp_path / "outside"
    outside.mkdir()
    # alpha: a symlink to a file outside holding alpha's very rendering; followed, it would
    # verify clean.
    (outside / "alpha").write_text(reg.expected_file("alpha") or "")
    _sparse_file(reg, "alpha").unlink()
    _sparse_file(reg, "alpha").symlink_to(outside / "alpha")
    # beta: its first directory a symlink to a stale copy outside, which the repair's job
    # would overwrite if it wrote through the link.
    (outside / "be" / "ta").mkdir(parents=True)
    (outside / "be" / "ta" / "beta").write_text("stale\n")
    _sparse_file(reg, "beta").unlink()
    (reg.sparse / "be" / "ta").rmdir()
    (reg.sparse / "be").rmdir()
    (reg.sparse / "be").symlink_to(outside / "be")
    # gamma: a FIFO, which a plain open would wait on forever.
    _sparse_file(reg, "gamma").unlink()
    os.mkfifo(_sparse_file(reg, "gamma"))
    # Names no crate file has: not UTF-8, a newline, the longest a filesystem takes, a link out.
    hostile = [b"\xff\xfe", b"de\nlt", b"x" * 255, b"..\n"]
    for name in hostile:
        Path(os.fsdecode(bytes(reg.sparse / "de" / "lt") + b"/" + name)).write_text("x\n")
    (reg.sparse / "ze").symlink_to("/")

    report = ops_json(reg, "verify", "--sparse")
    assert report["exit_code"] == 1
    assert [(d["name"], d["kind"], d["versions"]["notes"]) for d in report["drifted"]] == [
        ("alpha", "differs", ["a symlink, not a file: not followed"]),
        ("beta", "missing", ["'be' in its path is a symlink: not followed"]),
        ("gamma", "differs", ["not a regular file: not read"]),
    ]
    assert report["other_files"] == len(hostile) + 2  # the hostile names, be and ze
    done = ops(reg, "verify", "--sparse")
    assert done.exit_code == 1
    assert "\\xff" not in done.output and "xxxxxxxx" not in done.output
    assert "Traceback" not in done.output

    # repair's jobs write alpha's and gamma's files in place of the link and the FIFO; beta's
    # fails, naming the link, and nothing outside is written.
    assert ops(reg, "repair", "--sparse").exit_code == 0
    reg.drain()
    for name in ("alpha", "gamma"):
        path = _sparse_file(reg, name)
        assert not path.is_symlink() and path.read_text() == reg.expected_file(name)
    assert (outside / "alpha").read_text() == reg.expected_file("alpha")
    assert (outside / "be" / "ta" / "beta").read_text() == "stale\n"
    assert sorted(p.name for p in outside.rglob("*")) == ["alpha", "be", "beta", "ta"]
    with reg.connect() as conn:
        rows = conn.execute(
            "SELECT payload->>'name', last_error FROM indexpub_jobs.jobs"
            " WHERE job_type = 'write_sparse'"
        ).fetchall()
    assert [name for name, _ in rows] == ["beta"]
    assert "a symlink in the path, not followed" in rows[0][1]


def test_a_sparse_directory_that_is_not_one_could_not_check(reg: Registry) -> None:
    reg.publish(entry("alpha"))
    with reg.connect() as conn:  # its write lost, not on its way
        conn.execute("DELETE FROM indexpub_jobs.jobs WHERE job_type = 'write_sparse'")
    # No directory at all: every crate's file is missing (serve answers 404 for each).
    report = ops_json(reg, "verify", "--sparse")
    assert report["exit_code"] == 1 and report["absent"] is True
    assert [(d["name"], d["kind"]) for d in report["drifted"]] == [("alpha", "missing")]
    done = ops(reg, "verify", "--sparse")
    assert done.stdout.splitlines()[0] == f"the sparse directory {reg.sparse} does not exist"

    reg.sparse.write_text("a file, not a directory\n")
    done = ops(reg, "verify", "--sparse")
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    assert done.stderr.strip().splitlines()[-1:] == [
        f"Error: verify --sparse could not check: cannot read the sparse directory "
        f"{reg.sparse}: Not a directory"
    ]
    done = ops(reg, "repair", "--sparse")
    assert done.exit_code == 2 and "repair --sparse could not check" in done.stderr
    assert reg.pending_jobs() == 1  # the publish's sync_crate, nothing more

    # Both recorded as sparse verifies that could not check: check names the last beside the
    # last that could (the absent directory's), and says UNKNOWN when none could.
    failed = f"could not check: cannot read the sparse directory {reg.sparse}: Not a directory"
    sparse = _verify_findings(ops_json(reg, "check"))["sparse"]
    assert sparse["state"] == "WARNING" and sparse["value"] == 1
    assert sparse["detail"].endswith(failed) and "; the last verify --sparse, " in sparse["detail"]
    with reg.connect() as conn:
        conn.execute("DELETE FROM indexpub.verify_runs WHERE error IS NULL")
    report = ops_json(reg, "check")
    sparse = _verify_findings(report)["sparse"]
    assert sparse["state"] == "UNKNOWN"  # the whole is CRITICAL: a job ready, no worker
    assert re.fullmatch(
        r"sparse directory: the last verify --sparse, \S+ ago, " + re.escape(failed),
        sparse["detail"],
    )
    assert _verify_runs(reg) == 2


# --------------------------------------------------------------------------- check and status


def _verify_findings(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["target"]: c for c in report["checks"] if c["check"] == "verify"}


def test_check_grades_the_last_sparse_verify_on_its_own(reg: Registry, tmp_path: Path) -> None:
    reg.publish(entry("alpha"), entry("beta"), entry("gamma"))
    reg.drain()
    report = ops_json(reg, "check")
    found = _verify_findings(report)
    assert (found["remote"]["state"], found["sparse"]["state"]) == ("SKIPPED", "SKIPPED")
    assert found["sparse"]["detail"] == (
        "sparse directory: never verified (indexpub verify --sparse runs one)"
    )

    # A clean sparse run is OK, and does not pass for the remote's verify.
    assert ops(reg, "verify", "--sparse").exit_code == 0
    report = ops_json(reg, "check")
    assert report["exit_code"] == 0, report["summary"]
    found = _verify_findings(report)
    assert found["remote"]["state"] == "SKIPPED"
    assert (found["sparse"]["state"], found["sparse"]["value"]) == ("OK", 0)
    assert found["sparse"]["detail"].startswith("sparse directory: last verify --sparse ")
    assert found["sparse"]["detail"].endswith(
        f" the crate files in {reg.sparse} equal the database"
    )
    assert report["verify"] == {}
    assert report["sparse_verify"]["last"]["target"] == "sparse"
    assert report["sparse_verify"]["last"]["where"] == str(reg.sparse)

    # Drift in the sparse directory: WARNING as the remote's, named; a newer clean verify of the
    # remote does not hide it.
    _sparse_file(reg, "alpha").unlink()
    _sparse_file(reg, "beta").write_text("wrong\n")
    assert ops(reg, "verify", "--sparse").exit_code == 1
    assert ops(reg, "verify").exit_code == 0
    report = ops_json(reg, "check")
    assert report["exit_code"] == 1 and report["state"] == "WARNING"
    found = _verify_findings(report)
    assert found["remote"]["state"] == "OK"
    sparse = found["sparse"]
    assert (sparse["state"], sparse["value"], sparse["warn"], sparse["crit"]) == (
        "WARNING",
        2,
        1,
        10,
    )
    assert re.fullmatch(
        r"sparse directory: last verify --sparse \S+ ago found 2 crate files drifted from the "
        + re.escape(
            f"database in {reg.sparse}: alpha (missing), beta (differs) (indexpub repair "
            "--sparse enqueues their write_sparse)"
        ),
        sparse["detail"],
    ), sparse["detail"]
    summary, perfdata = report["summary"].split(" | ")
    assert summary == f"INDEXPUB WARNING - {sparse['detail']}"
    assert "verify_drift=0;1;10" in perfdata.split()
    assert "sparse_verify_drift=2;1;10" in perfdata.split()
    assert ops_json(reg, "check", "--crit-drift", "2")["state"] == "CRITICAL"
    # No hourly verify of the sparse directory: its last run's age alone is no warning.
    with reg.connect() as conn:
        conn.execute("UPDATE indexpub.verify_runs SET finished_at = now() - interval '4 hours'")
    report = ops_json(reg, "check")
    assert _verify_findings(report)["sparse"]["state"] == "WARNING"
    assert "older than" not in _verify_findings(report)["sparse"]["detail"]
    assert _verify_findings(report)["remote"]["detail"].endswith(
        "older than 3h: is a worker running the verify queue?"
    )

    # repair --sparse records its verify too; once the writes are done, a clean run is OK.
    repaired = ops_json(reg, "repair", "--sparse")
    assert repaired["enqueued"] == ["alpha", "beta"]
    with reg.connect() as conn:
        last = runs.latest_verifies(conn, runs.SPARSE).last
    assert last is not None and last.id == repaired["run_id"] and last.drifted_count == 2
    reg.drain()
    assert ops(reg, "verify", "--sparse").exit_code == 0
    report = ops_json(reg, "check", "--verify-age", "5h")
    assert report["exit_code"] == 0, report["summary"]

    # And the other way round: a clean sparse run does not hide the remote's drift.
    def edit(tree: Path) -> None:
        (tree / "ga" / "mm" / "gamma").unlink()

    foreign_push(reg, tmp_path, edit, "Foreign edit")
    assert ops(reg, "verify").exit_code == 1
    assert ops(reg, "verify", "--sparse").exit_code == 0
    report = ops_json(reg, "check", "--verify-age", "5h")
    assert report["exit_code"] == 1, report["summary"]
    found = _verify_findings(report)
    assert (found["remote"]["state"], found["sparse"]["state"]) == ("WARNING", "OK")
    assert "found 1 crate drifted from the database at " in found["remote"]["detail"]
    assert "sparse directory" not in report["summary"]


def test_status_shows_the_last_sparse_verify_beside_the_last_verify(reg: Registry) -> None:
    reg.publish(entry("alpha"))
    reg.drain()

    def shown() -> dict[str, str]:
        return status_screen(reg)

    before = shown()
    assert before["last verify --sparse"] == "none recorded (indexpub verify --sparse)"
    assert ops(reg, "verify", "--sparse").exit_code == 0
    after = shown()
    assert after["last verify"].startswith("none recorded")
    assert re.fullmatch(
        r"\S+ \S+ UTC, \d+ seconds ago, by command: clean \(1 files\)",
        after["last verify --sparse"],
    )
    _sparse_file(reg, "alpha").unlink()
    assert ops(reg, "verify", "--sparse").exit_code == 1
    assert ops(reg, "verify").exit_code == 0
    after = shown()
    assert after["last verify"].endswith(": clean (1 files)")
    assert after["last verify --sparse"].endswith(": 1 crate(s) drifted (0 files)")
    status = json.loads(ops(reg, "status", "--json").stdout)
    assert status["last_sparse_verify"]["drifted_count"] == 1
    assert status["last_verify"]["drifted_count"] == 0
