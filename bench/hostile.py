"""What refusing a hostile ``.crate`` costs: time and peak memory per archive.

    python bench/hostile.py [--small] [--only ID ...] [--code DIR]

Builds the corpus of ``tests/support/hostile_crates.py`` at full size (pax and GNU long-name
headers announcing 450 MiB in ~460 KB uploads, a 40 MiB member name, TOML bombs, ...;
``--small`` builds the test suite's sizes), then parses each archive with ``read_crate_bytes``
in a fresh Python process, so that one case's memory cannot hide another's. The child reads its RSS
(``VmRSS``) after loading the archive and its peak RSS (``VmHWM``) after the parse: the
difference is what the parse itself cost above the process's baseline. Valid crates (a
synthetic one, and the largest cargo-built fixture) are measured the same way, as a baseline.

Target: every hostile archive refused in under 1 s with under 50 MiB above the baseline.
``--code DIR`` measures the ``indexpub`` of another checkout (the children run in DIR), to
compare with an older commit; each child is limited to 4 GiB of address space.
"""

# ruff: noqa: E402
from __future__ import annotations

import _paths

_paths.setup()  # bench/ off sys.path (bench/queue.py would shadow ``queue``); root and tests/ on
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from support.hostile_crates import crate, hostile_corpus

ROOT = _paths.ROOT
TARGET_SECONDS = 1.0
TARGET_MIB = 50.0

# Runs in the child: load, measure the current RSS, parse, measure the peak RSS; one JSON line.
# Peak after minus current before: never less than what the parse cost (an earlier, higher
# peak from start-up can only make it look worse).
CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # old code may try for more
from indexpub.domain.crate_file import read_crate_bytes
from indexpub.errors import InvalidInput
data = open(sys.argv[1], "rb").read()
def status(key):  # kB; VmHWM is the peak RSS of this program (ru_maxrss survives exec)
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key))
before = status("VmRSS:")
start = time.perf_counter()
try:
    entry = read_crate_bytes(data)
    outcome, message = "accepted", entry.name
except InvalidInput as refusal:
    outcome, message = "refused", str(refusal)
except BaseException as bug:
    outcome, message = "ERROR", f"{type(bug).__name__}: {bug}"[:300]
seconds = time.perf_counter() - start
after = status("VmHWM:")
print(json.dumps({"outcome": outcome, "seconds": seconds, "kib": after - before,
                  "message_bytes": len(message), "message": message[:90]}))
"""


def measure(data: bytes, code: Path) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".crate") as file:
        file.write(data)
        file.flush()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, file.name],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=code,
        )
    if done.returncode != 0:
        return {"outcome": f"DIED ({done.returncode})", "seconds": 0.0, "kib": 0, "message": ""}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def largest_fixture() -> tuple[str, bytes]:
    manifest = json.loads((ROOT / "fixtures" / "crates-dist" / "manifest.json").read_text())
    paths = [ROOT / "fixtures" / "crates-dist" / c["file"] for c in manifest["crates"]]
    path = max(paths, key=lambda p: p.stat().st_size)
    return f"valid: {path.name}", path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the test suite's sizes")
    parser.add_argument("--only", nargs="*", help="only these case ids")
    parser.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        help="a checkout whose indexpub to measure (e.g. a worktree of an older commit)",
    )
    args = parser.parse_args()

    corpus = hostile_corpus(full_size=not args.small)
    valid = [("valid: synthetic", crate()), largest_fixture()]
    print(f"{'case':32} {'upload':>10} {'result':8} {'time':>9} {'peak':>9}  message")
    rows = []
    for case_id, data, _ in [(name, data, "") for name, data in valid] + list(corpus):
        if args.only and case_id not in args.only:
            continue
        result = measure(data, args.code)
        seconds, mib = float(result["seconds"]), int(result["kib"]) / 1024  # type: ignore[call-overload]
        hostile = not case_id.startswith("valid")
        missed = hostile and (
            result["outcome"] != "refused" or seconds >= TARGET_SECONDS or mib >= TARGET_MIB
        )
        rows.append((case_id, len(data), result["outcome"], seconds, mib, hostile, missed))
        print(
            f"{case_id:32} {len(data):>10,} {result['outcome']!s:8} {seconds * 1000:>7.1f}ms"
            f" {mib:>7.1f}MiB  {'MISSED ' if missed else ''}{result['message']}"
        )
    hostile_rows = [row for row in rows if row[5]]
    if hostile_rows:
        slowest = max(hostile_rows, key=lambda row: row[3])
        hungriest = max(hostile_rows, key=lambda row: row[4])
        print(
            f"\nworst time: {slowest[0]} {slowest[3] * 1000:.1f} ms;"
            f" worst memory: {hungriest[0]} {hungriest[4]:.1f} MiB above baseline"
        )
        misses = [row[0] for row in hostile_rows if row[6]]
        verdict = f"MISSED by {', '.join(misses)}" if misses else f"met by all {len(hostile_rows)}"
        print(f"target (refused in < {TARGET_SECONDS:g} s, < {TARGET_MIB:g} MiB): {verdict}")


if __name__ == "__main__":
    main()
