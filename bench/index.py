"""End to end: publish -> landed latency, burst throughput and memory of the index worker.

    python bench/index.py [--database-url URL] [--sizes 1000,10000,100000] [--quick]
                          [--remote local|http|https|ssh] [--plots [DIR]]

For each size N it builds a synthetic registry (N crates with one version each, inserted with
COPY; a bare remote holding the matching crate files plus config.json, built with
``git fast-import``), starts a real ``indexpub worker --queue index`` process, lets its first job
make its clone (timed, excluded) and, in rounds interleaved over the sizes, measures:

1. publish -> landed: ``store.publish`` of one new version in a transaction; the clock starts
   when COMMIT returns and stops when the remote's ``reference-transaction`` hook sees the branch
   ref committed (the hook stamps ``$EPOCHREALTIME``; no fork). Samples are spaced so that the
   worker is idle each time. The remote is a local bare repository without receive hooks, so the
   worker publishes directly (packs linked in, ``git update-ref`` on the remote; see
   GitIndex.push), and the report says whether it did. That hook is no receive hook: ``git
   update-ref`` runs it as receive-pack does, so it times either way without forcing git push.
2. burst: 1,000 publishes over distinct crates committed in one transaction, then the time until
   the index queue is empty; the end is the last ref update on the remote. Every file is checked.
3. the worker's peak RSS: supervisor + child (psutil, sampled every 50 ms; /proc VmHWM too).
4. git push alone: GitIndex.commit_file + GitIndex.push from a clone of our own opened with
   ``local_push="git"``, timed from the push to the ref update: what ``git push`` to the remote
   costs whatever the worker does. The same from a second clone in direct mode is "direct
   publish alone": the floor under the worker's own publish.
5. the old way, against the same remote: a working-tree clone; per update ``git fetch``,
   ``git reset --hard origin/<branch>``, append the line, ``git add``, ``git commit``,
   ``git push``, one update at a time.

``--remote`` says how the worker reaches the remote: ``local`` (default) by its path, where it
publishes directly; ``http`` / ``https`` through smart HTTP (``git http-backend`` behind the tests'
uvicorn server, tests/support/git_http.py: anonymous fetch, a token for pushes, a throwaway CA for
HTTPS); ``ssh`` through OpenSSH's sshd with a deploy key (tests/support/sshd.py). Over a network
remote every push is ``git push`` to the server, and a third floor is measured beside the two
local ones: "git push over the network alone", GitIndex.push from a clone of that URL. The
servers run on this machine, so the network is the loopback: what is measured is the protocol's
and the server's work, not a WAN's latency. The old way runs only against a local remote.

The database is a throwaway embedded PostgreSQL with its default, durable settings (fsync on,
synchronous_commit on), unless ``--database-url`` names an existing server (a database is created
and dropped per size there). ``--quick`` runs 1,000 and 10,000 crates with fewer samples.

``--plots [DIR]`` (default bench/plots/) adds a last phase per size for bench/plots.py: 20
publishes/s, each its own transaction, for 10 s, with a burst of up to 1,000 committed in one
transaction 2 s in; every publish's -> landed latency (the first ref update whose tree holds it)
is drawn against its publish time and as an ECDF in index.png (index-REMOTE.png over a network
remote). bench/README.md says what every number means.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path (bench/queue.py would shadow ``queue``); root and tests/ on
import argparse
import collections
import contextlib
import hashlib
import importlib.util
import itertools
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import plots
import psutil
import psycopg
from psycopg import sql
from support.embedded_servers import postmaster_pid, throwaway_database, throwaway_server
from support.git import git as support_git
from support.git_http import GitHttpServer
from support.index_helpers import index_consumer_pid
from support.net_remotes import KINDS, NetRemote, serve_remote

from indexpub import config
from indexpub.config import JOBS_SCHEMA
from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import canonical_name, index_path, validate_crate_name
from indexpub.domain.versions import parse_version
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.registry import store
from indexpub.registry.queue import INDEX_QUEUE

BRANCH = "master"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-"
BURST = 1_000

TARGET_P50_MS = 50.0
# The target over smart HTTP at 100,000 crates (network remotes).
TARGET_P50_NET_MS = 150.0
TARGET_SCALING = 1.3
TARGET_BURST = 250.0
TARGET_RSS_MB = 200.0

# Stamps the moment the remote's branch ref is committed. reference-transaction runs for
# "prepared", "committed" and "aborted"; only "committed" means the push has landed.
HOOK = """#!/bin/bash
[ "$1" = committed ] || exit 0
t=$EPOCHREALTIME
while read -r old new ref; do
  # git pack-refs (which gc runs) deletes the loose ref: not an update of the branch.
  [ "$new" = 0000000000000000000000000000000000000000 ] && continue
  [ "$ref" = "refs/heads/{branch}" ] && printf '%s %s\\n' "$t" "$new" >> '{log}'
done
exit 0
"""


# --- small helpers ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    """The tests' git with the benchmark's settings: C locale, no prompts, up to 10 minutes; the
    output as bytes. A failure raises GitFailed, with git's stderr."""
    env = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    return support_git(*args, cwd=cwd, input=input, text=False, env=env, timeout=600)


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def settings(env: dict[str, str]) -> Iterator[None]:
    """These INDEXPUB_GIT_* settings in this process's environment for the block (each size's
    server has its own token, CA or keys; git processes read them when they start)."""
    saved = {var: os.environ.get(var) for var in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def entry_for(name: str, minor: int) -> IndexEntry:
    vers = f"0.{minor}.0"
    cksum = hashlib.sha256(f"{name}-{vers}".encode()).hexdigest()
    return IndexEntry(name=name, vers=parse_version(vers), deps=(), cksum=cksum)


def random_names(rng: random.Random, count: int) -> list[str]:
    names: dict[str, str] = {}
    while len(names) < count:
        length = rng.randint(4, 16)
        name = rng.choice("abcdefghijklmnopqrstuvwxyz") + "".join(
            rng.choices(ALPHABET, k=length - 1)
        )
        try:
            validate_crate_name(name)
        except ValueError:
            continue
        names.setdefault(canonical_name(name), name)
    return sorted(names.values())


# --- the database -------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_server() -> Iterator[tuple[str, int]]:
    """A throwaway embedded server with PostgreSQL's default, durable settings: (URL, pid)."""
    with throwaway_server("indexpub-bench-pg-") as (url, pgdata):
        yield url, postmaster_pid(pgdata)


def fresh_database(admin_url: str, label: str) -> contextlib.AbstractContextManager[str]:
    return throwaway_database(admin_url, f"indexpub_bench_{label}_")


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            n: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0])  # type: ignore[index]
            for n in names
        }


def load_crates(url: str, names: Sequence[str]) -> dict[str, str]:
    """Insert one version per crate with COPY; the crate files' contents by name."""
    lines = {name: entry_for(name, 1).to_line() for name in names}
    with psycopg.connect(url) as conn:
        store.migrate(conn)
        with conn.cursor() as cur:
            with cur.copy("COPY indexpub.crates (name, canonical_name) FROM STDIN") as copy:
                for name in names:
                    copy.write_row((name, canonical_name(name)))
            ids = dict(cur.execute("SELECT name, id FROM indexpub.crates").fetchall())
            with cur.copy(
                "COPY indexpub.versions (crate_id, num, num_no_build, line) FROM STDIN"
            ) as copy:
                for name in names:
                    copy.write_row((ids[name], "0.1.0", "0.1.0", lines[name]))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE indexpub.crates")
        conn.execute("VACUUM ANALYZE indexpub.versions")
    return {name: line + "\n" for name, line in lines.items()}


def index_jobs(conn: psycopg.Connection[Any]) -> tuple[int, str | None]:
    """(jobs left in the index queue, the last error of one that failed)."""
    row = conn.execute(
        sql.SQL("SELECT count(*), max(last_error) FROM {}.jobs WHERE queue = %s").format(
            sql.Identifier(JOBS_SCHEMA)
        ),
        (INDEX_QUEUE,),
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


# --- the remote ---------------------------------------------------------------------------------


def build_remote(remote: Path, files: dict[str, str]) -> None:
    init_index(remote, dl="https://dl.example/{crate}/{crate}-{version}.crate", api=None)
    parent = git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{BRANCH}").strip()
    stamp = int(time.time())
    chunks = [
        f"commit refs/heads/{BRANCH}\ncommitter bench <bench@localhost> {stamp} +0000\n".encode(),
        b"data 16\nSynthetic index\n",
        b"from " + parent + b"\n",
    ]
    for name, content in files.items():
        data = content.encode()
        chunks.append(f"M 100644 inline {index_path(name)}\ndata {len(data)}\n".encode())
        chunks += [data, b"\n"]
    chunks.append(b"\n")
    git(f"--git-dir={remote}", "fast-import", "--quiet", input=b"".join(chunks))
    head = git(f"--git-dir={remote}", "symbolic-ref", "HEAD").decode().strip()
    assert head == f"refs/heads/{BRANCH}", head


def remote_files(remote: Path, names: Sequence[str]) -> dict[str, str | None]:
    """The files at the remote's tip, with two git processes: ls-tree finds their blobs, cat-file
    reads them by sha. Not "<ref>:<path>" specs: git takes a whole spec ending in "-g" and four
    or more hex digits for `git describe` output, so the file of a crate called k-gfa55 read as
    whichever commit's sha starts with fa55 (which this check once reported as corruption)."""
    paths = {index_path(n): n for n in names}
    listing = git(f"--git-dir={remote}", "ls-tree", "-z", f"refs/heads/{BRANCH}", "--", *paths)
    blobs: dict[str, str] = {}
    for record in listing.split(b"\0"):
        if record:
            meta, path = record.decode().split("\t", 1)
            if path in paths:
                blobs[paths[path]] = meta.split()[2]
    found: dict[str, str | None] = dict.fromkeys(names)
    request = "".join(f"{sha}\n" for sha in blobs.values()).encode()
    out = git(f"--git-dir={remote}", "cat-file", "--batch", input=request) if request else b""
    pos = 0
    for name in blobs:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split(b" ")
        pos = eol + 1
        size = int(header[2])
        found[name] = out[pos : pos + size].decode()
        pos += size + 1
    return found


class RefLog:
    """The hook's log: one "time sha" line per update of the branch on the remote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def entries(self) -> list[tuple[float, str]]:
        rows = []
        for line in self.path.read_text().splitlines():
            stamp, sha = line.split()
            rows.append((float(stamp), sha))
        return rows

    def size(self) -> int:
        return self.path.stat().st_size

    def wait_past(self, size: int, timeout: float) -> tuple[float, str]:
        """Poll (1 ms) until the log grows past `size`; the first new entry."""
        deadline = time.monotonic() + timeout
        while self.path.stat().st_size <= size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no push landed within {timeout:g} s")
            time.sleep(0.001)
        with self.path.open("rb") as f:
            f.seek(size)
            line = f.readline()
        while not line.endswith(b"\n"):  # the hook's write is one printf; be safe anyway
            time.sleep(0.001)
            with self.path.open("rb") as f:
                f.seek(size)
                line = f.readline()
        stamp, sha = line.split()
        return float(stamp), sha.decode()


def install_hook(remote: Path, log: Path) -> RefLog:
    hook = remote / "hooks" / "reference-transaction"
    hook.write_text(HOOK.format(branch=BRANCH, log=log))
    hook.chmod(0o755)
    return RefLog(log)


class CpuMeter:
    """How busy the machine was between two laps, and how much of that was not this benchmark.

    Ours: this process and every live descendant (workers, their git children), and the
    embedded PostgreSQL when we started it, each with the CPU time of its reaped children.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = [psutil.Process(pid) for pid in roots]
        self._last = self._read()

    def _ours(self) -> float:
        total = 0.0
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = proc.cpu_times()
                        total += t.user + t.system + t.children_user + t.children_system
        return total

    def _read(self) -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return time.monotonic(), busy, self._ours()

    def lap(self) -> tuple[float, float]:
        """(machine busy %, others' share %) since the previous lap, of all CPUs."""
        now = self._read()
        wall = (now[0] - self._last[0]) * (os.cpu_count() or 1)
        busy, ours = now[1] - self._last[1], now[2] - self._last[2]
        self._last = now
        return 100 * busy / wall, 100 * max(busy - ours, 0.0) / wall


# --- the worker ---------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Max over time of RSS summed over the supervisor and its worker child (and with git)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_python = 0
        self.peak_all = 0
        self.hwm: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        python = 0
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                is_python = proc.pid == self.root.pid or proc.ppid() == self.root.pid
            except psutil.Error:
                continue
            total += rss
            if is_python:
                python += rss
                self.hwm[proc.pid] = max(self.hwm.get(proc.pid, 0), _vm_hwm(proc.pid))
        self.peak_python = max(self.peak_python, python)
        self.peak_all = max(self.peak_all, total)

    def stop(self) -> None:
        self.sample()
        self._done.set()
        self.join()


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class WorkerProcess:
    def __init__(
        self,
        url: str,
        remote: str,
        data: Path,
        log: Path,
        poll: float,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            **os.environ,
            "INDEXPUB_DATABASE_URL": url,
            "INDEXPUB_INDEX_URL": remote,
            "INDEXPUB_DATA_DIR": str(data),
            **(extra_env or {}),
        }
        self.log = log
        self._log_file = log.open("wb")
        # ``python -m indexpub`` where the package has a __main__, else the CLI module itself.
        module = "indexpub" if importlib.util.find_spec("indexpub.__main__") else "indexpub.cli"
        argv = [sys.executable, "-m", module, "worker", "--queue", INDEX_QUEUE]
        argv += ["--poll-interval", str(poll)]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=_paths.ROOT,
            start_new_session=True,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.rss = RssSampler(self.proc.pid)
        self.rss.start()

    def child_pid(self) -> int | None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children():
                return child.pid
        return None

    def wait_active(self, url: str, timeout: float = 60) -> None:
        """Until the worker holds the index queue's consumer lock (migrated, connected)."""

        def active() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.log.read_text()[-3000:]}")
            return index_consumer_pid(url) is not None

        wait_until("the worker to become the index consumer", active, timeout, 0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.rss.stop()
        self._log_file.close()


class Profiler:
    """py-spy on the worker child during one phase (``--profile DIR``), wall-clock, raw stacks."""

    def __init__(self, out: Path | None, pid: int | None, name: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = None if out is None else out / f"{name}.txt"
        if out is None or pid is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        assert self.out is not None
        argv = ["py-spy", "record", "--idle", "--rate", "500", "--format", "raw"]
        argv += ["--output", str(self.out), "--pid", str(pid)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)


# --- one size -----------------------------------------------------------------------------------


@dataclass
class Burst:
    updates: int
    seconds: float
    pushes: int

    @property
    def rate(self) -> float:
        return self.updates / self.seconds


@dataclass
class SizeResult:
    size: int
    remote: str = "local"
    build_s: float = 0.0
    first_job_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    rss_python_mb: float = 0.0
    rss_all_mb: float = 0.0
    hwm_mb: float = 0.0
    # publish->landed of the first publish after another writer pushed: rejected, fetch, again.
    resync: list[float] = field(default_factory=list)
    floor_clone_s: float = 0.0
    # GitIndex.push start -> the remote's ref committed; and -> push returned (hooks, gc check,
    # update-ref of the tracking ref included).
    floor_push: list[float] = field(default_factory=list)
    floor_push_total: list[float] = field(default_factory=list)
    floor_build: list[float] = field(default_factory=list)
    # The same for a direct publish (GitIndex.push into the local bare remote, no git push).
    direct_push: list[float] = field(default_factory=list)
    direct_push_total: list[float] = field(default_factory=list)
    # The same for git push over the network remote (when --remote is not local).
    net_push: list[float] = field(default_factory=list)
    net_push_total: list[float] = field(default_factory=list)
    net_clone_s: float = 0.0
    # Over smart HTTP(S): the server's time per push, from the request to the end of its
    # answer (git http-backend's receive-pack: unpacking, the connectivity check, the ref).
    server_receive: list[float] = field(default_factory=list)
    server_advertise: list[float] = field(default_factory=list)
    # Whether the worker published directly: the remote holds packs that are its clone's files.
    worker_direct: bool = False
    old_clone_s: float = 0.0
    old: list[float] = field(default_factory=list)
    old_steps: dict[str, list[float]] = field(default_factory=dict)
    # The plots' phase (--plots): (seconds since it began at publish, publish->landed seconds)
    # of the steady publishes and of the burst committed among them.
    trickle: list[tuple[float, float]] = field(default_factory=list)
    trickle_burst: list[tuple[float, float]] = field(default_factory=list)

    @property
    def burst_rate(self) -> float:
        return statistics.median(b.rate for b in self.bursts) if self.bursts else float("nan")


@dataclass
class Plan:
    samples: int
    warmup: int
    bursts: int
    old_updates: int
    floor_pushes: int
    rounds: int
    spacing: tuple[float, float]
    poll: float
    profile: Path | None
    remote: str = "local"
    # The plots' phase: publishes/s, seconds, when the burst is committed (seconds in); 0: none.
    trickle_rate: float = 0.0
    trickle_s: float = 10.0
    trickle_burst_at: float = 2.0


class Registry:
    """The synthetic registry of one size: what the database and the remote should hold."""

    def __init__(self, url: str, remote: Path, files: dict[str, str], rng: random.Random) -> None:
        self.url = url
        self.remote = remote
        self.files = files
        self.rng = rng
        self.minor = dict.fromkeys(files, 1)
        self.untouched = list(files)
        rng.shuffle(self.untouched)
        self.touched: set[str] = set()

    def pick(self, count: int) -> list[str]:
        """Distinct crates, untouched ones first."""
        picked = self.untouched[:count]
        del self.untouched[:count]
        if len(picked) < count:
            chosen = set(picked)
            rest = [n for n in self.files if n not in chosen]
            picked += self.rng.sample(rest, count - len(picked))
        return picked

    def record(self, conn: psycopg.Connection[Any], name: str) -> IndexEntry:
        """A new version written to the database without a sync job (the old way's request did
        that, then pushed itself), so that the database stays the truth the worker renders."""
        entry = self.next_entry(name)
        vers = str(entry.vers)
        conn.execute(
            "INSERT INTO indexpub.versions (crate_id, num, num_no_build, line)"
            " SELECT id, %s, %s, %s FROM indexpub.crates WHERE canonical_name = %s",
            (vers, vers, entry.to_line(), canonical_name(name)),
        )
        return entry

    def next_entry(self, name: str) -> IndexEntry:
        self.minor[name] += 1
        entry = entry_for(name, self.minor[name])
        self.files[name] += entry.to_line() + "\n"
        self.touched.add(name)
        return entry

    def verify(self, names: Sequence[str]) -> None:
        have = remote_files(self.remote, list(names))
        wrong = [n for n in names if have[n] != self.files[n]]
        if wrong:
            name = wrong[0]
            raise AssertionError(
                f"{len(wrong)} crate files differ on the remote, e.g. {name}:\n"
                f"expected:\n{self.files[name]}remote:\n{have[name]}"
            )


def publish_one(conn: psycopg.Connection[Any], reg: Registry) -> float:
    (name,) = reg.pick(1)
    return publish_one_of(conn, reg, name)


def publish_one_of(conn: psycopg.Connection[Any], reg: Registry, name: str) -> float:
    """A new version of ``name`` in a transaction of its own; the moment COMMIT returned."""
    store.publish(conn, reg.next_entry(name))
    conn.commit()
    return time.time()


def _queue_empty(watch: psycopg.Connection[Any]) -> bool:
    left, error = index_jobs(watch)
    if error is not None:
        raise RuntimeError(f"an index job failed:\n{error}")
    return left == 0


class SizeRun:
    """One size's registry, idle worker, old-way clone and push-floor clone, measured in rounds.

    The sizes are measured interleaved (round 1 of every size, then round 2, ...), so that a
    noisy minute on the shared machine lands on all sizes instead of on one.
    """

    def __init__(self, admin_url: str, size: int, plan: Plan, log: Callable[[str], None]) -> None:
        self.size = size
        self.plan = plan
        self.log = log
        self.result = SizeResult(size)
        self.rounds: list[list[float]] = []
        self._stack = contextlib.ExitStack()
        self.work = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix=f"indexpub-bench-{size}-"))
        )
        self.url = self._stack.enter_context(fresh_database(admin_url, str(size)))
        rng = random.Random(size)
        started = time.perf_counter()
        files = load_crates(self.url, random_names(rng, size))
        remote = self.work / "index.git"
        build_remote(remote, files)
        self.result.build_s = time.perf_counter() - started
        self.refs = install_hook(remote, self.work / "landed.log")
        self.reg = Registry(self.url, remote, files, rng)
        log(f"  {size:,}: built (database + remote) in {self.result.build_s:.1f} s")
        self.result.remote = plan.remote
        self.net: NetRemote | None = None
        self.worker_url = str(remote)
        if plan.remote != "local":
            self.net = self._stack.enter_context(
                serve_remote(plan.remote, remote, self.work / "net")
            )
            self.worker_url = self.net.url
        self.worker = WorkerProcess(
            self.url,
            self.worker_url,
            self.work / "data",
            self.work / "worker.log",
            plan.poll,
            self.net.env if self.net else None,
        )
        self._stack.callback(self.worker.stop)
        self.pub = self._stack.enter_context(psycopg.connect(self.url))
        self.watch = self._stack.enter_context(psycopg.connect(self.url, autocommit=True))
        self.floor_index: GitIndex | None = None
        self.direct_index: GitIndex | None = None
        self.net_index: GitIndex | None = None
        self.old_clone = self.work / "old-way"

    def close(self) -> None:
        self._stack.close()

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        self.worker.wait_active(self.url)
        assert not config.clone_path(self.work / "data", self.worker_url).exists()
        (self.result.first_job_s,) = self._latency(1, timeout=900)
        self.log(
            f"  {self.size:,}: the worker's first job (its clone of {self.size:,} files): "
            f"{self.result.first_job_s:.2f} s"
        )
        self._latency(self.plan.warmup)
        self.result.worker_direct = self._worker_published_directly()
        started = time.perf_counter()
        self.floor_index = GitIndex.open(
            str(self.reg.remote), self.work / "floor-clone", local_push="git"
        )
        self.result.floor_clone_s = time.perf_counter() - started
        self.direct_index = GitIndex.open(
            str(self.reg.remote), self.work / "direct-clone", local_push="auto"
        )
        if self.net is not None:
            started = time.perf_counter()
            with settings(self.net.env):
                self.net_index = GitIndex.open(self.net.url, self.work / "net-clone")
            self.result.net_clone_s = time.perf_counter() - started
        self.result.old_steps = {k: [] for k in ("fetch", "reset", "edit+add", "commit", "push")}
        if self.plan.old_updates == 0:
            return
        started = time.perf_counter()
        git("clone", "--quiet", str(self.reg.remote), str(self.old_clone))
        self.result.old_clone_s = time.perf_counter() - started
        git("config", "user.name", "old way", cwd=self.old_clone)
        git("config", "user.email", "old@localhost", cwd=self.old_clone)

    def _worker_published_directly(self) -> bool:
        """A direct publish links the worker's packs into the remote: same files, same inodes."""
        clone = config.clone_path(self.work / "data", self.worker_url) / "objects" / "pack"
        theirs = {p.name: p.stat().st_ino for p in clone.glob("pack-*.pack")}
        remote = self.reg.remote / "objects" / "pack"
        return any(theirs.get(p.name) == p.stat().st_ino for p in remote.glob("pack-*.pack"))

    # --- the measurements ----------------------------------------------------------------------

    def _latency(self, count: int, timeout: float = 60.0) -> list[float]:
        samples = []
        for _ in range(count):
            before = self.refs.size()
            committed = publish_one(self.pub, self.reg)
            landed, _ = self.refs.wait_past(before, timeout)
            samples.append(landed - committed)
            # The job row goes with the commit that follows the push: wait for it, so that the
            # next sample finds the worker idle, then a random pause off any polling rhythm.
            self._wait_empty("the job to finish", timeout, 0.002)
            time.sleep(self.reg.rng.uniform(*self.plan.spacing))
        return samples

    def _wait_empty(self, what: str, timeout: float, interval: float) -> None:
        """Until the index queue is empty; a failed job raises, with the worker's last words."""
        try:
            wait_until(what, lambda: _queue_empty(self.watch), timeout, interval)
        except (RuntimeError, TimeoutError) as e:
            said = self.worker.log.read_text(errors="replace")[-4000:]
            rows = self.watch.execute(
                "SELECT id, attempts, worker_pid, run_at - now(), last_error IS NOT NULL"
                " FROM indexpub_jobs.jobs WHERE queue = 'index' ORDER BY last_error IS NULL, id"
                " LIMIT 5"
            ).fetchall()
            said += "\n(id, attempts, worker_pid, run_at - now(), failed) of the first jobs:\n"
            said += "\n".join(map(str, rows))
            raise RuntimeError(f"{e}\n--- the worker's log, last lines:\n{said}") from None

    def latency(self, count: int, label: str) -> None:
        profiler = Profiler(self.plan.profile, self.worker.child_pid(), f"latency-{label}")
        samples = self._latency(count)
        profiler.stop()
        self.rounds.append(samples)
        self.result.latencies += samples

    def burst(self, label: str) -> None:
        time.sleep(0.5)
        profiler = Profiler(self.plan.profile, self.worker.child_pid(), f"burst-{label}")
        names = self.reg.pick(min(BURST, len(self.reg.files)))
        before = len(self.refs.entries())
        for name in names:
            store.publish(self.pub, self.reg.next_entry(name))
        self.pub.commit()
        committed = time.time()
        self._wait_empty("the burst to drain", 900, 0.01)
        profiler.stop()
        landed = self.refs.entries()[before:]
        self.reg.verify(names)
        burst = Burst(len(names), landed[-1][0] - committed, len(landed))
        self.result.bursts.append(burst)
        self.log(
            f"  {self.size:,}: burst of {burst.updates} in {burst.seconds:.2f} s = "
            f"{burst.rate:.0f}/s ({burst.pushes} pushes)"
        )

    def push_floor(self, count: int) -> None:
        """What the remote alone costs: GitIndex.push of one-file commits, no database, no queue.

        Commits built with commit_file in clones of our own, one forced to ``git push`` and one
        publishing directly; timed from the start of the push to the remote's ref update (as
        publish->landed is), and to the push's return. ``git push`` alone is what the old
        publish path could not go below; direct publish alone is the floor under the worker's.
        """
        r = self.result
        floors: list[tuple[GitIndex | None, str, list[float], list[float], dict[str, str]]] = [
            (self.floor_index, "git", r.floor_push, r.floor_push_total, {}),
            (self.direct_index, "direct", r.direct_push, r.direct_push_total, {}),
        ]
        if self.net is not None:
            floors.append((self.net_index, "git", r.net_push, r.net_push_total, self.net.env))
        for index, mode, landed_s, total_s, env in floors:
            assert index is not None
            with settings(env):
                self._floor(index, mode, landed_s, total_s, count)

    def _floor(
        self,
        index: GitIndex,
        mode: str,
        landed_s: list[float],
        total_s: list[float],
        count: int,
    ) -> None:
        tip = index.fetch()
        for name in self.reg.pick(count):
            path = index_path(name)
            t0 = time.perf_counter()
            have = index.read_file(path, tip) or b""
            line = self.reg.record(self.watch, name).to_line() + "\n"
            head = index.commit_file(tip, path, have + line.encode(), f"Update crate `{name}`")
            t1 = time.perf_counter()
            before, pushed = self.refs.size(), time.time()
            index.push(head)
            total_s.append(time.perf_counter() - t1)
            if index.last_push_mode != mode:
                raise RuntimeError(f"the {mode} floor clone pushed with {index.last_push_mode}")
            landed, _ = self.refs.wait_past(before, 60)
            landed_s.append(landed - pushed)
            if index is self.floor_index:
                self.result.floor_build.append(t1 - t0)
            tip = head

    def old_way(self, count: int) -> None:
        """The old design, one update at a time: fetch, reset, edit, add, commit, push."""
        clone, steps = self.old_clone, self.result.old_steps
        for name in self.reg.pick(count):
            entry = self.reg.record(self.watch, name)  # not timed: the git steps are
            path = index_path(name)
            marks = [time.perf_counter()]
            git("fetch", "--quiet", "origin", cwd=clone)
            marks.append(time.perf_counter())
            git("reset", "--quiet", "--hard", f"origin/{BRANCH}", cwd=clone)
            marks.append(time.perf_counter())
            with (clone / path).open("a") as f:
                f.write(entry.to_line() + "\n")
            git("add", path, cwd=clone)
            marks.append(time.perf_counter())
            git("commit", "--quiet", "-m", f"Update crate `{name}`", cwd=clone)
            marks.append(time.perf_counter())
            git("push", "--quiet", "origin", f"HEAD:{BRANCH}", cwd=clone)
            marks.append(time.perf_counter())
            for step, a, b in zip(steps, marks, marks[1:], strict=False):
                steps[step].append(b - a)
            self.result.old.append(marks[-1] - marks[0])

    def timeline(self) -> None:
        """The plots' phase: publishes one at a time at a steady rate, each its own transaction,
        with a burst committed in one transaction from a second connection part way in. The
        steady publishes before it show healthy latency, those during its drain wait behind it,
        those after show the recovery. The burst's transaction is built before the clock starts
        (1,000 publishes take seconds on a loaded machine), so that its COMMIT comes on time.
        Each publish lands with the first ref update whose tree holds its crate's new file
        (git diff-tree between consecutive tips)."""
        plan = self.plan
        count = int(plan.trickle_rate * plan.trickle_s)
        names = self.reg.pick(count + min(BURST, self.size - count))  # distinct crates
        trickle, burst = names[:count], names[count:]
        remote = f"--git-dir={self.reg.remote}"
        tip = git(remote, "rev-parse", f"refs/heads/{BRANCH}").decode().strip()
        before = len(self.refs.entries())
        packs_before = len(list((self.reg.remote / "objects" / "pack").glob("*.pack")))
        published: dict[str, float] = {}
        failed: list[BaseException] = []
        built, go = threading.Event(), threading.Event()
        started = 0.0

        def burst_thread() -> None:
            try:
                with psycopg.connect(self.url) as conn:
                    for name in burst:
                        store.publish(conn, self.reg.next_entry(name))
                    built.set()
                    go.wait()
                    time.sleep(max(0.0, started + plan.trickle_burst_at - time.time()))
                    conn.commit()
                    published.update(dict.fromkeys(burst, time.time()))
            except BaseException as e:
                failed.append(e)
            finally:
                built.set()

        thread = threading.Thread(target=burst_thread)
        thread.start()
        built.wait()
        started = time.time()
        go.set()
        for i, name in enumerate(trickle):
            time.sleep(max(0.0, started + i / plan.trickle_rate - time.time()))
            published[name] = publish_one_of(self.pub, self.reg, name)
        thread.join()
        if failed:
            raise failed[0]
        self._wait_empty("the plots' phase to drain", 900, 0.01)
        paths = {index_path(name): name for name in names}
        landed: dict[str, float] = {}
        for stamp, sha in self.refs.entries()[before:]:
            changed = git(remote, "diff-tree", "-r", "-z", "--name-only", tip, sha).decode()
            for path in changed.split("\0"):
                if path in paths:
                    landed.setdefault(paths[path], stamp)
            tip = sha
        if len(landed) != len(names):
            raise RuntimeError(
                f"{len(names) - len(landed)} publishes of the plots' phase never landed"
            )
        self.reg.verify(names)
        r = self.result
        r.trickle = [(published[n] - started, landed[n] - published[n]) for n in trickle]
        r.trickle_burst = [(published[n] - started, landed[n] - published[n]) for n in burst]
        stamps = [started] + [stamp for stamp, _ in self.refs.entries()[before:]]
        gap, at = max((b - a, a - started) for a, b in itertools.pairwise(stamps))
        packs_after = len(list((self.reg.remote / "objects" / "pack").glob("*.pack")))
        self.log(
            f"  {self.size:,}: plots' phase: {len(trickle)} publishes at "
            f"{plan.trickle_rate:g}/s, p50 {pct([t[1] for t in r.trickle], 50) * 1000:.0f} ms; "
            f"burst of {len(burst)} at {published[burst[0]] - started:.2f} s, "
            f"p50 {pct([t[1] for t in r.trickle_burst], 50) * 1000:.0f} ms; "
            f"{len(stamps) - 1} ref updates, the longest gap {gap:.2f} s from {at:.2f} s; "
            f"remote packs {packs_before} -> {packs_after}"
        )

    def resync(self) -> None:
        """The other writers moved the remote: one discarded publish lets the worker catch up
        (its push is rejected, it fetches and rebuilds), so the next sample starts current."""
        self.result.resync += self._latency(1)

    def finish(self) -> None:
        self.reg.verify(sorted(self.reg.touched))
        self.worker.stop()
        r = self.result
        if self.net is not None and isinstance(self.net.server, GitHttpServer):
            for request in self.net.server.requests():
                if request["service"] != "receive-pack" or request["status"] != 200:
                    continue
                (r.server_receive if request["method"] == "POST" else r.server_advertise).append(
                    request["ms"] / 1000
                )
        r.rss_python_mb = self.worker.rss.peak_python / 2**20
        r.rss_all_mb = self.worker.rss.peak_all / 2**20
        r.hwm_mb = sum(self.worker.rss.hwm.values()) / 2**20


def split(total: int, parts: int, index: int) -> int:
    """The index-th of `parts` near-equal shares of `total`."""
    return total * (index + 1) // parts - total * index // parts


def run(
    admin_url: str,
    sizes: list[int],
    plan: Plan,
    log: Callable[[str], None],
    server_pid: int | None,
) -> RunResult:
    runs: list[SizeRun] = []
    noise: list[tuple[float, float, float]] = []
    try:
        log("setting up")
        for size in sizes:
            runs.append(SizeRun(admin_url, size, plan, log))
            runs[-1].setup()
        # The bursts spread evenly over the rounds, several to a round when there are more
        # bursts than rounds: a burst lasts a fraction of a second, so one sample is noise.
        burst_rounds = collections.Counter(
            k * plan.rounds // plan.bursts for k in range(plan.bursts)
        )
        meter = CpuMeter([os.getpid()] + ([server_pid] if server_pid else []))
        for round_ in range(plan.rounds):
            log(f"round {round_ + 1} of {plan.rounds}")
            order = runs[round_ % len(runs) :] + runs[: round_ % len(runs)]
            for one in order:
                label = f"{one.size}-{round_ + 1}"
                one.latency(split(plan.samples, plan.rounds, round_), label)
                for _ in range(burst_rounds[round_]):
                    one.burst(label)
                one.push_floor(split(plan.floor_pushes, plan.rounds, round_))
                one.old_way(split(plan.old_updates, plan.rounds, round_))
                one.resync()
            noise.append((os.getloadavg()[0], *meter.lap()))
            log(
                f"  load {noise[-1][0]:.2f}, CPU busy {noise[-1][1]:.0f}% (others "
                f"{noise[-1][2]:.0f}%); p50 this round: "
                + ", ".join(
                    f"{one.size:,}: {pct(one.rounds[-1], 50) * 1000:.0f} ms" for one in runs
                )
            )
        if plan.trickle_rate:
            log("the plots' phase")
            for one in runs:
                one.timeline()
        for one in runs:
            one.finish()
        return RunResult([one.result for one in runs], [one.rounds for one in runs], noise)
    finally:
        for one in runs:
            one.close()


@dataclass
class RunResult:
    sizes: list[SizeResult]
    # Per size, per round: the publish->landed samples.
    rounds: list[list[list[float]]]
    # Per round: (load average, CPU busy % of the whole machine, the part not ours).
    noise: list[tuple[float, float, float]]


# --- report -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def ratio(a: float, b: float) -> str:
    return "" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.1f}x"


def mean_batch(r: SizeResult) -> float:
    """Updates per push in the bursts: how big the worker's batches grew."""
    pushes = sum(b.pushes for b in r.bursts)
    return sum(b.updates for b in r.bursts) / pushes if pushes else float("nan")


def size_table(r: SizeResult) -> list[str]:
    ours50, ours95 = pct(r.latencies, 50), pct(r.latencies, 95)
    old50, old95 = pct(r.old, 50), pct(r.old, 95)
    bursts = ", ".join(f"{b.rate:.0f}" for b in r.bursts)
    per_update = 1 / r.burst_rate
    floor50 = pct(r.floor_push, 50)
    direct50 = pct(r.direct_push, 50)
    net50 = pct(r.net_push, 50)
    old_push = ms(pct(r.old_steps.get("push", []), 50)) + " (its push step)" if r.old else ""
    old = (lambda text: text) if r.old else (lambda text: "not run")
    rows = [
        f"### {r.size:,} crates, remote: {r.remote}",
        "",
        "| metric | indexpub worker | old way (local remote) | old / ours |",
        "| --- | ---: | ---: | ---: |",
        f"| per update p50 (ms) | {ms(ours50)} | {old(ms(old50))} | {ratio(old50, ours50)} |",
        f"| per update p95 (ms) | {ms(ours95)} | {old(ms(old95))} | {ratio(old95, ours95)} |",
        f"| burst of {r.bursts[0].updates if r.bursts else 0:,} (updates/s) "
        f"| {r.burst_rate:.0f} ({bursts}) | {old(f'{1 / old50:.1f}')} "
        f"| {ratio(r.burst_rate * old50, 1)} |",
        f"| burst cost per update (ms) | {ms(per_update)} | {old(ms(old50))} "
        f"| {ratio(old50, per_update)} |",
        f"| updates per push in the bursts (mean) | {mean_batch(r):.0f} | 1 | |",
        f"| peak RSS (MB) | {r.rss_python_mb:.0f} | | |",
        f"| git push alone (local), start -> landed, p50 / p95 (ms) | {ms(floor50)} / "
        f"{ms(pct(r.floor_push, 95))} | {old_push} | |",
        f"| git push alone (local), start -> returned, p50 (ms) "
        f"| {ms(pct(r.floor_push_total, 50))} | | |",
        f"| direct publish alone (local), start -> landed, p50 / p95 (ms) | {ms(direct50)} / "
        f"{ms(pct(r.direct_push, 95))} | | |",
        f"| direct publish alone (local), start -> returned, p50 (ms) "
        f"| {ms(pct(r.direct_push_total, 50))} | | |",
    ]
    if r.net_push:
        rows += [
            f"| git push over {r.remote} alone, start -> landed, p50 / p95 (ms) | {ms(net50)} / "
            f"{ms(pct(r.net_push, 95))} | | |",
            f"| git push over {r.remote} alone, start -> returned, p50 (ms) "
            f"| {ms(pct(r.net_push_total, 50))} | | |",
            f"| per update p50 minus git-push-over-{r.remote}-alone p50 (ms) "
            f"| {ms(ours50 - net50)} | | |",
        ]
    if r.server_receive:
        rows += [
            f"| the server's receive-pack POST per push, p50 / p95 (ms) "
            f"| {ms(pct(r.server_receive, 50))} / {ms(pct(r.server_receive, 95))} | | |",
            f"| the server's receive-pack ref advertisement per push, p50 (ms) "
            f"| {ms(pct(r.server_advertise, 50))} | | |",
        ]
    rows += [
        f"| per update p50 minus direct-publish-alone p50 (ms) | {ms(ours50 - direct50)} | | |",
        f"| per update p50 minus git-push-alone p50 (ms) | {ms(ours50 - floor50)} "
        f"| {old(ms(old50 - floor50))} | |",
        f"| first publish after another writer pushed, p50 (ms) | {ms(pct(r.resync, 50))} | | |",
        "",
        "The worker published "
        + (
            "directly (its packs are linked into the remote). "
            if r.worker_direct
            else f"with git push over {r.remote} (none of its packs is in the remote). "
        )
        + f"Samples: {len(r.latencies)} publish->landed (ours: COMMIT returned -> remote ref "
        f"committed), {len(r.old)} old-way updates (fetch+reset+edit+add+commit+push). "
        f"Setup: build {r.build_s:.1f} s, worker's first job incl. its clone "
        f"{r.first_job_s:.2f} s (excluded), push-floor clone (GitIndex.open) "
        f"{r.floor_clone_s:.1f} s"
        + (f", network clone {r.net_clone_s:.1f} s" if r.net_push else "")
        + f", old-way clone {r.old_clone_s:.1f} s. {len(r.floor_push)} "
        f"git-push-alone and {len(r.direct_push)} direct-publish-alone samples, "
        f"{len(r.resync)} after-another-writer samples. "
        + (
            "Old-way step p50 (ms): "
            + ", ".join(f"{k} {pct(v, 50) * 1000:.0f}" for k, v in r.old_steps.items())
            + ". "
            if r.old
            else ""
        )
        + f"Peak RSS with git children {r.rss_all_mb:.0f} MB, VmHWM sum {r.hwm_mb:.0f} MB.",
        "",
    ]
    return rows


def summary(results: list[SizeResult]) -> list[str]:
    out = [
        "### All sizes",
        "",
        "| crates | remote | p50 ms | p95 ms | burst/s | updates/push | peak RSS MB "
        "| old p50 ms | old p95 ms | old/ours p50 | old/ours p95 | git push over the remote "
        "alone p50 ms | git push alone (local) p50 ms | direct publish alone p50 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in results:
        ours50, ours95, old50, old95 = (
            pct(r.latencies, 50),
            pct(r.latencies, 95),
            pct(r.old, 50),
            pct(r.old, 95),
        )
        out.append(
            f"| {r.size:,} | {r.remote} | {ms(ours50)} | {ms(ours95)} | {r.burst_rate:.0f} "
            f"| {mean_batch(r):.0f} | {r.rss_python_mb:.0f} | {ms(old50)} | {ms(old95)} "
            f"| {ratio(old50, ours50)} | {ratio(old95, ours95)} "
            f"| {ms(pct(r.net_push, 50)) if r.net_push else '-'} "
            f"| {ms(pct(r.floor_push, 50))} | {ms(pct(r.direct_push, 50))} |"
        )
    out.append("")
    return out


def noise_table(outcome: RunResult) -> list[str]:
    sizes = [r.size for r in outcome.sizes]
    out = [
        "### Rounds (the sizes are measured interleaved; spread = noise)",
        "",
        "| round | load avg | CPU busy % | of it others' % | "
        + " | ".join(f"p50 {s:,} ms" for s in sizes)
        + " |",
        "| ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for i, (load, busy, others) in enumerate(outcome.noise):
        cells = [ms(pct(rounds[i], 50)) for rounds in outcome.rounds]
        out.append(
            f"| {i + 1} | {load:.2f} | {busy:.0f} | {others:.0f} | " + " | ".join(cells) + " |"
        )
    out += [
        "",
        "CPU busy: all CPUs of the machine over the round; others: the part not spent by this "
        "benchmark's processes (its workers and git, and the embedded PostgreSQL when it started "
        "one), i.e. other tenants of the shared machine.",
    ]
    out.append("")
    return out


def targets(results: list[SizeResult]) -> list[str]:
    by_size = {r.size: r for r in results}
    out = ["### Targets", ""]

    def line(ok: bool | None, text: str) -> None:
        verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        out.append(f"- **{verdict}** {text}")

    big = by_size.get(100_000)
    network = any(r.remote != "local" for r in results)
    target = TARGET_P50_NET_MS if network else TARGET_P50_MS
    if big is not None:
        p50 = pct(big.latencies, 50) * 1000
        line(
            p50 <= target,
            f"p50 publish->landed at 100,000 crates over {big.remote}: {p50:.1f} ms "
            f"(<= {target:g})",
        )
        if big.net_push:
            net = pct(big.net_push, 50) * 1000
            out.append(
                f"  (`git push` over {big.remote} to this remote alone costs {net:.1f} ms p50; "
                f"the worker's own part is about {p50 - net:.1f} ms)"
            )
        floor = pct(big.floor_push, 50) * 1000
        direct = pct(big.direct_push, 50) * 1000
        if big.net_push:
            out.append(
                f"  (by its path, the same remote costs {direct:.1f} ms p50 to publish into "
                f"directly and {floor:.1f} ms with `git push`)"
            )
        else:
            mode = "directly" if big.worker_direct else "with git push"
            out.append(
                f"  (the worker published {mode}; a direct publish to this remote alone costs "
                f"{direct:.1f} ms p50, `git push` {floor:.1f} ms; the worker's own part is about "
                f"{p50 - direct:.1f} ms)"
            )
    else:
        line(None, f"p50 publish->landed at 100,000 crates <= {target:g} ms: 100,000 not run")
    small = by_size.get(1_000)
    if big is not None and small is not None:
        ratio = pct(big.latencies, 50) / pct(small.latencies, 50)
        line(
            ratio <= TARGET_SCALING,
            f"cost per update (publish->landed p50) 100,000 vs 1,000 crates: {ratio:.2f}x (<= 1.3)",
        )
        ratio = small.burst_rate / big.burst_rate
        line(
            ratio <= TARGET_SCALING,
            f"cost per update in a burst (1/rate) 100,000 vs 1,000 crates: {ratio:.2f}x (<= 1.3)",
        )
    else:
        line(None, "cost per update 100,000 vs 1,000 crates <= 1.3x: needs both sizes")
    rates = ", ".join(f"{r.size:,}: {r.burst_rate:.0f}/s" for r in results)
    line(
        all(r.burst_rate >= TARGET_BURST for r in results),
        f"burst of {BURST:,} >= 250 updates/s at every size ({rates})",
    )
    peak = max(r.rss_python_mb for r in results)
    line(peak <= TARGET_RSS_MB, f"worker peak RSS (supervisor + child) {peak:.0f} MB (<= 200)")
    out.append("")
    return out


def plot(directory: Path, results: list[SizeResult], plan: Plan) -> Path:
    """index.png: per size, the steady publishes (healthy) and the burst among them."""
    sizes = " and ".join(f"{r.size:,}" for r in results)
    title = (
        f"indexpub worker: publish -> landed on a {plan.remote} remote, {sizes} crates; "
        f"{plan.trickle_rate:g} publishes/s with a burst committed at {plan.trickle_burst_at:g} s"
        f"\n{plots.provenance(_paths.ROOT)}"
    )
    rows = []
    for r in results:
        series = []
        for label, points, color in (
            (f"{plan.trickle_rate:g}/s, one per transaction", r.trickle, plots.HEALTHY),
            (
                f"burst of {len(r.trickle_burst):,}, one transaction",
                r.trickle_burst,
                plots.BACKLOGGED,
            ),
        ):
            series.append(
                plots.Series(label, [p[0] for p in points], [p[1] for p in points], color)
            )
        rows.append(plots.Row(f"publish -> landed, {r.size:,} crates", series))
    name = "index.png" if plan.remote == "local" else f"index-{plan.remote}.png"
    return plots.write_latency_png(directory / name, title, rows)


def machine_note(settings: dict[str, str], load: tuple[float, float]) -> list[str]:
    git_version = git("--version").decode().strip()
    return [
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, {git_version}. The machine is shared and noisy: "
        f"load average {load[0]:.2f} at start, {load[1]:.2f} at the end; treat single numbers "
        "as +-20% and compare ratios within one run.",
        "PostgreSQL "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + " (durable: no fsync=off tuning).",
        "",
    ]


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an existing server (default: embedded)")
    parser.add_argument("--sizes", help="crate counts (default 1000,10000,100000)")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000, fewer samples")
    parser.add_argument("--samples", type=int, help="publish->landed samples per size (100)")
    parser.add_argument("--bursts", type=int, help="bursts per size, spread over the rounds (12)")
    parser.add_argument("--old-updates", type=int, help="old-way updates per size (30)")
    parser.add_argument(
        "--floor-pushes", type=int, help="git-push-alone and direct-alone samples per size (20)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds over the sizes (4)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the worker's (1.0)")
    parser.add_argument(
        "--remote",
        choices=("local", *KINDS),
        default="local",
        help="how the worker reaches the remote: its path (local, default), smart HTTP(S), SSH",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the worker, per phase")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    plots.add_option(parser, "add a steady phase with a burst and plot it to DIR/index.png")
    args = parser.parse_args()

    quick = args.quick
    sizes = [
        int(s) for s in (args.sizes or ("1000,10000" if quick else "1000,10000,100000")).split(",")
    ]
    plan = Plan(
        samples=args.samples or (30 if quick else 100),
        warmup=3,
        bursts=args.bursts or (1 if quick else 12),
        old_updates=(0 if args.remote != "local" else args.old_updates or (10 if quick else 30)),
        floor_pushes=args.floor_pushes or (6 if quick else 20),
        rounds=args.rounds or (2 if quick else 4),
        spacing=(0.05, 0.15) if quick else (0.1, 0.3),
        poll=args.poll_interval,
        profile=args.profile,
        remote=args.remote,
        trickle_rate=20.0 if args.plots is not None else 0.0,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        server_pid = None
        if args.database_url:
            admin = args.database_url
        else:
            admin, server_pid = stack.enter_context(embedded_server())
        settings = server_settings(admin)
        outcome = run(admin, sizes, plan, log, server_pid)
    load_end = os.getloadavg()[0]

    results = outcome.sizes
    lines = [
        f"## Index pipeline ({args.remote} remote): publish -> landed, burst, memory, against "
        "the old way",
        "",
        *machine_note(settings, (load_start, load_end)),
    ]
    for r in results:
        lines += size_table(r)
    lines += summary(results)
    lines += noise_table(outcome)
    lines += targets(results)
    lines.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    print("\n".join(lines))
    if args.json:
        raw = [asdict(r) for r in results]
        noise = outcome.noise
        data = {"settings": settings, "results": raw, "rounds": outcome.rounds, "noise": noise}
        args.json.write_text(json.dumps(data, indent=1))
    if args.plots is not None:
        log(f"wrote {plot(args.plots, results, plan)}")


if __name__ == "__main__":
    main()
