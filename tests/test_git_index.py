"""Tests for indexpub.gitindex.index against real git: bare remotes in tmp_path, no mocks."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.git import git

from indexpub.gitindex.index import GitIndex, check_crate_path, init_index
from indexpub.gitindex.objects import BLOB_MODE, TREE_MODE, Tree, TreeEdit, TreeEntry, format_tree
from indexpub.gitindex.pack import apply_delta, edit_delta, stored_zlib
from indexpub.gitindex.process import GitError, GitTimeout, PushRejected
from indexpub.gitindex.reader import TreeCache

DL = "https://dl.example/crates"
API = "https://api.example"


def ls_tree(repo: Path, rev: str) -> dict[str, str]:
    """path -> blob sha of every file in `rev`."""
    out = git(f"--git-dir={repo}", "ls-tree", "-r", rev)
    files = {}
    for line in out.splitlines():
        meta, path = line.split("\t")
        files[path] = meta.split()[2]
    return files


def dirs_of(repo: Path, rev: str) -> set[str]:
    out = git(f"--git-dir={repo}", "ls-tree", "-r", "-d", "--name-only", rev)
    return set(out.splitlines())


def loose_objects(repo: Path) -> set[str]:
    objects = repo / "objects"
    return {
        d.name + f.name
        for d in objects.iterdir()
        if len(d.name) == 2
        for f in d.iterdir()
        if not f.name.startswith("tmp")
    }


def packed_objects(repo: Path) -> set[str]:
    """Every object named by the .idx files of `repo` (version 2 indexes)."""
    found: set[str] = set()
    for idx in (repo / "objects" / "pack").glob("pack-*.idx"):
        data = idx.read_bytes()
        assert data[:8] == b"\377tOc\0\0\0\2"
        count = int.from_bytes(data[8 + 255 * 4 : 8 + 256 * 4], "big")
        names = data[8 + 256 * 4 : 8 + 256 * 4 + 20 * count]
        found.update(names[i : i + 20].hex() for i in range(0, len(names), 20))
    return found


def stored_objects(repo: Path) -> set[str]:
    return loose_objects(repo) | packed_objects(repo)


def packs(repo: Path) -> set[str]:
    return {p.name for p in (repo / "objects" / "pack").glob("pack-*.pack")}


def crate_path(name: str) -> str:
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def fast_import_crates(repo: Path, branch: str, count: int, seed: int = 0) -> str:
    """Add `count` crate files in one commit on top of `branch`; returns the new tip."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_-"
    names: set[str] = set()
    while len(names) < count:
        length = rng.randint(4, 14)
        names.add(
            rng.choice("abcdefghijklmnopqrstuvwxyz") + "".join(rng.choices(alphabet, k=length - 1))
        )
    parent = git(f"--git-dir={repo}", "rev-parse", f"refs/heads/{branch}").strip()
    header = f"commit refs/heads/{branch}\ncommitter t <t@t> 0 +0000\ndata 7\nimport\n"
    chunks = [f"{header}from {parent}\n".encode()]
    for name in sorted(names):
        line = json.dumps({"name": name, "vers": "0.1.0", "deps": [], "cksum": "0" * 64}) + "\n"
        data = line.encode()
        chunks.append(
            f"M 100644 inline {crate_path(name)}\ndata {len(data)}\n".encode() + data + b"\n"
        )
    chunks.append(b"\n")
    git(f"--git-dir={repo}", "fast-import", "--quiet", input=b"".join(chunks))
    return git(f"--git-dir={repo}", "rev-parse", f"refs/heads/{branch}").strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    init_index(path, DL, API)
    return path


# --- init_index and open --------------------------------------------------------------------------


@pytest.mark.parametrize("branch", ["main", "master"])
def test_init_index_head_names_branch_and_clone_sees_config(tmp_path: Path, branch: str) -> None:
    remote = tmp_path / "remote.git"
    init_index(remote, DL, API, branch=branch)
    assert git(f"--git-dir={remote}", "symbolic-ref", "HEAD").strip() == f"refs/heads/{branch}"
    assert git(f"--git-dir={remote}", "rev-parse", "--is-bare-repository").strip() == "true"
    git("clone", "--quiet", str(remote), str(tmp_path / "work"))
    text = (tmp_path / "work" / "config.json").read_text()
    assert text == '{\n  "dl": "https://dl.example/crates",\n  "api": "https://api.example"\n}\n'
    assert git("log", "--format=%s", cwd=tmp_path / "work").splitlines() == ["Initialize index"]


def test_init_index_omits_api_and_refuses_non_empty(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    remote.mkdir()  # an empty directory is fine
    init_index(remote, DL, None)
    config = git(f"--git-dir={remote}", "show", "HEAD:config.json")
    assert json.loads(config) == {"dl": DL}
    with pytest.raises(FileExistsError):
        init_index(remote, DL, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        init_index(tmp_path / "file", DL, None)


@pytest.mark.parametrize("branch", ["main", "master"])
def test_open_follows_remote_head(tmp_path: Path, branch: str) -> None:
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None, branch=branch)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    assert index.branch == branch
    assert index.tip() == git(f"--git-dir={remote}", "rev-parse", "HEAD").strip()
    assert index.read_file("config.json") == b'{\n  "dl": "https://dl.example/crates"\n}\n'
    assert index.read_file("1/a") is None


def test_remote_path_with_spaces_and_hash(tmp_path: Path) -> None:
    remote = tmp_path / "my index #1" / "remote.git"
    init_index(remote, DL, None)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    base = index.tip()
    assert base is not None
    index.push(index.commit_file(base, "1/a", b"x\n", "a"))
    assert GitIndex.open(str(remote), tmp_path / "clone").fetch() == index.tip()


def test_open_existing_clone_checks_url(remote: Path, index: GitIndex, tmp_path: Path) -> None:
    again = GitIndex.open(str(remote), tmp_path / "clone")
    assert again.tip() == index.tip()
    other = tmp_path / "other.git"
    init_index(other, DL, None)
    with pytest.raises(GitError, match="is a clone of"):
        GitIndex.open(str(other), tmp_path / "clone")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("x")
    with pytest.raises(GitError, match="not a git repository"):
        GitIndex.open(str(remote), junk)


def test_explicit_branch_overrides_remote_head(remote: Path, tmp_path: Path) -> None:
    index = GitIndex.open(str(remote), tmp_path / "clone", branch="master")
    assert index.branch == "master"
    with pytest.raises(ValueError):
        GitIndex.open(str(remote), tmp_path / "clone2", branch="bad..name")


def test_read_file_of_a_name_that_git_would_take_for_describe_output(index: GitIndex) -> None:
    """git reads "<commit>:x-g1a2b" as `git describe` output, i.e. the commit whose sha starts
    with 1a2b: read_file must find the file through the trees instead."""
    base = index.fetch()
    prefix = base[:7]
    name = f"zz-g{prefix}"
    path = f"zz/-g/{name}"
    tip = index.commit_file(base, path, b"the file\n", "add")
    # The trap is real: git itself resolves the path spec to the commit.
    spec = git(f"--git-dir={index.path}", "rev-parse", f"{tip}:{path}").strip()
    assert spec == base
    assert index.read_file(path, tip) == b"the file\n"
    assert index.file_shas([path], tip) == [ls_tree(index.path, tip)[path]]


# --- commit_file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["1/a", "2/ab", "3/a/abc", "ab/cd/abcd", "se/rd/serde_json-x"])
def test_commit_file_create_update_delete_at_each_depth(index: GitIndex, path: str) -> None:
    repo = index.path
    base = index.tip()
    assert base is not None
    # Another crate in the same directory and one elsewhere must survive every step.
    neighbours = {"ab/cd/abcdx": b"n1\n", "zz/zz/zzzz": b"n2\n"}
    start = index.commit_files(base, [(p, c, f"add {p}") for p, c in neighbours.items()])
    before = ls_tree(repo, start)

    created = index.commit_file(start, path, b"v1\n", f"Create crate `{path}`")
    updated = index.commit_file(created, path, b"v1\nv2\n", f"Update crate `{path}`")
    deleted = index.commit_file(updated, path, None, f"Delete crate `{path}`")

    assert index.read_file(path, created) == b"v1\n"
    assert index.read_file(path, updated) == b"v1\nv2\n"
    assert index.read_file(path, deleted) is None
    after_create = ls_tree(repo, created)
    assert (
        after_create.pop(path)
        == git(f"--git-dir={repo}", "hash-object", "--stdin", input=b"v1\n").strip()
    )
    assert after_create == before
    assert ls_tree(repo, deleted) == before
    assert git(f"--git-dir={repo}", "rev-parse", f"{deleted}^{{tree}}") == git(
        f"--git-dir={repo}", "rev-parse", f"{start}^{{tree}}"
    )
    log = git(f"--git-dir={repo}", "log", "--format=%H %P|%s|%an <%ae>|%cn <%ce>", deleted)
    lines = [line.split("|") for line in log.splitlines()][:3]
    assert [s for _, s, _, _ in lines] == [
        f"Delete crate `{path}`",
        f"Update crate `{path}`",
        f"Create crate `{path}`",
    ]
    assert [h for h, _, _, _ in lines] == [
        f"{deleted} {updated}",
        f"{updated} {created}",
        f"{created} {start}",
    ]
    assert {a for _, _, a, _ in lines} == {"indexpub <indexpub@localhost>"}
    assert {c for _, _, _, c in lines} == {"indexpub <indexpub@localhost>"}
    git(f"--git-dir={repo}", "fsck", "--strict", "--no-dangling")


def test_delete_prunes_empty_trees(index: GitIndex) -> None:
    repo = index.path
    base = index.tip()
    assert base is not None
    tip = index.commit_files(
        base,
        [
            ("ab/cd/abcd", b"1\n", "a"),
            ("ab/cd/abcde", b"2\n", "b"),
            ("ab/ef/abef", b"3\n", "c"),
            ("3/x/xyz", b"4\n", "d"),
        ],
    )
    assert dirs_of(repo, tip) == {"3", "3/x", "ab", "ab/cd", "ab/ef"}
    tip = index.commit_file(tip, "ab/cd/abcd", None, "del")
    assert dirs_of(repo, tip) == {"3", "3/x", "ab", "ab/cd", "ab/ef"}
    tip = index.commit_file(tip, "ab/cd/abcde", None, "del")
    assert dirs_of(repo, tip) == {"3", "3/x", "ab", "ab/ef"}
    tip = index.commit_file(tip, "ab/ef/abef", None, "del")
    tip = index.commit_file(tip, "3/x/xyz", None, "del")
    assert dirs_of(repo, tip) == set()
    assert list(ls_tree(repo, tip)) == ["config.json"]
    assert git(f"--git-dir={repo}", "rev-parse", f"{tip}^{{tree}}") == git(
        f"--git-dir={repo}", "rev-parse", f"{base}^{{tree}}"
    )


def test_unchanged_content_makes_no_commit(index: GitIndex) -> None:
    base = index.tip()
    assert base is not None
    tip = index.commit_file(base, "1/a", b"x\n", "create")
    stored, pack_files = stored_objects(index.path), packs(index.path)
    assert index.commit_file(tip, "1/a", b"x\n", "same again") == tip
    assert index.commit_file(tip, "2/zz", None, "delete a missing file") == tip
    assert stored_objects(index.path) == stored
    assert packs(index.path) == pack_files


def test_no_work_tree_and_no_index_file(index: GitIndex) -> None:
    base = index.tip()
    assert base is not None
    tip = index.commit_files(base, [("1/a", b"x\n", "a"), ("ab/cd/abcd", b"y\n", "b")])
    index.push(tip)
    assert git(f"--git-dir={index.path}", "rev-parse", "--is-bare-repository").strip() == "true"
    assert not (index.path / "index").exists()
    names = {p.name for p in index.path.iterdir()}
    assert not names & {"config.json", "1", "ab", ".git"}


def test_custom_identity(remote: Path, tmp_path: Path) -> None:
    index = GitIndex.open(
        str(remote), tmp_path / "clone", author="Bot <bot@example.com>", committer="C <c@x>"
    )
    base = index.tip()
    assert base is not None
    tip = index.commit_file(base, "1/a", b"x\n", "a")
    assert git(f"--git-dir={index.path}", "log", "-1", "--format=%an <%ae>|%cn <%ce>", tip) == (
        "Bot <bot@example.com>|C <c@x>\n"
    )
    with pytest.raises(ValueError):
        GitIndex.open(str(remote), tmp_path / "clone", author="no email")


@pytest.mark.parametrize(
    "path",
    [
        "config.json",
        "../x",
        "1/../config.json",
        "/abs",
        "/1/a",
        "a//b",
        "ab//cd/abcd",
        "",
        "1/A",
        "AB/CD/ABCD",
        "ab/cd/abcD",
        "1/ab",
        "2/abc",
        "3/b/abc",
        "3/abc",
        "ab/cd/abce",
        "ab/cd/abc",
        "ab/cd/abcd/x",
        "ab/cd/abcd/",
        "ab/cd/ab.d",
        "ab/cd/abcd\n",
        "ab/cd/abcd" + "x" * 61,
        ".git/config",
    ],
)
def test_refuses_paths_outside_crate_files(index: GitIndex, path: str) -> None:
    base = index.tip()
    assert base is not None
    with pytest.raises(ValueError):
        index.commit_file(base, path, b"x", "bad")
    with pytest.raises(ValueError):
        index.commit_file(base, path, None, "bad")
    with pytest.raises(ValueError):
        index.commit_files(base, [(path, b"x", "bad")])


def test_accepts_longest_names() -> None:
    check_crate_path("ab/cd/abcd" + "x" * 60)
    check_crate_path("-_/9a/-_9a")


def test_refuses_bad_parent(index: GitIndex) -> None:
    with pytest.raises(ValueError):
        index.commit_file("HEAD", "1/a", b"x", "m")
    with pytest.raises(GitError):
        index.commit_file("0" * 40, "1/a", b"x", "m")
    base = index.tip()
    assert base is not None
    tree = git(f"--git-dir={index.path}", "rev-parse", f"{base}^{{tree}}").strip()
    with pytest.raises(GitError):
        index.commit_file(tree, "1/a", b"x", "m")


# --- push -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", ["main", "master"])
def test_push_lands_on_remote_head_branch(tmp_path: Path, branch: str) -> None:
    remote = tmp_path / "remote.git"
    init_index(remote, DL, None, branch=branch)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    base = index.tip()
    assert base is not None
    tip = index.commit_file(base, "se/rd/serde", b"line\n", "Create crate `serde`")
    index.push(tip)
    assert index.tip() == tip
    refs = git(f"--git-dir={remote}", "for-each-ref", "--format=%(refname) %(objectname)")
    assert refs.splitlines() == [f"refs/heads/{branch} {tip}"]
    git("clone", "--quiet", str(remote), str(tmp_path / "work"))
    assert (tmp_path / "work" / "se" / "rd" / "serde").read_text() == "line\n"
    index.push(tip)  # pushing what the remote already has is a no-op, not an error


def test_concurrent_writer_is_rejected_then_kept(
    remote: Path, index: GitIndex, tmp_path: Path
) -> None:
    base = index.tip()
    assert base is not None
    work = tmp_path / "work"
    git("clone", "--quiet", str(remote), str(work))
    (work / "config.json").write_text('{\n  "dl": "https://elsewhere"\n}\n')
    git("-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qam", "Move downloads", cwd=work)
    git("push", "--quiet", "origin", "HEAD", cwd=work)
    theirs = git("rev-parse", "HEAD", cwd=work).strip()

    ours = index.commit_file(base, "1/a", b"x\n", "Create crate `a`")
    with pytest.raises(PushRejected):
        index.push(ours)
    assert index.tip() == base

    assert index.fetch() == theirs
    assert index.tip() == theirs
    rebuilt = index.commit_file(theirs, "1/a", b"x\n", "Create crate `a`")
    index.push(rebuilt)
    assert index.tip() == rebuilt
    log = git(f"--git-dir={remote}", "log", "--format=%H %s", "master").splitlines()
    assert log == [
        f"{rebuilt} Create crate `a`",
        f"{theirs} Move downloads",
        f"{base} Initialize index",
    ]
    assert index.read_file("config.json") == b'{\n  "dl": "https://elsewhere"\n}\n'


def test_tip_stays_in_memory_but_follows_the_ref(
    index: GitIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = index.fetch()
    tip = index.commit_file(base, "1/a", b"x\n", "a")
    index.push(tip)
    calls: list[tuple[str, ...]] = []
    real = index._clone.git

    def counting(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(index._clone, "git", counting)
    assert index.tip() == tip
    assert index.tip() == tip
    assert calls == []  # no git process for a tip we know
    # Something else moves the tracking ref: tip() tells the truth.
    git(f"--git-dir={index.path}", "update-ref", index.tracking_ref, base)
    assert index.tip() == base
    git(f"--git-dir={index.path}", "pack-refs", "--all")  # the ref moves into packed-refs
    assert index.tip() == base
    git(f"--git-dir={index.path}", "update-ref", index.tracking_ref, tip)
    assert index.tip() == tip
    git(f"--git-dir={index.path}", "update-ref", "-d", index.tracking_ref)
    assert index.tip() is None
    assert index.fetch() == tip


def test_fetch_follows_a_rewritten_remote(remote: Path, index: GitIndex) -> None:
    base = index.tip()
    assert base is not None
    index.push(index.commit_file(base, "1/a", b"x\n", "a"))
    # A squash replaces history; fetch must follow it even though it is not a fast-forward.
    git(f"--git-dir={remote}", "update-ref", "refs/heads/master", base)
    assert index.fetch() == base


# --- failures -------------------------------------------------------------------------------------


def test_unreachable_remote_raises_git_error(remote: Path, index: GitIndex, tmp_path: Path) -> None:
    base = index.tip()
    assert base is not None
    tip = index.commit_file(base, "1/a", b"x\n", "a")
    shutil.move(remote, tmp_path / "moved.git")
    with pytest.raises(GitError, match="git fetch failed") as fetch_error:
        index.fetch()
    assert str(remote) in str(fetch_error.value)
    with pytest.raises(GitError, match="git push failed") as push_error:
        index.push(tip)
    assert not isinstance(push_error.value, PushRejected)
    assert str(remote) in str(push_error.value)
    assert index.tip() == base
    with pytest.raises(GitError, match="git ls-remote failed"):
        GitIndex.open(str(remote), tmp_path / "clone2")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("branch", [None, "master"])
def test_hung_remote_times_out_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, branch: str | None
) -> None:
    # Without branch, open() hangs in ls-remote; with it, in the first fetch.
    # indexpub's own GIT_SSH_COMMAND runs `ssh`: the first one on PATH is this fake.
    (tmp_path / "bin").mkdir()
    fake_ssh = tmp_path / "bin" / "ssh"
    pids = tmp_path / "pids"
    fake_ssh.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 30 &\necho $! >> {pids}\nwait\n")
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_ssh.parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "known_hosts").write_text("")
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    monkeypatch.delenv("INDEXPUB_GIT_SSH_KEY", raising=False)
    started = time.monotonic()
    with pytest.raises(GitTimeout, match="timed out after 1 s"):
        GitIndex.open("ssh://example.invalid/x", tmp_path / "clone", branch=branch, timeout=1)
    assert time.monotonic() - started < 2.5
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        leftovers = _processes_mentioning(str(tmp_path))
        started_pids = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        if not leftovers and not any(_alive(p) for p in started_pids):
            break
        time.sleep(0.05)
    assert pids.exists()  # the fake ssh really ran
    assert not _processes_mentioning(str(tmp_path))
    assert not [p for p in started_pids if _alive(p)]


# --- credentials ----------------------------------------------------------------------------------


class _AuthServer:
    """A smart-HTTP lookalike that demands Basic auth, records it and then refuses anyway."""

    def __init__(self, watch_for: list[str]) -> None:
        self.authorizations: list[str] = []
        self.leaks: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # While git waits on us, its processes are alive: their argv must be clean.
                for secret in watch_for:
                    outer.leaks += _processes_mentioning(secret)
                auth = self.headers.get("Authorization")
                if auth is None:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                else:
                    outer.authorizations.append(auth)
                    self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("INDEXPUB_GIT_TOKEN", "INDEXPUB_GIT_USERNAME", "INDEXPUB_GIT_SSH_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield


def test_token_from_env_goes_through_askpass_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_env: None
) -> None:
    token = "tok-1f2e3d4c5b6a"
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN", token)
    server = _AuthServer([token])
    try:
        url = f"http://127.0.0.1:{server.port}/index.git"
        with pytest.raises(GitError) as error:
            GitIndex.open(url, tmp_path / "clone", timeout=20)
        monkeypatch.setenv("INDEXPUB_GIT_USERNAME", "robot")
        with pytest.raises(GitError):
            GitIndex.open(url, tmp_path / "clone", timeout=20)
    finally:
        server.close()
    expected = [
        "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode(),
        "Basic " + base64.b64encode(f"robot:{token}".encode()).decode(),
    ]
    assert server.authorizations == expected
    assert server.leaks == []
    assert token not in str(error.value)
    assert "git ls-remote refused: the index remote answered HTTP 403" in str(error.value)
    assert url in str(error.value)
    # No credential helper got the chance to store the token.
    assert (
        not (Path.home() / ".git-credentials").exists()
        or token not in (Path.home() / ".git-credentials").read_text()
    )


def test_password_in_url_never_in_errors_argv_or_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_env: None
) -> None:
    # git itself would pass this URL to git-remote-http in argv; the module must not let it.
    secret = "s3cr3t-pa55word"
    server = _AuthServer([secret])
    try:
        clean = f"http://127.0.0.1:{server.port}/index.git"
        url = f"http://user:{secret}@127.0.0.1:{server.port}/index.git"
        with pytest.raises(GitError) as error:
            GitIndex.open(url, tmp_path / "clone", timeout=20)
        index = GitIndex.open(url, tmp_path / "clone", branch="master", timeout=20)
        assert index.remote_url == clean
        with pytest.raises(GitError) as fetch_error:
            index.fetch()
        with pytest.raises(GitError) as push_error:
            index.push("0" * 40)
        # A rotated password is the same remote: no re-clone needed.
        GitIndex.open(url.replace(secret, "other-pa55word"), tmp_path / "clone", branch="master")
    finally:
        server.close()
    expected = "Basic " + base64.b64encode(f"user:{secret}".encode()).decode()
    assert set(server.authorizations) == {expected}
    assert server.leaks == []
    for e in (error, fetch_error, push_error):
        assert secret not in str(e.value)
        assert clean in str(e.value)
    assert secret not in (tmp_path / "clone" / "config").read_text()


def test_unreachable_https_with_token_in_url(tmp_path: Path, http_env: None) -> None:
    # Port 9 on localhost: nothing listens, the connection is refused at once.
    url = "https://x-access-token:ghp_abcdefghijklmnop@127.0.0.1:9/index.git"
    with pytest.raises(GitError) as error:
        GitIndex.open(url, tmp_path / "clone", timeout=20)
    assert "ghp_abcdefghijklmnop" not in str(error.value)
    assert "https://127.0.0.1:9/index.git" in str(error.value)


# --- cost -----------------------------------------------------------------------------------------


def test_one_update_touches_only_the_trees_on_its_path(remote: Path, tmp_path: Path) -> None:
    big = fast_import_crates(remote, "master", 5000)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    assert index.tip() == big
    assert len(ls_tree(index.path, big)) == 5001
    assert len(loose_objects(index.path)) < 50  # the 5,000 files arrived as a pack

    # The first creates two directories; blobs differ so that each one is really new.
    for path in ["zz/zz/zzzzunique", "ab/cd/abcdnew", "1/q", "3/q/qrs"]:
        content = path.encode() + b"\n"
        start_read, start_written = index.objects_read, index.objects_written
        stored_before, packs_before = stored_objects(index.path), packs(index.path)
        tip = index.commit_file(big, path, content, "one")
        added = stored_objects(index.path) - stored_before
        depth = path.count("/")
        assert len(added) == index.objects_written - start_written == 1 + (depth + 1) + 1
        # Written as one new pack, no loose files.
        assert len(packs(index.path) - packs_before) == 1
        assert loose_objects(index.path) == set()
        # The parent commit plus the trees on the path (missing ones are not counted).
        assert index.objects_read - start_read <= 2 + depth
        kinds = [git(f"--git-dir={index.path}", "cat-file", "-t", sha).strip() for sha in added]
        assert sorted(kinds) == sorted(["blob", "commit"] + ["tree"] * (depth + 1))
        assert ls_tree(index.path, tip).keys() - ls_tree(index.path, big).keys() == {path}

    existing = next(p for p in ls_tree(index.path, big) if p.count("/") == 2)
    stored_before = stored_objects(index.path)
    tip = index.commit_file(big, existing, None, "delete")
    assert len(stored_objects(index.path) - stored_before) <= 4  # ≤3 trees + commit


def test_batch_writes_one_valid_pack(remote: Path, index: GitIndex) -> None:
    base = index.fetch()
    packs_before, loose_before = packs(index.path), loose_objects(index.path)
    changes = [
        (p, p.encode() + b"\n", f"add {p}") for p in ["1/a", "2/bc", "3/d/def", "gh/ij/ghij"]
    ]
    changes.append(("1/a", None, "delete 1/a"))
    with index.batch():
        tip = index.commit_files(base, changes[:2])
        assert packs(index.path) == packs_before  # nothing written inside the batch
        tip = index.commit_files(tip, changes[2:])
    new = packs(index.path) - packs_before
    assert len(new) == 1
    pack = index.path / "objects" / "pack" / new.pop()
    git("verify-pack", str(pack.with_suffix(".idx")))
    git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip)
    assert loose_objects(index.path) == loose_before  # only what fetch unpacked
    assert ls_tree(index.path, tip).keys() == {"config.json", "2/bc", "3/d/def", "gh/ij/ghij"}
    log = git(f"--git-dir={index.path}", "log", "--format=%s", tip).splitlines()
    assert log == [m for _, _, m in reversed(changes)] + ["Initialize index"]
    index.push(tip)
    assert git(f"--git-dir={remote}", "rev-parse", "refs/heads/master").strip() == tip
    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")


def test_batch_commits_on_an_older_parent_and_flushes_early(
    index: GitIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexpub.gitindex.builder as git_builder

    base = index.fetch()
    with index.batch():
        first = index.commit_file(base, "ab/cd/abcd", b"1\n", "one")
        second = index.commit_file(first, "ab/cd/abcde", b"2\n", "two")
        # A sibling of `second`, on the older parent whose trees the batch built and dropped.
        sibling = index.commit_file(first, "ab/cd/abcdf", b"3\n", "three")
        packs_before = packs(index.path)
        monkeypatch.setattr(git_builder, "FLUSH_BYTES", 1)
        third = index.commit_file(second, "ab/ef/abef", b"4\n", "four")
        assert len(packs(index.path) - packs_before) == 1  # written early, inside the batch
        monkeypatch.setattr(git_builder, "FLUSH_BYTES", 16 << 20)
        fourth = index.commit_file(sibling, "1/a", b"5\n", "five")
    for tip in (third, fourth):
        git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip)
    assert ls_tree(index.path, third).keys() == {
        "config.json",
        "ab/cd/abcd",
        "ab/cd/abcde",
        "ab/ef/abef",
    }
    assert ls_tree(index.path, fourth).keys() == {"config.json", "ab/cd/abcd", "ab/cd/abcdf", "1/a"}


def test_batch_ended_by_an_error_keeps_what_it_built(index: GitIndex) -> None:
    base = index.fetch()
    with pytest.raises(ValueError), index.batch():
        tip = index.commit_file(base, "1/a", b"x\n", "a")
        index.commit_file(tip, "config.json", b"{}", "bad")
    # The commit made before the error is in the repository, and the caches stay usable.
    assert index.read_file("1/a", tip) == b"x\n"
    tip2 = index.commit_file(tip, "1/b", b"y\n", "b")
    git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip2)


def test_pushes_keep_packs_and_loose_objects_few(tmp_path: Path) -> None:
    import indexpub.gitindex.index as git_index

    remote = tmp_path / "remote.git"
    init_index(remote, dl=DL, api=API)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    index.fetch()
    tip = index.tip()
    assert tip is not None
    for n in range(git_index.GC_EVERY_PUSHES):
        tip = index.commit_file(tip, f"3/a/a{n:02d}", b"{}\n", f"Create crate `a{n:02d}`")
        index.push(tip)
    index.finish_maintenance()
    # One pack per commit_file was written; the periodic repack merged them.
    assert loose_objects(index.path) == set()
    assert len(packs(index.path)) < 10
    assert index.read_file("3/a/a07") == b"{}\n"


# --- file_shas and the tree cache -----------------------------------------------------------------


def test_file_shas_are_the_blob_shas_git_sees(remote: Path, tmp_path: Path) -> None:
    big = fast_import_crates(remote, "master", 300)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    files = ls_tree(index.path, big)
    present = sorted(p for p in files if p != "config.json")[::7]
    # Absent: a file beside present ones, under a missing directory, at each depth.
    absent = ["zz/zz/zzzzz", "1/q", "2/qq", "3/q/qqq", present[0] + "x"]
    shas = index.file_shas([*present, *absent], big)
    assert shas == [files[p] for p in present] + [None] * len(absent)
    # A directory where the file should be is an error, not an absent file.
    directory = present[0].rsplit("/", 1)[0]
    with pytest.raises(GitError, match="is a tree"):
        index.file_shas([directory], big)
    with pytest.raises(GitError, match="not a commit"):
        index.file_shas(present, "0" * 40)


def test_file_shas_of_a_file_in_place_of_a_directory_is_absent(
    remote: Path, index: GitIndex
) -> None:
    base = index.fetch()
    # "ab" is a file at the root here, so "ab/cd/abcd" cannot exist (git reads it as absent).
    work = index.path.parent / "work"
    git("clone", "-q", str(index.path), str(work))
    (work / "ab").write_text("in the way\n")
    git("add", "ab", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ab", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/other", cwd=work)
    other = git(f"--git-dir={index.path}", "rev-parse", "refs/heads/other").strip()
    assert index.file_shas(["ab/cd/abcd", "1/a"], other) == [None, None]
    assert index.file_shas(["ab/cd/abcd"], base) == [None]
    # Committing there is refused, whether the trees come from memory or from git.
    with pytest.raises(GitError, match="in the way"):
        index.commit_file(other, "ab/cd/abcd", b"x\n", "m")
    fresh = GitIndex.open(str(remote), index.path)  # the same clone, nothing in memory
    with pytest.raises(GitError, match="expected a directory"):
        fresh.commit_file(other, "ab/cd/abcd", b"x\n", "m")


def test_file_shas_after_a_batch_start_no_git_process(remote: Path, tmp_path: Path) -> None:
    big = fast_import_crates(remote, "master", 500)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    paths = sorted(p for p in ls_tree(index.path, big) if p != "config.json")[:40]
    index.file_shas(paths, big)
    read = index.objects_read
    tip = index.commit_files(big, [(p, p.encode() + b"\n", "edit") for p in paths[::2]])
    assert index.objects_read == read  # the batch found every tree in memory
    # The batch's trees are the new tip's: asking about its files reads nothing from git.
    shas = index.file_shas(paths, tip)
    assert index.objects_read == read
    assert shas == [ls_tree(index.path, tip)[p] for p in paths]
    # Another batch on that tip, over other directories, reads only the trees it lacks.
    others = sorted(p for p in ls_tree(index.path, big) if p != "config.json")[-5:]
    index.file_shas(others, tip)
    assert 0 < index.objects_read - read <= 3 * len(others)


def test_reads_share_one_git_process_until_a_repack(remote: Path, tmp_path: Path) -> None:
    """Batches, single commits, pushes and read_file all read through one cat-file process;
    collect_garbage replaces it, so it never holds packs the repack deleted."""
    big = fast_import_crates(remote, "master", 300)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    files = sorted(p for p in ls_tree(index.path, big) if p.count("/") == 2)
    tip = big
    for round_ in range(3):
        chunk = files[round_ * 20 : round_ * 20 + 20]
        index.file_shas(chunk, tip)
        tip = index.commit_files(tip, [(p, b"%d\n" % round_, "edit") for p in chunk])
        index.push(tip)
        assert index.read_file(chunk[0]) == b"%d\n" % round_
    assert index._reader.cat_file.started == 1
    index.collect_garbage()
    assert index._reader.cat_file.started == 1 and index._reader.cat_file._proc is None
    assert index.read_file(files[0]) == b"0\n"
    blob = ls_tree(remote, big)[files[-1]]
    expected = git(f"--git-dir={remote}", "cat-file", "blob", blob, text=False)
    assert index.read_file(files[-1], big) == expected
    assert index._reader.cat_file.started == 2
    index.close()
    assert index._reader.cat_file._proc is None


def test_the_first_read_keeps_every_top_level_directory(remote: Path, tmp_path: Path) -> None:
    """Every update edits the root and one directory in it: those are read once, by the first
    file_shas, so what a batch reads does not depend on what earlier batches touched."""
    big = fast_import_crates(remote, "master", 300)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    files = sorted(p for p in ls_tree(index.path, big) if p.count("/") == 2)
    first = files[0].split("/")[0]
    index.file_shas(files[:1], big)
    # One file in each other top-level directory: only its own directory (ab/cd) is read.
    rest = {p.split("/")[0]: p for p in reversed(files) if not p.startswith(first + "/")}
    read = index.objects_read
    assert len(rest) > 10
    assert index.file_shas(list(rest.values()), big) == [
        ls_tree(index.path, big)[p] for p in rest.values()
    ]
    assert index.objects_read - read == len({p.rsplit("/", 1)[0] for p in rest.values()})


def test_tree_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    trees = {
        f"{n:040x}": Tree.parse(
            format_tree([TreeEntry(BLOB_MODE, b"f%d" % i, bytes(20)) for i in range(n)])
        )
        for n in range(1, 11)
    }
    cost = {sha: TreeCache.cost(tree) for sha, tree in trees.items()}
    shas = list(trees)
    cache = TreeCache(max_bytes=cost[shas[0]] + cost[shas[1]] + cost[shas[2]])
    for sha in shas[:3]:
        cache.put(sha, trees[sha])
    assert len(cache) == 3 and cache.bytes == cache.max_bytes
    assert cache.get(shas[0]) is trees[shas[0]]  # now the most recently used
    cache.put(shas[3], trees[shas[3]])
    assert shas[1] not in cache and shas[0] in cache and shas[3] in cache
    for sha in shas:
        cache.put(sha, trees[sha])
        assert cache.bytes <= cache.max_bytes
        assert cache.bytes == sum(cost[s] for s in shas if s in cache)
    assert shas[-1] in cache
    cache.pop(shas[-1])
    cache.pop(shas[-1])  # absent: nothing happens
    assert shas[-1] not in cache and cache.bytes == sum(cost[s] for s in shas if s in cache)


def test_a_tiny_tree_cache_still_gives_right_answers(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexpub.gitindex.reader as git_reader

    big = fast_import_crates(remote, "master", 200)
    monkeypatch.setattr(git_reader, "TREE_CACHE_BYTES", 1)  # keeps one tree at a time
    index = GitIndex.open(str(remote), tmp_path / "clone")
    files = ls_tree(index.path, big)
    paths = sorted(p for p in files if p != "config.json")[::5]
    assert index.file_shas(paths, big) == [files[p] for p in paths]
    tip = index.commit_files(big, [(p, b"new\n", "edit") for p in paths[:10]])
    assert len(index._reader.trees) == 1
    new = ls_tree(index.path, tip)
    assert index.file_shas(paths, tip) == [new[p] for p in paths]
    git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip)


def test_superseded_trees_leave_the_cache_so_the_tips_stay(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit drops the trees it replaced: kept, they would push the tip's untouched
    directories out of a bounded cache, and the next batch would read those again."""
    import indexpub.gitindex.reader as git_reader

    big = fast_import_crates(remote, "master", 300)
    files = sorted(p for p in ls_tree(remote, big) if p != "config.json")
    probe = GitIndex.open(str(remote), tmp_path / "probe")
    probe.file_shas(files, big)
    # Room for the tip's trees and a little more, not for a second version of each.
    monkeypatch.setattr(git_reader, "TREE_CACHE_BYTES", probe._reader.trees.bytes * 5 // 4)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    index.file_shas(files, big)
    tip, halves = big, (files[::2], files[1::2])
    for round_ in range(3):
        for half in halves:
            read = index.objects_read
            index.file_shas(half, tip)
            assert index.objects_read == read, f"round {round_}: the tip's trees were read again"
            tip = index.commit_files(tip, [(p, f"{round_}\n".encode(), "edit") for p in half])
    git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip)
    assert index.file_shas(files, tip) == [ls_tree(index.path, tip)[p] for p in files]


def test_stored_zlib_is_a_zlib_stream_of_any_size() -> None:
    for size in (0, 1, 300, 0xFFFE, 0xFFFF, 0x10000, 200_000):
        data = random.Random(size).randbytes(size)
        assert zlib.decompress(stored_zlib(data)) == data
        assert len(stored_zlib(data)) <= len(data) + 6 + 5 * (size // 0xFFFF + 1)
    assert stored_zlib(b"tree") == zlib.compress(b"tree", 0)  # what zlib itself writes


def test_a_tree_bigger_than_a_stored_block_is_one_git_reads(index: GitIndex) -> None:
    """Trees are stored undeflated, in blocks of at most 64 kB: a directory of 3,000 crates
    (~100 kB) needs two."""
    base = index.fetch()
    changes = [(f"ab/cd/abcd{n:05}", b"x\n", "add") for n in range(3000)]
    tip = index.commit_files(base, changes)
    size = git(f"--git-dir={index.path}", "cat-file", "-s", f"{tip}:ab/cd")
    assert int(size) > 0x10000
    git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", tip)
    assert len(ls_tree(index.path, tip)) == 3001


# --- Tree -----------------------------------------------------------------------------------------


def test_tree_edits_splice_the_serialization_git_would_write() -> None:
    """replaced() splices the kept serialization; it must equal git's (format_tree) after any
    sequence of edits, and its edit must rebuild it from the base's bytes."""
    rng = random.Random(7)
    names = [b"a", b"a-b", b"a.c", b"ab", b"b", b"b0", b"c", b"zz", b"a0"]
    entries: dict[bytes, TreeEntry] = {}
    tree = Tree.parse(b"")
    for _ in range(400):
        name = rng.choice(names)
        mode = rng.choice([BLOB_MODE, TREE_MODE])
        sha = None if rng.random() < 0.3 else rng.randbytes(20)
        before = tree.serialize()
        tree = tree.replaced(name, mode, sha)
        entries.pop(name, None)
        if sha is not None:
            entries[name] = TreeEntry(mode, name, sha)
        expected = format_tree(list(entries.values()))
        assert tree.serialize() == expected
        assert Tree.parse(expected).keys == tree.keys
        if tree.edit is not None:
            edit = tree.edit
            assert edit.base_size == len(before)
            rebuilt = before[: edit.offset] + edit.inserted + before[edit.offset + edit.removed :]
            assert rebuilt == expected


def test_an_edited_tree_hands_its_entries_on_and_still_answers_after() -> None:
    """replaced() gives the new tree the old one's entry list and dict instead of copying them
    (the root of a big index has ~1,500 entries, edited once per commit); every tree of the
    chain must still answer from its own bytes afterwards, and may be edited again."""
    rng = random.Random(11)
    names = [bytes([a, b]) for a in b"abcdefgh" for b in b"0123456789"]
    entries = {n: TreeEntry(TREE_MODE, n, rng.randbytes(20)) for n in names[::2]}
    tree = Tree.parse(format_tree(list(entries.values())))
    history = [(tree, dict(entries))]
    handed_on = 0
    for _ in range(300):
        name = rng.choice(names)
        sha = None if rng.random() < 0.2 else rng.randbytes(20)
        keys = tree.keys
        tree = tree.replaced(name, TREE_MODE, sha)
        handed_on += tree.keys is keys
        entries.pop(name, None)
        if sha is not None:
            entries[name] = TreeEntry(TREE_MODE, name, sha)
        history.append((tree, dict(entries)))
    assert handed_on == 300  # every tree of the chain kept its bytes, so none was copied
    rng.shuffle(history)
    for old, expected in history:
        assert old.serialize() == format_tree(list(expected.values()))
        assert old.keys == sorted(n + b"/" for n in expected)
        assert all(old.entry(n) == expected.get(n) for n in names)
        assert old.count == len(expected)
        branch = old.replaced(b"zz", TREE_MODE, bytes(20))
        assert branch.serialize() == format_tree(
            [*expected.values(), TreeEntry(TREE_MODE, b"zz", bytes(20))]
        )
        assert old.serialize() == format_tree(list(expected.values()))
        assert all(old.subtree(n) == (expected[n].sha if n in expected else None) for n in names)


def test_tree_parse_refuses_malformed_data() -> None:
    good = format_tree(
        [TreeEntry(BLOB_MODE, b"a", bytes(20)), TreeEntry(TREE_MODE, b"b", bytes(20))]
    )
    assert Tree.parse(good).keys == [b"a", b"b/"]
    for bad in (good[:-1], good + b"x", b"x" + good, good[:20] + good, b"100644 a"):
        with pytest.raises(GitError):
            Tree.parse(bad)
    # Out of git's order: parsed into git's order.
    first = len(b"100644 a\0") + 20
    swapped = good[first:] + good[:first]
    assert Tree.parse(swapped).serialize() == good


# --- delta-packed trees ---------------------------------------------------------------------------


def test_a_batch_stores_its_root_trees_as_deltas_git_reads(remote: Path, tmp_path: Path) -> None:
    import indexpub.gitindex.pack as git_pack

    big = fast_import_crates(remote, "master", 400)
    index = GitIndex.open(str(remote), tmp_path / "clone")
    paths = sorted(p for p in ls_tree(index.path, big) if p != "config.json")
    count = git_pack.MAX_DELTA_DEPTH + 30  # past one chain's end
    changes = [(p, f"{p} v2\n".encode(), f"Update {p}") for p in paths[:count]]
    changes.append(("zz/zz/zzzznew", b"new\n", "Create"))
    changes.append((paths[1], None, "Delete"))
    packs_before = packs(index.path)
    with index.batch():
        commits = []
        tip = big
        for path, content, message in changes:
            tip = index.commit_file(tip, path, content, message)
            commits.append(tip)
        # A commit on an older parent reads that parent's root back from its delta.
        sibling = index.commit_file(commits[-5], "1/q", b"q\n", "Create q")
    (new,) = packs(index.path) - packs_before
    pack = index.path / "objects" / "pack" / new
    verify = git("verify-pack", "-v", str(pack.with_suffix(".idx")))
    roots = {git(f"--git-dir={index.path}", "rev-parse", f"{c}^{{tree}}").strip() for c in commits}
    depths = {}
    for line in verify.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in roots:  # sha type size size-in-pack offset depth base
            depths[fields[0]] = int(fields[5])
    assert len(depths) > len(roots) // 2  # most roots are deltas
    assert max(depths.values()) == git_pack.MAX_DELTA_DEPTH  # the chain was cut there
    assert "chain length = 1:" in verify
    for head in (tip, sibling):
        git(f"--git-dir={index.path}", "fsck", "--strict", "--no-dangling", head)
    # Every commit's tree reads back as git sees it, file by file.
    expected = ls_tree(index.path, big)
    for commit, (path, content, _) in zip(commits, changes, strict=True):
        if content is None:
            expected.pop(path)
        else:
            expected[path] = git(
                f"--git-dir={index.path}", "hash-object", "--stdin", input=content
            ).strip()
        assert ls_tree(index.path, commit) == expected
    assert ls_tree(index.path, sibling).keys() == ls_tree(index.path, commits[-5]).keys() | {"1/q"}
    # Pushed (linked into the remote directly), the remote is whole too.
    index.push(tip)
    git(f"--git-dir={remote}", "fsck", "--strict", "--no-dangling")
    assert git(f"--git-dir={remote}", "cat-file", "-p", f"{tip}:zz/zz/zzzznew") == "new\n"


def test_edit_delta_round_trips_through_apply_delta() -> None:
    rng = random.Random(3)
    for size in (0, 1, 300, 70_000, 0x10000):
        base = rng.randbytes(size)
        for _ in range(20):
            offset = rng.randint(0, size)
            removed = rng.randint(0, size - offset)
            inserted = rng.randbytes(rng.choice([0, 1, 127, 128, 300]))
            edit = TreeEdit(size, offset, removed, inserted)
            expected = base[:offset] + inserted + base[offset + removed :]
            assert apply_delta(base, edit_delta(edit)) == expected
