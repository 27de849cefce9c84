"""A bare repository served as a network remote, the way the worker is configured for one.

``serve_remote(kind, repo, work)`` serves the bare repository ``repo`` over ``http`` or ``https``
(:mod:`support.git_http`: anonymous fetch, pushes need a token (user
``x-access-token``); HTTPS with
a throwaway CA) or ``ssh`` (:mod:`support.sshd`: OpenSSH with a deploy key and a pinned host
key), and yields a :class:`NetRemote`: the URL, the ``INDEXPUB_GIT_*`` variables a worker needs
for it (token file, CA file; or key and known_hosts), and ``stop``/``start`` to take the server
down and bring it back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.git_http import GitHttpServer
from support.sshd import Sshd
from support.tls import make_ca

KINDS = ("http", "https", "ssh")


def clear_git_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxies, and none of the INDEXPUB_GIT_* or GIT_SSH* settings of the environment the
    tests run in: a test's remote is configured by the test alone."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("INDEXPUB_GIT_") or var in ("GIT_SSH", "GIT_SSH_COMMAND"):
            monkeypatch.delenv(var)


@dataclass
class NetRemote:
    kind: str
    url: str
    env: dict[str, str]
    server: GitHttpServer | Sshd
    token: str | None = None
    token_file: Path | None = None
    # Every token this remote was given, for the tests that look for leaks.
    tokens: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def rotate_token(self) -> str:
        """A new token that the server accepts from now on (the old one no longer); the
        client's token file still holds the old one until :meth:`hand_out_token`."""
        assert isinstance(self.server, GitHttpServer)
        self.token = "tok-" + secrets.token_hex(12)
        self.tokens.append(self.token)
        self.server.set_token(self.token)
        return self.token

    def hand_out_token(self) -> None:
        """Replace the client's token file with the server's current token, as a secret
        manager does (a new file renamed over the old)."""
        assert self.token_file is not None and self.token is not None
        tmp = self.token_file.with_suffix(".new")
        tmp.write_text(self.token + "\n")
        tmp.replace(self.token_file)


@contextlib.contextmanager
def serve_remote(kind: str, repo: Path, work: Path) -> Iterator[NetRemote]:
    """Serve the bare repository ``repo`` over ``kind`` until the block ends."""
    work.mkdir(parents=True, exist_ok=True)
    if kind in ("http", "https"):
        token = "tok-" + secrets.token_hex(12)
        certs = make_ca(work / "tls") if kind == "https" else None
        server = GitHttpServer(repo.parent, work / "server", token=token, tls=certs)
        token_file = work / "client-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        env = {"INDEXPUB_GIT_TOKEN_FILE": str(token_file)}
        if certs is not None:
            env["INDEXPUB_GIT_CA_FILE"] = str(certs.ca)
        remote = NetRemote(kind, "", env, server, token, token_file, [token])
        with server:
            remote.url = server.url(repo.name)
            yield remote
        return
    if kind == "ssh":
        sshd = Sshd(work / "sshd")
        known_hosts = work / "known_hosts"
        with sshd:
            known_hosts.write_text(sshd.known_hosts_line())
            env = {
                "INDEXPUB_GIT_SSH_KEY": str(sshd.deploy_key),
                "INDEXPUB_GIT_KNOWN_HOSTS": str(known_hosts),
            }
            yield NetRemote(kind, sshd.url(repo), env, sshd)
        return
    raise ValueError(f"unknown remote kind {kind!r}; known: {', '.join(KINDS)}")
