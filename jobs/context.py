"""What a running job gets from the worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class JobContext:
    """The job's own database connection and facts about this attempt.

    :attr:`conn` is not the connection that holds the job's row lock: a job that deadlocks or
    errors in its own work must not take the queue's bookkeeping down with it. It is opened on
    first use (a job that never touches the database costs no round trip), a transaction starts
    with its first statement, and the worker commits it when the job returns or rolls it back
    when the job raises.
    """

    conn_factory: Callable[[], psycopg.Connection[Any]] = field(repr=False)
    queue: str
    job_type: str
    job_ids: tuple[int, ...]
    # The attempt number of each job in the batch (1 for a first run).
    attempts: tuple[int, ...]
    # time.monotonic() value past which the worker ends the job; None for no limit.
    deadline: float | None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self.conn_factory()
