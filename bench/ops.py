"""Operating the index at crates.io's size: one table of import, verify, rebuild, squash and
the worker's publish -> landed, each beside plain git where plain git can do the same, and the
sync's p50 at 1,000,000 crates against 1,000.

    python bench/ops.py                        # 200,000 crates / 1,500,000 versions + the ratio
    python bench/ops.py --quick                # 20,000 crates; the ratio at 20,000 against 1,000
    python bench/ops.py --only table           # or --only ratio
    python bench/ops.py --generate --crates 200000 --versions 1500000 [--check]

Every index is tests/support/synthetic_index.py's (the one generator of the benchmarks and the
tests: built once per shape with ``git fast-import`` and cached). Everything runs against a
throwaway embedded PostgreSQL with its default, durable settings (unless ``--database-url``
names a server: a database is made there per registry). Every measured operation is the command
a person runs, as a process of its own; its peak RSS is the largest sum, sampled every 50 ms, of
the resident memory of its whole process tree (for work the worker does, the worker's tree:
supervisor, worker process, their git processes); the PostgreSQL server's memory is not in it.

The table, in this order, on one registry (``table()``):

1. import: ``indexpub import REMOTE --json --no-sparse`` into an empty database; that database
   is the registry of every later row. Plain git: ``git clone`` with a work tree, then one
   Python process that reads every crate file and splits it into lines.
2. verify, the first (it makes its own clone) and warm (the hourly case). Plain git: the same
   clone, a dump of the database as files (every crate rendered at its index path), ``diff -rq``.
   Then ``verify --sparse --json`` on a sparse directory copied from that dump, equal and with
   1,000 files truncated; plain: the dump and ``diff -rq`` against the directory.
3. publish -> landed: a real ``indexpub worker --queue index`` (its first job makes its clone,
   not timed), then ``--publishes`` publishes of a new version of a random crate, one at a
   time, each timed from its COMMIT to the remote's branch ref update (the remote's
   ``reference-transaction`` hook stamps it), with the worker idle each time: the normal sync.
4. squash, the weekly case: ``indexpub squash --wait`` (the worker runs the ``squash_index``
   job from its up-to-date clone). Plain git: ``git commit-tree <tip>^{tree}`` and ``git push
   --force``, what crates.io's squash does, from a bare clone made by fetching a copy of the
   same remote.
5. rebuild with nothing to change, then, after a foreign push that deleted every crate file,
   rebuild writing every file in one commit (``indexpub rebuild --json``, the worker runs it).
   Plain git for the first: the dump copied over the work tree and ``git add -A`` (nothing to
   commit).
6. the background geometric repack that the worker would start next (``repo.repack_command``),
   timed on hard-linked copies of its clone and of the remote, so that 7. finds them untouched.
7. squash again, right after that rebuild (its pack of every file is in the worker's clone
   then). A verify at the end must find the index equal to the database.

The ratio (``ratio()``): two registries, 1,000 crates (1,500 versions) and 1,000,000 crates
(1,500,000 versions: 1.5 a crate instead of crates.io's 7.5, to keep the generation and the load
bounded; the sync's cost depends on the number of crates and directories, not on the versions of
crates it does not touch), loaded with COPY, each with its own worker; "the sync's p50" is read
as the issue's publish -> landed with the normal worker sync, measured as in 3., samples of the
two sizes interleaved so that a noisy minute lands on both.

Progress goes to stderr, the Markdown report to stdout; ``--json FILE`` writes the numbers too.
bench/README.md says what each number means and has the figures.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
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

import psutil
import psycopg
from index import install_hook  # bench/index.py's landing hook and its log
from psycopg import sql
from support.embedded_servers import throwaway_database, throwaway_server
from support.synthetic_index import Shape, SyntheticIndex, check_lines, synthetic

from indexpub.config import JOBS_SCHEMA, clone_path
from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import index_path
from indexpub.domain.versions import parse_version
from indexpub.gitindex.repo import repack_command
from indexpub.registry import render, store
from indexpub.registry.queue import INDEX_QUEUE

BRANCH = "master"
MB = 1 << 20
GIB = 1 << 30

TABLE = Shape(200_000, 1_500_000)
TABLE_QUICK = Shape(20_000, 150_000)
RATIO_SMALL = Shape(1_000, 1_500)
RATIO_BIG = Shape(1_000_000, 1_500_000)
RATIO_BIG_QUICK = Shape(20_000, 30_000)

# The targets at 200,000 crates (seconds; every peak RSS <= 1 GiB).
TARGETS = {"import": 120.0, "verify": 60.0, "rebuild": 120.0, "squash": 30.0}
TARGET_RATIO = 1.3
# Sparse files made stale for verify --sparse's second row.
STALE = 1000

# What plain git does for "import": every crate file of a work tree read and split into lines.
READER = """import os, sys
lines = files = 0
for root, dirs, names in os.walk(sys.argv[1]):
    dirs[:] = [d for d in dirs if d != ".git"]
    for name in names:
        if root != sys.argv[1]:
            with open(os.path.join(root, name), "rb") as f:
                lines += len(f.read().split(b"\\n"))
            files += 1
print(files, lines)
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Measure:
    what: str
    seconds: float
    peak_rss: int  # bytes, the process tree's
    note: str = ""
    target: str = ""  # "" when the issue sets none
    met: bool | None = None
    plain: str = ""  # what plain git did instead, when it can
    plain_seconds: float | None = None
    plain_rss: int | None = None
    load: float = field(default_factory=lambda: os.getloadavg()[0])


class RssSampler(threading.Thread):
    """The peak, over time, of the RSS summed over a process and its children."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):
                for proc in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._done.wait(self.interval)

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        self._done.set()
        self.join()


@dataclass
class Ran:
    out: bytes
    err: bytes
    seconds: float
    peak_rss: int


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: int | None = 0,
) -> Ran:
    """Run a command to its end: its output, wall seconds and its process tree's peak RSS.
    An exit code other than ``check`` (None: any) raises, with the end of its stderr."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = RssSampler(proc.pid)
    out, err = proc.communicate()
    took = time.monotonic() - started
    sampler.stop()
    if check is not None and proc.returncode != check:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {err[-2000:]!r}")
    return Ran(out, err, took, sampler.peak)


def git(*args: str, input: bytes | None = None, cwd: Path | None = None) -> bytes:
    done = subprocess.run(
        ["git", *args],
        input=input,
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout


# --- one registry: database, remote, worker -----------------------------------------------------


class Worker:
    """``indexpub worker --queue index``, its process tree's memory sampled."""

    def __init__(self, site: Site) -> None:
        self.log = (site.work / "worker.log").open("ab")
        argv = [sys.executable, "-m", "indexpub", "worker", "--queue", "index"]
        self.proc = subprocess.Popen(
            [*argv, "--verify-every", "0", "--poll-interval", "1"],
            env=site.env(),
            cwd=_paths.ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.rss = RssSampler(self.proc.pid)
        deadline = time.monotonic() + 120
        while not self._holds(site.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: see {self.log.name}")
            time.sleep(0.1)

    @staticmethod
    def _holds(url: str) -> bool:
        from indexpub.registry.queue import app

        with psycopg.connect(url, autocommit=True) as conn:
            return app.store.consumer(conn, "index") is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.rss.stop()
        self.log.close()


class Site:
    """One registry: a database, a remote to write to (a hard-linked copy of the cached one,
    with the landing hook), a data dir, and later a worker."""

    def __init__(self, index: SyntheticIndex, url: str, work: Path) -> None:
        self.index = index
        self.url = url
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.remote = index.copy_remote(work / "remote.git")
        self.data = work / "data"
        self.landed = install_hook(self.remote, work / "landed.log")
        self.worker: Worker | None = None
        self.rng = random.Random(index.crates)
        self._names: list[str] = []
        self._published = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INDEXPUB_DATABASE_URL": self.url,
            "INDEXPUB_INDEX_URL": str(self.remote),
            "INDEXPUB_DATA_DIR": str(self.data),
        }

    def indexpub(self, *args: str, check: int | None = 0) -> Ran:
        argv = [sys.executable, "-m", "indexpub", *args]
        return run_measured(argv, env=self.env(), cwd=_paths.ROOT, check=check)

    def start_worker(self) -> Worker:
        self.worker = Worker(self)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def publish_landed(self, count: int, timeout: float = 60.0) -> list[float]:
        """``count`` publishes, one at a time, each of a new version of a random crate: seconds
        from its COMMIT to the branch update on the remote, the worker idle before each."""
        samples = []
        with psycopg.connect(self.url) as conn:
            if not self._names:
                rows = conn.execute("SELECT name FROM indexpub.crates").fetchall()
                self._names = [str(r[0]) for r in rows]
                conn.commit()
            for _ in range(count):
                self._published += 1
                name = self.rng.choice(self._names)
                vers = f"900.{self._published}.0"
                entry = IndexEntry(
                    name=name, vers=parse_version(vers), deps=(), cksum=f"{self._published:064x}"
                )
                before = self.landed.size()
                store.publish(conn, entry)
                conn.commit()
                committed = time.time()
                samples.append(self.landed.wait_past(before, timeout)[0] - committed)
                self.wait_idle(timeout)
                time.sleep(self.rng.uniform(0.1, 0.3))  # off any polling rhythm
        return samples

    def wait_idle(self, timeout: float) -> None:
        """Until the index queue is empty (its job row goes with the commit after the push)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), max(last_error) FROM {}.jobs WHERE queue = %s"
                    ).format(sql.Identifier(JOBS_SCHEMA)),
                    (INDEX_QUEUE,),
                ).fetchone()
                assert row is not None
                if row[1] is not None:
                    raise RuntimeError(f"an index job failed: {str(row[1])[-2000:]}")
                if row[0] == 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the index queue did not empty")
                time.sleep(0.002)


@contextlib.contextmanager
def server(admin_url: str | None) -> Iterator[str]:
    if admin_url is not None:
        yield admin_url
        return
    with throwaway_server("indexpub-bench-ops-pg-") as (admin, _):
        yield admin


def database(admin: str) -> contextlib.AbstractContextManager[str]:
    return throwaway_database(admin, "indexpub_bench_ops_")


# --- foreign pushes -----------------------------------------------------------------------------


def delete_every_crate_file(remote: Path) -> None:
    """A commit by someone else on the remote's branch that keeps only config.json."""
    config = git(f"--git-dir={remote}", "show", f"refs/heads/{BRANCH}:config.json")
    message = "Foreign: every crate file deleted"
    script = (
        f"commit refs/heads/{BRANCH}\n"
        f"committer foreign <foreign@localhost> {int(time.time())} +0000\n"
        f"data {len(message)}\n{message}\n"
        f"from refs/heads/{BRANCH}^0\n"
        "deleteall\n"
        f"M 100644 inline config.json\ndata {len(config)}\n"
    ).encode()
    git(f"--git-dir={remote}", "fast-import", "--quiet", "--force", input=script + config + b"\n")


# --- the table ----------------------------------------------------------------------------------


Add = Callable[[Measure], Measure]


def _seconds_target(kind: str, m: Measure) -> Measure:
    limit = TARGETS[kind]
    m.target = f"<= {limit:g} s, <= 1 GiB"
    m.met = m.seconds <= limit and m.peak_rss <= GIB
    return m


def table(shape: Shape, admin: str, work: Path, publishes: int) -> tuple[Site, list[Measure]]:
    index = synthetic(shape)
    measures: list[Measure] = []

    def add(m: Measure) -> Measure:
        measures.append(m)
        plain = "" if m.plain_seconds is None else f"; plain git {m.plain_seconds:.1f} s"
        say(f"  {m.what}: {m.seconds:.2f} s, {m.peak_rss / MB:.0f} MB{plain} (load {m.load:.1f})")
        return m

    with database(admin) as url:
        site = Site(index, url, work / "table")
        try:
            _table(site, add, publishes)
        finally:
            site.stop_worker()
    return site, measures


def _table(site: Site, add: Add, publishes: int) -> None:
    checkout, dump = site.work / "checkout", site.work / "dump"
    say("plain git: clone with a work tree, read every file")
    clone = run_measured(["git", "clone", "--quiet", str(site.remote), str(checkout)])
    read = run_measured([sys.executable, "-c", READER, str(checkout)])

    say("import")
    ran = site.indexpub("import", str(site.remote), "--json", "--no-sparse")
    report = json.loads(ran.out)
    if report["crates"] != site.index.crates or report["versions"] != site.index.versions:
        raise RuntimeError(f"the import read {report['crates']} crates, {report['versions']}")
    m = Measure("import (into an empty database)", ran.seconds, ran.peak_rss)
    m.note = f"{report['crates']:,} crates, {report['versions']:,} versions"
    m.plain, m.plain_seconds = "git clone + read every file", clone.seconds + read.seconds
    m.plain_rss = max(clone.peak_rss, read.peak_rss)
    add(_seconds_target("import", m))

    say("plain git: dump the database as files, diff -rq against the work tree")
    dumped = run_measured([sys.executable, __file__, "--dump", str(dump), "--url", site.url])
    diff = run_measured(["diff", "-rq", "--exclude=.git", str(checkout), str(dump)], check=None)
    differences = [x for x in diff.out.decode().splitlines() if not x.endswith("config.json")]
    if differences:
        raise RuntimeError(f"the checkout differs from the dump: {differences[:5]}")
    plain_verify = clone.seconds + dumped.seconds + diff.seconds
    plain_verify_rss = max(clone.peak_rss, dumped.peak_rss, diff.peak_rss)
    say("verify")
    for what in ("first (makes its clone)", "warm (the hourly case)"):
        ran = site.indexpub("verify", "--json")
        files = json.loads(ran.out)["files"]
        m = Measure(f"verify, {what}", ran.seconds, ran.peak_rss, f"{files:,} crate files")
        m.plain, m.plain_seconds, m.plain_rss = (
            "clone + dump + diff -rq",
            plain_verify,
            plain_verify_rss,
        )
        add(_seconds_target("verify", m))
    _verify_sparse(site, add, dump, dumped)

    say("publish -> landed through a worker (its first job makes its clone, not timed)")
    worker = site.start_worker()
    first = site.publish_landed(1, timeout=1800)[0]
    site.publish_landed(3)  # warm-up
    worker.rss.reset()
    samples = site.publish_landed(publishes)
    p50 = statistics.median(samples)
    p95 = sorted(samples)[int(0.95 * (len(samples) - 1))]
    m = Measure(f"publish -> landed p50 ({publishes} publishes, normal sync)", p50, worker.rss.peak)
    m.note = f"p95 {p95 * 1000:.0f} ms; the worker's first job (its clone) {first:.1f} s"
    add(m)

    say("squash, the weekly case (and a plain-git copy of the remote for its baseline)")
    baseline_remote = site.work / "baseline-remote.git"  # the same history, objects linked
    git("clone", "--bare", "--local", "-q", str(site.remote), str(baseline_remote))
    baseline_clone = site.work / "baseline-clone.git"
    git("clone", "--bare", "--no-local", "-q", str(baseline_remote), str(baseline_clone))
    m = _squash(site, add, "squash, after the publishes (indexpub squash --wait)")
    script = (
        f'c=$(git --git-dir="$1" commit-tree "$(git --git-dir="$1" rev-parse {BRANCH})^{{tree}}" '
        f'-m squash) && git --git-dir="$1" push -q --force origin "$c:refs/heads/{BRANCH}"'
    )
    plain = run_measured(["sh", "-c", script, "sh", str(baseline_clone)])
    m.plain, m.plain_seconds, m.plain_rss = (
        "commit-tree + push --force",
        plain.seconds,
        plain.peak_rss,
    )

    say("rebuild, nothing to change")
    m = _rebuild(site, add, "rebuild, nothing to change", commits=0)
    say("plain git: the dump over the work tree, git add -A")
    copied = run_measured(["cp", "-a", f"{dump}/.", str(checkout)])
    added = run_measured(["git", "add", "-A"], cwd=checkout)
    if git("status", "--porcelain", cwd=checkout).strip():
        raise RuntimeError("the dump changed the checkout")
    m.plain = "dump + cp over the work tree + git add -A"
    m.plain_seconds = dumped.seconds + copied.seconds + added.seconds
    m.plain_rss = max(dumped.peak_rss, copied.peak_rss, added.peak_rss)

    say("rebuild, every crate file written after a foreign push deleted them all")
    delete_every_crate_file(site.remote)
    _rebuild(site, add, "rebuild, every crate file in one commit", commits=1)
    say("the background repack after that rebuild, on copies of the clone and the remote")
    for name, git_dir in (
        ("the worker's clone", clone_path(site.data, str(site.remote))),
        ("the remote", site.remote),
    ):
        _background_repack(site, add, name, git_dir)
    say("squash again, right after that rebuild")
    _squash(site, add, "squash, right after the full rebuild")
    site.stop_worker()
    ran = site.indexpub("verify", "--json")
    if json.loads(ran.out)["drifted_count"]:
        raise RuntimeError("the rebuilt and squashed index differs from the database")


def _verify_sparse(site: Site, add: Add, dump: Path, dumped: Ran) -> None:
    """verify --sparse on a sparse directory equal to the database (a copy of the dump, as
    the worker writes it), then with STALE of its files truncated (the second look's cost).
    Plain: the dump and ``diff -rq`` against the directory. No target of its own: verify's."""
    say("verify --sparse (the sparse directory: a copy of the dump)")
    sparse = site.data / "sparse"
    run_measured(["cp", "-a", f"{dump}/.", str(sparse)])
    files = sorted(p for p in sparse.rglob("*") if p.is_file())
    for what, stale in (("equal", 0), (f"{STALE:,} files stale", STALE)):
        for path in files[:stale]:
            path.write_bytes(path.read_bytes()[:10])
        ran = site.indexpub("verify", "--sparse", "--json", check=1 if stale else 0)
        report = json.loads(ran.out)
        if report["drifted_count"] != stale:
            raise RuntimeError(f"verify --sparse found {report['drifted_count']}, not {stale}")
        note = f"{report['files']:,} crate files"
        m = Measure(f"verify --sparse, {what}", ran.seconds, ran.peak_rss, note)
        diff = run_measured(["diff", "-rq", str(sparse), str(dump)], check=1 if stale else 0)
        m.plain, m.plain_seconds = "dump + diff -rq", dumped.seconds + diff.seconds
        m.plain_rss = max(dumped.peak_rss, diff.peak_rss)
        add(_seconds_target("verify", m))


def _squash(site: Site, add: Add, what: str) -> Measure:
    assert site.worker is not None
    history = int(git(f"--git-dir={site.remote}", "rev-list", "--count", BRANCH))
    objects, kib = _remote_objects(site.remote)
    site.worker.rss.reset()
    ran = site.indexpub("squash", "--wait", "--timeout", "1800")
    if int(git(f"--git-dir={site.remote}", "rev-list", "--count", BRANCH)) != 1:
        raise RuntimeError("the squash left more than one commit")
    m = Measure(what, ran.seconds, site.worker.rss.peak)
    objects_after, kib_after = _remote_objects(site.remote)
    m.note = (
        f"{history} commits collapsed; pushed {objects_after - objects} objects"
        f" ({kib_after - kib} KiB); RSS: the worker's"
    )
    return add(_seconds_target("squash", m))


def _background_repack(site: Site, add: Add, name: str, git_dir: Path) -> Measure:
    """The geometric repack that the worker starts in the background every
    INDEXPUB_GIT_MAINTENANCE_EVERY pushes (gitindex.maintenance). After a full rebuild it finds
    the rebuild's packs as big as the ones before them, and merges them all. Timed on a copy (its
    objects hard-linked), so that the squash measured next finds the packs as the worker left
    them; the copy is deleted after."""
    copy = site.work / f"repack-copy-{git_dir.name}.git"
    git("clone", "--bare", "--local", "-q", str(git_dir), str(copy))
    try:
        before = len(list((copy / "objects" / "pack").glob("*.pack")))
        ran = run_measured(["git", *repack_command(copy)])
        after = len(list((copy / "objects" / "pack").glob("*.pack")))
    finally:
        shutil.rmtree(copy)
    m = Measure(f"background repack after the full rebuild, {name}", ran.seconds, ran.peak_rss)
    m.note = f"{before} packs -> {after}; off the publish path (no target)"
    return add(m)


def _remote_objects(remote: Path) -> tuple[int, int]:
    """The remote's objects and their KiB, loose and packed: what a push added to them is what
    it sent (the squash's should be its one commit, not the tree again)."""
    counts = dict(
        line.split(": ")
        for line in git(f"--git-dir={remote}", "count-objects", "-v").decode().splitlines()
    )
    objects = int(counts["count"]) + int(counts["in-pack"])
    return objects, int(counts["size"]) + int(counts["size-pack"])


def _rebuild(site: Site, add: Add, what: str, *, commits: int) -> Measure:
    assert site.worker is not None
    site.worker.rss.reset()
    ran = site.indexpub("rebuild", "--json")
    run = json.loads(ran.out)
    if run["commits"] != commits:
        raise RuntimeError(f"rebuild made {run['commits']} commits, not {commits}")
    m = Measure(what, ran.seconds, site.worker.rss.peak)
    m.note = f"{run['changed']:,} written; RSS: the worker's"
    return add(_seconds_target("rebuild", m))


# --- the ratio ----------------------------------------------------------------------------------


@dataclass
class RatioResult:
    small: Shape
    big: Shape
    samples: dict[int, list[float]]
    first_job: dict[int, float]
    worker_rss: dict[int, int]
    loaded: dict[int, float]
    load: tuple[float, float]

    def p50(self, crates: int) -> float:
        return statistics.median(self.samples[crates])

    @property
    def ratio(self) -> float:
        return self.p50(self.big.crates) / self.p50(self.small.crates)


def ratio(small: Shape, big: Shape, admin: str, work: Path, rounds: int) -> RatioResult:
    """publish -> landed at both sizes, each with its own worker, samples interleaved."""
    indexes = {shape.crates: synthetic(shape) for shape in (small, big)}
    load_before = os.getloadavg()[0]
    result = RatioResult(small, big, {}, {}, {}, {}, (load_before, 0.0))
    with contextlib.ExitStack() as stack:
        sites: dict[int, Site] = {}
        for crates, index in indexes.items():
            url = stack.enter_context(database(admin))
            started = time.monotonic()
            index.load(url)
            result.loaded[crates] = time.monotonic() - started
            say(f"ratio: {crates:,} crates loaded in {result.loaded[crates]:.1f} s")
            site = sites[crates] = Site(index, url, work / f"ratio-{crates}")
            stack.callback(site.stop_worker)
            site.start_worker()
            result.first_job[crates] = site.publish_landed(1, timeout=3600)[0]
            say(
                f"ratio: {crates:,} crates, the worker's first job {result.first_job[crates]:.1f} s"
            )
            site.publish_landed(3)
            assert site.worker is not None
            site.worker.rss.reset()
            result.samples[crates] = []
        for round_ in range(rounds):
            for crates, site in sites.items():
                result.samples[crates] += site.publish_landed(1)
            if round_ % 10 == 9:
                say(f"ratio: {round_ + 1} of {rounds} rounds")
        for crates, site in sites.items():
            assert site.worker is not None
            result.worker_rss[crates] = site.worker.rss.peak
    result.load = (load_before, os.getloadavg()[0])
    return result


# --- the report ---------------------------------------------------------------------------------


def _environment() -> str:
    return (
        f"{platform.node()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GIB:.1f} GiB, Python {platform.python_version()}, "
        f"{git('--version').decode().strip()}, commit "
        f"{git('rev-parse', '--short', 'HEAD', cwd=_paths.ROOT).decode().strip()}"
    )


def report_table(index: SyntheticIndex, measures: list[Measure]) -> list[str]:
    lines = [
        f"## Operations: {index.crates:,} crates, {index.versions:,} versions",
        "",
        f"{index.file_bytes / MB:,.0f} MB of crate files. {_environment()}.",
        "",
        "| operation | wall | peak RSS | target | | plain git | wall | peak RSS | load | |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for m in measures:
        wall = f"{m.seconds * 1000:.0f} ms" if "p50" in m.what else f"{m.seconds:.1f} s"
        met = "" if m.met is None else ("met" if m.met else "**missed**")
        plain = (
            ("", "", "")
            if m.plain_seconds is None
            else (
                m.plain,
                f"{m.plain_seconds:.1f} s",
                f"{(m.plain_rss or 0) / MB:,.0f} MB",
            )
        )
        lines.append(
            f"| {m.what} | {wall} | {m.peak_rss / MB:,.0f} MB | {m.target} | {met} | "
            f"{' | '.join(plain)} | {m.load:.1f} | {m.note} |"
        )
    return lines


def report_ratio(r: RatioResult) -> list[str]:
    small, big = r.small.crates, r.big.crates
    met = "met" if r.ratio <= TARGET_RATIO else "**missed**"

    def row(crates: int, shape: Shape) -> str:
        s = sorted(r.samples[crates])
        p95 = s[int(0.95 * (len(s) - 1))]
        return (
            f"| {crates:,} ({shape.total_versions:,} versions) | {r.p50(crates) * 1000:.1f} ms | "
            f"{p95 * 1000:.1f} ms | {len(s)} | {r.worker_rss[crates] / MB:,.0f} MB | "
            f"{r.first_job[crates]:.1f} s | {r.loaded[crates]:.1f} s |"
        )

    return [
        f"## The sync's p50 at {big:,} crates against {small:,}",
        "",
        f"publish -> landed, normal worker sync, samples interleaved; load average "
        f"{r.load[0]:.1f} before, {r.load[1]:.1f} after. {_environment()}.",
        "",
        "| crates | p50 | p95 | samples | worker peak RSS | worker's first job (clone) "
        "| COPY load |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        row(small, r.small),
        row(big, r.big),
        "",
        f"Ratio of the p50s: {r.ratio:.2f}x (target <= {TARGET_RATIO}x: {met}).",
    ]


def dump_database(url: str, into: Path) -> None:
    """Every crate file as the database renders it, at its index path under ``into``."""
    made: set[Path] = set()
    with psycopg.connect(url) as conn:
        for crate in render.crate_files(conn):
            path = into / index_path(crate.name)
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(crate.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 crates; ratio at 20,000")
    parser.add_argument("--only", choices=("table", "ratio"), help="one of the two parts")
    parser.add_argument("--crates", type=int, help="the table's size (default 200,000)")
    parser.add_argument("--versions", type=int, help="default: 7.5 per crate")
    parser.add_argument("--big", type=int, help="the ratio's large size (default 1,000,000)")
    parser.add_argument("--publishes", type=int, default=40, help="the table's samples (40)")
    parser.add_argument("--rounds", type=int, default=60, help="the ratio's samples a size (60)")
    parser.add_argument("--database-url", help="an existing server (a database is made there)")
    parser.add_argument("--json", type=Path, help="write the measures here too")
    parser.add_argument("--generate", action="store_true", help="build (or find) --crates only")
    parser.add_argument("--check", action="store_true", help="with --generate: every line first")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the baseline's dump
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump is not None:
        dump_database(args.url, args.dump)
        return
    shape = TABLE_QUICK if args.quick else TABLE
    if args.crates is not None:
        shape = Shape(args.crates, args.versions)
    if args.generate:
        if args.check:
            say(f"checked {check_lines(shape):,} lines")
        index = synthetic(shape)
        print(
            f"{index.path}: {index.crates:,} crates, {index.versions:,} versions, "
            f"{index.file_bytes / 1e6:,.0f} MB of files, tip {index.tip}"
        )
        return
    big = RATIO_BIG_QUICK if args.quick else RATIO_BIG
    if args.big is not None:
        big = Shape(args.big, args.big * 3 // 2)
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with (
        server(args.database_url) as admin,
        tempfile.TemporaryDirectory(prefix="indexpub-bench-ops-") as tmp,
    ):
        if args.only in (None, "table"):
            site, measures = table(shape, admin, Path(tmp), args.publishes)
            print("\n".join(report_table(site.index, measures)) + "\n", flush=True)
            out["table"] = {"shape": asdict(shape), "measures": [asdict(m) for m in measures]}
        if args.only in (None, "ratio"):
            r = ratio(RATIO_SMALL, big, admin, Path(tmp), args.rounds)
            print("\n".join(report_ratio(r)), flush=True)
            out["ratio"] = {**asdict(r), "ratio": r.ratio}
        out["load_after"] = os.getloadavg()[0]
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2, default=str))
        # Only now: on this VM (ext4 with online discard) removing the 400,000 files of the
        # checkout and the dump took minutes, which measured nothing.
        say("removing the temporary files")


if __name__ == "__main__":
    main()
