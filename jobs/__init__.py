"""A PostgreSQL job queue: at-least-once jobs, row locks as the "running" mark.

The package stands alone (it imports nothing from indexpub). See :class:`jobs.App`.
"""

from jobs.app import App
from jobs.backoff import Backoff
from jobs.context import JobContext
from jobs.registry import Failures, Job, JobType, QueueConfig
from jobs.schedules import Cron, Every, Period, Schedule
from jobs.store import (
    ClaimedJob,
    Consumer,
    Enqueued,
    Failure,
    JobInfo,
    JobStore,
    PeriodicEnqueued,
    PeriodMark,
    QueueStats,
)
from jobs.supervisor import Supervisor
from jobs.worker import EXIT_GRACE_EXPIRED, EXIT_SECOND_SIGNAL, EXIT_TIMEOUT, Worker

__all__ = [
    "EXIT_GRACE_EXPIRED",
    "EXIT_SECOND_SIGNAL",
    "EXIT_TIMEOUT",
    "App",
    "Backoff",
    "ClaimedJob",
    "Consumer",
    "Cron",
    "Enqueued",
    "Every",
    "Failure",
    "Failures",
    "Job",
    "JobContext",
    "JobInfo",
    "JobStore",
    "JobType",
    "Period",
    "PeriodMark",
    "PeriodicEnqueued",
    "QueueConfig",
    "QueueStats",
    "Schedule",
    "Supervisor",
    "Worker",
]
