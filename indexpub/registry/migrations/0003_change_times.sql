-- When the index last changed because of a version: its publish (published_at), or its last
-- yank or unyank (updated_at; NULL for a version never yanked). `indexpub check` compares the
-- first change newer than the remote's tip with the tip's commit time; both lookups are index
-- scans of a few rows. A deleted version or crate leaves no row to date it.
ALTER TABLE {schema}.versions ADD COLUMN updated_at timestamptz;

CREATE INDEX versions_published_at_idx ON {schema}.versions (published_at);
CREATE INDEX versions_updated_at_idx ON {schema}.versions (updated_at)
    WHERE updated_at IS NOT NULL;
