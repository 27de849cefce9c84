"""Every SQL statement of indexpub's registry, by name, and the schema its tables live in.

The queue's own statements live in :mod:`jobs.queries`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import Composed

from jobs.queries import compose

SCHEMA = "indexpub"

Conn = psycopg.Connection[Any]
"""The connection every registry function takes; it runs in the caller's transaction."""


def statement(template: str) -> Composed:
    """A statement of this module with ``{schema}`` filled in as the registry's schema."""
    return compose(template, SCHEMA)


# The tables are made by registry/migrations. Every statement names {schema}, filled in as a
# quoted identifier by statement().

LOCK_CRATE = "SELECT id, name FROM {schema}.crates WHERE canonical_name = %s FOR UPDATE"

INSERT_CRATE = """
INSERT INTO {schema}.crates (name, canonical_name) VALUES (%s, %s)
ON CONFLICT (canonical_name) DO NOTHING
RETURNING id, name"""

FIND_VERSION = """
SELECT num, line FROM {schema}.versions WHERE crate_id = %s AND num_no_build = %s"""

INSERT_VERSION = """
INSERT INTO {schema}.versions (crate_id, num, num_no_build, line) VALUES (%s, %s, %s, %s)"""

# Yank and unyank lock the version row and report its previous state, so that yanking a yanked
# version succeeds without enqueueing anything.
LOCK_VERSION = """
SELECT v.id, v.yanked, c.name FROM {schema}.versions AS v
JOIN {schema}.crates AS c ON c.id = v.crate_id
WHERE c.canonical_name = %s AND v.num = %s
FOR UPDATE OF v"""

# updated_at dates the change for `indexpub check` (registry/migrations/0003_change_times.sql).
SET_YANKED = "UPDATE {schema}.versions SET yanked = %s, updated_at = now() WHERE id = %s"

DELETE_VERSION = "DELETE FROM {schema}.versions WHERE id = %s"

DELETE_CRATE = "DELETE FROM {schema}.crates WHERE canonical_name = %s RETURNING name"

# Crate files: the versions of the crates whose lowercased names are the files' names, in
# publish order. canonical_name narrows by the unique index; lower(name) tells foo-bar from
# foo_bar, which live in different files. One query for a whole batch of a sync job. The last
# column dates each line's last change (its publish, or its last yank or unyank) against the
# server's clock as the statement starts: the index lag metric's start, with no clock but the
# database's.
CRATE_FILES_LINES = """
SELECT lower(c.name), v.line, v.yanked,
       EXTRACT(EPOCH FROM statement_timestamp() - GREATEST(v.published_at, v.updated_at))::float8
FROM {schema}.versions AS v
JOIN {schema}.crates AS c ON c.id = v.crate_id
WHERE c.canonical_name = ANY(%(canonical)s) AND lower(c.name) = ANY(%(lower_names)s)
ORDER BY v.id"""

# Every crate file, for verify and rebuild: one row per crate with its lines and yanked flags in
# publish order, in crate id order from `after` on (at most `limit` crates; NULL: all). Crate id
# order is index order (a merge join of the two primary-key-ordered indexes, nothing sorted);
# name order would sort every line of the registry first (twice the time at 1.5M versions).
# Crates without versions have no file, and no row.
ALL_CRATE_FILES = """
SELECT c.id, lower(c.name), array_agg(v.line ORDER BY v.id), array_agg(v.yanked ORDER BY v.id)
FROM {schema}.crates AS c JOIN {schema}.versions AS v ON v.crate_id = c.id
WHERE c.id > %(after)s AND v.crate_id > %(after)s
GROUP BY c.id
ORDER BY c.id
LIMIT %(limit)s"""

COUNT_CRATES = "SELECT count(*) FROM {schema}.crates"

# The published spelling of crates by their files' names (lowercased): commit messages and sync
# jobs name a crate as it was published.
PUBLISHED_NAMES = """
SELECT lower(name), name FROM {schema}.crates
WHERE canonical_name = ANY(%(canonical)s) AND lower(name) = ANY(%(lower_names)s)"""

# The sparse writer's per-crate locks (sparse.crate_lock_key), taken in the order given and held
# until the job's read transaction ends.
LOCK_CRATE_FILES = "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k"

ALL_CRATE_NAMES = "SELECT lower(name) FROM {schema}.crates ORDER BY 1"

# `indexpub check` answers within its time limit even when the server is stuck (milliseconds).
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, false)"

# The first change to the versions after a moment (the remote tip's commit time), the newest
# change, and the server's clock: a publish dates itself by published_at, a yank or unyank by
# updated_at. Each min and max is one look into an index.
CHANGES_AFTER = """
SELECT LEAST(
           (SELECT min(published_at) FROM {schema}.versions WHERE published_at > %(after)s),
           (SELECT min(updated_at) FROM {schema}.versions WHERE updated_at > %(after)s)),
       GREATEST(
           (SELECT max(published_at) FROM {schema}.versions),
           (SELECT max(updated_at) FROM {schema}.versions)),
       now()"""

# --- verify and rebuild runs (registry/migrations/0004_operations.sql, 0005_verify_targets.sql) --

VERIFY_RUN_COLUMNS = """id, started_at, finished_at, ran_by, remote, branch, tip, crates, files,
drifted_count, pending_count, sample, error, target"""

INSERT_VERIFY_RUN = """
INSERT INTO {schema}.verify_runs (started_at, ran_by, remote, branch, tip, crates, files,
                                  drifted_count, pending_count, sample, error, target)
VALUES (%(started_at)s, %(ran_by)s, %(remote)s, %(branch)s, %(tip)s, %(crates)s, %(files)s,
        %(drifted_count)s, %(pending_count)s, %(sample)s, %(error)s, %(target)s)
RETURNING id"""

# An hourly verify leaves 8,760 rows a year: the last 90 days are kept.
PRUNE_VERIFY_RUNS = """
DELETE FROM {schema}.verify_runs WHERE finished_at < now() - interval '90 days'"""

# A target's newest run, and its newest that could check (they differ when the last one failed),
# with the server's clock to age them against.
LATEST_VERIFY_RUNS = (
    """
(SELECT 'last', """
    + VERIFY_RUN_COLUMNS
    + """, now() FROM {schema}.verify_runs WHERE target = %(target)s
 ORDER BY finished_at DESC, id DESC LIMIT 1)
UNION ALL
(SELECT 'checked', """
    + VERIFY_RUN_COLUMNS
    + """, now() FROM {schema}.verify_runs WHERE target = %(target)s AND error IS NULL
 ORDER BY finished_at DESC, id DESC LIMIT 1)"""
)

INSERT_REBUILD_RUN = "INSERT INTO {schema}.rebuild_runs (batch_size) VALUES (%s) RETURNING id"

SET_REBUILD_JOB = "UPDATE {schema}.rebuild_runs SET job_id = %s WHERE id = %s"

REBUILD_RUN_COLUMNS = """id, state, batch_size, job_id, total, done, changed, deleted, skipped,
commits, tip, cancel_requested, error, requested_at, started_at, updated_at, finished_at"""

GET_REBUILD_RUN = "SELECT " + REBUILD_RUN_COLUMNS + " FROM {schema}.rebuild_runs WHERE id = %s"

# A run starts (or starts again, after a failed attempt) unless it ended or was cancelled.
START_REBUILD_RUN = (
    """
UPDATE {schema}.rebuild_runs
SET state = 'running', started_at = coalesce(started_at, now()), updated_at = now(),
    total = %(total)s, done = 0, error = NULL
WHERE id = %(id)s AND state IN ('queued', 'running', 'failed') AND NOT cancel_requested
RETURNING """
    + REBUILD_RUN_COLUMNS
)

REBUILD_PROGRESS = """
UPDATE {schema}.rebuild_runs SET done = %(done)s, updated_at = now() WHERE id = %(id)s
RETURNING cancel_requested"""

FINISH_REBUILD_RUN = """
UPDATE {schema}.rebuild_runs
SET state = %(state)s, done = %(done)s, changed = %(changed)s, deleted = %(deleted)s,
    skipped = %(skipped)s, commits = %(commits)s, tip = %(tip)s, error = %(error)s,
    updated_at = now(), finished_at = now()
WHERE id = %(id)s"""

FAIL_REBUILD_RUN = """
UPDATE {schema}.rebuild_runs SET state = 'failed', error = %(error)s, updated_at = now()
WHERE id = %(id)s AND state NOT IN ('done', 'cancelled')"""

CANCEL_REBUILD_RUN = """
UPDATE {schema}.rebuild_runs SET cancel_requested = true WHERE id = %s RETURNING state"""

# --- accounts: users, tokens, owners (indexpub/sql/0002_accounts.sql) ----------------------------

UPSERT_USER = """
INSERT INTO {schema}.users (login) VALUES (%s)
ON CONFLICT (login) DO UPDATE SET login = EXCLUDED.login
RETURNING id"""

INSERT_TOKEN = """
INSERT INTO {schema}.api_tokens (user_id, name, token_hash) VALUES (%s, %s, %s) RETURNING id"""

REVOKE_TOKENS = """
UPDATE {schema}.api_tokens AS t SET revoked_at = now()
FROM {schema}.users AS u
WHERE u.id = t.user_id AND u.login = %(login)s AND t.revoked_at IS NULL
  AND (%(name)s::text IS NULL OR t.name = %(name)s)"""

# last_used_at is refreshed at most once a minute: the update row-locks the token until the
# caller commits, and a backend that authenticates inside its publish transaction would
# otherwise serialise every upload made with one token.
AUTHENTICATE = """
WITH found AS (
    SELECT t.id, t.last_used_at, u.id AS user_id, u.login
    FROM {schema}.api_tokens AS t JOIN {schema}.users AS u ON u.id = t.user_id
    WHERE t.token_hash = %s AND t.revoked_at IS NULL
), touched AS (
    UPDATE {schema}.api_tokens SET last_used_at = now()
    WHERE id IN (SELECT id FROM found
                 WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)
SELECT user_id, login FROM found"""

FIND_USER = "SELECT id, login FROM {schema}.users WHERE login = %s"

CRATE_ID = "SELECT id, name FROM {schema}.crates WHERE canonical_name = %s"

IS_OWNER = "SELECT 1 FROM {schema}.crate_owners WHERE crate_id = %s AND user_id = %s"

ADD_OWNER = """
INSERT INTO {schema}.crate_owners (crate_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"""

REMOVE_OWNER = "DELETE FROM {schema}.crate_owners WHERE crate_id = %s AND user_id = %s"

LIST_OWNERS = """
SELECT u.id, u.login FROM {schema}.crate_owners AS o
JOIN {schema}.users AS u ON u.id = o.user_id
WHERE o.crate_id = %s ORDER BY o.added_at, u.login"""

# --- import: a whole index read into the registry (registry/importer.py) -------------------------

# Held until the import's transaction ends: a second import waits, and so does the publish of a
# new crate (its INSERT into crates), so that no crate the import compared against, or is
# about to insert, appears or disappears under it. Publishes of new versions of existing crates
# (a row lock, not an insert) and yanks go on.
LOCK_CRATES_FOR_IMPORT = "LOCK TABLE {schema}.crates IN SHARE ROW EXCLUSIVE MODE"

ANY_CRATE = "SELECT EXISTS (SELECT 1 FROM {schema}.crates)"

COUNT_CRATES = "SELECT count(*) FROM {schema}.crates"

EXISTING_CRATES = """
SELECT canonical_name, name FROM {schema}.crates WHERE canonical_name = ANY(%s)"""

# A batch of crates, in the order given; their ids come back with their canonical names.
IMPORT_CRATES = """
INSERT INTO {schema}.crates (name, canonical_name)
SELECT name, canonical FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(name, canonical, n)
ORDER BY n
RETURNING id, canonical_name"""

# The versions of a batch, each crate's in file order: their ids keep that order, which is the
# order render reads them in.
COPY_IMPORTED_VERSIONS = """
COPY {schema}.versions (crate_id, num, num_no_build, line, yanked, published_at) FROM STDIN"""
