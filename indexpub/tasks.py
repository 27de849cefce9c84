"""indexpub's job application: the queues and job types its worker runs.

Both sides import this module: the registry backend to enqueue, ``indexpub worker`` to run.
"""

from __future__ import annotations

import logging
from typing import Any

from indexpub.config import JOBS_SCHEMA
from jobs import App, Backoff, JobContext

log = logging.getLogger("indexpub.tasks")

app = App(schema=JOBS_SCHEMA)

# The git index has exactly one writer in the whole deployment; standbys wait on its lock.
INDEX_QUEUE = "index"
app.queue(INDEX_QUEUE, single_consumer=True)


@app.job_type(queue="default", backoff=Backoff(base=0.5, cap=30.0))
def demo(ctx: JobContext, payload: Any) -> None:
    """A no-op job that shows the queue working end to end (``indexpub demo``)."""
    row = ctx.conn.execute("SELECT now()").fetchone()
    log.info("demo job %s ran at %s: %s", ctx.job_ids[0], row[0] if row else "?", payload)
