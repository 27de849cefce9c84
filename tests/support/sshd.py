"""OpenSSH's own sshd on 127.0.0.1 for the SSH remote tests: a config, host key and deploy key of
the test's own, in the foreground (``sshd -D -e -f CONFIG``), on a random port.

No system sshd is started or used: the server reads only the files this module writes, and
lets in only the keys it lists, as the user running the tests, who then reaches any bare
repository by path (``ssh://USER@127.0.0.1:PORT/tmp/.../index.git``) with plain
``git-upload-pack`` / ``git-receive-pack``, no ForceCommand. The deploy key's line carries
``restrict`` (no pty, no forwarding), as a deploy key should. ``add_key(..., command=...)`` lists
another key whose session runs only that command: how a test makes a server that accepts the
connection and then stalls.

Debian's sshd is in the package openssh-server (``./dev test`` and ``.ci/run`` install it when
they can); :func:`unavailable` says why it cannot run here, for a skip.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support.git_http import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Where sshd, run as root, insists on its privilege separation directory (Debian's build).
PRIVSEP_DIR = Path("/run/sshd")


def unavailable() -> str | None:
    """Why the tests cannot run sshd here, or None."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "needs the OpenSSH client (ssh, ssh-keygen)"
    if not os.access(SSHD, os.X_OK):
        return (
            "needs OpenSSH's sshd (Debian: apt-get install openssh-server, which ./dev test "
            "does when run as root)"
        )
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755)
        except OSError as e:
            return f"sshd needs its privilege separation directory {PRIVSEP_DIR}: {e}"
    return None


def keygen(path: Path, comment: str = "indexpub-test") -> Path:
    """A new ed25519 key pair without passphrase: ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


class Sshd:
    """One sshd; ``start``/``stop`` (again on the same port), a context manager."""

    def __init__(self, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(work / "host_key", "indexpub-test-host")
        self.deploy_key = keygen(work / "deploy_key", "indexpub-test-deploy")
        self.authorized_keys = work / "authorized_keys"
        self.authorized_keys.write_text(f"restrict {self.public(self.deploy_key)}\n")
        self.home = work / "home"
        self.home.mkdir(exist_ok=True)
        self.config = work / "sshd_config"
        self.log = work / "sshd.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def public(key: Path) -> str:
        return key.with_suffix(".pub").read_text().strip()

    def add_key(self, key: Path, command: str | None = None) -> None:
        options = "restrict" + (f',command="{command}"' if command else "")
        with self.authorized_keys.open("a") as f:
            f.write(f"{options} {self.public(key)}\n")

    def known_hosts_line(self, key: Path | None = None) -> str:
        """This server's line for a known_hosts file (with ``key``'s public half instead of its
        own host key)."""
        kind, blob = self.public(key or self.host_key).split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo.absolute()}"

    def _write_config(self) -> None:
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PidFile none\n"
            # The temporary directory's modes are the test's, not a home directory's.
            "StrictModes no\n"
            "UsePAM no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {self.user}\n"
            # The sessions' HOME is a folder of ours: the shell that runs git-receive-pack then
            # reads none of the test user's rc files (on a developer's root account those start
            # pyenv and the like, a third of a second per connection that a git server's
            # account, with git-shell or a bare rc, does not spend), nor its ~/.gitconfig.
            f"SetEnv HOME={self.home}\n"
            "LogLevel VERBOSE\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
        )

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._write_config()
        # Ready once it says so: a probe connection would show in its log as a client.
        listening = self._log_text().count("Server listening on")
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited:\n{self.log.read_text()}")
            if self._log_text().count("Server listening on") > listening:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd did not listen:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the listener and every session it started (each runs in a session of its own,
        so they are found by their parent)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        sessions = _children(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def accepted(self) -> int:
        """How many logins the server accepted so far."""
        return self.log.read_text().count("Accepted publickey for")

    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
