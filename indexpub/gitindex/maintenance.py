"""Packing a repository's objects in the background, off the publish path.

Every publish leaves one small pack, in the clone and (direct publish) in the remote, so every
GC_EVERY_PUSHES pushes GitIndex has each repository repacked (repo.maintain's two commands).
Run inline, that stopped the worker for as long as they took, up to seconds on a loaded machine
with every publish behind it waiting. Here they run in a process the worker starts and does not
wait for, at most one per repository; the next push reaps it and logs a failure (the publishes
have landed either way), a stop kills it with everything it started.

It may run while publishes go on because git allows it: a geometric repack packs every object
of the packs it rolls up (reachable or not) into its new pack before it deletes them, and never
touches a pack that appeared after it listed the pack directory; the full repack that ``gc
--auto`` may start keeps objects that no ref reached when it looked (loose or in a cruft pack,
fresh ones for gc.pruneExpire, two weeks), so a direct publish that links its pack in and moves
the branch meanwhile loses nothing. Readers (``git cat-file``, git push) look at the pack
directory again when an object is not where they expected it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from indexpub.gitindex.process import (
    GitRemote,
    failure_message,
    kill_git,
    start_git_chain,
)
from indexpub.gitindex.repo import maintenance_commands

__all__ = ["BackgroundMaintenance"]

log = logging.getLogger("indexpub.gitindex.maintenance")


class BackgroundMaintenance:
    """At most one background maintenance (repo.maintain's commands) of one repository."""

    def __init__(self, git_dir: Path, timeout: float, name: str, remote: GitRemote) -> None:
        self.git_dir = git_dir
        self.timeout = timeout
        self.name = name  # "the clone ..." / "the remote ...": for log lines
        self._remote = remote  # only to scrub its URL's secrets from messages
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._started_at = 0.0
        self.started = 0  # how many were started: lets tests and metrics see them
        self.failed = 0

    @property
    def running(self) -> bool:
        """Whether one was started and not reaped yet (it may have ended since)."""
        return self._proc is not None

    def start(self) -> bool:
        """Start one unless one is still running; whether it started."""
        self.poll()
        if self._proc is not None:
            return False
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process)
        try:
            self._proc = start_git_chain(
                maintenance_commands(self.git_dir), what="git repack", stderr=self._stderr
            )
        except BaseException:
            self._close_stderr()
            raise
        self._started_at = time.monotonic()
        self.started += 1
        log.debug("maintenance of %s started (pid %d)", self.name, self._proc.pid)
        return True

    def poll(self) -> bool:
        """Reap a maintenance that ended (logging a failure), or kill one past its timeout;
        whether one ended now, which means packs may have been deleted."""
        proc = self._proc
        if proc is None:
            return False
        if proc.poll() is None:
            took = time.monotonic() - self._started_at
            if took <= self.timeout:
                return False
            kill_git(proc)
            self._failed(f"timed out after {self.timeout:g} s, killed")
            return True
        if proc.returncode == 0:
            took = time.monotonic() - self._started_at
            log.debug("maintenance of %s done in %.3f s", self.name, took)
            self._reap()
        else:
            self._failed(self._failure(proc))
        return True

    def wait(self) -> None:
        """Let a running maintenance finish (bounded by its timeout), e.g. before another
        repack of the same repository, which must never run at the same time."""
        proc = self._proc
        if proc is None:
            return
        left = self.timeout - (time.monotonic() - self._started_at)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(left, 0.0))
        self.poll()

    def stop(self) -> None:
        """Kill a running maintenance with every process it started (the repack it interrupts
        deleted nothing yet, or finished: git deletes old packs only after the new one is in
        place)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            kill_git(proc)
            log.info("maintenance of %s stopped", self.name)
            self._reap()
        else:
            self.poll()

    def _failure(self, proc: subprocess.Popen[bytes]) -> str:
        err = b""
        if self._stderr is not None:
            # The last lines say why; git may have written any amount before them.
            size = self._stderr.seek(0, 2)
            self._stderr.seek(max(size - (1 << 16), 0))
            err = self._stderr.read()
        result = subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)
        return failure_message("git repack / git gc --auto", result, self._remote)

    def _failed(self, why: str) -> None:
        self.failed += 1
        # The publishes landed: a maintenance that failed only leaves packs for the next one.
        log.warning("maintenance of %s failed: %s", self.name, why)
        self._reap()

    def _reap(self) -> None:
        self._proc = None
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
