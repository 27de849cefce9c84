"""What a client can change about the cost of one ``git push`` into an index of N crates.

    python bench/push_cost.py [--sizes 1000,100000] [--samples 15]

receive-pack checks that pushed commits connect with ``git rev-list --objects --stdin --not
--all``, which reads every tree of the remote (see README, "The index pipeline over network
remotes"). This measures, per size, on a bare remote built as bench/index.py builds one (random
names, about one directory per crate), pushes by path from a clone of it (the receive side is the
same ``git receive-pack`` that ``git http-backend`` or sshd runs, without the transport):

- one commit changing one file, as the worker pushes a lone publish (a thin pack, git's default
  for push);
- the same with ``--no-thin`` (whole trees in the pack instead of deltas against the remote's);
- a batch of 50 and of 500 commits (one file each) in one push, as the worker pushes a burst;
- for each, receive-pack's connectivity check alone: its ``rev-list`` child's run time, read from
  git's trace2 events (``GIT_TRACE2_EVENT``), which receive-pack inherits.

Figures are p50 over the samples, per push, and per update (the push's p50 over its commits).
Progress on stderr, a Markdown table on stdout.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from index import build_remote, random_names  # bench/index.py

from indexpub.domain.names import index_path
from indexpub.gitindex.index import GitIndex

KINDS = {"1 commit": (1, False), "1 commit, --no-thin": (1, True), "50": (50, False)}
KINDS["500"] = (500, False)


def push(index: GitIndex, commit: str, no_thin: bool, trace: Path) -> tuple[float, float]:
    """Push ``commit`` with git push; (its wall time, receive-pack's rev-list time), seconds."""
    trace.unlink(missing_ok=True)
    args = ["git", f"--git-dir={index.path}", "push", "--quiet"]
    args += ["--no-thin"] if no_thin else []
    started = time.perf_counter()
    subprocess.run(
        [*args, "origin", f"{commit}:refs/heads/{index.branch}"],
        check=True,
        env={**os.environ, "GIT_TRACE2_EVENT": str(trace)},
        capture_output=True,
    )
    took = time.perf_counter() - started
    return took, rev_list_time(trace)


def rev_list_time(trace: Path) -> float:
    """The run time of receive-pack's rev-list child (the connectivity check)."""
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    ids = {
        (e["sid"], e["child_id"])
        for e in events
        if e["event"] == "child_start" and "rev-list" in e.get("argv", [])
    }
    found = [
        float(e["t_rel"])
        for e in events
        if e["event"] == "child_exit" and (e["sid"], e["child_id"]) in ids
    ]
    return found[0] if found else float("nan")


def measure(size: int, samples: int, work: Path) -> dict[str, tuple[float, float]]:
    """Per kind of push, the p50 of (git push, receive-pack's rev-list), in seconds. The kinds
    take turns, sample by sample, after one untimed push, so that a warming cache or a noisy
    minute lands on all of them alike."""
    rng = random.Random(size)
    names = random_names(rng, size)
    remote = work / f"remote-{size}"
    build_remote(remote, {n: f'{{"name":"{n}","vers":"0.1.0"}}\n' for n in names})
    index = GitIndex.open(str(remote), work / f"clone-{size}", local_push="git")
    trace = work / "trace.json"
    timed: dict[str, list[tuple[float, float]]] = {label: [] for label in KINDS}
    minor = 1
    for turn in range(samples + 1):
        for label, (commits, no_thin) in KINDS.items():
            if commits >= 500 and turn % 3:
                continue  # a third as many of the large batches
            tip = index.fetch()
            minor += 1
            with index.batch():
                for name in rng.sample(names, commits):
                    line = f'{{"name":"{name}","vers":"0.{minor}.0"}}\n'
                    tip = index.commit_file(tip, index_path(name), line.encode(), "Update")
            index.flush()
            result = push(index, tip, no_thin, trace)
            if turn:
                timed[label].append(result)
    results = {}
    for label, pairs in timed.items():
        results[label] = (
            statistics.median(p[0] for p in pairs),
            statistics.median(p[1] for p in pairs),
        )
        print(f"  {size:,}: {label}: {results[label][0] * 1e3:.1f} ms", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="indexpub-push-cost-") as tmp:
        table = {size: measure(size, args.samples, Path(tmp)) for size in sizes}
    print(f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print("| crates | commits pushed | git push p50 | receive-pack's rev-list p50 | per update |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for size, results in table.items():
        for label, (wall, walk) in results.items():
            per = wall / KINDS[label][0] * 1e3
            print(
                f"| {size:,} | {label} | {wall * 1e3:.1f} ms | {walk * 1e3:.1f} ms | {per:.2f} ms |"
            )


if __name__ == "__main__":
    main()
