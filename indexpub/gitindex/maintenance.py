"""Packing a repository's objects in the background, off the publish path.

Every publish leaves one small pack, in the clone and (direct publish) in the remote, so every
GC_EVERY_PUSHES pushes GitIndex has each repository repacked (repo.maintain). Run inline, the
repacks stopped the worker for as long as they took, up to seconds on a loaded machine with
every publish behind them waiting. Here the geometric repack runs in a process the worker
starts and does not wait for, at most one per repository; the next push reaps it and logs a
failure (the publishes have landed either way), a stop kills it with everything it started.

It may run while publishes go on because of what it deletes: it packs every object of the
packs it rolls up (reachable or not, and the loose objects) into its new pack, installs that,
and only then deletes exactly those packs; a pack that appeared after it listed the pack
directory is not touched. Readers (``git cat-file``, git push) look at the pack directory again
when an object is not where they expected it.

``gc --auto`` is not safe so: when it acts it repacks by reachability and deletes every pack
it listed, which loses a pack written meanwhile and referenced only after its walk (the tests
caught it doing so to the clone, with the tracking ref moved a few ms after its pack was
written). It stays in the writer's path (repo.gc_auto, run by the push that reaps the
background repack, never beside one), where it usually costs a few milliseconds: right after
the geometric repack merged the packs, it rarely has anything to do.
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
    GitError,
    GitRemote,
    failure_message,
    kill_git,
    start_git_background,
)
from indexpub.gitindex.repo import gc_auto, repack_command

__all__ = ["BackgroundMaintenance"]

log = logging.getLogger("indexpub.gitindex.maintenance")


class BackgroundMaintenance:
    """The maintenance of one repository: the geometric repack in the background, at most
    one at a time, then ``gc --auto`` in the caller's path when it is reaped."""

    def __init__(
        self, git_dir: Path, gc_timeout: float, timeout: float, name: str, remote: GitRemote
    ) -> None:
        self.git_dir = git_dir
        self.gc_timeout = gc_timeout  # for gc --auto, waited for
        self.timeout = timeout  # for the background repack
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
        """Start the background repack unless one still runs; whether it started."""
        self.poll()
        if self._proc is not None:
            return False
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process)
        try:
            self._proc = start_git_background(
                repack_command(self.git_dir), what="git repack", stderr=self._stderr
            )
        except BaseException:
            self._close_stderr()
            raise
        self._started_at = time.monotonic()
        self.started += 1
        log.debug("maintenance of %s started (pid %d)", self.name, self._proc.pid)
        return True

    def poll(self) -> bool:
        """Reap a repack that ended (logging a failure), or kill one past its timeout, then
        run ``gc --auto``; whether one ended now, which means packs may have been deleted.

        gc comes after the repack, not before, so that it finds the packs merged and has
        nothing to do; a failure of either is logged, not raised: the publishes that made them
        due have landed."""
        proc = self._proc
        if proc is None:
            return False
        if proc.poll() is None:
            took = time.monotonic() - self._started_at
            if took <= self.timeout:
                return False
            kill_git(proc)
            self._failed(f"timed out after {self.timeout:g} s, killed")
        elif proc.returncode == 0:
            took = time.monotonic() - self._started_at
            log.debug("maintenance of %s: repack done in %.3f s", self.name, took)
            self._reap()
        else:
            self._failed(self._failure(proc))
        try:
            gc_auto(self.git_dir, self.gc_timeout, self._remote)
        except GitError as e:
            self.failed += 1
            log.warning("maintenance of %s failed: %s", self.name, e)
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
        return failure_message("git repack", result, self._remote)

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
