-- The enqueue statements send the NOTIFY themselves (jobs/queries.py, _WAKE_ONE_QUEUE), with the
-- same rule as the trigger of 0003: only for a queue that got a new row and has a worker waiting.
-- The trigger cost every single-job insert its transition table, a PL/pgSQL call and a query
-- through SPI even when nobody waited (docs/architecture.md). A row that other SQL inserts now
-- wakes nobody: a worker claims it at its next poll.
DROP TRIGGER jobs_notify_inserted ON {schema}.jobs;
DROP FUNCTION {schema}.notify_jobs_inserted();
