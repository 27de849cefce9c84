"""Squashing the index: one parentless commit with the tip's tree, the old history on a snapshot
branch (of the index remote, or of an archive remote through its own job), pushed with a lease;
against real PostgreSQL, real bare remotes and the real worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest
from support.git import git
from support.index_helpers import Registry, fixture_entry, foreign_push
from support.queue_helpers import wait_for

from indexpub.gitindex.index import GitIndex
from indexpub.gitindex.process import PushRejected
from indexpub.pipeline import jobs
from indexpub.pipeline.faults import ENV as CRASH_ENV
from indexpub.pipeline.git_sync import sync_crates
from indexpub.pipeline.rebuild import rebuild
from indexpub.pipeline.squash import Archived, archive_tip, squash, squashed_by
from indexpub.registry.queue import request_squash

BRANCH = "refs/heads/master"


def rev(repo: Path, spec: str) -> str:
    return git(f"--git-dir={repo}", "rev-parse", "--verify", spec).strip()


def commit_count(repo: Path, spec: str = BRANCH) -> int:
    return int(git(f"--git-dir={repo}", "rev-list", "--count", spec))


def branches(repo: Path) -> dict[str, str]:
    out = git(f"--git-dir={repo}", "for-each-ref", "--format=%(refname:short) %(objectname)")
    return dict(line.split() for line in out.splitlines())


def snapshots(repo: Path) -> dict[str, str]:
    return {name: sha for name, sha in branches(repo).items() if name.startswith("snapshot-")}


def today(url: str) -> date:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def request(reg: Registry, archive_url: str | None = None) -> int:
    with reg.connect() as conn:
        job, new = request_squash(conn, archive_url)
    assert new
    return job.id


def live_jobs(reg: Registry) -> list[tuple[str, int, bool, str | None]]:
    """(type, attempts, backing off, last error) of every job left."""
    with reg.connect() as conn:
        rows = conn.execute(
            "SELECT job_type, attempts, run_at > now(), last_error FROM indexpub_jobs.jobs"
            " ORDER BY id"
        ).fetchall()
    return [(str(r[0]), int(r[1]), bool(r[2]), r[3]) for r in rows]


def skip_backoff(reg: Registry) -> None:
    with reg.connect() as conn:
        conn.execute("UPDATE indexpub_jobs.jobs SET run_at = now()")


def published(reg: Registry, *crates: tuple[str, str]) -> str:
    """Publish fixture crates and drain: the remote tip."""
    reg.publish(*(fixture_entry(name, version) for name, version in crates))
    reg.drain()
    return rev(reg.remote, BRANCH)


def foreign_commit(repo: Path, parent: str, path: str, content: str) -> str:
    """A commit on ``parent`` that adds one file, written into ``repo`` (no ref moved)."""
    blob = git(f"--git-dir={repo}", "hash-object", "-w", "--stdin", input=content).strip()
    index_env = {"GIT_INDEX_FILE": str(repo / "foreign-index")}
    git(f"--git-dir={repo}", "read-tree", parent, env=index_env)
    git(
        f"--git-dir={repo}",
        "update-index",
        "--add",
        "--cacheinfo",
        f"100644,{blob},{path}",
        env=index_env,
    )
    tree = git(f"--git-dir={repo}", "write-tree", env=index_env).strip()
    (repo / "foreign-index").unlink()
    return git(
        f"--git-dir={repo}",
        "commit-tree",
        tree,
        "-p",
        parent,
        "-m",
        "A foreign publish",
        env={
            "GIT_AUTHOR_NAME": "ops",
            "GIT_AUTHOR_EMAIL": "ops@example.org",
            "GIT_COMMITTER_NAME": "ops",
            "GIT_COMMITTER_EMAIL": "ops@example.org",
        },
    ).strip()


def test_squash_keeps_the_tree_in_one_commit_and_the_history_on_a_snapshot(
    reg: Registry,
) -> None:
    published(reg, ("q", "0.1.0"))
    old = published(reg, ("xy", "0.1.0"), ("plain", "0.1.0"))
    assert commit_count(reg.remote) == 4
    request(reg)
    assert reg.drain() == 1
    new = rev(reg.remote, BRANCH)
    assert new != old
    assert commit_count(reg.remote) == 1
    assert rev(reg.remote, f"{new}^{{tree}}") == rev(reg.remote, f"{old}^{{tree}}")
    day = today(reg.url).isoformat()
    assert snapshots(reg.remote) == {f"snapshot-{day}": old}
    message = git(f"--git-dir={reg.remote}", "log", "-1", "--format=%B", new)
    assert message.startswith("Collapse index into one commit\n\n")
    assert f"Previous HEAD was {old}, now on the `snapshot-{day}` branch." in message
    for name in ("q", "xy", "plain"):
        assert reg.remote_file(name) == reg.expected_file(name)
    assert reg.pending_jobs() == 0


def test_a_publish_queued_with_the_squash_lands_on_the_squash_commit(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """In one worker run: the squash (first, by its priority), then a sync, which must build
    on the squash commit with the worker's in-memory index, not on the old tip."""
    old = published(reg, ("q", "0.1.0"))
    reg.publish(fixture_entry("xy", "0.1.0"))  # its sync job waits behind the squash
    request(reg)
    with caplog.at_level(logging.INFO, logger="indexpub"):
        reg.drain()
    assert "push rejected" not in caplog.text  # built on the squash commit at once
    tip = rev(reg.remote, BRANCH)
    squash_commit = rev(reg.remote, f"{tip}^")
    assert git(f"--git-dir={reg.remote}", "rev-list", "--parents", "-1", squash_commit).split() == [
        squash_commit
    ]
    assert rev(reg.remote, f"{squash_commit}^{{tree}}") == rev(reg.remote, f"{old}^{{tree}}")
    assert commit_count(reg.remote) == 2
    assert git(f"--git-dir={reg.remote}", "log", "-1", "--format=%s", tip) == (
        "Create crate `xy`\n"
    )
    # The worker's GitIndex followed the squash: its tip, and a direct publish from it (which
    # only works when the walk from the new commit reaches the tip it knows).
    index = jobs._IndexTarget.index
    assert index is not None
    assert index.tip() == tip
    assert index.last_push_mode == "direct"
    assert reg.remote_file("q") == reg.expected_file("q")
    assert reg.remote_file("xy") == reg.expected_file("xy")

    # And the next publish too, in a worker of its own (a new GitIndex on the same clone).
    reg.publish(fixture_entry("plain", "0.1.0"))
    reg.drain()
    assert rev(reg.remote, f"{BRANCH}^") == tip
    assert commit_count(reg.remote) == 3


def test_the_same_gitindex_builds_on_the_squash_commit(reg: Registry) -> None:
    published(reg, ("q", "0.1.0"))
    index = reg.index()
    with reg.connect() as conn:
        result = squash(index, day=today(reg.url), request="r1")
        assert result.commit is not None
        assert index.tip() == result.commit
        reg.publish(fixture_entry("xy", "0.1.0"))
        synced = sync_crates(conn, index, ["xy"])
    assert synced.commits == ["Create crate `xy`"] and synced.rejected == 0
    assert rev(reg.remote, f"{BRANCH}^") == result.commit
    assert index.last_push_mode == "direct"


def objects_in(repo: Path) -> int:
    counts = dict(
        line.split(": ") for line in git(f"--git-dir={repo}", "count-objects", "-v").splitlines()
    )
    return int(counts["count"]) + int(counts["in-pack"])


def test_the_squash_push_sends_one_commit_not_the_whole_tree(reg: Registry, tmp_path: Path) -> None:
    """The worker's clone gets a bitmap first, so git push knows the tip's tree is the
    remote's although the squash commit has no parent to say so."""
    # The remote keeps every pack it receives, so its object count says what was sent.
    git(f"--git-dir={reg.remote}", "config", "receive.unpackLimit", "1")
    published(reg, ("q", "0.1.0"), ("xy", "0.1.0"), ("plain", "0.1.0"), ("abc", "0.1.0"))
    before = objects_in(reg.remote)
    squash(reg.index(), day=date(2000, 1, 1), request="one")
    assert objects_in(reg.remote) == before + 1
    # Without the bitmap, from a fetched clone (what a plain `git commit-tree` and `git push
    # --force` does), git push sends every tree and blob again.
    published(reg, ("feats", "0.1.0"))
    before = objects_in(reg.remote)
    tree_objects = len(git(f"--git-dir={reg.remote}", "ls-tree", "-r", "-t", BRANCH).splitlines())
    fresh = GitIndex.open(str(reg.remote), tmp_path / "fresh-clone")
    fresh.squash(fresh.fetch(), "Collapse index into one commit\n", snapshot=None, bitmap=False)
    assert objects_in(reg.remote) == before + tree_objects + 2  # the root tree and the commit


def packs_in(repo: Path) -> set[str]:
    return {pack.name for pack in (repo / "objects" / "pack").glob("pack-*.pack")}


def test_the_squash_after_a_full_rebuild_rewrites_no_pack_of_the_clone(
    reg: Registry, tmp_path: Path
) -> None:
    """A full rebuild leaves a pack as big as the clone's beside it; the squash's bitmap must
    not merge the two (at 200,000 crates that rewrote the whole index: 140 s, 1 GiB), and its
    push must still send only the new commit."""
    git(f"--git-dir={reg.remote}", "config", "receive.unpackLimit", "1")
    crates = [(name, "0.1.0") for name in ("q", "xy", "plain", "abc", "feats")]
    published(reg, *crates)

    def delete_crate_files(tree: Path) -> None:
        for name, _ in crates:
            for path in tree.glob(f"**/{name}"):
                path.unlink()

    foreign_push(reg, tmp_path, delete_crate_files, "Delete every crate file")
    index = reg.index()
    with reg.connect() as conn:
        assert rebuild(conn, index).changed == len(crates)
    before = packs_in(index.path)
    assert len(before) >= 2  # the clone's and the rebuild's
    remote_objects = objects_in(reg.remote)
    squash(index, day=date(2000, 1, 1), request="after-rebuild")
    assert before <= packs_in(index.path)
    assert objects_in(reg.remote) == remote_objects + 1


def test_todays_snapshot_branch_is_never_overwritten(reg: Registry) -> None:
    first_tip = published(reg, ("q", "0.1.0"))
    day = today(reg.url).isoformat()
    git(f"--git-dir={reg.remote}", "update-ref", f"refs/heads/snapshot-{day}", first_tip)
    git(f"--git-dir={reg.remote}", "update-ref", f"refs/heads/snapshot-{day}-2", first_tip)
    old = published(reg, ("xy", "0.1.0"))
    request(reg)
    reg.drain()
    assert snapshots(reg.remote) == {
        f"snapshot-{day}": first_tip,
        f"snapshot-{day}-2": first_tip,
        f"snapshot-{day}-3": old,
    }
    assert commit_count(reg.remote) == 1


def test_a_branch_of_one_commit_is_left_alone(reg: Registry) -> None:
    before = rev(reg.remote, BRANCH)  # init_index's one commit
    request(reg)
    reg.drain()
    assert rev(reg.remote, BRANCH) == before
    assert snapshots(reg.remote) == {}
    assert reg.pending_jobs() == 0


def test_the_lease_refuses_a_branch_that_moved_and_nothing_changes(reg: Registry) -> None:
    """The compare-and-swap of git push: the tip we read is stale (a foreign push landed since)."""
    published(reg, ("q", "0.1.0"))
    index = reg.index()
    stale = index.fetch()
    foreign = foreign_commit(reg.remote, stale, "2/zz", '{"name":"zz"}\n')
    git(f"--git-dir={reg.remote}", "update-ref", BRANCH, foreign, stale)
    with pytest.raises(PushRejected, match="stale info"):
        index.squash(stale, "Collapse index into one commit\n", snapshot="snapshot-2000-01-01")
    assert rev(reg.remote, BRANCH) == foreign
    assert snapshots(reg.remote) == {}  # atomic: the snapshot branch was not created either

    # Squashing again reads the real tip: the foreign file is in the squash commit.
    result = squash(index, day=date(2000, 1, 1), request="again")
    assert result.old_tip == foreign and result.commit == rev(reg.remote, BRANCH)
    assert commit_count(reg.remote) == 1
    assert reg.remote_file("zz") == '{"name":"zz"}\n'
    assert snapshots(reg.remote) == {"snapshot-2000-01-01": foreign}


def test_a_branch_moved_during_the_push_fails_the_job_and_its_retry_converges(
    reg: Registry,
) -> None:
    """A publish lands between the job's read and its push: the remote moves the branch while
    it holds our push (a pre-receive hook), so the remote's own compare-and-swap refuses it."""
    old = published(reg, ("q", "0.1.0"))
    foreign = foreign_commit(reg.remote, old, "2/zz", '{"name":"zz"}\n')
    fired = reg.remote / "hook-fired"
    hook = reg.remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ -e "{fired}" ] && exit 0\n'
        f'touch "{fired}"\n'
        "exec env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY "
        f'-u GIT_ALTERNATE_OBJECT_DIRECTORIES git --git-dir="{reg.remote}" '
        f"update-ref {BRANCH} {foreign} {old}\n"
    )
    hook.chmod(0o755)
    request(reg)
    reg.drain()
    assert fired.exists()
    [(job_type, attempts, backing_off, error)] = live_jobs(reg)
    assert (job_type, attempts, backing_off) == ("squash_index", 1, True)
    assert error is not None and "PushRejected" in error and "but expected" in error
    assert rev(reg.remote, BRANCH) == foreign  # the foreign publish, with all the history
    assert commit_count(reg.remote) == 3
    assert snapshots(reg.remote) == {}

    skip_backoff(reg)
    reg.drain()
    assert reg.pending_jobs() == 0
    assert commit_count(reg.remote) == 1
    assert snapshots(reg.remote) == {f"snapshot-{today(reg.url).isoformat()}": foreign}
    assert reg.remote_file("zz") == '{"name":"zz"}\n'
    assert reg.remote_file("q") == reg.expected_file("q")


def test_a_worker_killed_after_the_push_does_not_squash_twice(
    reg: Registry, tmp_path: Path
) -> None:
    """The real worker, SIGKILLed right after the squash's push: its retry finds its own
    squash commit at the root of the branch (a publish landed on it meanwhile) and stops."""
    old = published(reg, ("q", "0.1.0"))
    request(reg)
    reg.publish(fixture_entry("xy", "0.1.0"))
    marker = tmp_path / "crashed"
    env = {
        **os.environ,
        "INDEXPUB_DATABASE_URL": reg.url,
        "INDEXPUB_INDEX_URL": str(reg.remote),
        "INDEXPUB_DATA_DIR": str(reg.data),
        CRASH_ENV: f"squash-pushed:{marker}",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "indexpub", "-v", "worker", "--poll-interval", "0.2"],
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    log = err.decode()
    assert marker.exists(), log
    assert "an earlier attempt squashed it" in log, log
    roots = git(f"--git-dir={reg.remote}", "rev-list", "--max-parents=0", BRANCH).split()
    assert len(roots) == 1 and commit_count(reg.remote) == 2
    assert git(f"--git-dir={reg.remote}", "log", "-1", "--format=%s") == "Create crate `xy`\n"
    assert list(snapshots(reg.remote).values()) == [old]


def test_one_squash_at_a_time(reg: Registry) -> None:
    published(reg, ("q", "0.1.0"))
    with reg.connect() as conn:
        first, new = request_squash(conn, None)
        assert new
        again, new_again = request_squash(conn, "/elsewhere")
        assert (again.id, new_again) == (first.id, False)
    reg.drain()
    with reg.connect() as conn:
        third, new_third = request_squash(conn, None)
    assert new_third and third.id != first.id


# --- with an archive remote ----------------------------------------------------------------


def test_archive_first_then_squash(reg: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "archive.git"
    git("init", "--bare", "-q", str(archive))
    old = published(reg, ("q", "0.1.0"), ("xy", "0.1.0"))
    history = git(f"--git-dir={reg.remote}", "log", "--format=%H %s", BRANCH)
    request(reg, str(archive))
    assert reg.drain() == 2  # the archive job, then the squash it enqueued
    day = today(reg.url).isoformat()
    assert snapshots(archive) == {f"snapshot-{day}": old}
    assert git(f"--git-dir={archive}", "log", "--format=%H %s", f"snapshot-{day}") == history
    assert snapshots(reg.remote) == {}  # the index remote keeps no snapshot
    assert commit_count(reg.remote) == 1
    assert rev(reg.remote, f"{BRANCH}^{{tree}}") == rev(reg.remote, f"{old}^{{tree}}")
    message = git(f"--git-dir={reg.remote}", "log", "-1", "--format=%B", BRANCH)
    assert f"now on the `snapshot-{day}` branch of the archive {archive}." in message


def test_archive_down_never_squashes_and_loses_nothing_until_it_is_back(
    reg: Registry, tmp_path: Path
) -> None:
    archive = tmp_path / "archive.git"  # not there yet
    published(reg, ("q", "0.1.0"))
    request(reg, str(archive))
    for _ in range(2):  # two failed attempts: never a squash
        skip_backoff(reg)
        reg.drain()
        [(job_type, attempts, backing_off, error)] = live_jobs(reg)
        assert job_type == "archive_index" and backing_off
        assert error is not None and "GitError" in error
    assert attempts == 2
    assert commit_count(reg.remote) == 2  # nothing squashed
    # Publishes go on meanwhile; the archive job, backing off, does not hold them up.
    tip = published(reg, ("xy", "0.1.0"))
    assert commit_count(reg.remote) == 3
    assert [j[0] for j in live_jobs(reg)] == ["archive_index"]

    git("init", "--bare", "-q", str(archive))
    skip_backoff(reg)
    reg.drain()
    assert reg.pending_jobs() == 0
    day = today(reg.url).isoformat()
    assert snapshots(archive) == {f"snapshot-{day}": tip}
    assert commit_count(archive, f"snapshot-{day}") == 3
    assert commit_count(reg.remote) == 1
    assert reg.remote_file("xy") == reg.expected_file("xy")


def test_commits_between_the_archive_and_the_squash_reach_the_archive(
    reg: Registry, tmp_path: Path
) -> None:
    archive = tmp_path / "archive.git"
    git("init", "--bare", "-q", str(archive))
    published(reg, ("q", "0.1.0"))
    index = reg.index()
    day = date(2000, 1, 2)
    archived = archive_tip(index, str(archive), day)
    assert archived is not None
    first, name = archived
    assert name == "snapshot-2000-01-02" and snapshots(archive) == {name: first}
    # A crate lands after the archive job and before the squash.
    with reg.connect() as conn:
        reg.publish(fixture_entry("xy", "0.1.0"))
        assert sync_crates(conn, index, ["xy"]).pushes == 1
    later = rev(reg.remote, BRANCH)
    result = squash(index, day=day, request="r", archived=Archived(str(archive), name))
    # The same snapshot branch was fast-forwarded to the tip that was squashed.
    assert (result.old_tip, result.snapshot) == (later, name)
    assert snapshots(archive) == {name: later}
    assert commit_count(reg.remote) == 1
    assert squashed_by(git(f"--git-dir={reg.remote}", "log", "-1", "--format=%B")) == "r"

    # An archive branch someone rewrote is not overwritten: a new one takes the tip.
    unrelated = first  # the history before the squash: no ancestor of what follows
    git(f"--git-dir={archive}", "update-ref", f"refs/heads/{name}", unrelated)
    with reg.connect() as conn:
        reg.publish(fixture_entry("plain", "0.1.0"))
        sync_crates(conn, index, ["plain"])
    tip = rev(reg.remote, BRANCH)
    again = squash(index, day=day, request="r2", archived=Archived(str(archive), name))
    assert again.snapshot == f"{name}-2"
    assert snapshots(archive) == {name: unrelated, f"{name}-2": tip}
