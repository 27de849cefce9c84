"""Job types and queues: what a worker may run and how.

A job type is registered once, in code that both the enqueuing side and the worker import, so the
queue, priority, attempt limit and deduplication that ``enqueue`` writes into the row are the
ones the worker will honour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from jobs.backoff import Backoff
from jobs.schedules import Schedule

if TYPE_CHECKING:
    from jobs.context import JobContext

Failures = Mapping[int, str | BaseException]
"""What a job function returns when some of its payloads failed: their positions in the list it
was given, each with its own error. The others succeed."""

JobFunction = Callable[["JobContext", Any], Failures | None]
"""``func(ctx, payload)``; for a batched type ``func(ctx, [payload, ...])``.

Returning None (or an empty mapping) means every job succeeded; raising fails them all. A batch
whose payloads stand for independent pieces of work returns :data:`Failures` instead, so that one
bad payload fails only its own job, with its own error, attempt count and backoff, while the rest
are deleted as done. The job's own transaction is committed in both of those cases.
"""

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class QueueConfig:
    """How many jobs of a queue may run at once.

    ``single_consumer`` means one active consumer in the whole deployment, whatever the number of
    processes and hosts: the others stand by on a session advisory lock and take over when the
    active one's session ends.
    """

    name: str
    concurrency: int = 1
    single_consumer: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"queue {self.name!r}: concurrency must be at least 1")
        if self.single_consumer and self.concurrency != 1:
            raise ValueError(f"queue {self.name!r}: a single-consumer queue has concurrency 1")


@dataclass(frozen=True)
class JobType:
    name: str
    # None: declared for enqueuing only; the worker's process binds it (see App.declare).
    func: JobFunction | None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    # None: retried for ever (with the backoff's cap between attempts).
    max_attempts: int | None = 20
    backoff: Backoff = field(default_factory=Backoff)
    # Seconds; None: no limit.
    timeout: float | None = None
    dedup: bool = False
    # More than 1: the worker claims up to this many ready jobs of this type at once and passes
    # their payloads to one call.
    batch_size: int = 1
    # Turns the stored JSON into what ``func`` takes; raising here fails the job, not the worker.
    decode: Callable[[Any], Any] | None = None
    # Periodic types: the workers of the type's queue enqueue a job for each period of it (see
    # jobs.periodic), with the period in the payload (see jobs.Period).
    schedule: Schedule | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"job type {self.name!r}: max_attempts must be at least 1 or None")
        if self.batch_size < 1:
            raise ValueError(f"job type {self.name!r}: batch_size must be at least 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"job type {self.name!r}: timeout must be positive")
        if not -32768 <= self.priority <= 32767:
            raise ValueError(f"job type {self.name!r}: priority must fit in a smallint")
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise TypeError(f"job type {self.name!r}: schedule must be a jobs.Schedule")

    def job(self, payload: Any, *, priority: int | None = None, delay: float = 0.0) -> Job:
        """A job of this type, ready to pass to :meth:`App.enqueue`."""
        return Job(self.name, payload, priority=priority, delay=delay)


@dataclass(frozen=True)
class Job:
    """A job to enqueue: its type's name, a JSON-serialisable payload, per-job overrides."""

    job_type: str
    payload: Any
    priority: int | None = None
    delay: float = 0.0


class Registry:
    """The job types and queue settings that one application knows."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._queues: dict[str, QueueConfig] = {}

    def add(self, job_type: JobType) -> JobType:
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self._types[job_type.name] = job_type
        self._queues.setdefault(job_type.queue, QueueConfig(job_type.queue))
        return job_type

    def implement(self, name: str, func: JobFunction) -> JobType:
        """Bind the function of a type registered without one."""
        declared = self[name]
        if declared.func is not None:
            raise ValueError(f"job type {name!r} is implemented twice")
        self._types[name] = bound = replace(declared, func=func)
        return bound

    def schedule(self, name: str, schedule: Schedule, *, replace_schedule: bool = False) -> JobType:
        """Give a registered type (declared or implemented) its schedule; with
        ``replace_schedule``, one it has already is replaced."""
        registered = self[name]
        if registered.schedule is not None and not replace_schedule:
            raise ValueError(
                f"job type {name!r} has a schedule already ({registered.schedule!r}); a type "
                "has one schedule: declare another type for another one"
            )
        self._types[name] = scheduled = replace(registered, schedule=schedule)
        return scheduled

    def scheduled(self, queue: str) -> list[JobType]:
        """The queue's periodic types, by name."""
        return sorted(
            (t for t in self._types.values() if t.queue == queue and t.schedule is not None),
            key=lambda t: t.name,
        )

    def unimplemented(self, queue: str) -> list[str]:
        """The names of the queue's types that no function runs yet."""
        return sorted(t.name for t in self._types.values() if t.queue == queue and t.func is None)

    def configure_queue(self, config: QueueConfig) -> None:
        self._queues[config.name] = config

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __getitem__(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise KeyError(f"unknown job type {name!r}") from None

    def queue(self, name: str) -> QueueConfig:
        return self._queues.get(name) or QueueConfig(name)

    @property
    def queues(self) -> Mapping[str, QueueConfig]:
        return dict(self._queues)

    @property
    def types(self) -> Mapping[str, JobType]:
        return dict(self._types)

    def types_of_queue(self, queue: str) -> Iterable[JobType]:
        return [t for t in self._types.values() if t.queue == queue]
