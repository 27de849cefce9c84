"""Where the benchmarks import from; every script calls :func:`setup` before its other imports.

``python bench/X.py`` puts bench/ first on ``sys.path``, where bench/queue.py would shadow the
standard library's ``queue`` (imported by concurrent.futures, logging.handlers, multiprocessing,
psycopg_pool and httpx's dependencies). :func:`setup` moves bench/ to the end of ``sys.path``,
behind the standard library, so that a benchmark can still import another one's module and
``queue`` is the standard library's, and puts the checkout's root (``indexpub`` and ``jobs`` as
this checkout has them) and ``tests/`` (the ``support`` package the benchmarks share with the
tests, its synthetic index generator included) in front.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TESTS = ROOT / "tests"


def setup() -> None:
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
    sys.path.append(str(BENCH))
    for folder in (TESTS, ROOT):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
