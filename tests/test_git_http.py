"""Smart HTTP(S) remotes: `git http-backend` behind a server that wants Basic auth for pushes
(tests/support/git_http.py), with a CA of the test's own for HTTPS, and the real git."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.git import git
from support.git_http import GitHttpServer
from support.hung_remote import processes_mentioning
from support.tls import make_ca

from indexpub.cli import main
from indexpub.domain.names import index_path
from indexpub.errors import shorten
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.gitindex.process import (
    AuthRejected,
    CertificateRejected,
    GitError,
    check_git_settings,
)

TOKEN = "tok-0123456789abcdef-rw"
READ_ONLY = "tok-fedcba9876543210-ro"


@pytest.fixture(autouse=True)
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxies, and none of the INDEXPUB_GIT_* settings of the environment the tests run in."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("INDEXPUB_GIT_") or var.startswith("GIT_SSL"):
            monkeypatch.delenv(var)
    # What a CLI run here puts in os.environ must go at the end too: set (which records that
    # they were unset, for the undo), then deleted.
    for var in ("INDEXPUB_GIT_CA_FILE", "INDEXPUB_GIT_TOKEN_FILE", "INDEXPUB_GIT_KNOWN_HOSTS"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "index.git"
    init_index(path, dl="https://dl.example/{crate}", api=None)
    return path


@pytest.fixture
def https(remote: Path, tmp_path: Path) -> Iterator[GitHttpServer]:
    certs = make_ca(tmp_path / "tls")
    with GitHttpServer(
        remote.parent, tmp_path / "server", token=TOKEN, tls=certs, read_only_token=READ_ONLY
    ) as server:
        yield server


def client_token(tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "client-token"
    path.write_text(token + "\n")
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN_FILE", str(path))
    return path


def trust(server: GitHttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert server.tls is not None
    monkeypatch.setenv("INDEXPUB_GIT_CA_FILE", str(server.tls.ca))


def publish_one(index: GitIndex, name: str) -> str:
    tip = index.tip()
    assert tip is not None
    head = index.commit_file(tip, index_path(name), b"{}\n", name)
    index.push(head)
    return head


def remote_tip(remote: Path) -> str:
    return git(f"--git-dir={remote}", "rev-parse", "refs/heads/master").strip()


def test_a_push_over_https_with_a_private_ca_and_a_token_file(
    https: GitHttpServer, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(https, monkeypatch)
    client_token(tmp_path, TOKEN, monkeypatch)
    index = GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    head = publish_one(index, "abc")
    assert remote_tip(remote) == head
    assert git(f"--git-dir={remote}", "show", "master:3/a/abc") == "{}\n"
    assert index.last_push_mode == "git"
    pushes = [r for r in https.requests() if r["service"] == "receive-pack"]
    # git asks without credentials first; the 401 makes it ask askpass, then push.
    assert [(r["user"], r["status"]) for r in pushes] == [
        (None, 401),
        ("x-access-token", 200),
        ("x-access-token", 200),
    ]
    reads = [r for r in https.requests() if r["service"] == "upload-pack"]
    assert reads and all(r["user"] is None and r["status"] == 200 for r in reads)


def test_an_untrusted_certificate_is_refused_in_one_line(
    https: GitHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_token(tmp_path, TOKEN, monkeypatch)
    with pytest.raises(CertificateRejected) as refused:
        GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    assert str(refused.value) == (
        f"git ls-remote refused: the TLS certificate of the index remote {https.url()} failed "
        "verification against the system's CAs (for a private CA, set INDEXPUB_GIT_CA_FILE to "
        "its certificate)"
    )
    # Another CA than the one that signed the server's certificate.
    other = make_ca(tmp_path / "other-ca", "another CA")
    monkeypatch.setenv("INDEXPUB_GIT_CA_FILE", str(other.ca))
    with pytest.raises(CertificateRejected) as refused:
        GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    assert str(refused.value).endswith(
        f"failed verification against the CA in {shorten(str(other.ca))} (INDEXPUB_GIT_CA_FILE)"
    )
    # Nor may the environment or git's configuration switch the check off.
    monkeypatch.setenv("GIT_SSL_NO_VERIFY", "1")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.sslVerify")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "false")
    with pytest.raises(CertificateRejected):
        GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    assert https.requests() == []  # no request got through the TLS handshake


@pytest.mark.parametrize("case", ["wrong-token", "read-only-token", "no-token"])
def test_refused_credentials_fail_in_one_line_naming_the_status_and_no_secret(
    https: GitHttpServer,
    remote: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    trust(https, monkeypatch)
    index = GitIndex.open(https.url(), tmp_path / "clone", timeout=30)  # reads are anonymous
    before = remote_tip(remote)
    token_file = tmp_path / "client-token"
    if case == "wrong-token":
        client_token(tmp_path, "tok-wrong-but-secret-42", monkeypatch)
    elif case == "read-only-token":
        client_token(tmp_path, READ_ONLY, monkeypatch)
    with pytest.raises(AuthRejected) as refused:
        publish_one(index, "abc")
    message = str(refused.value)
    if case == "wrong-token":
        assert message == (
            f"git push refused: the index remote answered HTTP 401 (authentication failed) to "
            f"the token in {shorten(str(token_file))} (INDEXPUB_GIT_TOKEN_FILE): the token (or "
            f"INDEXPUB_GIT_USERNAME) is wrong or expired ({https.url()})"
        )
    elif case == "read-only-token":
        assert message == (
            f"git push refused: the index remote answered HTTP 403 (forbidden) to the token in "
            f"{shorten(str(token_file))} (INDEXPUB_GIT_TOKEN_FILE): the token lacks write access "
            f"to this repository, or was revoked ({https.url()})"
        )
    else:
        assert message == (
            "git push refused: the index remote answered HTTP 401 (authentication required) "
            "and no token is configured: set INDEXPUB_GIT_TOKEN_FILE (or INDEXPUB_GIT_TOKEN) "
            f"({https.url()})"
        )
    assert "\n" not in message
    for secret in ("tok-wrong-but-secret-42", READ_ONLY, TOKEN):
        assert secret not in message
    assert remote_tip(remote) == before
    statuses = [r["status"] for r in https.requests() if r["service"] == "receive-pack"]
    assert statuses[-1] == {"wrong-token": 401, "read-only-token": 403, "no-token": 401}[case]


def test_the_token_file_is_read_again_for_every_push(
    https: GitHttpServer, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(https, monkeypatch)
    token_file = client_token(tmp_path, TOKEN, monkeypatch)
    index = GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    publish_one(index, "abc")
    # The server rotates: the old token is refused from now on.
    https.set_token("tok-rotated-0000000001")
    with pytest.raises(AuthRejected):
        publish_one(index, "abd")
    new = tmp_path / "client-token.new"
    new.write_text("tok-rotated-0000000001\n")
    new.replace(token_file)
    # The same GitIndex (a running worker's) pushes with the new token: no restart.
    head = publish_one(index, "abe")
    assert remote_tip(remote) == head
    users = [r["user"] for r in https.requests() if r["status"] == 200 and r["method"] == "POST"]
    assert users.count("x-access-token") == 2


def test_the_url_password_wins_over_the_token_file(
    https: GitHttpServer, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(https, monkeypatch)
    client_token(tmp_path, "tok-not-this-one-xyz", monkeypatch)
    url = https.url().replace("https://", f"https://x-access-token:{TOKEN}@")
    index = GitIndex.open(url, tmp_path / "clone", timeout=30)
    head = publish_one(index, "abc")
    assert remote_tip(remote) == head


def test_bad_settings_are_refused_before_git_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://127.0.0.1:9/index.git"
    missing = tmp_path / "missing"
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN_FILE", str(missing))
    with pytest.raises(GitError) as refused:
        check_git_settings(url)
    assert str(refused.value) == (
        f"INDEXPUB_GIT_TOKEN_FILE names {shorten(str(missing))}, which cannot be read: "
        "No such file or directory"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN_FILE", str(empty))
    with pytest.raises(GitError, match=r"which is empty$"):
        check_git_settings(url)
    check_git_settings("ssh-less-local-path")  # no token needed: not read
    monkeypatch.delenv("INDEXPUB_GIT_TOKEN_FILE")
    monkeypatch.setenv("INDEXPUB_GIT_CA_FILE", str(missing))
    with pytest.raises(GitError) as refused:
        check_git_settings(url)
    assert str(refused.value) == (
        f"INDEXPUB_GIT_CA_FILE names {shorten(str(missing))}, which is not a file"
    )


@pytest.mark.parametrize("option", ["--git-ca-file", "--git-token-file"])
def test_the_worker_refuses_a_missing_ca_or_token_file_at_start(
    tmp_path: Path, option: str
) -> None:
    missing = tmp_path / "missing"
    args = ["--data-dir", str(tmp_path / "data"), "--index-url", "https://127.0.0.1:9/x.git"]
    result = CliRunner().invoke(main, [*args, option, str(missing), "worker", "--drain"])
    assert result.exit_code == 4, result.output
    lines = result.output.strip().splitlines()
    var = "INDEXPUB_GIT_CA_FILE" if option == "--git-ca-file" else "INDEXPUB_GIT_TOKEN_FILE"
    assert len(lines) == 1 and f"{var} names {shorten(str(missing))}" in lines[0], lines
    assert not (tmp_path / "data" / "postgres").exists()


def test_local_git_processes_never_hold_the_token(
    https: GitHttpServer, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a push with the token, no file of the clone holds it (its config, the askpass
    script), and the local git processes the clone keeps running (`cat-file --batch`) were not
    even handed it: only the commands that talk to the remote get credentials."""
    trust(https, monkeypatch)
    client_token(tmp_path, TOKEN, monkeypatch)
    monkeypatch.setenv("INDEXPUB_GIT_TOKEN", "tok-from-the-environment-too")
    index = GitIndex.open(https.url(), tmp_path / "clone", timeout=30)
    publish_one(index, "abc")
    seen = subprocess.run(
        ["grep", "-rl", "--", TOKEN, str(tmp_path / "clone")], capture_output=True, text=True
    )
    assert seen.stdout == ""
    index.read_file("config.json")  # the clone's cat-file process runs
    readers = processes_mentioning(f"--git-dir={tmp_path / 'clone'} cat-file --batch")
    assert len(readers) == 1, readers
    environ = Path(f"/proc/{readers[0].split(':')[0]}/environ").read_bytes()
    assert b"INDEXPUB_GIT_CA_FILE=" in environ  # it is that process's environment
    assert TOKEN.encode() not in environ and b"tok-from-the-environment-too" not in environ
