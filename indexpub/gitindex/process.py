"""Running git safely: the one place that starts git processes, and the errors they raise.

Every git process runs with a timeout in its own process group, because a hung push would hold the
single-consumer lock forever. Credentials reach git only through the environment (an askpass helper
or `GIT_SSH_COMMAND`), never through argv, and every message we raise is scrubbed of them.

An SSH remote is only ever reached with its host key pinned: ssh checks it strictly against the
known_hosts file named by `INDEXPUB_GIT_KNOWN_HOSTS` and nothing else, so a first connection cannot
silently trust whoever answers (trust on first use), and without that file an SSH remote is refused.
An HTTPS remote's certificate is always verified (`GIT_SSL_NO_VERIFY` and `http.sslVerify` cannot
turn that off), against `INDEXPUB_GIT_CA_FILE` when it is set (a private CA), else the system's.

The HTTPS token is read from `INDEXPUB_GIT_TOKEN_FILE` when it is set, anew for every git process,
so that a running worker picks up a rotated token with its next push or fetch (the environment of
a running process cannot change); else from `INDEXPUB_GIT_TOKEN`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shlex
import signal
import subprocess
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from indexpub.errors import shorten

__all__ = [
    "AuthRejected",
    "CertificateRejected",
    "GitError",
    "GitRemote",
    "GitTimeout",
    "HostKeyRejected",
    "PushRejected",
    "check_git_settings",
    "failure_message",
    "git_failure",
    "kill_git",
    "read_token_file",
    "run_git",
    "scrub_secrets",
    "ssh_command",
    "start_git",
    "start_git_background",
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
    # Would turn off the HTTPS certificate check.
    "GIT_SSL_NO_VERIFY",
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


class AuthRejected(GitError):
    """The remote refused our credentials: HTTP 401 or 403, or an SSH key it does not accept."""


class CertificateRejected(GitError):
    """The HTTPS remote's certificate is not signed by a CA we trust (INDEXPUB_GIT_CA_FILE)."""


class PushRejected(GitError):
    """The remote branch moved since our parent commit: fetch, rebuild on the new tip, retry."""


TOKEN_VAR = "INDEXPUB_GIT_TOKEN"
TOKEN_FILE_VAR = "INDEXPUB_GIT_TOKEN_FILE"
CA_FILE_VAR = "INDEXPUB_GIT_CA_FILE"
# Every token this process read from the token file: one rotated away is still scrubbed.
_TOKENS_READ: set[str] = set()


def read_token_file() -> str | None:
    """The token in the file ``INDEXPUB_GIT_TOKEN_FILE`` names, read now; None when unset.

    The whole file, surrounding whitespace stripped, is the token. A rotation should replace
    the file (write a new one and rename it over the old, as secret managers do): a file
    read while it is being rewritten in place may be empty, which fails that git operation,
    and the job is retried after its backoff.
    """
    name = os.environ.get(TOKEN_FILE_VAR)
    if not name:
        return None
    path = Path(name).expanduser().absolute()
    try:
        token = path.read_bytes().decode(errors="replace").strip()
    except OSError as e:
        raise GitError(
            f"{TOKEN_FILE_VAR} names {shorten(str(path))}, which cannot be read: {e.strerror or e}"
        ) from None
    if not token or "\n" in token:
        what = "is empty" if not token else "holds more than one line"
        raise GitError(f"{TOKEN_FILE_VAR} names {shorten(str(path))}, which {what}")
    if len(token) >= 4:
        _TOKENS_READ.add(token)
    return token


def _ca_file() -> Path | None:
    """The CA bundle ``INDEXPUB_GIT_CA_FILE`` names, checked; None when unset."""
    name = os.environ.get(CA_FILE_VAR)
    if not name:
        return None
    path = Path(name).expanduser().absolute()
    if not path.is_file():
        raise GitError(f"{CA_FILE_VAR} names {shorten(str(path))}, which is not a file")
    return path


def check_git_settings(remote_url: str) -> None:
    """Raise GitError, naming the variable, for a git setting that would fail every operation
    on ``remote_url``: an SSH remote without a pinned known_hosts file, a CA file or token file
    that is missing or empty. ``indexpub worker`` calls it before it starts."""
    ssh_command(remote_url)
    _ca_file()
    if _is_http_url(remote_url):
        read_token_file()


def _is_http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme.lower() in ("http", "https")


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
        """The askpass variables: the URL's own credentials win over the environment's, and the
        token file (read now, see read_token_file) over INDEXPUB_GIT_TOKEN."""
        found = {}
        username = self.username or os.environ.get("INDEXPUB_GIT_USERNAME")
        if username:
            found["INDEXPUB_GIT_USERNAME"] = username
        token = self.password or read_token_file() or os.environ.get(TOKEN_VAR)
        if token:
            found[TOKEN_VAR] = token
        return found

    def credential_source(self) -> str | None:
        """Where the token git was given comes from, for a message; None when there is none."""
        if self.password:
            return "the password in the remote URL"
        if os.environ.get(TOKEN_FILE_VAR):
            path = Path(os.environ[TOKEN_FILE_VAR]).expanduser().absolute()
            return f"the token in {shorten(str(path))} ({TOKEN_FILE_VAR})"
        if os.environ.get(TOKEN_VAR):
            return f"the token in {TOKEN_VAR}"
        if self.username:
            return "the token in the remote URL"
        return None

    def secrets(self) -> list[str]:
        """The literal strings that must never appear in a message we raise."""
        found = [os.environ.get(TOKEN_VAR, ""), self.password or "", *_TOKENS_READ]
        with contextlib.suppress(GitError):
            found.append(read_token_file() or "")
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


# The git commands that talk to a remote; only they are given credentials.
_NETWORK_COMMANDS = frozenset({"clone", "fetch", "ls-remote", "pull", "push"})


def _subcommand(args: Sequence[str]) -> str | None:
    """The git command in ``args`` (after ``--git-dir=...``, ``-c name=value`` and the like)."""
    it = iter(args)
    for arg in it:
        if arg in ("-c", "-C"):
            next(it, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _git_env(remote: GitRemote | None, network: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    ca_file = _ca_file()
    if ca_file is not None:
        # git trusts only this bundle for HTTPS then (a private CA), not the system's as well.
        env["GIT_SSL_CAINFO"] = str(ca_file)
    if not network:
        # A local command (rev-parse, update-ref, repack...) needs no token: it is not read,
        # and not handed on.
        env.pop(TOKEN_VAR, None)
    elif remote is not None and remote.askpass is not None and _is_http_url(remote.url):
        # Read for every process: a token file rotated since the last one is picked up.
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
    # No configuration may turn off the HTTPS certificate check (GIT_SSL_NO_VERIFY is dropped
    # from the environment).
    argv = ["git", "-c", "http.sslVerify=true"]
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
    env = _git_env(remote, network=_subcommand(args) in _NETWORK_COMMANDS)
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
        raise git_failure(what, result, remote)
    return result


def git_failure(
    what: str, result: subprocess.CompletedProcess[bytes], remote: GitRemote | None
) -> GitError:
    """The error for a failed git process: its one-line message (see failure_message), as
    HostKeyRejected, AuthRejected or CertificateRejected when that is why."""
    message = failure_message(what, result, remote)
    if remote is not None and _host_key_failure(result):
        return HostKeyRejected(message)
    if remote is not None and _auth_failure(result):
        return AuthRejected(message)
    if remote is not None and _certificate_failure(result):
        return CertificateRejected(message)
    return GitError(message)


def start_git(args: Sequence[str], *, what: str, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a long-lived local git process that talks through pipes (``cat-file --batch``),
    with run_git's environment and its own session. It is given no credentials: only local
    commands run this way. Its caller bounds every wait on it and calls kill_git when one
    runs out, as run_git does with its timeout."""
    env = _git_env(None, network=False)
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


# A shell that runs one git command and, on SIGTERM (sent by Linux when its parent dies, see
# _die_with_parent), kills its whole process group. The git runs in the background and is
# waited for, because sh runs a trap only once its foreground command ended.
_BACKGROUND_SCRIPT = "trap 'kill -KILL 0' TERM HUP INT\n{argv} & wait $!\n"
_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent (a dlopen between fork and exec could hang on a
    lock another thread held); None off Linux."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl: Callable[..., int] | None, parent: int) -> None:
    """Ask Linux to SIGTERM this (forked, not yet exec'd) process when the thread that started
    it ends, however it ends (a stopped worker, a crash, SIGKILL). A parent gone before the
    request took effect ends it at once."""
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def start_git_background(
    args: Sequence[str], *, what: str, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start a local git command in the background: a ``sh`` in a session of its own, which
    nobody waits for, with git's exit status.

    kill_git ends it with everything it started; so does the end of the process that started
    it (sh kills its group when Linux tells it its parent died), so no git outlives a stopped
    worker. Like start_git it is given no credentials.
    """
    env = _git_env(None, network=False)
    script = _BACKGROUND_SCRIPT.format(argv=shlex.join(_git_argv(args, env)))
    try:
        return subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, _prctl(), os.getpid()),
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


def _auth_failure(result: subprocess.CompletedProcess[bytes]) -> str | None:
    """ "401", "403", "401-none" (no credentials to give) or "ssh" (the key was refused) when
    the remote refused us, from what git and ssh printed."""
    stderr = result.stderr or b""
    if b"The requested URL returned error: 403" in stderr:
        return "403"
    if b"Authentication failed for" in stderr or b"returned error: 401" in stderr:
        return "401"
    if b"could not read Username for" in stderr or b"could not read Password for" in stderr:
        return "401-none"
    if b"Permission denied (publickey" in stderr:
        return "ssh"
    return None


def _certificate_failure(result: subprocess.CompletedProcess[bytes]) -> bool:
    """Whether curl refused the HTTPS remote's certificate (OpenSSL's or GnuTLS's wording)."""
    stderr = result.stderr or b""
    return b"SSL certificate problem" in stderr or b"certificate verification failed" in stderr


def _auth_problem(kind: str, remote: GitRemote, what: str) -> str:
    source = remote.credential_source()
    if kind == "ssh":
        key = os.environ.get("INDEXPUB_GIT_SSH_KEY")
        if not key:
            return (
                "the SSH server of the index remote did not accept any key: set "
                "INDEXPUB_GIT_SSH_KEY to the deploy key's private key file"
            )
        shown = shorten(str(Path(key).expanduser().absolute()))
        return (
            f"the SSH server of the index remote did not accept the key {shown} "
            "(INDEXPUB_GIT_SSH_KEY): add its public half to the server's deploy keys"
        )
    if kind == "403":
        given = source or "no credentials"
        return (
            f"the index remote answered HTTP 403 (forbidden) to {given}: the token lacks "
            f"{'write' if 'push' in what else 'read'} access to this repository, or was revoked"
        )
    if kind == "401-none" or source is None:
        return (
            "the index remote answered HTTP 401 (authentication required) and no token is "
            f"configured: set {TOKEN_FILE_VAR} (or {TOKEN_VAR})"
        )
    return (
        f"the index remote answered HTTP 401 (authentication failed) to {source}: the token "
        "(or INDEXPUB_GIT_USERNAME) is wrong or expired"
    )


def failure_message(
    what: str, result: subprocess.CompletedProcess[bytes], remote: GitRemote | None
) -> str:
    """One line saying why git failed, without secrets; a refused SSH host key gets its own
    line (ssh's warning is twenty lines of ASCII art that would hide the point), and so do
    refused credentials and an untrusted HTTPS certificate."""
    if remote is not None:
        auth = _auth_failure(result)
        if auth is not None:
            return scrub_secrets(
                f"{what} refused: {_auth_problem(auth, remote, what)} ({remote.url})", remote
            )
        if _certificate_failure(result):
            ca_file = os.environ.get(CA_FILE_VAR)
            trusted = (
                f"the CA in {shorten(str(Path(ca_file).expanduser().absolute()))} ({CA_FILE_VAR})"
                if ca_file
                else f"the system's CAs (for a private CA, set {CA_FILE_VAR} to its certificate)"
            )
            return scrub_secrets(
                f"{what} refused: the TLS certificate of the index remote {remote.url} failed "
                f"verification against {trusted}",
                remote,
            )
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
