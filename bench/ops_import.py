"""``indexpub import`` on a synthetic index: time and peak memory, beside plain git.

    python bench/ops_import.py [--crates 20000] [--versions 150000]
                               [--settings auto,auto/no-sparse,0] [--database-url URL] [--keep DIR]

It writes a bare index of N crate files holding V versions in all (tests/support/index_sources.py
``synthetic_index``: crates.io's form, a few crates with many versions, most with few, up to three
dependencies a line) with ``git fast-import``, then, in one run:

1. plain git, the floor: ``git clone`` of the index into a working tree, then one Python
   process that reads every crate file and splits it into lines (what any import must do at
   least), and, separately, ``git cat-file --batch-all-objects --unordered`` reading every
   object once in pack order (in sha order, without --unordered, it takes ten times longer);
2. ``indexpub import SOURCE --json`` as a subprocess into an empty database, for each
   ``--settings`` entry (``WORKERS[/no-sparse]``; ``auto``: the command's default), each into a
   fresh database: the wall time; the CPU time of the command and everything it started (its
   worker processes, git), and of the PostgreSQL server, which do not depend on what else the
   machine runs as the wall time does; and the peak RSS of the whole process tree (summed,
   sampled every 50 ms with psutil) and of its largest process;
3. the same import again into the database that holds it (every crate compared, none written).

The database is a throwaway embedded PostgreSQL with its default, durable settings unless
``--database-url`` names a server (a database is created and dropped per import there). The
Markdown report goes to stdout, progress to stderr.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from support.embedded_servers import postmaster_pid, throwaway_database, throwaway_server
from support.index_sources import build_index, synthetic_index

from indexpub.registry import store

TARGET_SECONDS = 120.0
TARGET_RSS = 1 << 30


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class TreeRss(threading.Thread):
    """The peak RSS of a process and all its descendants (summed), and of the largest one of
    each kind: the command itself, its Python worker processes, git."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_sum = 0
        self.peak_one = 0
        self.peaks: dict[str, int] = {"command": 0, "workers": 0, "git": 0}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    name = process.name()
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
                kind = "command" if process == self.root else "git" if "git" in name else "workers"
                self.peaks[kind] = max(self.peaks[kind], rss)
            self.peak_sum = max(self.peak_sum, total)
            self.done.wait(0.05)


@dataclass
class Run:
    label: str
    seconds: float
    peak_sum: int
    peak_one: int
    cpu: float
    server_cpu: float | None
    peaks: dict[str, int]
    report: dict[str, Any]


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds of a process, its live children and the children it has reaped."""
    if pid is None:
        return None
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def run_import(
    url: str, server: int | None, data: Path, source: Path, label: str, *args: str
) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    command = [sys.executable, "-m", "indexpub", "--data-dir", str(data), "--database-url", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = tree_cpu(server)
    started = time.monotonic()
    process = subprocess.Popen(
        [*command, "import", str(source), "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = TreeRss(process.pid)
    sampler.start()
    out, err = process.communicate()
    seconds = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = tree_cpu(server)
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}): {err[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    server_cpu = (
        None if server_after is None or server_before is None else server_after - server_before
    )
    return Run(
        label,
        seconds,
        sampler.peak_sum,
        sampler.peak_one,
        cpu,
        server_cpu,
        sampler.peaks,
        json.loads(out),
    )


def shared_index(crates: int, versions: int) -> Path:
    """The bare index of bench/synthetic_index.py's shape, built on first use and cached."""
    sys.path.append(str(_paths.BENCH))
    try:
        from synthetic_index import Shape, synthetic
    except ImportError:
        raise SystemExit(
            "--index shared needs bench/synthetic_index.py (written for the verify and rebuild "
            "benchmarks)"
        ) from None
    remote: Path = synthetic(Shape(crates=crates, versions=versions)).remote
    return remote


def plain_git(source: Path, tmp: Path) -> dict[str, float]:
    """git clone with a checkout, then every crate file read and split into lines."""
    work = tmp / "plain-clone"
    started = time.monotonic()
    subprocess.run(["git", "clone", "-q", str(source), str(work)], check=True)
    cloned = time.monotonic() - started
    reader = (
        "import os, sys\n"
        "lines = files = 0\n"
        "for root, dirs, names in os.walk(sys.argv[1]):\n"
        "    dirs[:] = [d for d in dirs if d != '.git']\n"
        "    for name in names:\n"
        "        if root == sys.argv[1]: continue\n"
        "        with open(os.path.join(root, name), 'rb') as f:\n"
        "            lines += len(f.read().split(b'\\n'))\n"
        "        files += 1\n"
        "print(files, lines)\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", reader, str(work)], check=True, capture_output=True)
    read = time.monotonic() - started
    shutil.rmtree(work)
    started = time.monotonic()
    subprocess.run(
        ["git", f"--git-dir={source}", "cat-file", "--batch-all-objects", "--unordered", "--batch"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cat = time.monotonic() - started
    return {"clone": cloned, "read": read, "cat": cat}


@contextmanager
def databases(admin_url: str | None) -> Iterator[tuple[Any, int | None]]:
    """A maker of fresh migrated databases, and the server's postmaster pid when it is ours."""

    @contextmanager
    def fresh(server_url: str) -> Iterator[str]:
        with throwaway_database(server_url, "indexpub_bench_import_") as url:
            with psycopg.connect(url) as conn:
                store.migrate(conn)
            yield url

    if admin_url:
        yield (lambda: fresh(admin_url)), None
        return
    with throwaway_server("indexpub-bench-import-") as (server_url, pgdata):
        yield (lambda: fresh(server_url)), postmaster_pid(pgdata)


def mib(value: int) -> str:
    return f"{value / (1 << 20):,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crates", type=int, default=20_000)
    parser.add_argument("--versions", type=int, default=150_000)
    parser.add_argument(
        "--settings",
        default="auto,auto/no-sparse,0",
        help="Imports to run, each WORKERS[/no-sparse] (WORKERS: auto or a number); the first "
        "is run a second time into the database it filled.",
    )
    parser.add_argument("--database-url")
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the index in DIR.")
    parser.add_argument(
        "--index",
        choices=("ours", "shared"),
        default="ours",
        help="ours: tests/support/index_sources.py's synthetic_index (lines of ~360 bytes, up "
        "to 3 dependencies); shared: bench/synthetic_index.py, the verify and rebuild "
        "benchmarks' (lines of ~600 bytes, up to 10 dependencies, cached across runs).",
    )
    options = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="indexpub-bench-import-"))
    source = (options.keep or tmp) / f"index-{options.crates}-{options.versions}.git"
    if options.index == "shared":
        source = shared_index(options.crates, options.versions)
    try:
        if not source.exists():
            say(
                f"writing a synthetic index of {options.crates} crates, {options.versions} versions"
            )
            started = time.monotonic()
            build_index(source, synthetic_index(options.crates, options.versions))
            subprocess.run(["git", f"--git-dir={source}", "gc", "-q"], check=True)
            say(f"  {time.monotonic() - started:.1f} s")
        size = sum(f.stat().st_size for f in (source / "objects").rglob("*") if f.is_file())
        say("plain git: clone and read every file")
        floor = plain_git(source, tmp)
        runs: list[Run] = []
        with databases(options.database_url) as (fresh, server):
            for setting in options.settings.split(","):
                workers, _, sparse = setting.partition("/")
                args = [] if workers == "auto" else ["--workers", workers]
                args += ["--no-sparse"] if sparse == "no-sparse" else []
                label = f"workers {workers}" + (
                    ", --no-sparse" if args[-1:] == ["--no-sparse"] else ""
                )
                with fresh() as url:
                    say(f"indexpub import, {label}")
                    runs.append(run_import(url, server, tmp / "data", source, label, *args))
                    if setting == options.settings.split(",")[0]:
                        say("indexpub import again (all identical)")
                        runs.append(
                            run_import(url, server, tmp / "data", source, "again, identical", *args)
                        )
        report(options, size, floor, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    options: argparse.Namespace, size: int, floor: dict[str, float], runs: list[Run]
) -> None:
    first = runs[0].report
    print(
        f"## indexpub import: {options.crates:,} crates, {options.versions:,} versions "
        f"(--index {options.index})\n"
    )
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {mib(psutil.virtual_memory().total)}, "
        f"Python {platform.python_version()}; load after: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; index: {mib(size)} packed, "
        f"{first['versions']:,} lines in {first['crate_files']:,} files\n"
    )
    print(
        "| what | wall | CPU | PostgreSQL CPU | peak RSS (all processes) | "
        "largest: command / a worker / git |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| git clone (working tree) | {floor['clone']:.1f} s | | | | |")
    print(f"| read and split every file (Python) | {floor['read']:.1f} s | | | | |")
    print(f"| plain git total (clone + read) | {floor['clone'] + floor['read']:.1f} s | | | | |")
    print(f"| git cat-file --batch-all-objects --unordered | {floor['cat']:.1f} s | | | | |")
    for run in runs:
        server = "" if run.server_cpu is None else f"{run.server_cpu:.1f} s"
        peaks = " / ".join(mib(run.peaks[kind]) for kind in ("command", "workers", "git"))
        print(
            f"| indexpub import, {run.label} | {run.seconds:.1f} s | {run.cpu:.1f} s | {server} | "
            f"{mib(run.peak_sum)} | {peaks} |"
        )
    best = min(r.seconds for r in runs if not r.label.startswith("again"))
    scale = 1_500_000 / options.versions
    print(
        f"\nTargets (200,000 crates, 1,500,000 versions): import <= {TARGET_SECONDS:.0f} s, "
        f"peak RSS <= {mib(TARGET_RSS)}. Here the best import took {best:.1f} s for "
        f"{options.versions:,} versions ({best * scale:.0f} s scaled linearly to 1,500,000)."
    )


if __name__ == "__main__":
    main()
