-- Who may publish: users, their API tokens (only a hash is stored) and crate owners.

CREATE TABLE {schema}.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES {schema}.users (id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    -- sha256 of the token: tokens are long random strings, so a fast hash is enough, and a
    -- leaked table does not leak usable tokens.
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

CREATE TABLE {schema}.crate_owners (
    crate_id bigint NOT NULL REFERENCES {schema}.crates (id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES {schema}.users (id) ON DELETE CASCADE,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (crate_id, user_id)
);
