"""A network remote that accepts the connection and then stalls is cut by the git timeout, over
HTTP and SSH, before a byte is answered or in the middle of a push, and leaves no process
behind: git, git-remote-http and ssh are killed with their process group."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.git_http import GitHttpServer
from support.hung_remote import HungRemote, processes_mentioning
from support.net_remotes import clear_git_settings
from support.sshd import Sshd, keygen, unavailable

from indexpub.domain.names import index_path
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.gitindex.process import GitTimeout

TIMEOUT = 2.0
needs_sshd = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(autouse=True)
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_git_settings(monkeypatch)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "index.git"
    init_index(path, dl="https://dl.example/{crate}", api=None)
    return path


@pytest.fixture
def hung() -> Iterator[HungRemote]:
    with HungRemote() as server:
        yield server


def children() -> set[int]:
    pid = os.getpid()
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def cut_by_timeout(call: Callable[[], object], *marks: str) -> GitTimeout:
    """Run ``call`` against a stalled remote: it must raise GitTimeout after TIMEOUT, the
    processes named by ``marks`` (strings of their command lines) must have been seen alive
    while it waited and be gone once it raised, and no child of ours may be left."""
    before = children()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    started = time.monotonic()
    thread.start()
    seen: set[str] = set()
    while thread.is_alive():
        seen.update(mark for mark in marks if processes_mentioning(mark))
        time.sleep(0.05)
    thread.join()
    took = time.monotonic() - started
    assert len(raised) == 1 and isinstance(raised[0], GitTimeout), raised
    assert TIMEOUT <= took < TIMEOUT + 5, took
    assert f"timed out after {TIMEOUT:g} s" in str(raised[0])
    assert seen == set(marks)  # they were there while it stalled
    for mark in marks:
        assert processes_mentioning(mark) == [], mark
    assert children() <= before  # no child of ours is left, reaped or not
    return raised[0]


def push_cut_by_timeout(url: str, clone: Path, remote_side: str) -> GitTimeout:
    """Clone ``url``, commit one crate file on its tip and push it to a remote that stalls
    the push: cut_by_timeout, with our git push and ``remote_side`` (a mark of the process that
    talks to the remote) among the processes that must be gone. The clone's own
    ``git cat-file --batch`` lives on: it is ours and local, not the push's."""
    index = GitIndex.open(url, clone, timeout=TIMEOUT)
    tip = index.tip()
    assert tip is not None
    head = index.commit_file(tip, index_path("abc"), b"{}\n", "Create crate `abc`")
    error = cut_by_timeout(lambda: index.push(head), f"{clone} push", remote_side)
    assert str(error).startswith("git push timed out")
    return error


def test_an_http_remote_that_never_answers(
    hung: HungRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN", "tok-never-sent-12345")
    url = f"http://127.0.0.1:{hung.port}/index.git"
    error = cut_by_timeout(
        lambda: GitIndex.open(url, tmp_path / "clone", timeout=TIMEOUT),
        f"git-remote-http origin {url}",
    )
    assert str(error) == f"git ls-remote timed out after {TIMEOUT:g} s (remote {url})"
    assert hung.accepted  # it did connect


@needs_sshd
def test_an_ssh_remote_that_never_sends_its_banner(
    hung: HungRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = keygen(tmp_path / "deploy_key")
    host = keygen(tmp_path / "host_key")
    known_hosts = tmp_path / "known_hosts"
    kind, blob = host.with_suffix(".pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{hung.port} {kind} {blob}\n")
    monkeypatch.setenv("INDEXPUB_GIT_SSH_KEY", str(key))
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(known_hosts))
    url = f"ssh://git@127.0.0.1:{hung.port}/index.git"
    cut_by_timeout(
        lambda: GitIndex.open(url, tmp_path / "clone", timeout=TIMEOUT),
        f"-p {hung.port} git@127.0.0.1",
        f"{tmp_path / 'clone'} ls-remote --symref origin HEAD",
    )
    assert hung.accepted


def test_an_http_remote_that_stalls_in_the_middle_of_a_push(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-stalled-push-0001"
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN", token)
    with GitHttpServer(remote.parent, tmp_path / "server", token=token, hang_push=True) as server:
        push_cut_by_timeout(
            server.url(), tmp_path / "clone", f"git-remote-http origin {server.url()}"
        )
        # The server had the whole pack and never answered.
        assert [r["status"] for r in server.requests() if r["method"] == "POST"][-1] == 0


STALL_PUSHES = """#!/bin/sh
# Fetches are served; a push reads what the client sends and never answers.
case "$SSH_ORIGINAL_COMMAND" in
  git-receive-pack*) exec cat >/dev/null ;;
  *) exec sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""


@needs_sshd
def test_an_ssh_remote_that_stalls_after_login_on_a_push(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "stall-pushes"
    script.write_text(STALL_PUSHES)
    script.chmod(0o755)
    with Sshd(tmp_path / "sshd") as server:
        key = keygen(tmp_path / "stalling_key")
        server.add_key(key, command=str(script))
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(server.known_hosts_line())
        monkeypatch.setenv("INDEXPUB_GIT_SSH_KEY", str(key))
        monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(known_hosts))
        push_cut_by_timeout(
            server.url(remote),
            tmp_path / "clone",
            f"-p {server.port} {server.user}@127.0.0.1 git-receive-pack",
        )
        assert server.accepted() >= 3  # ls-remote, fetch, and the push that stalled
