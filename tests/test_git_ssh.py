"""SSH remotes are reached only with a pinned host key, against a real SSH server on 127.0.0.1
(tests/support/ssh_server.py) and the real ssh client that git runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner
from support.ssh_server import NO_REPOSITORY, SshServer, write_client_key

from indexpub.cli import main
from indexpub.errors import shorten as _shorten
from indexpub.gitindex.process import (
    GitError,
    GitRemote,
    HostKeyRejected,
    is_ssh_url,
    run_git,
    scrub_secrets,
)

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")


@pytest.fixture
def server() -> Iterator[SshServer]:
    running = SshServer()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def ssh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A client key, an empty known_hosts file, and no ssh settings from the environment."""
    for var in ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "INDEXPUB_GIT_KNOWN_HOSTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INDEXPUB_GIT_SSH_KEY", str(write_client_key(tmp_path / "id_client")))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    return known_hosts


def shown(url: str) -> str:
    """The URL as messages show it: the user name is scrubbed like any credential."""
    return scrub_secrets(url)


def ls_remote(url: str) -> None:
    run_git(["ls-remote", url], timeout=30, what="git ls-remote", remote=GitRemote.parse(url))


def test_a_pinned_host_key_passes_the_check(
    server: SshServer, ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_env.write_text(server.known_hosts_line())
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    with pytest.raises(GitError) as failed:
        ls_remote(server.url())
    # The failure is the server's own answer to git's command: past the host key and auth.
    assert not isinstance(failed.value, HostKeyRejected)
    assert NO_REPOSITORY in str(failed.value)
    assert server.authenticated == ["git"]
    assert server.commands == ["git-upload-pack '/index.git'"]
    assert ssh_env.read_text() == server.known_hosts_line()  # nothing written to the pin


def test_an_unknown_host_key_is_refused_with_one_clear_line(
    server: SshServer, ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = paramiko.ECDSAKey.generate()
    ssh_env.write_text(f"[127.0.0.1]:1 {other.get_name()} {other.get_base64()}\n")
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    with pytest.raises(HostKeyRejected) as refused:
        ls_remote(server.url())
    assert str(refused.value) == (
        f"git ls-remote refused: the SSH host key of the index remote {shown(server.url())} is "
        f"not in the pinned {_shorten(str(ssh_env))} (INDEXPUB_GIT_KNOWN_HOSTS); add the "
        "server's key there once it is checked against its published fingerprint"
    )
    assert server.connections == 1 and server.authenticated == [] and server.commands == []
    assert "127.0.0.1]:" + str(server.port) not in ssh_env.read_text()  # not learnt either


def test_a_changed_host_key_is_refused_with_one_clear_line(
    server: SshServer, ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = server.known_hosts_line(paramiko.ECDSAKey.generate())
    ssh_env.write_text(pinned)
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    with pytest.raises(HostKeyRejected) as refused:
        ls_remote(server.url())
    message = str(refused.value)
    assert message.startswith(
        f"git ls-remote refused: the SSH host key of the index remote {shown(server.url())} has "
        f"CHANGED from the one pinned in {_shorten(str(ssh_env))} (INDEXPUB_GIT_KNOWN_HOSTS)"
    )
    assert "\n" not in message and "@@@" not in message
    assert server.authenticated == [] and server.commands == []
    assert ssh_env.read_text() == pinned


def test_without_a_known_hosts_file_an_ssh_remote_is_refused_before_connecting(
    server: SshServer, ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even an operator's own GIT_SSH_COMMAND does not get around the pin.
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o StrictHostKeyChecking=no")
    for url in (server.url(), f"git@127.0.0.1:{server.port}/index.git"):
        with pytest.raises(GitError) as refused:
            ls_remote(url)
        assert str(refused.value) == (
            f"the index remote {shown(url)} is reached over SSH, but no known_hosts file is "
            "configured: set INDEXPUB_GIT_KNOWN_HOSTS (or --git-known-hosts) to a file holding "
            "the server's host key"
        )
    assert server.connections == 0

    # Nor can it loosen the check once a file is pinned.
    monkeypatch.setenv("INDEXPUB_GIT_KNOWN_HOSTS", str(ssh_env))
    with pytest.raises(HostKeyRejected):
        ls_remote(server.url())


def test_the_worker_refuses_an_ssh_remote_without_known_hosts_at_start(
    tmp_path: Path, ssh_env: Path
) -> None:
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
