"""The direct publish into a local bare remote (GitIndex.push without git push), and when it
must leave the work to git push. Real bare repositories in tmp_path, no mocks."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from support.git import git
from support.index_helpers import Registry, fixture_entry, make_registry

import indexpub.gitindex.index as git_index
from indexpub.gitindex.direct_publish import LOCAL_PUSH_ENV, place_packs
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.gitindex.process import GitError, PushRejected
from indexpub.pipeline.git_sync import sync_crates

DL = "https://dl.example/crates"


def remote_tip(remote: Path, branch: str = "master") -> str:
    return git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{branch}").strip()


def packs(folder: Path) -> dict[str, int]:
    """pack file name -> inode, for the .pack files under an objects/pack folder."""
    return {p.name: p.stat().st_ino for p in folder.glob("pack-*.pack")}


def other_writer_pushes(remote: Path, work: Path, message: str) -> str:
    """A second clone commits a file and pushes it with git; returns its commit."""
    if not work.exists():
        git("clone", "--quiet", str(remote), str(work))
    git("pull", "--quiet", "--ff-only", cwd=work)
    (work / "2").mkdir(exist_ok=True)
    (work / "2" / "zz").write_text(message + "\n")
    git("add", "2/zz", cwd=work)
    git("-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", message, cwd=work)
    git("push", "--quiet", "origin", "HEAD", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def install_hook(hooks_dir: Path, name: str, marker: Path) -> None:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    hook = hooks_dir / name
    hook.write_text(f"#!/bin/sh\ncat > /dev/null\necho {name} >> '{marker}'\n")
    hook.chmod(0o755)


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCAL_PUSH_ENV, raising=False)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    init_index(path, DL, None)
    return path


def commit_one(index: GitIndex, path: str, content: bytes | None = b"x\n") -> str:
    tip = index.tip()
    assert tip is not None
    return index.commit_file(tip, path, content, f"Change {path}")


# --- the direct path ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["path", "file-url", "relative"])
def test_local_bare_remote_is_published_directly(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    spelled = {"path": str(remote), "file-url": remote.as_uri(), "relative": "remote.git"}[url]
    index = GitIndex.open(spelled, tmp_path / "clone", timeout=20)
    base = index.tip()
    assert base is not None

    first = index.commit_file(base, "se/rd/serde", b"serde 1\n", "Create crate `serde`")
    index.push(first)
    assert index.last_push_mode == "direct"
    # A batch of several commits, a delete among them, published as one.
    with index.batch():
        head = index.commit_file(first, "1/a", b"a\n", "Create crate `a`")
        head = index.commit_file(head, "3/t/tok", b"tok\n", "Create crate `tok`")
        head = index.commit_file(head, "se/rd/serde", b"serde 1\nserde 2\n", "Update crate `serde`")
        head = index.commit_file(head, "1/a", None, "Delete crate `a`")
    index.push(head)
    assert index.last_push_mode == "direct"
    assert index.tip() == head == remote_tip(remote)

    # The remote's new packs are the clone's own files, linked; nothing went through git push.
    ours, theirs = packs(index.path / "objects" / "pack"), packs(remote / "objects" / "pack")
    assert len(theirs.keys() & ours.keys()) == 2
    assert all(theirs[name] == ours[name] for name in theirs.keys() & ours.keys())

    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")
    work = tmp_path / "work"
    git("clone", "--quiet", str(remote), str(work))
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith(".git/")] == [
        "3/t/tok",
        "config.json",
        "se/rd/serde",
    ]
    assert (work / "se" / "rd" / "serde").read_text() == "serde 1\nserde 2\n"
    log = git(f"--git-dir={remote}", "log", "--format=%s", "master").splitlines()
    assert log == [
        "Delete crate `a`",
        "Update crate `serde`",
        "Create crate `tok`",
        "Create crate `a`",
        "Create crate `serde`",
        "Initialize index",
    ]


def test_pushing_the_tip_again_is_a_no_op(remote: Path, index: GitIndex) -> None:
    tip = commit_one(index, "1/a")
    index.push(tip)
    packs_before = packs(remote / "objects" / "pack")
    index.push(tip)
    assert index.last_push_mode == "direct"
    assert remote_tip(remote) == tip
    assert packs(remote / "objects" / "pack") == packs_before


def test_a_commit_not_built_on_the_tip_goes_through_git_push(index: GitIndex) -> None:
    base = index.tip()
    assert base is not None
    ours = index.commit_file(base, "1/a", b"a\n", "a")
    index.push(ours)
    # A sibling of the pushed commit: moving the branch to it would drop `ours`. The
    # compare-and-swap alone (the branch is at the tip) would let it through; git push refuses.
    sibling = index.commit_file(base, "1/b", b"b\n", "b")
    with pytest.raises(PushRejected):
        index.push(sibling)
    assert index.last_push_mode == "git"
    assert index.tip() == ours


def test_another_writer_makes_the_direct_publish_lose_the_compare_and_swap(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    base = index.fetch()
    theirs = other_writer_pushes(remote, tmp_path / "other", "Another writer's crate")
    ours = index.commit_file(base, "1/a", b"x\n", "Create crate `a`")
    with pytest.raises(PushRejected, match="moved"):
        index.push(ours)
    assert index.last_push_mode == "direct"
    assert remote_tip(remote) == theirs
    assert index.tip() == base
    # Its packs stay behind unreferenced; the repository is sound all the same.
    git(f"--git-dir={remote}", "fsck", "--strict")

    assert index.fetch() == theirs
    rebuilt = index.commit_file(theirs, "1/a", b"x\n", "Create crate `a`")
    index.push(rebuilt)
    assert index.last_push_mode == "direct"
    log = git(f"--git-dir={remote}", "log", "--format=%s", "master").splitlines()
    assert log == ["Create crate `a`", "Another writer's crate", "Initialize index"]


def test_pushing_a_stale_tip_again_is_rejected(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    tip = commit_one(index, "1/a")
    index.push(tip)
    other_writer_pushes(remote, tmp_path / "other", "theirs")
    with pytest.raises(PushRejected):
        index.push(tip)
    assert index.last_push_mode == "direct"


def test_sync_converges_after_another_writer_with_direct_publishes(
    database_url: str, tmp_path: Path
) -> None:
    reg: Registry = make_registry(database_url, tmp_path)
    index = reg.index()
    reg.publish(fixture_entry("q", "0.1.0"))
    with reg.connect() as conn:
        first = sync_crates(conn, index, ["q"])
    assert first.pushes == 1 and first.rejected == 0
    assert index.last_push_mode == "direct"
    theirs = other_writer_pushes(reg.remote, tmp_path / "other", "Another writer's crate")

    reg.publish(fixture_entry("xy", "0.1.0"))
    with reg.connect() as conn:
        result = sync_crates(conn, index, ["xy"])
    assert result.rejected == 1 and result.pushes == 1
    assert index.last_push_mode == "direct"
    assert reg.remote_file("xy") == reg.expected_file("xy")
    assert git(f"--git-dir={reg.remote}", "rev-parse", "HEAD~1").strip() == theirs
    assert reg.messages() == ["Create crate `q`", "Another writer's crate", "Create crate `xy`"]


def test_a_stale_lock_is_a_git_error_not_a_rejection(remote: Path, index: GitIndex) -> None:
    tip = commit_one(index, "1/a")
    lock = remote / "refs" / "heads" / "master.lock"
    lock.write_text("")
    with pytest.raises(GitError) as error:
        index.push(tip)
    assert not isinstance(error.value, PushRejected)
    assert index.last_push_mode == "direct"
    assert "master.lock" in str(error.value) and str(remote) in str(error.value)
    lock.unlink()
    # The commits were handed over with the failed attempt; a retry of the same commit is
    # git push's (a sync builds anew each attempt).
    index.push(tip)
    assert remote_tip(remote) == tip


def test_a_missing_remote_branch_is_created_by_git_push(remote: Path, index: GitIndex) -> None:
    git(f"--git-dir={remote}", "update-ref", "-d", "refs/heads/master")
    tip = commit_one(index, "1/a")
    index.push(tip)
    assert index.last_push_mode == "git"
    assert remote_tip(remote) == tip


def test_a_pack_gone_from_the_clone_leaves_the_push_to_git(remote: Path, index: GitIndex) -> None:
    tip = commit_one(index, "1/a")
    # Our one-commit pack is merged into another (-k keeps what no ref reaches yet).
    git(f"--git-dir={index.path}", "repack", "-a", "-d", "-k", "-q")
    index.push(tip)
    assert index.last_push_mode == "git"
    assert remote_tip(remote) == tip


# --- when git push is kept ------------------------------------------------------------------------


def test_receive_hooks_force_git_push_and_run(
    remote: Path, index: GitIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # git init's sample hooks are executable; they do not count.
    sample = remote / "hooks" / "pre-receive.sample"
    assert sample.exists() and os.access(sample, os.X_OK)
    # Neither does a hook git would not run (not executable).
    (remote / "hooks" / "update").write_text("#!/bin/sh\nexit 1\n")
    index.push(commit_one(index, "1/a"))
    assert index.last_push_mode == "direct"

    marker = tmp_path / "ran"
    install_hook(remote / "hooks", "pre-receive", marker)  # added after open
    tip = commit_one(index, "1/b")
    with caplog.at_level(logging.INFO, logger="indexpub.gitindex.index"):
        index.push(tip)
    assert index.last_push_mode == "git"
    assert marker.read_text() == "pre-receive\n"
    assert remote_tip(remote) == tip
    # The switch is logged at INFO: a push now costs several times more.
    (record,) = [r for r in caplog.records if r.levelno == logging.INFO]
    assert "git push, the remote has receive hooks (pre-receive)" in record.getMessage()


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_hooks_path_is_where_hooks_are_looked_for(tmp_path: Path, where: str) -> None:
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None)
    hooks = tmp_path / "shared-hooks" if where == "absolute" else remote / "custom-hooks"
    setting = str(hooks) if where == "absolute" else "custom-hooks"
    git(f"--git-dir={remote}", "config", "core.hooksPath", setting)
    marker = tmp_path / "ran"
    install_hook(hooks, "post-update", marker)
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    tip = commit_one(index, "1/a")
    index.push(tip)
    assert index.last_push_mode == "git"
    assert marker.read_text() == "post-update\n"
    # A hook in the default folder is not one git runs now: only hooksPath counts.
    (hooks / "post-update").unlink()
    install_hook(remote / "hooks", "pre-receive", marker)
    index.push(commit_one(index, "1/b"))
    assert index.last_push_mode == "direct"


def test_setting_forces_git_push(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCAL_PUSH_ENV, "git")
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    tip = commit_one(index, "1/a")
    index.push(tip)
    assert index.last_push_mode == "git"
    assert remote_tip(remote) == tip
    monkeypatch.setenv(LOCAL_PUSH_ENV, " Auto ")
    again = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    again.push(commit_one(again, "1/b"))
    assert again.last_push_mode == "direct"


@pytest.mark.parametrize("value", ["direct", "yes", "gti"])
def test_bad_setting_is_a_clear_error(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(LOCAL_PUSH_ENV, value)
    with pytest.raises(
        ValueError, match=f"{LOCAL_PUSH_ENV} must be one of auto, git, not '{value}'"
    ):
        GitIndex.open(str(remote), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()


def test_worker_refuses_a_bad_setting_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from indexpub.cli import main

    monkeypatch.setenv(LOCAL_PUSH_ENV, "direct")
    result = CliRunner().invoke(
        main, ["--database-url", "postgresql://nowhere.invalid/x", "worker", "--drain"]
    )
    assert result.exit_code == 2, result.output
    assert f"{LOCAL_PUSH_ENV} must be one of auto, git, not 'direct'" in result.output


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"core.sharedRepository": "group"}, "git"),
        ({"core.sharedRepository": "umask"}, "direct"),
        ({"receive.fsckObjects": "true"}, "git"),
        ({"transfer.fsckObjects": "true"}, "git"),
        ({"transfer.fsckObjects": "true", "receive.fsckObjects": "false"}, "direct"),
        ({"receive.hideRefs": "refs/pull"}, "git"),
        ({"receive.maxInputSize": "10m"}, "git"),
        ({"receive.denyDeletes": "true"}, "direct"),
    ],
)
def test_remote_settings_that_change_what_receive_pack_does_keep_git_push(
    remote: Path, tmp_path: Path, settings: dict[str, str], mode: str
) -> None:
    for key, value in settings.items():
        git(f"--git-dir={remote}", "config", key, value)
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    tip = commit_one(index, "1/a")
    index.push(tip)
    assert index.last_push_mode == mode
    assert remote_tip(remote) == tip


def test_an_unknown_repository_extension_keeps_git_push(remote: Path, tmp_path: Path) -> None:
    git(f"--git-dir={remote}", "config", "core.repositoryFormatVersion", "1")
    git(f"--git-dir={remote}", "config", "extensions.preciousObjects", "true")
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    index.push(commit_one(index, "1/a"))
    assert index.last_push_mode == "git"


def test_global_config_counts(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    global_config = tmp_path / "gitconfig"
    global_config.write_text("[receive]\n\tfsckObjects = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    index.push(commit_one(index, "1/a"))
    assert index.last_push_mode == "git"


def test_a_config_change_after_open_is_noticed(remote: Path, index: GitIndex) -> None:
    index.push(commit_one(index, "1/a"))
    assert index.last_push_mode == "direct"
    git(f"--git-dir={remote}", "config", "receive.fsckObjects", "true")
    index.push(commit_one(index, "1/b"))
    assert index.last_push_mode == "git"
    git(f"--git-dir={remote}", "config", "--unset", "receive.fsckObjects")
    index.push(commit_one(index, "1/c"))
    assert index.last_push_mode == "direct"


def test_a_remote_with_a_work_tree_keeps_git_push(tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    init_index(bare, DL, None)
    work = tmp_path / "work"
    git("clone", "--quiet", str(bare), str(work))
    git("checkout", "--quiet", "-b", "elsewhere", cwd=work)  # master is not checked out
    index = GitIndex.open(str(work), tmp_path / "clone", branch="master", timeout=20)
    tip = commit_one(index, "1/a")
    index.push(tip)
    assert index.last_push_mode == "git"
    assert git("rev-parse", "master", cwd=work).strip() == tip


def test_a_remote_that_was_away_at_open_is_published_directly_once_back(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    away = tmp_path / "away.git"
    remote.rename(away)
    reopened = GitIndex.open(str(remote), index.path, branch="master", timeout=20)
    away.rename(remote)
    reopened.push(commit_one(reopened, "1/a"))
    assert reopened.last_push_mode == "direct"


# --- packs and maintenance ------------------------------------------------------------------------


def test_place_packs_links_or_copies_durably(index: GitIndex, tmp_path: Path) -> None:
    tip = commit_one(index, "1/a")
    (pack,) = [
        p
        for p in (index.path / "objects" / "pack").glob("pack-*.pack")
        if tip in git("verify-pack", "-v", str(p.with_suffix(".idx")))
    ]
    for copy in (True, False):
        repo = tmp_path / f"copy-{copy}.git"
        git("init", "--bare", "--quiet", str(repo))
        folder = repo / "objects" / "pack"
        assert place_packs([pack], folder, copy=copy) == (2 if copy else 0)
        for suffix in (".pack", ".idx"):
            placed = folder / pack.with_suffix(suffix).name
            assert placed.read_bytes() == pack.with_suffix(suffix).read_bytes()
            assert (placed.stat().st_ino == pack.with_suffix(suffix).stat().st_ino) is not copy
            assert placed.stat().st_mode & 0o777 == 0o444
        assert not [p for p in folder.iterdir() if p.name.startswith("tmp_")]
        assert git(f"--git-dir={repo}", "cat-file", "-t", tip).strip() == "commit"
        # Already there: fine, nothing done.
        assert place_packs([pack], folder, copy=copy) == 0
    with pytest.raises(FileNotFoundError):
        place_packs([pack], tmp_path / "no-such-repo" / "objects" / "pack")
    with pytest.raises(FileNotFoundError):
        place_packs([tmp_path / "pack-0.pack"], folder, copy=True)


def test_a_remote_on_another_filesystem_gets_copies(tmp_path: Path) -> None:
    """os.link fails with EXDEV across filesystems: the packs are copied instead."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to put the remote on")
    with tempfile.TemporaryDirectory(dir=shm, prefix="indexpub-test-") as other:
        remote = Path(other) / "remote.git"
        init_index(remote, DL, None)
        index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
        with index.batch():
            head = index.commit_file(commit_one(index, "1/a"), "1/b", b"b\n", "b")
        index.push(head)
        assert index.last_push_mode == "direct"
        ours = packs(index.path / "objects" / "pack")
        theirs = packs(remote / "objects" / "pack")
        assert theirs.keys() == ours.keys() and len(theirs) == 1  # one batch, one pack
        assert all(theirs[name] != ours[name] for name in theirs)  # copies, not links
        assert not [p for p in (remote / "objects" / "pack").iterdir() if p.name.startswith("tmp")]
        git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")
        assert remote_tip(remote) == head


@pytest.mark.parametrize("autogc", [True, False])
def test_direct_publishes_keep_the_remotes_packs_few(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autogc: bool
) -> None:
    monkeypatch.setattr(git_index, "GC_EVERY_PUSHES", 8)
    if not autogc:
        git(f"--git-dir={remote}", "config", "receive.autogc", "false")
    index = GitIndex.open(str(remote), tmp_path / "clone", timeout=20)
    for n in range(16):
        index.push(commit_one(index, f"3/a/a{n:02d}"))
        assert index.last_push_mode == "direct"
        if n % 8 == 7:
            # The repack runs in the background: one still running when the next is due
            # would put that one off.
            index.finish_maintenance()
    found = len(packs(remote / "objects" / "pack"))
    if autogc:
        assert found < 6  # a geometric repack every 8 publishes
    else:
        assert found == 16  # the remote's owner said no
    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")
    git("clone", "--quiet", str(remote), str(tmp_path / "work"))
    assert (tmp_path / "work" / "3" / "a" / "a15").read_text() == "x\n"
