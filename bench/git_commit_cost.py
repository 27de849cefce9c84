"""How the cost of one index update grows with the number of crate files (it should not).

Builds synthetic indexes of 1,000 / 10,000 / 100,000 crate files with `git fast-import`, clones
each with GitIndex.open, then times chained `commit_file` calls (creates and updates, spread over
the layout's directories) and prints the per-update cost and the 100k/1k ratio.

    python bench/git_commit_cost.py [--updates 200] [--sizes 1000,10000,100000]
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path (bench/queue.py would shadow ``queue``); root and tests/ on
import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from indexpub.gitindex.index import GitIndex, init_index

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-"


def crate_path(name: str) -> str:
    if len(name) <= 2:
        return f"{len(name)}/{name}"
    if len(name) == 3:
        return f"3/{name[0]}/{name}"
    return f"{name[:2]}/{name[2:4]}/{name}"


def random_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        length = rng.randint(4, 16)
        first = rng.choice("abcdefghijklmnopqrstuvwxyz")
        names.add(first + "".join(rng.choices(ALPHABET, k=length - 1)))
    return sorted(names)


def entry(name: str, version: str) -> bytes:
    line = {"name": name, "vers": version, "deps": [], "cksum": "0" * 64, "features": {}}
    return (json.dumps(line) + "\n").encode()


def build_remote(path: Path, names: list[str]) -> None:
    init_index(path, "https://dl.example/crates", None)
    git = ["git", f"--git-dir={path}"]
    parent = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, check=True)
    chunks = [
        b"commit refs/heads/master\ncommitter b <b@b> 0 +0000\ndata 7\nimport\n",
        b"from " + parent.stdout.strip() + b"\n",
    ]
    for name in names:
        data = entry(name, "0.1.0")
        chunks.append(f"M 100644 inline {crate_path(name)}\ndata {len(data)}\n".encode())
        chunks += [data, b"\n"]
    chunks.append(b"\n")
    subprocess.run([*git, "fast-import", "--quiet"], input=b"".join(chunks), check=True)


def measure(size: int, updates: int, workdir: Path) -> list[float]:
    rng = random.Random(size)
    names = random_names(rng, size + updates)
    existing, fresh = names[:size], names[size:]
    remote = workdir / f"remote-{size}.git"
    started = time.perf_counter()
    build_remote(remote, existing)
    index = GitIndex.open(str(remote), workdir / f"clone-{size}")
    setup = time.perf_counter() - started
    tip = index.tip()
    assert tip is not None
    # Half new crates (new directories sometimes), half updates of existing files.
    work = [(crate_path(n), entry(n, "0.1.0"), f"Create crate `{n}`") for n in fresh[::2]]
    work += [
        (crate_path(n), entry(n, "0.1.0") + entry(n, "0.2.0"), f"Update crate `{n}`")
        for n in rng.sample(existing, updates - len(work))
    ]
    rng.shuffle(work)
    timings = []
    for path, content, message in work:
        t0 = time.perf_counter()
        tip = index.commit_file(tip, path, content, message)
        timings.append(time.perf_counter() - t0)
    print(
        f"{size:>7} files: setup {setup:5.1f} s, {len(timings)} updates,"
        f" median {statistics.median(timings) * 1000:6.2f} ms,"
        f" mean {statistics.fmean(timings) * 1000:6.2f} ms,"
        f" p95 {sorted(timings)[int(len(timings) * 0.95)] * 1000:6.2f} ms",
        flush=True,
    )
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="indexpub-bench-") as tmp:
        results = {size: measure(size, args.updates, Path(tmp)) for size in sizes}
    smallest, largest = min(sizes), max(sizes)
    ratio = statistics.median(results[largest]) / statistics.median(results[smallest])
    print(f"median per-update ratio {largest}/{smallest}: {ratio:.2f}")


if __name__ == "__main__":
    main()
