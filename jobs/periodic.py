"""A worker's side of periodic jobs: when its queue's next period is due, and what to enqueue.

Each worker of a queue that has periodic job types keeps a :class:`Scheduler`. On its loop the
worker asks :meth:`Scheduler.is_due` (no query: a clock comparison) and, when a period may have
started, sends one statement (:meth:`jobs.JobStore.enqueue_periods`) that moves each type's mark
to its latest started period and enqueues the job of every period it moved to. Between periods
a worker sends nothing for them; its idle wait ends at the next period's start.

Periods are computed on an estimate of the database's clock, which every such statement
returns, and the database refuses a period that is not the current one by its own clock (see
queries.ENQUEUE_PERIODS): a worker whose clock is off learns the right time from the refusal
and tries again at once, so hosts never have to agree on the time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.registry import JobType
    from jobs.schedules import Schedule

# After a statement refused a period (the worker's estimate of the database's clock was off),
# the next try waits at least this long: a bound on how fast a confused worker can repeat it.
_RETRY = 0.01


@dataclass(frozen=True)
class DuePeriod:
    """A period that a worker believes has started: its job type, start and end."""

    job_type: JobType
    start: datetime
    # None: the schedule has no later tick.
    end: datetime | None


class Scheduler:
    def __init__(self, job_types: Sequence[JobType]) -> None:
        # One order for every worker: the statement takes the types' marks in it.
        self.job_types = sorted(job_types, key=lambda t: t.name)
        for job_type in self.job_types:
            if job_type.schedule is None:
                raise ValueError(f"job type {job_type.name!r} has no schedule")
        # time.monotonic() at which a period may start; None: at once (a new worker).
        self._due_at: float | None = None
        # The database's clock minus time.monotonic(), from the last statement; None: unknown.
        self._offset: float | None = None

    def database_now(self) -> float:
        """The estimate of the database's clock, as a Unix time."""
        if self._offset is None:
            return time.time()
        return time.monotonic() + self._offset

    def is_due(self) -> bool:
        return self._due_at is None or time.monotonic() >= self._due_at

    def seconds_until_due(self) -> float:
        if self._due_at is None:
            return 0.0
        return max(self._due_at - time.monotonic(), 0.0)

    def plan(self) -> list[DuePeriod]:
        """Each type's latest started period, by the estimate of the database's clock."""
        at = datetime.fromtimestamp(self.database_now(), UTC)
        due: list[DuePeriod] = []
        for job_type in self.job_types:
            schedule = _schedule(job_type)
            start = schedule.latest(at)
            if start is not None:
                due.append(DuePeriod(job_type, start, schedule.following(start)))
        return due

    def record(self, database_now: float, received: float, planned: Sequence[DuePeriod]) -> None:
        """Learn the database's clock from a statement that tried ``planned`` (``received``:
        time.monotonic() when its answer came), and when the next period is due."""
        self._offset = database_now - received
        at = datetime.fromtimestamp(database_now, UTC)
        tried = {due.job_type.name: due for due in planned}
        next_due: float | None = None
        for job_type in self.job_types:
            schedule = _schedule(job_type)
            current = schedule.latest(at)
            due = tried.get(job_type.name)
            when: float | None
            if due is not None and due.start == current:
                # The statement tried the current period: enqueued, or done already, or skipped
                # as too late. The next one starts at its end.
                when = None if due.end is None else due.end.timestamp()
            elif current is not None and (due is None or current > due.start):
                # A period started that the statement did not try (the estimate was behind).
                when = database_now
            else:
                # Nothing started yet, or the statement was early (the estimate was ahead).
                following = schedule.following(at)
                when = None if following is None else following.timestamp()
            if when is not None and (next_due is None or when < next_due):
                next_due = when
        if next_due is None:
            self._due_at = float("inf")  # every schedule has run out of ticks
        else:
            self._due_at = received + max(next_due - database_now, _RETRY)


def _schedule(job_type: JobType) -> Schedule:
    assert job_type.schedule is not None  # checked in Scheduler.__init__
    return job_type.schedule
