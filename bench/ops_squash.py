"""The squash on a large synthetic index: time and peak memory, beside a plain baseline.

    python bench/ops_squash.py [--sizes 10000,100000,200000] [--history 2000] [--archive]

For each size N it builds a bare remote with ``git fast-import``: ``config.json``, then one
commit adding N crate files, then ``--history`` commits that each append a line to one crate's
file (the weeks of publishes a squash collapses). Copies of that remote are then squashed, each
by a fresh child process from a clone that is up to date (made beforehand, not timed), as the
worker's is:

1. ours: ``pipeline.squash.squash`` on a ``GitIndex``, exactly what the ``squash_index`` job runs
   (fetch, look for this request's commit among the roots, list the snapshot branches, a
   geometric repack of the clone that writes a bitmap, write the parentless commit, one atomic
   ``git push --force-with-lease`` of the branch and the snapshot branch);
2. ours without the bitmap (``GitIndex.squash(bitmap=False)`` after the same steps): the push
   then sends the whole tree;
3. the baseline: ``git commit-tree <tip>^{tree}`` and ``git push --force`` of the branch, from a
   bare clone made by fetching (``git clone --bare --no-local``: no bitmap, as a worker's clone),
   which is what crates.io's squash does;
4. with ``--archive``: the archive job (the whole history pushed to an empty archive remote),
   then the squash that follows it, each timed on its own.

Peak memory is the largest sum of the RSS of the child and all its descendants (git push,
pack-objects, repack, and receive-pack with index-pack and its connectivity check on the remote
side, all local), sampled every 20 ms with psutil, and the child's own VmHWM (Python).
``measure_squash`` is the entry point another benchmark can call.
"""

# ruff: noqa: E402

from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path; the checkout's root and tests/ on it
import argparse
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import psutil
from support.git import git as support_git

from indexpub.domain.names import index_path
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.pipeline.squash import Archived, archive_tip, squash

BRANCH = "master"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-"
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 1024.0


def git(*args: str, input: bytes | None = None) -> bytes:
    env = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    return support_git(*args, input=input, text=False, env=env, timeout=3600)


def names(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        length = rng.randint(4, 16)
        found[
            rng.choice("abcdefghijklmnopqrstuvwxyz") + "".join(rng.choices(ALPHABET, k=length - 1))
        ] = None
    return list(found)


def line(name: str, minor: int) -> str:
    return (
        f'{{"name":"{name}","vers":"0.{minor}.0","deps":[],"cksum":"{"0" * 64}",'
        f'"features":{{}},"yanked":false}}\n'
    )


def build_remote(remote: Path, size: int, history: int) -> str:
    """The synthetic index at ``remote``; its tip."""
    init_index(remote, dl="https://dl.example/{crate}/{crate}-{version}.crate", api=None)
    parent = git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{BRANCH}").decode().strip()
    crates = names(size)
    files = {name: line(name, 1) for name in crates}
    stamp = int(time.time()) - history - 10
    chunks = [
        f"commit refs/heads/{BRANCH}\ncommitter bench <bench@localhost> {stamp} +0000\n".encode(),
        b"data 16\nSynthetic index\n",
        f"from {parent}\n".encode(),
    ]
    for name, content in files.items():
        data = content.encode()
        chunks += [f"M 100644 inline {index_path(name)}\ndata {len(data)}\n".encode(), data, b"\n"]
    chunks.append(b"\n")
    rng = random.Random(7)
    for number in range(history):
        name = rng.choice(crates)
        files[name] += line(name, 2 + number)
        data = files[name].encode()
        message = f"Update crate `{name}`".encode()
        chunks += [
            f"commit refs/heads/{BRANCH}\n"
            f"committer bench <bench@localhost> {stamp + 1 + number} +0000\n".encode(),
            f"data {len(message)}\n".encode(),
            message,
            b"\n",
            f"M 100644 inline {index_path(name)}\ndata {len(data)}\n".encode(),
            data,
            b"\n\n",
        ]
    git(f"--git-dir={remote}", "fast-import", "--quiet", input=b"".join(chunks))
    git(f"--git-dir={remote}", "repack", "-adq")  # one pack, as a served remote keeps it
    return git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{BRANCH}").decode().strip()


def _python_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class TreeRss(threading.Thread):
    """The largest sum of RSS over a process and its descendants, sampled."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):
                for proc in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return round(self.peak / 2**20, 1)


def child(mode: str, remote: Path, clone: Path, archive: Path | None) -> dict[str, Any]:
    """One measurement, in this (fresh) process: seconds and peak memory."""
    result: dict[str, Any] = {"mode": mode}
    if mode == "baseline":
        started = time.perf_counter()
        tip = git(f"--git-dir={clone}", "rev-parse", BRANCH).decode().strip()
        commit = (
            git(f"--git-dir={clone}", "commit-tree", f"{tip}^{{tree}}", "-m", "squash")
            .decode()
            .strip()
        )
        git(
            f"--git-dir={clone}", "push", "-q", "--force", "origin", f"{commit}:refs/heads/{BRANCH}"
        )
        result["seconds"] = time.perf_counter() - started
    else:
        index = GitIndex.open(str(remote), clone, timeout=3600)
        index.fetch()
        day = date(2000, 1, 1)
        if mode == "squash":
            started = time.perf_counter()
            done = squash(index, day=day, request="bench")
            result["seconds"] = time.perf_counter() - started
            assert done.commit is not None, done
        elif mode == "nobitmap":
            started = time.perf_counter()
            tip = index.fetch()
            index.root_commits(tip)
            name = "snapshot-2000-01-01"
            assert name not in index.snapshots()
            index.squash(tip, "Collapse index into one commit\n", snapshot=name, bitmap=False)
            result["seconds"] = time.perf_counter() - started
        else:
            assert archive is not None
            started = time.perf_counter()
            archived = archive_tip(index, str(archive), day)
            result["archive_seconds"] = time.perf_counter() - started
            assert archived is not None
            started = time.perf_counter()
            done = squash(
                index, day=day, request="bench", archived=Archived(str(archive), archived[1])
            )
            result["seconds"] = time.perf_counter() - started
            assert done.commit is not None, done
        index.close()
    result["python_hwm_mb"] = _python_hwm_mb()
    return result


def _run_child(mode: str, remote: Path, clone: Path, archive: Path | None = None) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", mode, str(remote), str(clone)]
    if archive is not None:
        args.append(str(archive))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeRss(proc.pid)
    sampler.start()
    out, err = proc.communicate(timeout=7200)
    peak = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed: {err}")
    result = dict(json.loads(out.splitlines()[-1]))
    result["peak_tree_mb"] = peak
    return result


def _check_squashed(remote: Path, tree: str) -> None:
    count = git(f"--git-dir={remote}", "rev-list", "--count", BRANCH).decode().strip()
    now = git(f"--git-dir={remote}", "rev-parse", f"{BRANCH}^{{tree}}").decode().strip()
    assert count == "1" and now == tree, (count, now, tree)


def measure_squash(
    size: int, history: int, *, archive: bool = False, work: Path | None = None
) -> dict[str, Any]:
    """Build an index of ``size`` crates with ``history`` commits and squash copies of it (see
    the module's docstring); the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="indexpub-bench-squash-", dir=work) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        original = root / "index.git"
        tip = build_remote(original, size, history)
        tree = git(f"--git-dir={original}", "rev-parse", f"{tip}^{{tree}}").decode().strip()
        built = time.perf_counter() - started
        pack_mb = sum(p.stat().st_size for p in (original / "objects" / "pack").glob("*.pack"))
        trees = int(
            git(f"--git-dir={original}", "ls-tree", "-r", "-t", "-d", tip).decode().count("\n")
        )
        report: dict[str, Any] = {
            "crates": size,
            "history_commits": history,
            "trees": trees + 1,
            "pack_mb": round(pack_mb / 2**20, 1),
            "build_seconds": round(built, 1),
        }
        modes = ["squash", "nobitmap", "baseline"] + (["archive"] if archive else [])
        for mode in modes:
            remote = root / f"{mode}.git"
            shutil.copytree(original, remote, symlinks=True)
            clone = root / f"{mode}-clone.git"
            started = time.perf_counter()
            if mode == "baseline":
                git("clone", "-q", "--bare", "--no-local", str(remote), str(clone))
            else:
                GitIndex.open(str(remote), clone, timeout=3600).close()
            report[f"{mode}_clone_seconds"] = round(time.perf_counter() - started, 1)
            target = None
            if mode == "archive":
                target = root / "archive-remote.git"
                git("init", "-q", "--bare", str(target))
            report[mode] = _run_child(mode, remote, clone, target)
            _check_squashed(remote, tree)
            shutil.rmtree(remote)
            shutil.rmtree(clone)
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,200000")
    parser.add_argument("--history", type=int, default=2000)
    parser.add_argument("--archive", action="store_true", help="also the archive job, then squash")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, remote, clone, *rest = args.child
        print(json.dumps(child(mode, Path(remote), Path(clone), Path(rest[0]) if rest else None)))
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"size {size:,}: building and squashing...", file=sys.stderr, flush=True)
        results.append(measure_squash(size, args.history, archive=args.archive))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results))


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| crates | history | trees | pack | ours | ours, no bitmap "
        "| baseline: commit-tree + push --force |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(r: dict[str, Any]) -> str:
        return (
            f"{r['seconds']:.2f} s, {r['peak_tree_mb']:.0f} MB ({r['python_hwm_mb']:.0f} MB Python)"
        )

    for r in results:
        lines.append(
            f"| {r['crates']:,} | {r['history_commits']:,} | {r['trees']:,} | {r['pack_mb']} MB "
            f"| {cell(r['squash'])} | {cell(r['nobitmap'])} | {cell(r['baseline'])} |"
        )
    if any("archive" in r for r in results):
        lines += [
            "",
            "| crates | archive job (whole history to an empty archive) | the squash after it "
            "| peak RSS |",
            "|---:|---:|---:|---:|",
        ]
        for r in results:
            if "archive" in r:
                a = r["archive"]
                lines.append(
                    f"| {r['crates']:,} | {a['archive_seconds']:.2f} s | {a['seconds']:.2f} s "
                    f"| {a['peak_tree_mb']:.0f} MB ({a['python_hwm_mb']:.0f} MB Python) |"
                )
    targets = [
        f"target at 200,000 crates: squash <= {TARGET_SECONDS:g} s, "
        f"peak RSS <= {TARGET_RSS_MB:g} MB"
    ]
    return "\n".join([*lines, "", *targets])


if __name__ == "__main__":
    main()
