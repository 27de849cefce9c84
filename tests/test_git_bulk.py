"""GitIndex's whole-index operations against real bare remotes: one commit of many files
(commit_changes, add_blob), the listing of every file (list_files), and the read-only clone
that verify reads the remote in (ReadClone)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from support.git import git

from indexpub.domain.names import index_path
from indexpub.gitindex.builder import FLUSH_BYTES
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.gitindex.objects import object_sha
from indexpub.gitindex.process import GitError
from indexpub.gitindex.read_clone import ReadClone


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "index.git"
    init_index(path, dl="https://dl.example/{crate}", api=None)
    return path


def test_one_commit_creates_updates_and_deletes_many_files(remote: Path, index: GitIndex) -> None:
    config_before = git(f"--git-dir={remote}", "show", "HEAD:config.json")
    names = ["a", "ab", "abc", "abcd", "abce", "serde", "serde_json", "tokio", "x-y"]
    tip = index.fetch()
    changes = {index_path(n): index.add_blob(f"{n} 1\n".encode()) for n in names}
    first = index.commit_changes(tip, changes, "Rebuild index: 9 crate files")
    index.push(first)
    assert _files(remote) == {
        "config.json": config_before,
        **{index_path(n): f"{n} 1\n" for n in names},
    }
    assert git(f"--git-dir={remote}", "log", "--format=%s", "-1").strip() == (
        "Rebuild index: 9 crate files"
    )

    # Updates and deletions in one commit; directories left empty disappear.
    second = index.commit_changes(
        first,
        {
            index_path("a"): None,
            index_path("abc"): None,
            index_path("serde"): index.add_blob(b"serde 2\n"),
            index_path("tokio"): index.add_blob(b"tokio 2\n"),
        },
        "Second",
    )
    index.push(second)
    files = _files(remote)
    assert files[index_path("serde")] == "serde 2\n" and files[index_path("tokio")] == "tokio 2\n"
    assert index_path("a") not in files and index_path("abc") not in files
    trees = git(f"--git-dir={remote}", "ls-tree", "-d", "-r", "--name-only", "HEAD").split()
    assert "1" not in trees and "3/a" not in trees and "3/x" in trees
    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")

    # What is already there is no change: no commit.
    same = {index_path("serde"): object_sha("blob", b"serde 2\n"), index_path("a"): None}
    assert index.commit_changes(second, same, "Nothing") == second
    assert index.commit_changes(second, {}, "Nothing") == second


def test_a_file_or_directory_in_the_way_refuses_the_whole_commit(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    (work / "se").write_text("a file where a directory must be\n")
    (work / "to" / "ki" / "tokio").mkdir(parents=True)
    (work / "to" / "ki" / "tokio" / "x").write_text("a directory where a file must be\n")
    git("add", "-A", cwd=work)
    git("-c", "user.name=o", "-c", "user.email=o@e", "commit", "-qm", "Block", cwd=work)
    git("push", "-q", "origin", "HEAD", cwd=work)
    tip = index.fetch()
    blob = index.add_blob(b"x\n")
    with pytest.raises(GitError, match=r"se is a file in .*, where a directory must be"):
        index.commit_changes(tip, {"se/rd/serde": blob, "ok/ay/okay": blob}, "Blocked")
    with pytest.raises(GitError, match=r"to/ki/tokio is a directory in .*, expected a file"):
        index.commit_changes(tip, {"to/ki/tokio": blob, "ok/ay/okay": blob}, "Blocked")
    with pytest.raises(ValueError, match="not a crate file path"):
        index.commit_changes(tip, {"config.json": blob}, "Never")
    # A deletion of a path that is a directory removes nothing.
    assert index.commit_changes(tip, {"to/ki/tokio": None}, "Nothing") == tip


def test_a_commit_bigger_than_a_pack_is_published_with_all_its_packs(
    remote: Path, index: GitIndex
) -> None:
    """Blobs past builder.FLUSH_BYTES are written in packs before the commit exists; the
    direct publish must ship those too (the remote's fsck would miss them otherwise)."""
    tip = index.fetch()
    packs_before = set((index.path / "objects" / "pack").glob("*.pack"))
    size = 256 << 10
    count = (FLUSH_BYTES // size) * 2 + 3  # incompressible: more than two packs' worth
    contents = {f"cr/at/crate{i}": os.urandom(size) for i in range(count)}
    changes = {path: index.add_blob(data) for path, data in contents.items()}
    head = index.commit_changes(tip, changes, f"Rebuild index: {count} crate files")
    index.push(head)
    assert index.last_push_mode == "direct"
    written = set((index.path / "objects" / "pack").glob("*.pack")) - packs_before
    assert len(written) >= 3
    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")
    listing = index.list_files(head)
    for path, data in contents.items():
        assert listing[path.encode()].decode() == object_sha("blob", data)


def test_list_files_gives_every_blob_and_its_sha(remote: Path, index: GitIndex) -> None:
    tip = index.fetch()
    head = index.commit_changes(
        tip, {"se/rd/serde": index.add_blob(b"s\n"), "1/a": index.add_blob(b"a\n")}, "Two"
    )
    listing = index.list_files(head)
    assert listing == {
        b"1/a": object_sha("blob", b"a\n").encode(),
        b"config.json": git(f"--git-dir={index.path}", "rev-parse", f"{tip}:config.json")
        .strip()
        .encode(),
        b"se/rd/serde": object_sha("blob", b"s\n").encode(),
    }
    with pytest.raises(ValueError):
        index.list_files("HEAD")


def test_read_clone_reads_the_remote_apart_from_the_worker_and_one_at_a_time(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    tip = index.fetch()
    head = index.commit_file(tip, "se/rd/serde", b"serde\n", "Create crate `serde`")
    index.push(head)
    path = tmp_path / "verify" / "clone"
    with ReadClone.opened(str(remote), path) as reader:
        assert reader.fetch() == head
        listing = reader.files(head)
        sha = listing[b"se/rd/serde"].decode()
        assert reader.read_blobs([sha]) == [b"serde\n"]
        assert reader.branch == "master"
        # The worker's clone is not touched: its tracking ref is where the push left it.
        assert index.tip() == head

        # A second user of the same clone waits for the first.
        entered = threading.Event()

        def second() -> None:
            with ReadClone.opened(str(remote), path):
                entered.set()

        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.3)
        assert not entered.is_set()
    waiting.join(10)
    assert entered.is_set()


def _files(remote: Path) -> dict[str, str]:
    names = git(f"--git-dir={remote}", "ls-tree", "-r", "--name-only", "HEAD").split()
    return {n: git(f"--git-dir={remote}", "cat-file", "blob", f"HEAD:{n}") for n in names}
