"""A whole registry for the cargo acceptance suite: PostgreSQL, a bare index, `indexpub serve`
and `indexpub worker` as subprocesses on 127.0.0.1, and cargo configured against them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.git import git

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "fixtures" / "crates"
# Publish order: every crate after its dependencies.
PUBLISH_ORDER = [
    "feats",
    "plain-0.1.0",
    "plain-0.2.0",
    "q",
    "xy",
    "abc",
    "MixedCase",
    "opt-deps",
    "target_deps",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_groups(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process's group (started with start_new_session), then wait; SIGKILL what
    is still there after 15 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class CargoRegistry:
    tmp: Path
    database_url: str
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    # More options of `indexpub worker` (--metrics-port).
    worker_args: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def remote(self) -> Path:
        return self.tmp / "index.git"

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INDEXPUB_DATABASE_URL": self.database_url,
            "INDEXPUB_INDEX_URL": str(self.remote),
            "INDEXPUB_DATA_DIR": str(self.data),
        }

    def indexpub(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "indexpub", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.indexpub(
            "init-index", "--dl", f"{self.base}/api/v1/crates", "--api", self.base, str(self.remote)
        )
        self.indexpub("migrate")
        for user in ("alice", "bob"):
            self.tokens[user] = self.indexpub("token", "create", user).strip()
        for args in (
            ["serve", "--port", str(self.port)],
            ["worker", "--poll-interval", "0.5", *self.worker_args],
        ):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "indexpub", "-v", *args],
                    env=self.env,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.tmp / f"{args[0]}.log", "wb"),  # noqa: SIM115
                )
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/index/config.json", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError((self.tmp / "serve.log").read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        stop_groups(self.processes)

    # --- cargo ------------------------------------------------------------------------------

    def cargo_home(self, name: str, protocol: str = "git", user: str = "alice") -> Path:
        """A CARGO_HOME of its own, knowing registry `local` over git or sparse."""
        home = self.tmp / f"cargo-home-{name}"
        home.mkdir(exist_ok=True)
        index = self.remote.as_uri() if protocol == "git" else f"sparse+{self.base}/index/"
        (home / "config.toml").write_text(
            f'[registries.local]\nindex = "{index}"\n'
            f'[registry]\nglobal-credential-providers = ["cargo:token"]\n'
        )
        (home / "credentials.toml").write_text(
            f'[registries.local]\ntoken = "{self.tokens[user]}"\n'
        )
        return home

    def cargo_env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "CARGO_HOME": str(home), "CARGO_TERM_COLOR": "never"}

    def start_cargo(self, cwd: Path, home: Path, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["cargo", *args],
            cwd=cwd,
            env=self.cargo_env(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def version_recorded(self, name: str, version: str) -> bool:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM indexpub.versions v JOIN indexpub.crates c ON c.id = v.crate_id"
                    " WHERE c.name = %s AND v.num = %s",
                    (name, version),
                ).fetchone()
                is not None
            )

    def cargo(
        self, cwd: Path, home: Path, *args: str, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = self.cargo_env(home)
        done = subprocess.run(
            ["cargo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert done.returncode == 0, f"cargo {' '.join(args)}:\n{done.stderr}"
        return done

    def source(self, directory: str) -> Path:
        """A private copy of a fixture crate's source, to publish from."""
        target = self.tmp / "src" / directory
        if not target.exists():
            shutil.copytree(
                SOURCES / directory, target, ignore=shutil.ignore_patterns("target", "Cargo.lock")
            )
        return target

    def publish(
        self, directory: str, home: Path, *extra: str, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cargo(
            self.source(directory),
            home,
            "publish",
            "--registry",
            "local",
            "--allow-dirty",
            *extra,
            ok=ok,
        )

    def consumer(self, name: str, dependencies: str) -> Path:
        project = self.tmp / name
        (project / "src").mkdir(parents=True, exist_ok=True)
        (project / "Cargo.toml").write_text(
            f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n'
            f"publish = false\n\n[dependencies]\n{dependencies}"
        )
        (project / "src" / "main.rs").write_text("fn main() {}\n")
        return project

    def wait_for_index(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("the index did not change in time")
            time.sleep(0.05)

    def remote_file(self, path: str) -> str:
        return git(f"--git-dir={self.remote}", "show", f"HEAD:{path}")


def cargo(
    project: Path, home: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real cargo in ``project`` with its own CARGO_HOME; ``ok``: assert it succeeded."""
    env = {**os.environ, "CARGO_HOME": str(home), "CARGO_TERM_COLOR": "never"}
    env.pop("RUSTFLAGS", None)
    done = subprocess.run(
        ["cargo", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done
