-- Which copy of the index a verify compared with the database: the git remote (`indexpub
-- verify`, the worker's hourly job) or the sparse directory (`verify --sparse`), so that
-- `indexpub check` grades the last run of each and one never passes for the other. The runs
-- recorded before this migration are all the remote's.
ALTER TABLE {schema}.verify_runs
    ADD COLUMN target text NOT NULL DEFAULT 'remote' CHECK (target IN ('remote', 'sparse'));

-- A sparse run has no tip: its `remote` column holds the directory compared.
ALTER TABLE {schema}.verify_runs DROP CONSTRAINT verify_runs_check;
ALTER TABLE {schema}.verify_runs ADD CONSTRAINT verify_runs_check
    CHECK (error IS NOT NULL OR (drifted_count IS NOT NULL
                                 AND (tip IS NOT NULL OR target = 'sparse')));

-- The last run of a target (and the last that could check), read backwards from its newest.
CREATE INDEX verify_runs_target_finished_idx
    ON {schema}.verify_runs (target, finished_at, id);
