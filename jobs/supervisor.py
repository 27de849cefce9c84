"""The process that keeps a set of worker processes running.

Each worker runs in a child process so that a job past its timeout can be stopped for real (the
child ends itself) and a crash costs one job, not the deployment: the supervisor starts a fresh
child in its place. Signals: the first SIGTERM or SIGINT is passed on to the children, which stop
claiming and finish their job; a second one kills them at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from jobs.worker import Worker

log = logging.getLogger("jobs.supervisor")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Slot:
    queue: str
    index: int


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_main(make_worker: Callable[[Slot], Worker], slot: Slot, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    worker = make_worker(slot)
    worker.install_signal_handlers()
    worker.run()


class Supervisor:
    def __init__(
        self,
        make_worker: Callable[[Slot], Worker],
        slots: list[Slot],
        *,
        drain: bool = False,
        grace_period: float = 30.0,
        restart_delay: float = 0.5,
    ) -> None:
        self.make_worker = make_worker
        self.slots = slots
        self.drain = drain
        self.grace_period = grace_period
        self.restart_delay = restart_delay
        self._context = multiprocessing.get_context("fork")
        self._children: dict[Slot, BaseProcess] = {}
        self._stopping = False
        self._signals = 0

    def _spawn(self, slot: Slot) -> None:
        process = self._context.Process(
            target=_child_main,
            args=(self.make_worker, slot, os.getpid()),
            name=f"jobs-worker-{slot.queue}-{slot.index}",
        )
        process.start()
        self._children[slot] = process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        sig = signal.SIGTERM if self._signals == 1 else signal.SIGKILL
        for process in self._children.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def run(self) -> int:
        """Run until stopped or, with ``drain``, until every child drained; the exit status."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._spawn(slot)
        stop_deadline: float | None = None
        while self._children:
            if self._stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.grace_period + 2.0
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self._on_signal(signal.SIGKILL, None)
            wait([p.sentinel for p in self._children.values()], timeout=0.2)
            for slot, process in list(self._children.items()):
                if process.is_alive():
                    continue
                process.join()
                del self._children[slot]
                code = process.exitcode
                if self._stopping or (self.drain and code == 0):
                    continue
                log.warning(
                    "worker %s/%s exited with %s; starting a new one", slot.queue, slot.index, code
                )
                time.sleep(self.restart_delay)
                if not self._stopping:
                    self._spawn(slot)
        return 0
