-- The workers waiting for work, by queue: a worker that found nothing to claim inserts its row
-- (its control connection's backend pid) before it claims once more and sleeps, and deletes it
-- when a claim finds work again or when it exits. Unlogged: after a crash every session is
-- gone, and so are the rows. A row left by a backend that died is harmless (one NOTIFY too many
-- per inserting statement) and is removed by the next worker that connects.
CREATE UNLOGGED TABLE {schema}.listeners (
    queue text NOT NULL,
    pid integer NOT NULL,
    PRIMARY KEY (queue, pid)
);

-- The insert trigger notifies a queue only when a worker of that queue is waiting: a
-- transaction that sends no NOTIFY commits without the server-wide notification lock, so
-- enqueuing commits of several connections share WAL flushes (see docs/architecture.md). When
-- no worker of any queue waits, it returns before it reads the inserted rows (about 20 us less
-- per single-job insert).
CREATE OR REPLACE FUNCTION {schema}.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM {schema}.listeners) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('jobs.' || TG_TABLE_SCHEMA, queues.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS queues
    WHERE EXISTS (SELECT FROM {schema}.listeners AS l WHERE l.queue = queues.queue);
    RETURN NULL;
END;
$$;
