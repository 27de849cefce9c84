"""Crash points for the crash-recovery tests.

``INDEXPUB_CRASH_AT=point:marker`` makes the process SIGKILL itself when it reaches ``point``,
once: the marker file records that it fired. Unset (always, outside the tests), a crash point is
one dictionary lookup. The tests use real kills at real points of the real code instead of
mocks, which is how they show that a crash at any step converges.
"""

from __future__ import annotations

import os
import signal

ENV = "INDEXPUB_CRASH_AT"


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition(":")
    if point != name:
        return
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
