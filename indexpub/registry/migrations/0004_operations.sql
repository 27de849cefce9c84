-- What `indexpub verify` and `indexpub rebuild` did (registry/runs.py).

-- One row per verify, by the command or the worker's periodic job: `indexpub check` reads the
-- latest. A verify that could not check (the remote unreachable) has its error and no tip.
CREATE TABLE {schema}.verify_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    -- 'command' (indexpub verify or repair) or 'job' (the worker's periodic verify).
    ran_by text NOT NULL,
    -- The remote's URL without credentials, its branch and the tip compared.
    remote text NOT NULL,
    branch text,
    tip text,
    -- Crate files rendered from the database, and crate files at the tip.
    crates integer,
    files integer,
    -- Crates whose file differs, is missing or is extra, with no sync job on the way; those
    -- with one are pending, not drift.
    drifted_count integer,
    pending_count integer,
    -- The first drifted crates, each an object with its name, kind, path and versions.
    sample jsonb NOT NULL DEFAULT '[]',
    error text,
    CHECK (error IS NOT NULL OR (tip IS NOT NULL AND drifted_count IS NOT NULL))
);

CREATE INDEX verify_runs_finished_idx ON {schema}.verify_runs (finished_at);

-- One row per `indexpub rebuild`: the command creates it with the job that runs it on the index
-- queue; the job writes its progress here, where the command reads it, and reads here whether
-- the command asked it to stop.
CREATE TABLE {schema}.rebuild_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- Crates per commit; NULL: one commit for the whole index.
    batch_size integer CHECK (batch_size IS NULL OR batch_size > 0),
    job_id bigint,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    started_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz,
    -- Crates in the database, and how many were compared so far.
    total integer,
    done integer NOT NULL DEFAULT 0,
    -- Files written (created or changed), deleted, and left alone because something foreign
    -- is in their way; commits made; the tip pushed (or found, when nothing changed).
    changed integer,
    deleted integer,
    skipped integer,
    commits integer,
    tip text,
    cancel_requested boolean NOT NULL DEFAULT false,
    error text
);
