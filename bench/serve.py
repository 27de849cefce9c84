"""The HTTP registry end to end: publish throughput and publish -> visible latency.

    python bench/serve.py [--crates N] [--clients 4] [--every K] [--rate R] [--paced P]
                          [--idle M] [--quick] [--database-url URL] [--plots [DIR]]

It starts ``indexpub serve`` and ``indexpub worker`` as subprocesses on 127.0.0.1 against a
throwaway embedded PostgreSQL with its default, durable settings (fsync on; or an existing server
with ``--database-url``, where a database is created and dropped) and a bare index made with
``indexpub init-index``, then:

1. burst: N synthetic crates (small valid ``.crate`` files from tests/support/crates.py: a gzip
   tar holding ``{name}-{version}/Cargo.toml`` and ``src/lib.rs``) are published through
   ``PUT /api/v1/crates/new`` by ``--clients`` threads, each with its own keep-alive httpx
   client. Throughput is N over the time from the first request to the last response.
2. publish -> visible under that load: for every K-th publish the clock starts when its HTTP
   response arrives (the version is committed then) and stops when a monitor thread, polling
   every 5 ms, sees the crate in the bare remote's branch (the ref file, then a persistent
   ``git cat-file --batch-check`` for the crate's path) and in the sparse index (the file).
   Every crate is new, so its file appearing is its version appearing.
3. publish -> visible at a steady rate: P publishes by the same clients, paced to ``--rate``
   per second in all (20 by default: far above a busy registry's publish rate, far below the
   burst's), every one sampled.
4. publish -> visible at idle: M publishes one at a time, each waited for in both indexes.

With ``--plots`` (default directory bench/plots/) it also writes serve.png (bench/plots.py):
publish -> visible in git and in sparse of every sample of the burst and of the paced phase,
against its publish time and as an ECDF.

Everything runs on this one machine, so the numbers include the CPU the clients, the server,
the worker and PostgreSQL take from each other. The target is a publish -> visible p95 under
1 s (cargo polls the index about once a second after a publish).
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path (bench/queue.py would shadow ``queue``); root and tests/ on
import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import plots
import psycopg
from psycopg import sql
from support.crates import publish_body, simple_meta, valid_crate
from support.embedded_servers import throwaway_database, throwaway_server
from support.git import git

from indexpub.domain.names import index_path

BRANCH = "master"
TARGET_P95_S = 1.0
POLL_S = 0.005


# --- small helpers ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def indexpub_command() -> str:
    """The ``indexpub`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "indexpub"
    if script.exists():
        return str(script)
    found = shutil.which("indexpub")
    if found is None:
        raise SystemExit("indexpub is not installed in this environment (pip install -e .)")
    return found


# --- synthetic crates ---------------------------------------------------------------------------


def publish_request(name: str, version: str) -> bytes:
    """The body of ``cargo publish`` for a small valid crate of our own."""
    meta = simple_meta(name, version, authors=[], description="benchmark crate", license="MIT")
    extra = 'edition = "2021"\nlicense = "MIT"\ndescription = "benchmark crate"\n\n[dependencies]\n'
    return publish_body(meta, valid_crate(name, version, manifest_extra=extra))


# --- the database -------------------------------------------------------------------------------


@contextlib.contextmanager
def database(explicit: str | None) -> Iterator[str]:
    """A fresh database: on ``explicit``'s server, else on a throwaway embedded server with
    PostgreSQL's default, durable settings (fsync and synchronous_commit on)."""
    with contextlib.ExitStack() as stack:
        admin = explicit or stack.enter_context(throwaway_server("indexpub-bench-serve-pg-"))[0]
        yield stack.enter_context(throwaway_database(admin, "indexpub_bench_serve_"))


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit")
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            out[setting] = str(row[0]) if row else "?"
    return out


# --- the processes ------------------------------------------------------------------------------


@dataclass
class Deployment:
    """``indexpub serve`` and ``indexpub worker`` on a data dir, a database and a bare index."""

    root: Path
    url: str
    port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def remote(self) -> Path:
        return self.root / "index.git"

    @property
    def sparse(self) -> Path:
        return self.root / "data" / "sparse"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
        env.update(
            INDEXPUB_DATABASE_URL=self.url,
            INDEXPUB_DATA_DIR=str(self.root / "data"),
            INDEXPUB_INDEX_URL=str(self.remote),
        )
        return env

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [indexpub_command(), *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"indexpub {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, *args: str, log: str) -> None:
        with open(self.root / log, "wb") as out:
            self.processes.append(
                subprocess.Popen(
                    [indexpub_command(), *args],
                    env=self.env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{process.args!r} exited with {process.returncode}; "
                    f"see the logs in {self.root}"
                )


@contextlib.contextmanager
def deployment(url: str) -> Iterator[tuple[Deployment, str]]:
    """Everything started and ready; yields the deployment and an API token."""
    root = Path(tempfile.mkdtemp(prefix="indexpub-bench-serve-"))
    dep = Deployment(root, url, free_port())
    try:
        dep.run(
            "init-index",
            "--dl",
            f"{dep.public}/api/v1/crates",
            "--api",
            dep.public,
            "--branch",
            BRANCH,
            str(dep.remote),
        )
        dep.run("migrate")
        token = dep.run("token", "create", "bench").strip()
        dep.start("serve", "--port", str(dep.port), log="serve.log")
        dep.start("worker", log="worker.log")

        def ready() -> bool:
            dep.check_alive()
            try:
                return httpx.get(f"{dep.public}/index/config.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until("indexpub serve to answer", ready, 60)
        yield dep, token
    finally:
        dep.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- watching the two indexes -------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    responded: float
    git_seen: float | None = None
    sparse_seen: float | None = None
    # The branch tip this sample was last looked for in (each tip is looked at once).
    checked_tip: str = ""


class Monitor:
    """Polls the bare remote's branch and the sparse directory for the pending samples.

    The git side reads the branch's ref file (cheap), and asks a persistent ``git cat-file
    --batch-check`` whether each pending crate's path exists at a tip it has not seen yet; the
    moment recorded is when that tip was read.
    """

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.pending: list[Sample] = []
        self.done: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.batch = subprocess.Popen(
            ["git", f"--git-dir={dep.remote}", "cat-file", "--batch-check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def watch(self, sample: Sample) -> None:
        with self.lock:
            self.pending.append(sample)

    def _read_tip(self) -> str:
        ref = self.dep.remote / "refs" / "heads" / BRANCH
        with contextlib.suppress(FileNotFoundError):
            return ref.read_text().strip()
        with contextlib.suppress(FileNotFoundError):
            for line in (self.dep.remote / "packed-refs").read_text().splitlines():
                if line.endswith(f" refs/heads/{BRANCH}"):
                    return line.split()[0]
        return ""

    def _in_git(self, tip: str, name: str) -> bool:
        assert self.batch.stdin is not None and self.batch.stdout is not None
        # A "<rev>:<path>" spec is safe here only because no benchmark name ends in "-g" and
        # four hex digits, which git would read as `git describe` output (see remote_files in
        # bench/index.py).
        self.batch.stdin.write(f"{tip}:{index_path(name)}\n")
        return not self.batch.stdout.readline().rstrip().endswith("missing")

    def _run(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            tip = self._read_tip()
            with self.lock:
                pending = list(self.pending)
            for sample in pending:
                if sample.git_seen is None and tip and sample.checked_tip != tip:
                    sample.checked_tip = tip
                    if self._in_git(tip, sample.name):
                        # A push may land before the client has read its response.
                        sample.git_seen = max(now, sample.responded)
                sparse_file = self.dep.sparse / index_path(sample.name)
                if sample.sparse_seen is None and sparse_file.exists():
                    sample.sparse_seen = max(time.monotonic(), sample.responded)
            with self.lock:
                finished = [s for s in self.pending if s.git_seen and s.sparse_seen]
                self.pending = [s for s in self.pending if not (s.git_seen and s.sparse_seen)]
                self.done.extend(finished)
            time.sleep(POLL_S)

    def wait_all(self, timeout: float) -> None:
        def empty() -> bool:
            self.dep.check_alive()
            with self.lock:
                return not self.pending

        wait_until("every sampled version to appear in both indexes", empty, timeout)

    def take(self) -> list[Sample]:
        with self.lock:
            done, self.done = self.done, []
        return done

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        if self.batch.stdin is not None:
            self.batch.stdin.close()
        self.batch.wait()


# --- the phases ---------------------------------------------------------------------------------


def publish(client: httpx.Client, body: bytes) -> float:
    """One publish; the moment its response arrived (the version is committed by then)."""
    response = client.put("/api/v1/crates/new", content=body)
    answered = time.monotonic()
    if response.status_code != 200:
        raise RuntimeError(f"publish failed with {response.status_code}: {response.text}")
    return answered


@dataclass
class Burst:
    count: int
    seconds: float
    request_ms: list[float]
    samples: list[Sample]
    # time.monotonic() when the first publish was due: the plots' time origin.
    started: float


def burst(
    dep: Deployment,
    token: str,
    names: Sequence[str],
    clients: int,
    every: int,
    rate: float | None = None,
) -> Burst:
    """Publish ``names`` with ``clients`` threads, as fast as they go or, with ``rate``, each
    publish due at a fixed total rate (an open schedule: a late publish does not delay the
    next ones' due times)."""
    bodies = [(name, publish_request(name, "0.1.0")) for name in names]
    monitor = Monitor(dep)
    cursor = iter(enumerate(bodies))
    lock = threading.Lock()
    request_ms: list[float] = []
    errors: list[BaseException] = []

    def client_thread() -> None:
        headers = {"Authorization": token}
        with httpx.Client(base_url=dep.public, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                index, (name, body) = item
                if rate is not None:
                    time.sleep(max(0.0, started + index / rate - time.monotonic()))
                start = time.monotonic()
                try:
                    answered = publish(client, body)
                except BaseException as exc:
                    errors.append(exc)
                    return
                with lock:
                    request_ms.append((answered - start) * 1000)
                if index % every == 0:
                    monitor.watch(Sample(name, answered))

    threads = [threading.Thread(target=client_thread) for _ in range(clients)]
    started = time.monotonic() + 0.05
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = max(time.monotonic() - started, 1e-9)
    if errors:
        monitor.close()
        raise errors[0]
    try:
        monitor.wait_all(120)
    finally:
        monitor.close()
    return Burst(len(bodies), seconds, request_ms, monitor.take(), started)


def idle(dep: Deployment, token: str, names: Sequence[str]) -> list[Sample]:
    """One publish at a time, each waited for in both indexes before the next."""
    monitor = Monitor(dep)
    try:
        with httpx.Client(base_url=dep.public, headers={"Authorization": token}) as client:
            for name in names:
                body = publish_request(name, "0.1.0")
                time.sleep(0.05)  # let the worker go idle: each sample starts from rest
                monitor.watch(Sample(name, publish(client, body)))
                monitor.wait_all(60)
    finally:
        monitor.close()
    return monitor.take()


def verify(dep: Deployment, names: Sequence[str]) -> None:
    """Every published crate is in both indexes, with one line each."""
    listing = git(f"--git-dir={dep.remote}", "ls-tree", "-r", "--name-only", BRANCH).split()
    in_git = set(listing)
    missing = [n for n in names if index_path(n) not in in_git]
    if missing:
        raise RuntimeError(f"{len(missing)} crates missing from the git index, e.g. {missing[0]}")
    for name in names:
        lines = (dep.sparse / index_path(name)).read_text().splitlines()
        if len(lines) != 1 or json.loads(lines[0])["name"] != name:
            raise RuntimeError(f"the sparse file of {name} is wrong: {lines}")


# --- the report ---------------------------------------------------------------------------------


def latency_rows(label: str, samples: Sequence[Sample]) -> list[str]:
    git = [(s.git_seen or 0) - s.responded for s in samples]
    sparse = [(s.sparse_seen or 0) - s.responded for s in samples]
    rows = []
    for where, values in (("git", git), ("sparse", sparse)):
        p95 = pct(values, 95)
        verdict = "yes" if p95 < TARGET_P95_S else "**no**"
        rows.append(
            f"| publish -> visible in {where}, {label} | {len(values)} | "
            f"{pct(values, 50) * 1000:.0f} ms | {p95 * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms | {verdict} |"
        )
    return rows


def plot(directory: Path, crates: int, clients: int, burst: Burst, paced: Burst) -> Path:
    """serve.png: the burst (backlogged if the worker falls behind) beside the paced phase."""
    title = (
        f"indexpub serve + worker: publish -> visible, {crates:,} new crates in the burst, "
        f"{clients} clients, local bare remote\n{plots.provenance(_paths.ROOT)}"
    )
    rows = []
    for where, seen in (("git", "git_seen"), ("sparse", "sparse_seen")):
        series = []
        for label, phase, color in (
            (f"burst of {burst.count:,}", burst, plots.BACKLOGGED),
            (f"paced {paced.count / paced.seconds:.0f}/s", paced, plots.HEALTHY),
        ):
            samples = sorted(phase.samples, key=lambda s: s.responded)
            series.append(
                plots.Series(
                    label,
                    [s.responded - phase.started for s in samples],
                    [(getattr(s, seen) or 0.0) - s.responded for s in samples],
                    color,
                )
            )
        rows.append(plots.Row(f"publish -> visible in {where}", series))
    return plots.write_latency_png(directory / "serve.png", title, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crates", type=int, help="publishes in the burst (default 1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--every", type=int, help="sample every K-th publish (default 10)")
    parser.add_argument("--idle", type=int, help="one-at-a-time publishes (default 30)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="publishes/s of the paced phase (default 20)"
    )
    parser.add_argument("--paced", type=int, help="publishes in the paced phase (default 300)")
    parser.add_argument(
        "--quick", action="store_true", help="200 crates, 100 paced, 10 idle samples"
    )
    parser.add_argument("--database-url", help="an existing server (default: embedded)")
    plots.add_option(parser, "write serve.png (latency over time and its ECDF) to DIR")
    args = parser.parse_args()
    crates = args.crates or (200 if args.quick else 1000)
    every = args.every or (5 if args.quick else 10)
    idle_count = args.idle if args.idle is not None else (10 if args.quick else 30)
    paced_count = args.paced if args.paced is not None else (100 if args.quick else 300)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with database(args.database_url) as url, deployment(url) as (dep, token):
        settings = server_settings(url)
        say(f"serve on {dep.public}, worker running; PostgreSQL {settings}")
        warmup = [f"warmup-{i}" for i in range(3)]
        idle(dep, token, warmup)  # the worker's first clone and first pushes
        names = [f"bench-{i:05d}" for i in range(crates)]
        say(f"burst: {crates} publishes with {args.clients} clients ...")
        result = burst(dep, token, names, args.clients, every)
        say(f"paced: {paced_count} publishes at {args.rate:g}/s with {args.clients} clients ...")
        paced_names = [f"paced-{i:05d}" for i in range(paced_count)]
        paced = burst(dep, token, paced_names, args.clients, 1, args.rate)
        say(f"idle: {idle_count} publishes one at a time ...")
        quiet_names = [f"quiet-{i:04d}" for i in range(idle_count)]
        quiet = idle(dep, token, quiet_names)
        verify(dep, [*warmup, *names, *paced_names, *quiet_names])
        commits = git(f"--git-dir={dep.remote}", "rev-list", "--count", BRANCH).strip()

    rate = result.count / result.seconds
    lines = [
        f"indexpub serve + worker, {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PostgreSQL {settings['server_version']} "
        f"(fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']})",
        "",
        "| measure | n | p50 | p95 | max | p95 < 1 s |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| publish HTTP request, {args.clients} clients | {len(result.request_ms)} | "
        f"{pct(result.request_ms, 50):.1f} ms | {pct(result.request_ms, 95):.1f} ms | "
        f"{max(result.request_ms):.1f} ms | |",
        *latency_rows(f"burst, {args.clients} clients", result.samples),
        *latency_rows(f"paced {paced.count / paced.seconds:.0f}/s", paced.samples),
        *latency_rows("idle", quiet),
        "",
        f"Burst: **{rate:.0f} publishes/s** ({result.count} crates in {result.seconds:.2f} s, "
        f"{args.clients} clients); the remote has {commits} commits; every crate verified in "
        "both indexes.",
    ]
    print("\n".join(lines))
    if args.plots is not None:
        say(f"wrote {plot(args.plots, crates, args.clients, result, paced)}")


if __name__ == "__main__":
    main()
