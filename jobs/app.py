"""The application object: a registry of job types bound to a schema."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import psycopg

from jobs import migrations
from jobs.backoff import Backoff
from jobs.registry import DEFAULT_QUEUE, Job, JobFunction, JobType, QueueConfig, Registry
from jobs.schedules import Schedule, as_schedule
from jobs.store import Enqueued, JobStore
from jobs.supervisor import Slot, Supervisor
from jobs.worker import Worker


class App:
    """Job types, queue settings and the schema their rows live in.

    Create one at import time in a module that both the enqueuing code and the worker import::

        app = App(schema="myapp_jobs")

        @app.job_type(queue="mail", max_attempts=5)
        def send_mail(ctx, payload): ...

        app.enqueue(conn, send_mail.job({"to": "a@example.org"}))
    """

    def __init__(self, schema: str = "jobs") -> None:
        # The schema is composed into every statement's text (an identifier cannot be a
        # parameter), where psycopg would read a '%' as a placeholder's start.
        if not schema or "%" in schema:
            raise ValueError(f"schema name {schema!r}: empty, or with a '%'")
        self.schema = schema
        self.registry = Registry()
        self.store = JobStore(self.registry, schema)

    # --- declaring ----------------------------------------------------------------------------

    def job_type(
        self,
        name: str | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = 20,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        dedup: bool = False,
        batch_size: int = 1,
        decode: Callable[[Any], Any] | None = None,
        schedule: Schedule | str | timedelta | None = None,
    ) -> Callable[[JobFunction], JobType]:
        """Declare a job type and its function at once (the decorated function's name by
        default). ``schedule`` makes it periodic: see :meth:`periodic`."""

        def register(func: JobFunction) -> JobType:
            declared = self.declare(
                name or func.__name__,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
                dedup=dedup,
                batch_size=batch_size,
                decode=decode,
                schedule=schedule,
            )
            return self.implement(declared)(func)

        return register

    def declare(
        self,
        name: str,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = 20,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        dedup: bool = False,
        batch_size: int = 1,
        decode: Callable[[Any], Any] | None = None,
        schedule: Schedule | str | timedelta | None = None,
    ) -> JobType:
        """Declare a job type without its function, for code that enqueues it but never runs it.

        The enqueuing side needs only what goes into the row (queue, priority, deduplication,
        attempts), so it can live in a module that does not import what the job's function
        needs; the worker's process binds the function with :meth:`implement`. A worker refuses
        to start on a queue with a type left unimplemented (procrastinate's ``configure_task``
        serves the same split). ``schedule`` makes it periodic: see :meth:`periodic`.
        """
        return self.registry.add(
            JobType(
                name=name,
                func=None,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff or Backoff(),
                timeout=timeout,
                dedup=dedup,
                batch_size=batch_size,
                decode=decode,
                schedule=None if schedule is None else as_schedule(schedule, name),
            )
        )

    def periodic(
        self,
        job_type: JobType | str,
        schedule: Schedule | str | timedelta,
        *,
        replace: bool = False,
    ) -> JobType:
        """Make a registered type periodic: declared (see :meth:`declare`) or implemented.

        ``schedule`` is an :class:`jobs.Every` interval, a :class:`jobs.Cron` expression, a cron
        string (read in UTC) or a timedelta. Every worker of the type's queue then enqueues one
        job for each period as it starts, with ``{"period_start": ..., "period_end": ...,
        "previous_start": ...}`` as its payload (see :class:`jobs.Period`), at most once per
        period across all workers and hosts; a period missed while no worker ran is not made
        up, but the latest one is run once when a worker comes back (docs/periodic-jobs.md).
        A bad schedule raises here, with a one-line error that names the type. A type has one
        schedule: giving it another raises, unless ``replace`` (for a schedule that comes from
        configuration, set before the workers start).
        """
        name = job_type if isinstance(job_type, str) else job_type.name
        return self.registry.schedule(name, as_schedule(schedule, name), replace_schedule=replace)

    def implement(self, job_type: JobType | str) -> Callable[[JobFunction], JobType]:
        """Bind the function that runs a type declared with :meth:`declare`."""
        name = job_type if isinstance(job_type, str) else job_type.name

        def bind(func: JobFunction) -> JobType:
            return self.registry.implement(name, func)

        return bind

    def queue(self, name: str, *, concurrency: int = 1, single_consumer: bool = False) -> None:
        self.registry.configure_queue(QueueConfig(name, concurrency, single_consumer))

    # --- using --------------------------------------------------------------------------------

    def migrate(self, conn: psycopg.Connection[Any], *, target: int | None = None) -> list[int]:
        """Create or upgrade the queue's tables in :attr:`schema`; commits on its own."""
        return migrations.migrate(conn, self.schema, "jobs", target=target)

    def enqueue(self, conn: psycopg.Connection[Any], job: Job) -> Enqueued:
        """Add a job in the caller's transaction; it becomes visible when the caller commits."""
        return self.store.enqueue(conn, job)

    def enqueue_many(self, conn: psycopg.Connection[Any], jobs: Sequence[Job]) -> list[Enqueued]:
        """Add many jobs in one statement (one NOTIFY per queue), in the caller's transaction."""
        return self.store.enqueue_many(conn, jobs)

    def worker(self, conninfo: str, queue: str = DEFAULT_QUEUE, **options: Any) -> Worker:
        """A worker for one queue, to run in the current process (tests, embedding)."""
        return Worker(self.registry, self.store, conninfo, queue, **options)

    def supervisor(
        self,
        conninfo: str,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        drain: bool = False,
        grace_period: float = 30.0,
        **worker_options: Any,
    ) -> Supervisor:
        """Worker processes for the queues (default: all known), each queue at its concurrency."""
        names = list(queues) if queues else sorted(self.registry.queues)
        slots: list[Slot] = []
        for name in names:
            config = self.registry.queue(name)
            count = config.concurrency if concurrency is None else concurrency
            if config.single_consumer and count != 1:
                raise ValueError(f"queue {name!r} is single-consumer: its concurrency is 1")
            slots.extend(Slot(name, index) for index in range(count))

        host = socket.gethostname()

        def make_worker(slot: Slot) -> Worker:
            return self.worker(
                conninfo,
                slot.queue,
                drain=drain,
                grace_period=grace_period,
                name=f"jobs worker {slot.queue}#{slot.index} pid {os.getpid()} on {host}",
                **worker_options,
            )

        return Supervisor(make_worker, slots, drain=drain, grace_period=grace_period)
