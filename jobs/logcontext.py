"""What a log record says about the job it was logged in: the queue's part of structured logs.

While a worker runs a job, it sets the job's fields in a context variable: ``job_id``,
``job_type``, ``queue`` and ``attempt`` for one job; ``job_ids`` and ``attempts`` (lists, in the
batch's order) for a batch of more than one. The job function may add its own with
:func:`add_fields` (``add_fields(crate="serde")``); they last until the run ends, so the worker's
own line about the run's outcome carries them too. Outside a job there are none.

Any formatter can read them with :func:`current_fields`, or from the record's ``job_fields``
attribute once :class:`JobFieldsFilter` is on its handler (the filter runs when the record is
handled, in the thread that logged it). A context variable follows the code that runs the job,
not the process: records of another thread (the timeout watchdog) carry no fields, and name their
jobs in the message instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_fields: ContextVar[dict[str, Any] | None] = ContextVar("jobs_log_fields", default=None)


def current_fields() -> dict[str, Any]:
    """The fields of the job running in this context (a copy); empty outside a job."""
    found = _fields.get()
    return {} if found is None else dict(found)


@contextlib.contextmanager
def job_fields(**fields: Any) -> Iterator[None]:
    """Records logged inside the block carry ``fields``, on top of the ones already set."""
    token = _fields.set({**(_fields.get() or {}), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def add_fields(**fields: Any) -> None:
    """Add fields to the running job's records, from here to the end of its run (the worker's
    line about how it ended included); outside a job, nothing."""
    found = _fields.get()
    if found is not None:
        found.update(fields)


class JobFieldsFilter(logging.Filter):
    """Puts the running job's fields on every record, as ``record.job_fields`` (a dict)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_fields = current_fields()
        return True
