-- The source of truth for the index: every crate file is rendered from these rows.

CREATE TABLE {schema}.crates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The spelling of the first publish; cargo compares names case-sensitively.
    name text NOT NULL UNIQUE,
    -- Lowercase with '-' as '_': two crates whose names are equal in this form collide.
    canonical_name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.versions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    crate_id bigint NOT NULL REFERENCES {schema}.crates (id) ON DELETE CASCADE,
    -- The version as published, build metadata included.
    num text NOT NULL,
    -- Without build metadata: cargo treats 1.0.0 and 1.0.0+b as two versions and prefers the
    -- latter, so the registry allows only one of them.
    num_no_build text NOT NULL,
    -- The index line as first published, with "yanked":false. Never rewritten: the rendered line
    -- differs from it only in the yanked flag below.
    line text NOT NULL,
    yanked boolean NOT NULL DEFAULT false,
    published_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (crate_id, num_no_build)
);

-- Rendering a crate's file reads its versions in publish order.
CREATE INDEX versions_crate_idx ON {schema}.versions (crate_id, id);
