"""Schedules of periodic job types: when their periods start.

A schedule cuts time into periods: a period starts at a tick and ends at the next one. Every
tick is a whole second of UTC time, so that a period has one spelling in the database and in the
job's payload. See :mod:`jobs.periodic` for how workers enqueue one job per period, and
docs/periodic-jobs.md for the guarantees.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter


class Schedule(ABC):
    """When the periods of a periodic job type start.

    ``misfire_grace`` (seconds): a period that no worker enqueued within this long after its
    start is skipped instead of run late. None (the default): the latest period that started is
    always run, however late, once (the missed ones before it are not: see docs/periodic-jobs.md).
    """

    misfire_grace: float | None

    @abstractmethod
    def latest(self, at: datetime) -> datetime | None:
        """The start of the latest period that started at or before ``at``; None when none has."""

    @abstractmethod
    def following(self, start: datetime) -> datetime | None:
        """The first period start after ``start``; None when there is none."""


def _check_grace(misfire_grace: float | None) -> float | None:
    if misfire_grace is None:
        return None
    if isinstance(misfire_grace, bool) or not isinstance(misfire_grace, int | float):
        raise ValueError(f"misfire_grace is a number of seconds, not {misfire_grace!r}")
    if not math.isfinite(misfire_grace) or misfire_grace < 0:
        raise ValueError("misfire_grace must be a finite, non-negative number of seconds")
    return float(misfire_grace)


@dataclass(frozen=True, init=False)
class Every(Schedule):
    """A fixed interval, in whole seconds: ``Every(hours=1)``, ``Every(minutes=15)``.

    The periods are counted from the Unix epoch in UTC, so they start at the same instants on
    every host and after every restart: ``Every(hours=1)`` on the hour, ``Every(days=1)`` at
    midnight UTC, ``Every(minutes=15)`` at :00, :15, :30 and :45.
    """

    interval: int
    misfire_grace: float | None

    def __init__(
        self,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        misfire_grace: float | None = None,
    ) -> None:
        try:
            total = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"Every(...): not an interval: {exc}") from None
        seconds_total = total.total_seconds()
        if seconds_total < 1 or seconds_total != int(seconds_total):
            raise ValueError(
                "Every(...): the interval must be a whole number of seconds, at least 1 "
                f"(got {seconds_total:g}s)"
            )
        object.__setattr__(self, "interval", int(seconds_total))
        object.__setattr__(self, "misfire_grace", _check_grace(misfire_grace))

    def __repr__(self) -> str:
        grace = "" if self.misfire_grace is None else f", misfire_grace={self.misfire_grace:g}"
        return f"Every(seconds={self.interval}{grace})"

    def latest(self, at: datetime) -> datetime:
        count = math.floor(at.timestamp()) // self.interval
        return datetime.fromtimestamp(count * self.interval, UTC)

    def following(self, start: datetime) -> datetime:
        return self.latest(start) + timedelta(seconds=self.interval)


@dataclass(frozen=True)
class Cron(Schedule):
    """A cron expression, read by croniter: five fields (minute hour day month weekday), or six
    with seconds last (``"* * * * * */10"``), and the ``@hourly`` family.

    ``timezone`` (an IANA name) is where the expression's wall clock is read: ``Cron("0 3 * * *",
    timezone="Europe/Paris")`` is 03:00 in Paris, winter and summer. Its daylight-saving edges
    are croniter's: a wall time that occurs twice is two instants, and both are periods.
    """

    expression: str
    timezone: str = "UTC"
    misfire_grace: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ValueError(f"a cron schedule is a string, not {self.expression!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        now = datetime.now(UTC)
        try:
            croniter(self.expression, now)
        except (CroniterError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"bad cron schedule {self.expression!r}: {_one_line(exc)}") from None
        if self.following(now) is None:
            raise ValueError(f"cron schedule {self.expression!r} never fires after now")
        object.__setattr__(self, "misfire_grace", _check_grace(self.misfire_grace))

    def _tick(self, start: datetime, *, forward: bool) -> datetime | None:
        try:
            ticks = croniter(self.expression, start.astimezone(ZoneInfo(self.timezone)))
            epoch = ticks.get_next(float) if forward else ticks.get_prev(float)
        except CroniterBadDateError:
            return None
        return datetime.fromtimestamp(round(epoch), UTC)

    def latest(self, at: datetime) -> datetime | None:
        # croniter's previous tick is strictly before its start, and ticks are whole seconds.
        return self._tick(at.replace(microsecond=0) + timedelta(seconds=1), forward=False)

    def following(self, start: datetime) -> datetime | None:
        return self._tick(start, forward=True)


def as_schedule(value: Schedule | str | timedelta, job_type: str) -> Schedule:
    """What ``schedule=`` accepts: a :class:`Schedule`, a cron string (UTC) or a timedelta; a
    ValueError or TypeError of one line, naming the job type, for anything else."""
    try:
        if isinstance(value, Schedule):
            return value
        if isinstance(value, str):
            return Cron(value)
        if isinstance(value, timedelta):
            return Every(seconds=value.total_seconds())
    except ValueError as exc:
        raise ValueError(f"job type {job_type!r}: {exc}") from None
    raise TypeError(
        f"job type {job_type!r}: a schedule is an Every, a Cron, a cron string or a timedelta, "
        f"not {type(value).__name__}"
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _timestamp(value: Any, key: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a timestamp: {value!r}")
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{key} has no time zone: {value!r}")
    return stamp.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """The period a periodic job stands for, from its payload.

    The payload is ``{"period_start": ..., "period_end": ..., "previous_start": ...}``, ISO 8601
    timestamps in UTC: the period's start (the tick it was enqueued for), its end (the next tick;
    null when the schedule has no later one), and the start of the period whose job was enqueued
    before this one (null for the first). A job that must cover the periods that a downtime
    skipped covers ``[previous_start, period_start)`` too. ``decode=Period.from_payload`` hands a
    job function a Period instead of the raw payload.
    """

    start: datetime
    end: datetime | None
    previous_start: datetime | None

    @classmethod
    def from_payload(cls, payload: Any) -> Period:
        if not isinstance(payload, dict) or "period_start" not in payload:
            raise ValueError(f"not the payload of a periodic job: {payload!r}")
        end = payload.get("period_end")
        previous = payload.get("previous_start")
        return cls(
            start=_timestamp(payload["period_start"], "period_start"),
            end=None if end is None else _timestamp(end, "period_end"),
            previous_start=None if previous is None else _timestamp(previous, "previous_start"),
        )
