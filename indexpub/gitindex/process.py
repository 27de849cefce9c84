"""Running git safely: the one place that starts git processes, and the errors they raise.

Every git process runs with a timeout in its own process group, because a hung push would hold the
single-consumer lock forever. Credentials reach git only through the environment (an askpass helper
or `GIT_SSH_COMMAND`), never through argv, and every message we raise is scrubbed of them.

An SSH remote is only ever reached with its host key pinned: ssh checks it strictly against the
known_hosts file named by `INDEXPUB_GIT_KNOWN_HOSTS` and nothing else, so a first connection cannot
silently trust whoever answers (trust on first use), and without that file an SSH remote is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from indexpub.errors import shorten

__all__ = [
    "GitError",
    "GitRemote",
    "GitTimeout",
    "HostKeyRejected",
    "PushRejected",
    "failure_message",
    "kill_git",
    "run_git",
    "scrub_secrets",
    "ssh_command",
    "start_git",
    "write_askpass",
]

_URL_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Variables that would point git at another repository, object store or work tree.
_ENV_DROP = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
_ASKPASS_SCRIPT = """#!/bin/sh
# Written by indexpub: hands git the credentials from the environment, so they never sit in argv.
case "$1" in
  Username*) printf '%s\\n' "${INDEXPUB_GIT_USERNAME:-x-access-token}" ;;
  *) printf '%s\\n' "$INDEXPUB_GIT_TOKEN" ;;
esac
"""


class GitError(Exception):
    """A git operation failed; the message is safe to log (no credentials)."""


class GitTimeout(GitError):
    """A git process outlived its timeout and was killed with its whole process group."""


class HostKeyRejected(GitError):
    """ssh refused the remote's host key: not in the pinned known_hosts file, or changed."""


class PushRejected(GitError):
    """The remote branch moved since our parent commit: fetch, rebuild on the new tip, retry."""


@dataclass(frozen=True)
class GitRemote:
    """The remote with any user:password taken out of its URL.

    git hands the URL to its remote helpers in argv (`git-remote-https origin URL`), so a
    password left in it would be readable by every local user; instead it reaches git through
    the askpass helper, and the URL we store, pass and print is the clean one.
    """

    url: str
    username: str | None = None
    password: str | None = None
    askpass: Path | None = None

    @classmethod
    def parse(cls, url: str, askpass: Path | None = None) -> GitRemote:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
            return cls(url, askpass=askpass)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
        return cls(
            clean,
            urllib.parse.unquote(user) or None,
            urllib.parse.unquote(password) if colon else None,
            askpass,
        )

    def credentials(self) -> dict[str, str]:
        """The askpass variables: the URL's own credentials win over the environment's."""
        found = {}
        for var, value in (
            ("INDEXPUB_GIT_USERNAME", self.username),
            ("INDEXPUB_GIT_TOKEN", self.password),
        ):
            value = value or os.environ.get(var)
            if value:
                found[var] = value
        return found

    def secrets(self) -> list[str]:
        """The literal strings that must never appear in a message we raise."""
        found = [os.environ.get("INDEXPUB_GIT_TOKEN", ""), self.password or ""]
        if self.password is None:
            found.append(self.username or "")  # https://TOKEN@host/ puts the token there
        return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub_secrets(text: str, remote: GitRemote | None = None) -> str:
    text = _URL_USERINFO_RE.sub(r"\1***@", text)
    secrets = remote.secrets() if remote else GitRemote("").secrets()
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


KNOWN_HOSTS_VAR = "INDEXPUB_GIT_KNOWN_HOSTS"
# ssh splits UserKnownHostsFile on whitespace and expands %-tokens and ~ in it.
_UNSAFE_SSH_PATH_RE = re.compile(r"[\s\"'%~]")


def is_ssh_url(url: str) -> bool:
    """Whether git reaches ``url`` over SSH: ssh:// (and its git+ssh aliases) or the scp-like
    ``[user@]host:path``, which git takes for SSH when no slash comes before the first colon."""
    scheme, sep, _ = url.partition("://")
    if sep:
        return scheme.lower() in ("ssh", "git+ssh", "ssh+git")
    head, colon, _ = url.partition(":")
    return bool(colon) and bool(head) and "/" not in head and not url.startswith(f"{head}::")


def ssh_command(remote_url: str) -> str | None:
    """The GIT_SSH_COMMAND for this remote (None when it is not reached over SSH).

    Host keys are checked strictly against the pinned file alone (no global file, no updates
    written to it); without one the remote is refused: a first connection that trusts whatever
    key it is shown is exactly the attack host keys exist to stop.
    """
    if not is_ssh_url(remote_url):
        return None
    known_hosts = os.environ.get(KNOWN_HOSTS_VAR)
    if not known_hosts:
        raise GitError(
            scrub_secrets(
                f"the index remote {remote_url} is reached over SSH, but no known_hosts file is "
                f"configured: set {KNOWN_HOSTS_VAR} (or --git-known-hosts) to a file holding the "
                "server's host key"
            )
        )
    path = Path(known_hosts).expanduser().absolute()
    if _UNSAFE_SSH_PATH_RE.search(str(path)):
        raise GitError(
            f"{KNOWN_HOSTS_VAR} must be a path without spaces, quotes, '%' or '~' (ssh would "
            f"misread it): {shorten(str(path))}"
        )
    if not path.is_file():
        raise GitError(f"{KNOWN_HOSTS_VAR} names {shorten(str(path))}, which is not a file")
    options = [
        "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={shlex.quote(str(path))}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o UpdateHostKeys=no",
        "-o BatchMode=yes",
    ]
    key = os.environ.get("INDEXPUB_GIT_SSH_KEY")
    if key:
        options[:0] = [f"-i {shlex.quote(key)}", "-o IdentitiesOnly=yes"]
    return " ".join(["ssh", *options])


def _git_env(remote: GitRemote | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if remote is not None and remote.askpass is not None:
        credentials = remote.credentials()
        if credentials:
            env.update(credentials)
            env["GIT_ASKPASS"] = str(remote.askpass)
    command = ssh_command(remote.url) if remote is not None else None
    if command is not None:
        # Ours wins over any GIT_SSH_COMMAND, GIT_SSH or core.sshCommand: none may loosen the
        # host key check.
        env.pop("GIT_SSH", None)
        env["GIT_SSH_COMMAND"] = command
    return env


def _git_argv(args: Sequence[str], env: dict[str, str]) -> list[str]:
    argv = ["git"]
    if "INDEXPUB_GIT_TOKEN" in env and "GIT_ASKPASS" in env:
        # A configured credential helper would otherwise store our token on disk.
        argv += ["-c", "credential.helper="]
    return argv + list(args)


def run_git(
    args: Sequence[str],
    *,
    timeout: float,
    what: str,
    remote: GitRemote | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run git in its own session so that a timeout kills ssh and helpers along with it."""
    env = _git_env(remote)
    argv = _git_argv(args, env)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise GitError(f"cannot run git for {what}: {e}") from None
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_git(proc)
        where = f" (remote {remote.url})" if remote else ""
        raise GitTimeout(
            scrub_secrets(f"{what} timed out after {timeout:g} s{where}", remote)
        ) from None
    except BaseException:
        # Interrupted (Ctrl-C, a signal turned into an exception): git runs in a session of
        # its own, so nothing else would stop it.
        kill_git(proc)
        raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and result.returncode != 0:
        message = failure_message(what, result, remote)
        raise (HostKeyRejected if _host_key_failure(result) else GitError)(message)
    return result


def start_git(args: Sequence[str], *, what: str, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a long-lived local git process that talks through pipes (``cat-file --batch``),
    with run_git's environment and its own session. It is given no credentials: only local
    commands run this way. Its caller bounds every wait on it and calls kill_git when one
    runs out, as run_git does with its timeout."""
    env = _git_env(None)
    try:
        return subprocess.Popen(
            _git_argv(args, env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise GitError(f"cannot run git for {what}: {e}") from None


def kill_git(proc: subprocess.Popen[bytes]) -> None:
    """Kill a git process with its whole group (ssh, helpers) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something left the group but holds our pipes; do not hang on it.
        proc.kill()
        proc.wait()


def _host_key_failure(result: subprocess.CompletedProcess[bytes]) -> str | None:
    """ "changed" or "unknown" when ssh refused the host key, from what ssh printed."""
    stderr = result.stderr or b""
    if b"REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return "changed"
    if b"Host key verification failed" in stderr:
        return "unknown"
    return None


def failure_message(
    what: str, result: subprocess.CompletedProcess[bytes], remote: GitRemote | None
) -> str:
    """One line saying why git failed, without secrets; a refused SSH host key gets its own
    line (ssh's warning is twenty lines of ASCII art that would hide the point)."""
    host_key = _host_key_failure(result)
    if host_key is not None and remote is not None:
        known_hosts = shorten(str(Path(os.environ.get(KNOWN_HOSTS_VAR, "")).absolute()))
        if host_key == "changed":
            problem = (
                f"has CHANGED from the one pinned in {known_hosts} ({KNOWN_HOSTS_VAR}); confirm "
                "the new key with the server's administrator before replacing the pinned one"
            )
        else:
            problem = (
                f"is not in the pinned {known_hosts} ({KNOWN_HOSTS_VAR}); add the server's key "
                "there once it is checked against its published fingerprint"
            )
        return scrub_secrets(
            f"{what} refused: the SSH host key of the index remote {remote.url} {problem}", remote
        )
    detail = (result.stderr or result.stdout).decode(errors="replace").strip()
    lines = [line for line in detail.splitlines() if line.strip() and not line.startswith("hint:")]
    lines = lines[-5:]
    where = f" (remote {remote.url})" if remote else ""
    message = f"{what} failed with exit code {result.returncode}{where}"
    if lines:
        message += ": " + " | ".join(lines)
    return scrub_secrets(message, remote)


def write_askpass(script: Path) -> None:
    if script.exists() and script.read_text() == _ASKPASS_SCRIPT:
        return
    tmp = script.with_suffix(".tmp")
    tmp.write_text(_ASKPASS_SCRIPT)
    os.chmod(tmp, 0o700)
    os.replace(tmp, script)
