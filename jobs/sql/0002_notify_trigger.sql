-- One NOTIFY per inserting statement and queue, not per row: a bulk enqueue of 1,000 jobs wakes
-- the workers once. The channel is named after the schema so that two queue schemas in one
-- database do not wake each other.
CREATE FUNCTION {schema}.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobs.' || TG_TABLE_SCHEMA, queues.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS queues;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs_inserted();
