-- The job table. A row is a job that has not succeeded yet: success deletes it.
-- State is derived, never stored twice:
--   dead       dead = true (past max_attempts); kept with its last error until retried or purged
--   running    its worker holds the row lock (FOR UPDATE) for the whole run
--   ready      not dead, run_at <= now(), not locked
--   scheduled  run_at > now(), attempts = 0
--   failing    run_at > now(), attempts > 0 (waiting out its backoff)
CREATE TABLE {schema}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    job_type text NOT NULL,
    payload jsonb NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    -- Bumped and committed by the claim, before the job runs, so a worker that dies mid-job
    -- still counts as an attempt.
    attempts integer NOT NULL DEFAULT 0,
    -- NULL means unlimited.
    max_attempts integer CHECK (max_attempts IS NULL OR max_attempts > 0),
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_error text,
    -- The backend pid of the worker connection that claimed the current attempt; cleared when the
    -- attempt's failure is written. Still set on a row nobody locks means that worker died.
    worker_pid integer,
    dead boolean NOT NULL DEFAULT false,
    -- For deduplicated job types: a digest of the payload. NULL for the others.
    dedup_key text
);

-- The claim query's index: one queue's live jobs in claim order. Dead rows and other queues are
-- not in the path of a claim, however many there are.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority DESC, id) WHERE NOT dead;

-- The batch claim's index: the same, for one job type.
CREATE INDEX jobs_claim_type_idx ON {schema}.jobs (queue, job_type, priority DESC, id)
    WHERE NOT dead;

-- Deduplication as an invariant: at most one not-yet-started job per (type, payload). A job that
-- has started (attempts > 0) leaves this index, so a new enqueue during its run is not absorbed.
CREATE UNIQUE INDEX jobs_dedup_idx ON {schema}.jobs (job_type, dedup_key)
    WHERE dedup_key IS NOT NULL AND attempts = 0;

CREATE INDEX jobs_dead_idx ON {schema}.jobs (queue, job_type) WHERE dead;
