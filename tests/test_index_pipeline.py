"""Publish, yank and unyank through the queue to a real bare git remote."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from support.git import git
from support.index_helpers import Registry, fixture_entry, foreign_push

from indexpub.domain.entries import IndexEntry
from indexpub.domain.versions import Version
from indexpub.pipeline import jobs
from indexpub.pipeline.git_sync import sync_crates
from indexpub.registry import store


def test_publish_yank_unyank_reach_the_remote(reg: Registry) -> None:
    first, second = fixture_entry("plain", "0.1.0"), fixture_entry("plain", "0.2.0")
    reg.publish(first, second)
    reg.drain()
    assert reg.remote_file("plain") == first.to_line() + "\n" + second.to_line() + "\n"
    # Two publishes in one transaction: one deduplicated job, one commit.
    assert reg.messages() == ["Create crate `plain`"]

    with reg.connect() as conn:
        store.yank(conn, "plain", "0.1.0")
    reg.drain()
    yanked = reg.remote_file("plain")
    assert yanked == first.with_yanked(True).to_line() + "\n" + second.to_line() + "\n"
    original_lines = (first.to_line(), second.to_line())
    got_lines = tuple(yanked.splitlines())
    assert got_lines[1] == original_lines[1]
    assert got_lines[0] == original_lines[0].replace('"yanked":false', '"yanked":true')

    with reg.connect() as conn:
        store.yank(conn, "plain", "0.1.0")  # yanking a yanked version: no-op, no job
        assert reg.pending_jobs() == 0
        store.unyank(conn, "plain", "0.1.0")
    reg.drain()
    assert reg.remote_file("plain") == first.to_line() + "\n" + second.to_line() + "\n"
    assert reg.messages() == [
        "Create crate `plain`",
        "Update crate `plain`",
        "Update crate `plain`",
    ]


def test_unchanged_crate_makes_no_commit(reg: Registry) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()
    before = git(f"--git-dir={reg.remote}", "rev-parse", "HEAD")
    with reg.connect() as conn:
        result = sync_crates(conn, reg.index(), ["q", "q", "xy"])  # late duplicate, no-op crate
    assert result.commits == [] and result.pushes == 0
    assert git(f"--git-dir={reg.remote}", "rev-parse", "HEAD") == before


def test_delete_crate_and_version(reg: Registry) -> None:
    reg.publish(
        fixture_entry("plain", "0.1.0"),
        fixture_entry("plain", "0.2.0"),
        fixture_entry("xy", "0.1.0"),
    )
    reg.drain()
    with reg.connect() as conn:
        store.delete_version(conn, "plain", "0.1.0")
        store.delete_crate(conn, "xy")
    reg.drain()
    assert reg.remote_file("plain") == fixture_entry("plain", "0.2.0").to_line() + "\n"
    assert reg.remote_file("xy") is None
    assert reg.messages()[-2:] == ["Update crate `plain`", "Delete crate `xy`"]
    assert "2/xy" not in git(f"--git-dir={reg.remote}", "ls-tree", "-r", "--name-only", "HEAD")


def test_another_writer_on_the_remote_is_kept_and_ours_lands_on_top(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()
    other = tmp_path / "other"
    git("clone", "-q", str(reg.remote), str(other))
    git("config", "user.email", "ops@example.org", cwd=other)
    git("config", "user.name", "ops", cwd=other)
    config = other / "config.json"
    config.write_text(config.read_text().replace("}", ', "auth-required": false}', 1))
    (other / "2").mkdir(exist_ok=True)
    (other / "2" / "zz").write_text('{"name":"zz"}\n')
    git("commit", "-qam", "Edit config.json", cwd=other)
    git("add", "2/zz", cwd=other)
    git("commit", "-qm", "Another writer's crate", cwd=other)
    git("push", "-q", "origin", "HEAD", cwd=other)

    reg.publish(fixture_entry("xy", "0.1.0"))  # our clone's tip is now stale
    reg.drain()
    # The worker published into the local bare remote directly, and lost and won the
    # compare-and-swap there as git push would have (tests/test_git_direct_push.py).
    assert jobs._IndexTarget.index is not None
    assert jobs._IndexTarget.index.last_push_mode == "direct"
    assert reg.messages() == [
        "Create crate `q`",
        "Edit config.json",
        "Another writer's crate",
        "Create crate `xy`",
    ]
    shown = git(f"--git-dir={reg.remote}", "show", "HEAD:config.json")
    assert '"auth-required": false' in shown
    assert git(f"--git-dir={reg.remote}", "show", "HEAD:2/zz") == '{"name":"zz"}\n'


def test_unreachable_remote_fails_the_job_then_converges(reg: Registry, tmp_path: Path) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()
    away = tmp_path / "moved-away.git"
    shutil.move(reg.remote, away)
    reg.publish(fixture_entry("xy", "0.1.0"))
    reg.drain()
    with psycopg.connect(reg.url) as conn:
        row = conn.execute(
            "SELECT attempts, dead, last_error, run_at > now() FROM indexpub_jobs.jobs"
        ).fetchone()
    assert row is not None
    attempts, dead, error, backing_off = row
    assert attempts == 1 and not dead and backing_off
    assert "GitError: git" in error and "does not appear to be a git repository" in error
    shutil.move(away, reg.remote)
    with psycopg.connect(reg.url) as conn:
        conn.execute("UPDATE indexpub_jobs.jobs SET run_at = now()")  # skip the backoff
    reg.drain()
    assert reg.pending_jobs() == 0
    assert reg.remote_file("xy") == reg.expected_file("xy")
    assert reg.messages() == ["Create crate `q`", "Create crate `xy`"]


def test_pushes_go_to_the_branch_the_remote_head_names(database_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from support.index_helpers import Registry

    from indexpub.cli import main

    remote = tmp_path / "main-index.git"
    result = CliRunner().invoke(
        main, ["init-index", "--dl", "file:///dl", "--branch", "main", str(remote)]
    )
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(main, ["init-index", "--dl", "file:///dl", str(remote)])
    assert again.exit_code == 1 and "Error:" in again.output
    data = tmp_path / "data"
    data.mkdir()
    reg = Registry(database_url, data, remote)
    with reg.connect() as conn:
        store.migrate(conn)
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()
    assert git(f"--git-dir={remote}", "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(f"--git-dir={remote}", "branch", "--list").split() == ["*", "main"]
    assert reg.remote_file("q") == fixture_entry("q", "0.1.0").to_line() + "\n"


def test_a_crate_file_another_writer_changed_is_rewritten(reg: Registry, tmp_path: Path) -> None:
    """The sync compares blob shas, not bytes: a file whose sha differs from the rendering's is
    rewritten, one whose sha matches is left alone."""
    reg.publish(fixture_entry("q", "0.1.0"), fixture_entry("xy", "0.1.0"))
    reg.drain()
    expected_q, expected_xy = reg.remote_file("q"), reg.remote_file("xy")
    assert expected_q is not None and expected_xy is not None
    other = tmp_path / "other"
    git("clone", "-q", str(reg.remote), str(other))
    (other / "1" / "q").write_text(expected_q + expected_q)  # a line too many
    git("-c", "user.name=ops", "-c", "user.email=o@e", "commit", "-qam", "Edit q", cwd=other)
    git("push", "-q", "origin", "HEAD", cwd=other)
    index = reg.index()
    index.fetch()  # the sync builds on the tip as of our last fetch: make it the other's
    with reg.connect() as conn:
        result = sync_crates(conn, index, ["q", "xy"])
    assert result.commits == ["Update crate `q`"] and result.pushes == 1
    assert reg.remote_file("q") == expected_q and reg.remote_file("xy") == expected_xy
    assert reg.messages() == ["Create crate `q`", "Create crate `xy`", "Edit q", "Update crate `q`"]


def _blob_at_se(tree: Path) -> None:
    (tree / "se").write_text("a file where the directory of se/rd/serde must be\n")


def _tree_at_serde(tree: Path) -> None:
    (tree / "se" / "rd" / "serde").mkdir(parents=True)
    (tree / "se" / "rd" / "serde" / "x").write_text("a directory where serde's file must be\n")


@pytest.mark.parametrize(
    ("block", "unblock", "fragment"),
    [
        (_blob_at_se, lambda tree: (tree / "se").unlink(), "a file is in the way"),
        (
            _tree_at_serde,
            lambda tree: shutil.rmtree(tree / "se"),
            "se/rd/serde is a tree",
        ),
    ],
    ids=["file-where-a-directory-must-be", "directory-where-the-file-must-be"],
)
def test_one_crate_that_cannot_be_written_fails_alone(
    reg: Registry,
    tmp_path: Path,
    block: Callable[[Path], None],
    unblock: Callable[[Path], None],
    fragment: str,
) -> None:
    """A batch of 51 with one crate whose path a foreign push blocked: the 50 are pushed in one
    push, only the one's job fails (with its own error), and it converges once unblocked."""
    foreign_push(reg, tmp_path, block, "Block serde")
    good = [_entry(f"good-{i:02}") for i in range(50)]
    reg.publish(_entry("serde"), *good)
    assert reg.drain() == 51 + 51  # every git job ran, every sparse job too
    assert reg.messages() == ["Block serde"] + [f"Create crate `{e.name}`" for e in good]
    for entry in good:
        assert reg.remote_file(entry.name) == entry.to_line() + "\n"
    with psycopg.connect(reg.url) as conn:
        rows = conn.execute(
            "SELECT job_type, payload->>'name', attempts, dead, last_error FROM indexpub_jobs.jobs"
        ).fetchall()
    assert len(rows) == 1, rows
    job_type, name, attempts, dead, error = rows[0]
    assert (job_type, name, attempts, dead) == ("sync_crate", "serde", 1, False)
    assert error.startswith("cannot ") and fragment in error, error
    # The sparse index is written apart from git, and is complete.
    assert (reg.sparse / "se" / "rd" / "serde").read_text() == _entry("serde").to_line() + "\n"

    foreign_push(reg, tmp_path, unblock, "Unblock serde")
    with psycopg.connect(reg.url) as conn:
        conn.execute("UPDATE indexpub_jobs.jobs SET run_at = now()")  # skip the backoff
    reg.drain()
    assert reg.pending_jobs() == 0
    assert reg.remote_file("serde") == _entry("serde").to_line() + "\n"
    assert reg.messages()[-2:] == ["Unblock serde", "Create crate `serde`"]


def _entry(name: str) -> IndexEntry:
    return IndexEntry(name=name, vers=Version.parse("1.0.0"), deps=(), cksum="0" * 64)
