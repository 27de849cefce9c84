"""SSH remotes, against OpenSSH's sshd on 127.0.0.1 (tests/support/sshd.py) and the real ssh
client that git runs: a deploy key, the host key pinned, and nothing else trusted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.git import git
from support.sshd import Sshd, keygen, unavailable

from indexpub.cli import main
from indexpub.domain.names import index_path
from indexpub.errors import shorten as _shorten
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.gitindex.process import (
    AuthRejected,
    GitError,
    GitRemote,
    HostKeyRejected,
    is_ssh_url,
    run_git,
    scrub_secrets,
)

needs_sshd = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "index.git"
    init_index(path, dl="https://dl.example/{crate}", api=None)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sshd]:
    with Sshd(tmp_path / "sshd") as running:
        yield running


@pytest.fixture
def ssh_env(server: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deploy key, an empty known_hosts file, and no ssh settings from the environment."""
    for var in ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "INDEXPUB_GIT_KNOWN_HOSTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INDEXPUB_GIT_SSH_KEY", str(server.deploy_key))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    return known_hosts


def shown(url: str) -> str:
    """The URL as messages show it: the user name is scrubbed like any credential."""
    return scrub_secrets(url)


def ls_remote(url: str) -> str:
    result = run_git(
        ["ls-remote", url], timeout=30, what="git ls-remote", remote=GitRemote.parse(url)
    )
    return result.stdout.decode()


@needs_sshd
def test_a_pinned_host_key_and_the_deploy_key_publish(
    server: Sshd, ssh_env: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_env.write_text(server.known_hosts_line())
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    index = GitIndex.open(server.url(remote), tmp_path / "clone", timeout=30)
    tip = index.tip()
    assert tip is not None
    head = index.commit_file(tip, index_path("abc"), b"{}\n", "Create crate `abc`")
    index.push(head)
    assert git(f"--git-dir={remote}", "rev-parse", "master").strip() == head
    assert index.last_push_mode == "git"
    assert server.accepted() >= 2  # ls-remote, fetch and push each logged in
    assert ssh_env.read_text() == server.known_hosts_line()  # nothing written to the pin


@needs_sshd
def test_an_unknown_host_key_is_refused_with_one_clear_line(
    server: Sshd, ssh_env: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = keygen(tmp_path / "other_host_key")
    # Pinned for another port: this server's host is unknown.
    ssh_env.write_text(server.known_hosts_line(other).replace(f"]:{server.port} ", "]:1 "))
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    url = server.url(remote)
    with pytest.raises(HostKeyRejected) as refused:
        ls_remote(url)
    assert str(refused.value) == (
        f"git ls-remote refused: the SSH host key of the index remote {shown(url)} is "
        f"not in the pinned {_shorten(str(ssh_env))} (INDEXPUB_GIT_KNOWN_HOSTS); add the "
        "server's key there once it is checked against its published fingerprint"
    )
    assert server.accepted() == 0
    assert f"127.0.0.1]:{server.port}" not in ssh_env.read_text()  # not learnt either


@needs_sshd
def test_a_changed_host_key_is_refused_with_one_clear_line(
    server: Sshd, ssh_env: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = server.known_hosts_line(keygen(tmp_path / "old_host_key"))
    ssh_env.write_text(pinned)
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    url = server.url(remote)
    with pytest.raises(HostKeyRejected) as refused:
        GitIndex.open(url, tmp_path / "clone", timeout=30)
    message = str(refused.value)
    assert message.startswith(
        f"git ls-remote refused: the SSH host key of the index remote {shown(url)} has "
        f"CHANGED from the one pinned in {_shorten(str(ssh_env))} (INDEXPUB_GIT_KNOWN_HOSTS)"
    )
    assert "\n" not in message and "@@@" not in message
    assert server.accepted() == 0
    assert ssh_env.read_text() == pinned


@needs_sshd
def test_a_key_the_server_does_not_know_is_refused_with_one_clear_line(
    server: Sshd, ssh_env: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_env.write_text(server.known_hosts_line())
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    stranger = keygen(tmp_path / "stranger")
    monkeypatch.setenv("INDEXPUB_GIT_SSH_KEY", str(stranger))
    url = server.url(remote)
    with pytest.raises(AuthRejected) as refused:
        ls_remote(url)
    assert str(refused.value) == (
        f"git ls-remote refused: the SSH server of the index remote did not accept the key "
        f"{_shorten(str(stranger))} (INDEXPUB_GIT_SSH_KEY): add its public half to the "
        f"server's deploy keys ({shown(url)})"
    )
    assert server.accepted() == 0


@needs_sshd
def test_without_a_known_hosts_file_an_ssh_remote_is_refused_before_connecting(
    server: Sshd, ssh_env: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even an operator's own GIT_SSH_COMMAND does not get around the pin.
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o StrictHostKeyChecking=no")
    url = server.url(remote)
    scp_like = f"{server.user}@127.0.0.1:{remote}"
    for each in (url, scp_like):
        with pytest.raises(GitError) as refused:
            ls_remote(each)
        assert str(refused.value) == (
            f"the index remote {shown(each)} is reached over SSH, but no known_hosts file is "
            "configured: set INDEXPUB_GIT_KNOWN_HOSTS (or --git-known-hosts) to a file holding "
            "the server's host key"
        )
    assert "Connection from" not in server.log.read_text()

    # Nor can it loosen the check once a file is pinned.
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    with pytest.raises(HostKeyRejected):
        ls_remote(url)
    assert server.accepted() == 0


def test_the_worker_refuses_an_ssh_remote_without_known_hosts_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI sets it in os.environ for its processes: set here, so that the undo removes it.
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", "")
    monkeypatch.delenv("INDEXPUB_GIT_KNOWN_HOSTS")
    # No database is named: the refusal comes before one would be started.
    args = ["--data-dir", str(tmp_path / "data"), "--index-url", "ssh://127.0.0.1:1/x.git"]
    result = CliRunner().invoke(main, [*args, "worker", "--drain"])
    assert result.exit_code == 4, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "set INDEXPUB_GIT_KNOWN_HOSTS (or --git-known-hosts)" in lines[0]
    missing = tmp_path / "missing"
    result = CliRunner().invoke(main, [*args, "--git-known-hosts", str(missing), "worker"])
    assert result.exit_code == 4, result.output
    expected = f"INDEXPUB_GIT_KNOWN_HOSTS names {_shorten(str(missing))}, which is not a file"
    assert expected in result.output
    assert not (tmp_path / "data" / "postgres").exists()


@pytest.mark.parametrize(
    ("url", "ssh"),
    [
        ("ssh://host/x.git", True),
        ("git+ssh://host/x.git", True),
        ("SSH://host/x.git", True),
        ("git@host:x.git", True),
        ("host:x.git", True),
        ("https://host/x.git", False),
        ("file:///srv/x.git", False),
        ("/srv/x.git", False),
        ("./a:b", False),
        ("ext::ssh host", False),
    ],
)
def test_which_remotes_are_ssh(url: str, ssh: bool) -> None:
    assert is_ssh_url(url) is ssh
