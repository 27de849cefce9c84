-- Periodic job types (jobs/periodic.py): per type, the start of the latest period whose job a
-- worker enqueued. Every worker of the type's queue enqueues the latest period that has started,
-- in one statement that first moves this mark forward (queries.ENQUEUE_PERIODS); the mark never
-- moves back, so a period is enqueued at most once however many workers, hosts and restarts
-- try it, and one row per type is all the table ever holds (no pruning, which would let a
-- worker that lags by a period enqueue a pruned one again). Logged, and written with a
-- synchronous commit: a PostgreSQL crash must not forget a period that was enqueued.
CREATE TABLE {schema}.periodic (
    job_type text PRIMARY KEY,
    -- The start of the latest period enqueued.
    period_start timestamptz NOT NULL,
    -- The one enqueued before it (NULL for the first): a job learns from it which periods a
    -- downtime skipped.
    previous_start timestamptz,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
