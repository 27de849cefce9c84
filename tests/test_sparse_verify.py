"""``indexpub verify --sparse`` and ``repair --sparse``: the sparse index directory against the
database, on a real database and real files, and repaired by the worker's own sparse jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.index_helpers import Registry
from support.ops_cli import entry, ops, ops_json

from indexpub.domain.names import index_path
from indexpub.registry import store


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
    # Not recorded: the verify_runs that indexpub check reads are the remote's.
    assert _verify_runs(reg) == 0


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
