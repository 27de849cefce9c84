"""Operating the index at scale: ``indexpub verify`` and ``indexpub rebuild`` on a synthetic
registry, wall time and peak memory, beside what plain git costs for the same checks.

    python bench/ops.py                                   # 20,000 crates, 150,000 versions
    python bench/ops.py --crates 200000 --versions 1500000   # the issue's size (issue 13)
    python bench/ops.py --database-url postgresql://...      # an existing server

The registry comes from ``bench/synthetic_index.py`` (built once per size and cached): its rows
are loaded with COPY into a fresh database (a throwaway embedded PostgreSQL with its default,
durable settings unless ``--database-url``), and a hard-linked copy of its git index is the
remote. Every measured operation is the command a person runs, as a process of its own:

verify (``verify()``)
  1. ``indexpub verify`` the first time: it makes its own clone of the remote (a full fetch).
  2. ``indexpub verify`` again: the everyday, hourly cost.
  3. after a foreign push that changes 1% of the crate files (a third rewritten, a third
     deleted, a third of that many extra files added): it must name each of them.

rebuild (``rebuild()``), each an ``indexpub rebuild`` waiting for a real ``indexpub worker
--queue index`` process:
  1. after the 1% foreign push above, on a fresh worker (its first job makes its clone);
  2. nothing to change;
  3. after another 1% foreign push;
  4. after a foreign push that deleted every crate file: every file written, in one commit.

plain git (``baseline()``), the same questions without indexpub:
  1. ``git clone`` of the remote with its work tree;
  2. a dump of the database as files (every crate rendered, written at its index path);
  3. ``diff -rq`` of the work tree against the dump: a verify;
  4. the dump copied over the work tree and ``git add -A``: a rebuild's own work before
     ``git commit`` and ``git push`` (the index is in sync here, so there is nothing to commit).

Peak RSS is the largest sum, sampled every 50 ms, of the resident memory of the measured
process and all its children (the worker: supervisor, worker process and their git
processes); the PostgreSQL server's own memory is not in it. Progress goes to stderr, the
Markdown report to stdout; ``--json FILE`` writes the numbers too. bench/README.md says what
was measured, at what size.
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
import signal
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
from support.embedded_servers import throwaway_database, throwaway_server
from synthetic_index import Shape, SyntheticIndex, synthetic

from indexpub.domain.names import index_path
from indexpub.registry import render

BRANCH = "master"
MB = 1 << 20


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Measure:
    what: str
    seconds: float
    peak_rss: int  # bytes, the process tree's
    note: str = ""


@dataclass
class Context:
    """One size's registry: its database, a remote to write to, the data dir, the report."""

    index: SyntheticIndex
    url: str
    work: Path
    remote: Path
    data: Path
    measures: list[Measure] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INDEXPUB_DATABASE_URL": self.url,
            "INDEXPUB_INDEX_URL": str(self.remote),
            "INDEXPUB_DATA_DIR": str(self.data),
        }

    def add(self, measure: Measure) -> Measure:
        self.measures.append(measure)
        rss = measure.peak_rss / MB
        print(f"  {measure.what}: {measure.seconds:.2f} s, {rss:.0f} MB", file=sys.stderr)
        return measure


class RssSampler(threading.Thread):
    """The peak, over time, of the RSS summed over a process and its children."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for proc in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        self.peak = max(self.peak, total)

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_measured(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[bytes], float, int]:
    """Run a command to its end: (result, wall seconds, peak RSS of its process tree)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = RssSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    took = time.monotonic() - started
    sampler.stop()
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err), took, sampler.peak


def indexpub(ctx: Context, *args: str) -> tuple[subprocess.CompletedProcess[bytes], float, int]:
    return run_measured([sys.executable, "-m", "indexpub", *args], env=ctx.env(), cwd=_paths.ROOT)


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


# --- foreign pushes -----------------------------------------------------------------------------


def foreign_commit(remote: Path, message: str, script: bytes) -> None:
    """A commit on the remote's branch made by someone else (git fast-import: any size)."""
    stamp = int(time.time())
    head = (
        f"commit refs/heads/{BRANCH}\n"
        f"committer foreign <foreign@localhost> {stamp} +0000\n"
        f"data {len(message)}\n{message}\n"
        f"from refs/heads/{BRANCH}^0\n"
    ).encode()
    git(f"--git-dir={remote}", "fast-import", "--quiet", "--force", input=head + script + b"\n")


def drift_one_percent(remote: Path) -> int:
    """Rewrite, delete and add crate files for 1% of the index; how many crates drift."""
    listing = git(f"--git-dir={remote}", "ls-tree", "-r", "-z", f"refs/heads/{BRANCH}")
    files = []
    for record in listing.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        if path and path != b"config.json":
            files.append((path.decode(), meta.split()[2].decode()))
    chosen = files[::100]
    rewrite, delete = chosen[0::2], chosen[1::2]
    blobs = git(
        f"--git-dir={remote}",
        "cat-file",
        "--batch",
        input="".join(f"{sha}\n" for _, sha in rewrite).encode(),
    )
    script = bytearray()
    pos = 0
    for path, _ in rewrite:
        eol = blobs.index(b"\n", pos)
        size = int(blobs[pos:eol].split()[2])
        data = blobs[eol + 1 : eol + 1 + size]
        pos = eol + 2 + size
        flipped = data.replace(b'"yanked":false', b'"yanked":true', 1)
        if flipped == data:
            flipped = data.replace(b'"yanked":true', b'"yanked":false', 1)
        script += f"M 100644 inline {path}\ndata {len(flipped)}\n".encode() + flipped + b"\n"
    for path, _ in delete:
        script += f"D {path}\n".encode()
    extra = len(chosen) // 3
    for i in range(extra):
        name = f"zz-foreign-{i}"
        data = f'{{"name":"{name}","vers":"0.1.0"}}\n'.encode()
        script += f"M 100644 inline {index_path(name)}\ndata {len(data)}\n".encode() + data + b"\n"
    foreign_commit(remote, "Foreign edits of 1% of the index", bytes(script))
    return len(chosen) + extra


def delete_every_crate_file(remote: Path) -> None:
    config = git(f"--git-dir={remote}", "show", f"refs/heads/{BRANCH}:config.json")
    script = b"deleteall\n" + f"M 100644 inline config.json\ndata {len(config)}\n".encode()
    foreign_commit(remote, "Foreign: every crate file deleted", script + config + b"\n")


# --- verify -------------------------------------------------------------------------------------


def verify(ctx: Context) -> None:
    """indexpub verify: cold (its clone made), warm, and after a 1% foreign push."""
    print("verify", file=sys.stderr)
    crates = ctx.index.crates
    for what in ("first run (makes its clone)", "warm"):
        done, took, rss = indexpub(ctx, "verify", "--json")
        report = _verify_report(done, 0)
        ctx.add(Measure(f"verify, {what}", took, rss, f"{report['files']:,} crate files"))
    drifted = drift_one_percent(ctx.remote)
    done, took, rss = indexpub(ctx, "verify", "--json")
    report = _verify_report(done, 1)
    if report["drifted_count"] != drifted:
        raise RuntimeError(f"verify found {report['drifted_count']} of {drifted} drifted crates")
    ctx.add(Measure("verify, 1% drifted", took, rss, f"{drifted:,} of {crates:,} crates named"))


def _verify_report(done: subprocess.CompletedProcess[bytes], code: int) -> dict[str, Any]:
    if done.returncode != code:
        raise RuntimeError(f"verify exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# --- rebuild ------------------------------------------------------------------------------------


class Worker:
    """``indexpub worker --queue index``, its process tree's memory sampled."""

    def __init__(self, ctx: Context) -> None:
        self.log = (ctx.work / "worker.log").open("ab")
        argv = [sys.executable, "-m", "indexpub", "worker", "--queue", "index"]
        self.proc = subprocess.Popen(
            [*argv, "--verify-every", "0", "--poll-interval", "0.2"],
            env=ctx.env(),
            cwd=_paths.ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.rss = RssSampler(self.proc.pid)
        self.rss.start()
        deadline = time.monotonic() + 120
        while not self._holds(ctx.url):
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


def rebuild(ctx: Context) -> None:
    """indexpub rebuild through a real worker: after the 1% foreign push of verify() (cold),
    with nothing to change, after another 1% push, and after every crate file was deleted."""
    print("rebuild", file=sys.stderr)
    worker = Worker(ctx)
    try:
        # verify() left its 1% foreign push in place.
        what = "after a 1% foreign push, fresh worker (its first job makes its clone)"
        _rebuild_once(ctx, worker, what, expect_commits=1)
        _rebuild_once(ctx, worker, "nothing to change", expect_commits=0)
        drift_one_percent(ctx.remote)
        _rebuild_once(ctx, worker, "after a 1% foreign push", expect_commits=1)
        delete_every_crate_file(ctx.remote)
        _rebuild_once(ctx, worker, "every crate file written", expect_commits=1)
    finally:
        worker.stop()
    done, _, _ = indexpub(ctx, "verify", "--json")
    _verify_report(done, 0)  # the rebuilt index is the database's


def _rebuild_once(ctx: Context, worker: Worker, what: str, *, expect_commits: int) -> None:
    worker.rss.reset()
    done, took, _ = indexpub(ctx, "rebuild", "--json")
    if done.returncode != 0:
        raise RuntimeError(f"rebuild exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    run = json.loads(done.stdout)
    if run["commits"] != expect_commits:
        raise RuntimeError(f"rebuild made {run['commits']} commits, not {expect_commits}")
    with psycopg.connect(ctx.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM finished_at - started_at) FROM indexpub.rebuild_runs "
            "WHERE id = %s",
            (run["id"],),
        ).fetchone()
    job = float(row[0]) if row and row[0] is not None else float("nan")
    note = f"job {job:.2f} s; {run['changed']:,} written, {run['deleted']:,} deleted"
    ctx.add(Measure(f"rebuild, {what}", took, worker.rss.peak, note))


# --- plain git ----------------------------------------------------------------------------------


def baseline(ctx: Context) -> None:
    """The same questions with plain git and a dump of the database (see the docstring)."""
    print("plain git", file=sys.stderr)
    checkout = ctx.work / "checkout"
    dump = ctx.work / "dump"
    _, took, rss = run_measured(["git", "clone", "--quiet", str(ctx.remote), str(checkout)])
    clone = ctx.add(Measure("plain git: git clone with a work tree", took, rss))
    _, took, rss = run_measured([sys.executable, __file__, "--dump", str(dump), "--url", ctx.url])
    dumped = ctx.add(Measure("plain git: dump the database as files", took, rss))
    done, took, rss = run_measured(["diff", "-rq", "--exclude=.git", str(checkout), str(dump)])
    differences = [
        line for line in done.stdout.decode().splitlines() if not line.endswith("config.json")
    ]
    if differences:
        raise RuntimeError(f"the checkout differs from the dump: {differences[:5]}")
    diffed = ctx.add(Measure("plain git: diff -rq work tree and dump", took, rss))
    total = clone.seconds + dumped.seconds + diffed.seconds
    peak = max(clone.peak_rss, dumped.peak_rss, diffed.peak_rss)
    ctx.add(Measure("plain git verify: clone + dump + diff", total, peak))
    started = time.monotonic()
    _, took_copy, rss_copy = run_measured(["cp", "-a", f"{dump}/.", str(checkout)])
    _, took_add, rss_add = run_measured(["git", "add", "-A"], cwd=checkout)
    status = git("status", "--porcelain", cwd=checkout)
    if status.strip():
        raise RuntimeError(f"the dump changed the checkout: {status[:500]!r}")
    ctx.add(
        Measure(
            "plain git rebuild: dump over the work tree + git add -A",
            took_copy + took_add,
            max(rss_copy, rss_add),
            f"then commit and push; {time.monotonic() - started:.1f} s with git status",
        )
    )


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


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(admin_url: str | None) -> Iterator[str]:
    if admin_url is not None:
        with throwaway_database(admin_url, "indexpub_bench_ops_") as url:
            yield url
        return
    with (
        throwaway_server("indexpub-bench-ops-pg-") as (admin, _),
        throwaway_database(admin, "indexpub_bench_ops_") as url,
    ):
        yield url


def run(
    shape: Shape, admin_url: str | None, *, plain: bool, done: Callable[[Context, float], None]
) -> None:
    """Measure one size; ``done`` gets the results before the temporary files are removed
    (which takes a while at 200,000 crates)."""
    index = synthetic(shape)
    with (
        database(admin_url) as url,
        tempfile.TemporaryDirectory(prefix="indexpub-bench-ops-") as tmp,
    ):
        work = Path(tmp)
        started = time.monotonic()
        index.load(url)
        loaded = time.monotonic() - started
        print(f"loaded {index.crates:,} crates in {loaded:.1f} s", file=sys.stderr)
        ctx = Context(index, url, work, index.copy_remote(work / "remote.git"), work / "data")
        verify(ctx)
        rebuild(ctx)
        if plain:
            baseline(ctx)
        done(ctx, loaded)
        print("removing the temporary files", file=sys.stderr)


def report(ctx: Context, loaded: float, load: tuple[float, float]) -> list[str]:
    index = ctx.index
    lines = [
        f"## indexpub verify and rebuild: {index.crates:,} crates, {index.versions:,} versions",
        "",
        f"{index.file_bytes / MB:,.0f} MB of crate files; loaded with COPY in {loaded:.1f} s. "
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{git('--version').decode().strip()}; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after.",
        "",
        "| operation | wall time | peak RSS | |",
        "| --- | ---: | ---: | --- |",
    ]
    for m in ctx.measures:
        lines.append(f"| {m.what} | {m.seconds:.2f} s | {m.peak_rss / MB:,.0f} MB | {m.note} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crates", type=int, default=20_000)
    parser.add_argument("--versions", type=int, help="default: 7.5 per crate")
    parser.add_argument("--database-url", help="an existing server (a database is made there)")
    parser.add_argument("--no-plain-git", action="store_true", help="skip the plain-git baseline")
    parser.add_argument("--json", type=Path, help="write the measures here too")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the baseline's dump
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump is not None:
        dump_database(args.url, args.dump)
        return
    shape = Shape(args.crates, args.versions)
    before = os.getloadavg()[0]

    def done(ctx: Context, loaded: float) -> None:
        after = os.getloadavg()[0]
        print("\n".join(report(ctx, loaded, (before, after))), flush=True)
        if args.json is not None:
            args.json.write_text(
                json.dumps(
                    {
                        "shape": asdict(shape),
                        "crates": ctx.index.crates,
                        "versions": ctx.index.versions,
                        "loaded_s": loaded,
                        "load_average": [before, after],
                        "measures": [asdict(m) for m in ctx.measures],
                    },
                    indent=2,
                )
            )

    run(shape, args.database_url, plain=not args.no_plain_git, done=done)


if __name__ == "__main__":
    main()
