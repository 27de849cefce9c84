"""Every SQL statement of the queue, by name.

The schema is not passed as a parameter: PostgreSQL takes identifiers only as text, so each
template names ``{schema}`` and :func:`compose` fills it in as a quoted identifier once per
schema. The single enqueue also takes a job type's own constants as quoted literals, composed
once per type from the registry (:func:`enqueue_one_statement`): each parameter cost it client
and server time. Everything else, and every value a caller passes, is a bind parameter.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from psycopg import sql

# --- migrations -------------------------------------------------------------------------------

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

APPLIED_MIGRATIONS = "SELECT version, name FROM {schema}.schema_migrations ORDER BY version"

RECORD_MIGRATION = "INSERT INTO {schema}.schema_migrations (version, name) VALUES (%s, %s)"

MIGRATIONS_TABLE = "SELECT to_regclass(quote_ident(%s) || '.schema_migrations')"

ADVISORY_XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"

# --- enqueue ----------------------------------------------------------------------------------

# Every enqueue statement of many jobs inserts its rows in a CTE named ``enqueued`` (id, whether
# the row is new, its queue) and ends in one of the two tails below, which send the NOTIFY in the
# same statement, only for a queue that got a new row and has a worker waiting (a row in listeners,
# sql/0003_listeners.sql): a transaction that sends no NOTIFY commits without the server-wide
# notification lock, so the commits of several enqueuing connections share WAL flushes. This
# used to be an insert trigger (sql/0005_notify_in_enqueue.sql dropped it): its transition
# table, its PL/pgSQL call and its query through SPI cost a single-job insert more server time
# than the test below (docs/architecture.md, "jobs: a NOTIFY only when a worker waits"). The
# listeners table is read with the statement's snapshot; why that leaves no job unnoticed for
# longer than the poll interval is in JobStore.start_waiting. A row inserted by other SQL than
# these statements wakes nobody: a worker claims it at its next poll. The single enqueue makes
# the same test without the CTE (ENQUEUE_ONE).
#
# The tail of a statement whose rows are all of one queue, %(queue)s: the test is two probes.
# The LEFT JOIN reads ``woken`` (0 or 1 row) once, after ``enqueued``, and keeps its row order.
_WAKE_ONE_QUEUE = """,
woken AS (
    SELECT pg_notify({channel_text}, %(queue)s)
    WHERE EXISTS (SELECT FROM {schema}.listeners AS l WHERE l.queue = %(queue)s)
      AND EXISTS (SELECT FROM enqueued WHERE inserted)
)
SELECT e.id, e.inserted FROM enqueued AS e LEFT JOIN woken ON true"""

# The tail of a statement whose rows may be of several queues: one NOTIFY per queue. The
# aggregate is one row, so a cross join with ``woken`` keeps the rows it is joined to and their
# order (ENQUEUE_PERIODS ends in a SELECT of its own after the same CTE).
_WOKEN_ITS_QUEUES = """,
woken AS (
    SELECT count(pg_notify({channel_text}, q.queue))
    FROM (SELECT DISTINCT queue FROM enqueued WHERE inserted) AS q
    WHERE EXISTS (SELECT FROM {schema}.listeners AS l WHERE l.queue = q.queue)
)"""
_WAKE_ITS_QUEUES = (
    _WOKEN_ITS_QUEUES
    + """
SELECT e.id, e.inserted FROM enqueued AS e, woken"""
)

# A deduplicated job whose twin has not started yet is absorbed by it, with DO UPDATE (not DO
# NOTHING) so that the twin stays row-locked until the enqueuing transaction ends, and no worker
# can claim it before the data that this enqueue stands for is committed and visible. Only a
# statement that carries a dedup key has it: a row whose key is NULL cannot conflict in the
# partial unique index, and ON CONFLICT makes every insert a speculative one (a token lock, and
# a WAL record more to confirm it).
_ABSORB_UNSTARTED_TWIN = """
ON CONFLICT (job_type, dedup_key) WHERE dedup_key IS NOT NULL AND attempts = 0
DO UPDATE SET priority = GREATEST(j.priority, EXCLUDED.priority),
              run_at = LEAST(j.run_at, EXCLUDED.run_at)"""

_ENQUEUED = """
RETURNING j.id, (j.xmax = 0) AS inserted, j.queue
)"""

_INSERT = """
WITH enqueued AS (
INSERT INTO {schema}.jobs AS j
    (queue, job_type, payload, priority, max_attempts, run_at, dedup_key)
"""


def _enqueue(rows: str, tail: str) -> tuple[str, str]:
    """The statement without and with the absorption of twins (see _ABSORB_UNSTARTED_TWIN)."""
    return (
        _INSERT + rows + _ENQUEUED + tail,
        _INSERT + rows + _ABSORB_UNSTARTED_TWIN + _ENQUEUED + tail,
    )


# One statement for one job or a thousand: arrays in, rows out, as binary parameters (the text
# form of a thousand-element array costs more to build than the insert).
ENQUEUE, ENQUEUE_DEDUP = _enqueue(
    """SELECT queue, job_type, payload, priority, max_attempts,
       now() + make_interval(secs => delay), dedup_key
FROM unnest(
    %(queue)b::text[], %(job_type)b::text[], %(payload)b::jsonb[], %(priority)b::smallint[],
    %(max_attempts)b::integer[], %(delay)b::float8[], %(dedup_key)b::text[]
) AS t(queue, job_type, payload, priority, max_attempts, delay, dedup_key)""",
    _WAKE_ITS_QUEUES,
)

# The same for a batch whose jobs share their type and options (the usual bulk enqueue): only
# the payloads and dedup keys vary, and the client does not build five more arrays of a thousand
# elements each. The payloads travel as one JSON array, which the client encodes in one call
# and the server splits, instead of a jsonb[] whose every element the client dumps on its own.
ENQUEUE_UNIFORM, ENQUEUE_UNIFORM_DEDUP = _enqueue(
    """SELECT %(queue)s, %(job_type)s, payload, %(priority)s, %(max_attempts)s,
       now() + make_interval(secs => %(delay)s), dedup_key
FROM ROWS FROM (jsonb_array_elements(%(payload)s::jsonb), unnest(%(dedup_key)b::text[]))
    AS t(payload, dedup_key)""",
    _WAKE_ONE_QUEUE,
)

# The same for one job, the common case, so its statement is the leanest there is: no CTE (the
# NOTIFY's test is joined to the insert's one source row: a NOTIFY is sent at commit, whenever in
# the transaction it was asked for), and a job with its type's own priority and no delay passes
# only its payload (and dedup key): the type's queue, name, priority and max_attempts are
# literals in the text, composed once per type by enqueue_one_statement from the registry,
# never from a caller's values, and run_at is now(). Against the CTE of _WAKE_ONE_QUEUE with
# seven parameters, that took about a third off what a single enqueue costs beyond the
# durable-commit floor (README, "The single enqueue without its CTE"). The test is made before
# the insert, so a job absorbed by its twin wakes a waiting worker all the same: it claims once
# for nothing, and no commit takes the notification lock while every worker is busy. The
# parentheses keep a negative literal whole: -32768::smallint is -(32768::smallint), out of range.
_ENQUEUE_ONE = """
INSERT INTO {schema}.jobs AS j
    (queue, job_type, payload, priority, max_attempts, run_at, dedup_key)
SELECT {queue}::text, {job_type}::text, %(payload)s, ({priority})::smallint,
       ({max_attempts})::integer, {run_at}, {dedup_key}::text
FROM (SELECT) AS one LEFT JOIN (
    SELECT pg_notify({channel_text}, {queue})
    FROM {schema}.listeners AS l WHERE l.queue = {queue} LIMIT 1
) AS woken ON true"""
_RETURNING_ONE = """
RETURNING j.id, (j.xmax = 0) AS inserted"""
ENQUEUE_ONE = _ENQUEUE_ONE + _RETURNING_ONE
ENQUEUE_ONE_DEDUP = _ENQUEUE_ONE + _ABSORB_UNSTARTED_TWIN + _RETURNING_ONE

# What a job type fixes in its jobs: queue, name, priority, max_attempts (see ENQUEUE_ONE).
TypeConstants = tuple[str, str, int, "int | None"]

# --- claim and run ----------------------------------------------------------------------------

# The claim is a short transaction of its own, committed before the job runs: it counts the
# attempt, records who runs it, and pushes run_at out by the type's backoff so that nobody else
# picks the row in the moment before the runner takes the row lock, and so that a job whose
# worker dies is retried only after its backoff. A row whose previous runner died past the last
# allowed attempt is marked dead here instead of being run again, and so is a row that other SQL
# wrote with max_attempts below 1 (sql/0006), saying so.
#
# The backoff counts from statement_timestamp(), not now(): the claim that follows a run (and a
# run's failure, FAIL_JOBS) is written inside the run's transaction, whose now() is when the run
# began, so a run longer than the backoff left the next job ready again at once (its batch's
# follower claim took it a second time, as if its first runner had died).
#
# The rows are picked by a sub-select and updated through the primary key as one array: the
# queue runs its statements as generic plans (see CONTROL_SESSION_SETUP), and a generic plan
# cannot know the LIMIT, so a join between the picked rows and the table was planned for a tenth
# of the table and became a hash join over a scan of all of it, at every claim.
_CLAIM_TEMPLATE = """
UPDATE {schema}.jobs AS j SET
    attempts = CASE WHEN __EXHAUSTED__ THEN j.attempts ELSE j.attempts + 1 END,
    last_attempt_at = CASE WHEN __EXHAUSTED__ THEN j.last_attempt_at ELSE statement_timestamp() END,
    worker_pid = CASE WHEN __EXHAUSTED__ THEN NULL ELSE pg_backend_pid() END,
    dead = __EXHAUSTED__,
    last_error = CASE WHEN j.max_attempts < 1
                          THEN 'not run: max_attempts is ' || j.max_attempts
                               || ' (at least 1, or NULL for no limit)'
                      WHEN j.worker_pid IS NULL THEN j.last_error
                      ELSE 'the worker running attempt ' || j.attempts
                           || ' died before it finished (killed, out of memory or timed out)'
                 END,
    run_at = statement_timestamp() + make_interval(secs =>
        LEAST(__CAP__, __BASE__ * power(__FACTOR__, j.attempts)) * (1.0 - __JITTER__ * random()))
__BACKOFF_FROM__WHERE j.id = ANY(ARRAY(
    SELECT id FROM {schema}.jobs
    WHERE queue = %(queue)s AND NOT dead AND run_at <= now() __FILTER__
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.dead, j.last_error"""

_EXHAUSTED = "(j.max_attempts IS NOT NULL AND j.attempts >= j.max_attempts)"

# Where the backoff comes from. When every job type of the queue has the same backoff (one type
# per queue is the common case) it is four plain parameters. Otherwise %(backoff)s maps each
# type to its [base, factor, cap, jitter] as one JSON text built once per queue, which costs the
# client less than arrays; a type this worker does not know gets %(default_backoff)s (and is
# then failed with a clear error).
_SHARED_BACKOFF = {
    "__BASE__": "%(base)s::float8",
    "__FACTOR__": "%(factor)s::float8",
    "__CAP__": "%(cap)s::float8",
    "__JITTER__": "%(jitter)s::float8",
    "__BACKOFF_FROM__": "",
}
_BACKOFF_BY_TYPE = {
    "__BASE__": "(COALESCE(b.by_type -> j.job_type, b.fallback) ->> 0)::float8",
    "__FACTOR__": "(COALESCE(b.by_type -> j.job_type, b.fallback) ->> 1)::float8",
    "__CAP__": "(COALESCE(b.by_type -> j.job_type, b.fallback) ->> 2)::float8",
    "__JITTER__": "(COALESCE(b.by_type -> j.job_type, b.fallback) ->> 3)::float8",
    "__BACKOFF_FROM__": (
        "FROM (SELECT %(backoff)s::jsonb AS by_type, %(default_backoff)s::jsonb AS fallback) AS b\n"
    ),
}

# The end of a successful run and the claim of the next job in one statement, inside the run's
# transaction: its commit both deletes the finished jobs and counts the next job's attempt, which
# saves a statement and a commit per job. PostgreSQL always runs a data-modifying CTE, read or
# not. Every part of a statement shares one snapshot, so the claim's scan still sees the rows the
# DELETE removes; it leaves them out by id (PostgreSQL leaves undefined what a row locked and
# deleted twice in one statement does, even where it happens to skip it today).
_AFTER_DONE = {
    "__DONE__": "done AS (DELETE FROM {schema}.jobs WHERE id = ANY(%(done)s))",
    "__FILTER__": "AND id <> ALL(%(done)s)",
}
# The same after a run of one job, the common case, with a plain parameter.
_AFTER_ONE_DONE = {
    "__DONE__": "done AS (DELETE FROM {schema}.jobs WHERE id = %(done)s)",
    "__FILTER__": "AND id <> %(done)s",
}
_ANY_TYPE = {"__DONE__": "", "__FILTER__": ""}
_OF_TYPE = {"__DONE__": "", "__FILTER__": "AND job_type = %(job_type)s"}

# The claim after a run can also record what it took, as "id:attempts" pairs in the session
# setting jobs.claimed, so that LOCK_RECORDED can lock it in the same round trip, after COMMIT
# and BEGIN, before the client has seen a row. The setting is written even when nothing was
# claimed (as ''), so it never names an earlier claim's jobs. It leaves out jobs the claim found
# dead: those are not run. When nothing was claimed the statement returns one row of NULLs.
_RECORD_CLAIMED = """
WITH __DONE__,
claimed AS (__CLAIM__
),
recorded AS (
    SELECT set_config('jobs.claimed', COALESCE(
        (SELECT string_agg(id || ':' || attempts, ',') FROM claimed WHERE NOT dead), ''), false)
)
SELECT c.id, c.job_type, c.payload, c.attempts, c.max_attempts, c.dead, c.last_error
FROM recorded LEFT JOIN claimed AS c ON true"""


@cache
def claim(
    *,
    of_type: bool = False,
    after_done: Literal["one", "many"] | None = None,
    shared_backoff: bool,
    record: bool = False,
) -> str:
    """The claim statement: of any job of the queue, of one type (a batch's followers), or of
    any job in the same statement that deletes the finished ones (see _AFTER_DONE): %(done)s
    is one id after ``"one"``, an array of them after ``"many"``. ``record`` (only after a run)
    notes the claimed jobs for LOCK_RECORDED (see _RECORD_CLAIMED)."""
    statement = _CLAIM_TEMPLATE.replace("__EXHAUSTED__", _EXHAUSTED)
    if after_done is not None:
        kind = _AFTER_ONE_DONE if after_done == "one" else _AFTER_DONE
        wrapper = _RECORD_CLAIMED if record else "\nWITH __DONE____CLAIM__"
        statement = wrapper.replace("__CLAIM__", statement)
    elif record:
        raise ValueError("only the claim after a run records what it claimed")
    else:
        kind = _OF_TYPE if of_type else _ANY_TYPE
    for marker, text in [
        *kind.items(),
        *(_SHARED_BACKOFF if shared_backoff else _BACKOFF_BY_TYPE).items(),
    ]:
        statement = statement.replace(marker, text)
    return statement


# The run's transaction is opened by hand (the control connection is in autocommit mode) so that
# BEGIN travels with the lock, and COMMIT with the run's last statement, in one round trip each.
BEGIN = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

# Taken in the run's transaction and held until it ends: the row lock is what "running" means.
# The attempts check makes it a compare-and-swap against the claim: if another worker claimed the
# row again in between (only possible once the claim's backoff has passed), this runner drops it.
LOCK_CLAIMED = """
SELECT j.id FROM {schema}.jobs AS j
JOIN unnest(%(ids)b::bigint[], %(attempts)b::integer[]) AS c(id, attempts)
  ON j.id = c.id AND j.attempts = c.attempts
FOR UPDATE OF j SKIP LOCKED"""

# The same for one job, the common case, with plain parameters.
LOCK_ONE = """
SELECT id FROM {schema}.jobs WHERE id = %(id)s AND attempts = %(attempts)s
FOR UPDATE SKIP LOCKED"""

# The same for the jobs that the claim after the previous run recorded (see _RECORD_CLAIMED),
# sent with that claim's COMMIT and a BEGIN: the next run's lock costs no round trip of its own.
LOCK_RECORDED = """
SELECT j.id FROM {schema}.jobs AS j
JOIN (
    SELECT split_part(pair, ':', 1)::bigint AS id, split_part(pair, ':', 2)::integer AS attempts
    FROM unnest(string_to_array(current_setting('jobs.claimed', true), ',')) AS pair
) AS c ON j.id = c.id AND j.attempts = c.attempts
FOR UPDATE OF j SKIP LOCKED"""

# Undoes a claim whose job will not run after all (the worker is stopping): the attempt did not
# happen. The compare on pid and attempts leaves alone a row that is no longer this claim's.
RELEASE_CLAIMED = """
UPDATE {schema}.jobs AS j SET attempts = j.attempts - 1, worker_pid = NULL, run_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS c(id, attempts)
WHERE j.id = c.id AND j.attempts = c.attempts AND j.worker_pid = pg_backend_pid()"""

DELETE_JOBS = "DELETE FROM {schema}.jobs WHERE id = ANY(%(ids)s)"

# Written in the run's transaction, so the row is never unlocked before its failure is recorded.
# Each job has its own error and delay: the jobs of a batch can fail apart (see JobFunction).
FAIL_JOBS = """
UPDATE {schema}.jobs AS j SET
    last_error = f.error,
    worker_pid = NULL,
    run_at = statement_timestamp() + make_interval(secs => f.delay),
    dead = j.dead OR (j.max_attempts IS NOT NULL AND j.attempts >= j.max_attempts)
FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(delays)s::float8[]) AS f(id, error, delay)
WHERE j.id = f.id"""

NEXT_RUN_AT = """
SELECT EXTRACT(EPOCH FROM (min(run_at) - now()))::float8 FROM {schema}.jobs
WHERE queue = %(queue)s AND NOT dead"""

LISTEN = "LISTEN {channel}"

# --- periodic jobs (the periodic table, sql/0004_periodic.sql) ---------------------------------

# A worker enqueues the latest started period of each periodic type of its queue: the type's
# mark moves forward to the period, and only the statement that moved it inserts the job, so two
# workers, or one that restarted, never enqueue a period twice. The database's clock decides:
# a period is enqueued only while it is the current one by now() (period_start <= now() <
# period_end), so a worker whose own clock is off is refused rather than trusted, and learns the
# database's time from the first column. A period found more than its grace late is skipped,
# and the mark stays where it was. The marks are taken in job type order, the same in every
# worker. The payload's timestamps are spelled in SQL, so that the start of the previous period,
# which only the updated mark knows, reads like the others.
_UTC_SECOND = """to_char(__T__ AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

ENQUEUE_PERIODS = (
    """
WITH due AS (
    SELECT d.* FROM unnest(
        %(job_type)s::text[], %(queue)s::text[], %(period_start)s::timestamptz[],
        %(period_end)s::timestamptz[], %(grace)s::float8[], %(priority)s::smallint[],
        %(max_attempts)s::integer[]
    ) AS d(job_type, queue, period_start, period_end, grace, priority, max_attempts)
    WHERE d.period_start <= now() AND (d.period_end IS NULL OR now() < d.period_end)
      AND (d.grace IS NULL OR now() <= d.period_start + make_interval(secs => d.grace))
), marked AS (
    INSERT INTO {schema}.periodic AS p (job_type, period_start)
    SELECT job_type, period_start FROM due ORDER BY job_type
    ON CONFLICT (job_type) DO UPDATE
        SET period_start = EXCLUDED.period_start, previous_start = p.period_start,
            enqueued_at = now()
        WHERE p.period_start < EXCLUDED.period_start
    RETURNING p.job_type, p.previous_start
), enqueued AS (
    INSERT INTO {schema}.jobs (queue, job_type, payload, priority, max_attempts)
    SELECT d.queue, d.job_type,
           jsonb_build_object(
               'period_start', """
    + _UTC_SECOND.replace("__T__", "d.period_start")
    + """,
               'period_end', """
    + _UTC_SECOND.replace("__T__", "d.period_end")
    + """,
               'previous_start', """
    + _UTC_SECOND.replace("__T__", "m.previous_start")
    + """),
           d.priority, d.max_attempts
    FROM marked AS m JOIN due AS d USING (job_type)
    RETURNING id, job_type, payload, queue, true AS inserted
)"""
    + _WOKEN_ITS_QUEUES
    + """
SELECT EXTRACT(EPOCH FROM now())::float8, e.id, e.job_type, e.payload
FROM (VALUES (1)) AS one LEFT JOIN enqueued AS e ON true, woken"""
)

# The mark is what keeps a period from running twice: its commit waits for the WAL flush even
# on the control connection (see CONTROL_SESSION_SETUP), so that a PostgreSQL crash cannot
# forget an enqueued period. It costs one flush per period, not per job.
DURABLE_COMMIT = "SET LOCAL synchronous_commit = on"

LIST_PERIODS = """
SELECT job_type, period_start, previous_start, enqueued_at FROM {schema}.periodic
ORDER BY job_type"""

# --- waiting workers (the listeners table, sql/0003_listeners.sql) -----------------------------

# A worker that found nothing to claim notes that it waits, by its control connection's backend
# pid, so that an enqueue notifies its queue; it deletes the row when a claim finds work
# again and when it exits. ON CONFLICT: a worker whose delete was lost with its transaction.
START_WAITING = """
INSERT INTO {schema}.listeners (queue, pid) VALUES (%(queue)s, pg_backend_pid())
ON CONFLICT DO NOTHING"""

STOP_WAITING = "DELETE FROM {schema}.listeners WHERE queue = %(queue)s AND pid = pg_backend_pid()"

# The rows of backends that are gone (killed workers, lost connections), removed by a worker when
# it connects. Until then such a row only costs an enqueue of its queue a needless NOTIFY.
REMOVE_GONE_LISTENERS = """
DELETE FROM {schema}.listeners AS l
WHERE NOT EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = l.pid)"""

# The run's transaction sits idle, holding the row lock, for as long as the job runs; a server-wide
# timeout meant for forgotten sessions must not end it.
SESSION_SETUP = "SET idle_in_transaction_session_timeout = 0"

# The control connection's bookkeeping (claims, deletes, failures) commits without waiting for
# the WAL flush, and its few statements run generic plans (docs/architecture.md, "bookkeeping
# commits without waiting for the WAL flush").
CONTROL_SESSION_SETUP = "SET synchronous_commit = off; SET plan_cache_mode = force_generic_plan"

# Released with the session: a worker that stops closes its control connection.
TRY_CONSUMER_LOCK = "SELECT pg_try_advisory_lock(%s)"

# --- admin ------------------------------------------------------------------------------------

# "running" is a claimed row whose worker's backend is still connected; the pid alone would do
# for a live worker, and pg_stat_activity tells a dead one from a live one without taking locks.
_STATE = """
CASE WHEN j.dead THEN 'dead'
     WHEN j.worker_pid IS NOT NULL AND EXISTS (
         SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = j.worker_pid) THEN 'running'
     WHEN j.run_at <= now() THEN 'ready'
     WHEN j.attempts = 0 THEN 'scheduled'
     ELSE 'failing'
END"""

# The payloads of a type's jobs that will still run (every state but dead), in id order: what
# an application asks when it must tell work in flight from work that will never happen.
LIVE_PAYLOADS = """
SELECT payload FROM {schema}.jobs WHERE job_type = %(job_type)s AND NOT dead ORDER BY id"""

LIST_JOBS = (
    """
SELECT * FROM (
    SELECT j.id, j.queue, j.job_type, j.payload, j.priority, j.attempts, j.max_attempts,
           j.run_at, j.created_at, j.last_attempt_at, j.last_error, """
    + _STATE
    + """ AS state
    FROM {schema}.jobs AS j
    WHERE (%(queue)s::text IS NULL OR j.queue = %(queue)s)
      AND (%(job_type)s::text IS NULL OR j.job_type = %(job_type)s)
) AS listed
WHERE %(state)s::text IS NULL OR listed.state = %(state)s
ORDER BY id
LIMIT %(limit)s"""
)

# A retried dead job starts over with a full set of attempts. If an identical job is already
# waiting (dedup), the dead one is absorbed by it: deleted instead of revived.
RETRY_JOBS = """
WITH target AS (
    SELECT j.id,
           j.dedup_key IS NOT NULL AND EXISTS (
               SELECT 1 FROM {schema}.jobs AS w
               WHERE w.job_type = j.job_type AND w.dedup_key = j.dedup_key AND w.attempts = 0
           ) AS absorbed
    FROM {schema}.jobs AS j
    WHERE (j.id = ANY(%(ids)s) OR (%(all_dead)s AND j.dead))
      AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
    FOR UPDATE OF j SKIP LOCKED
), revived AS (
    UPDATE {schema}.jobs AS j SET dead = false, attempts = 0, run_at = now(), worker_pid = NULL
    FROM target WHERE j.id = target.id AND NOT target.absorbed
    RETURNING j.id, j.queue
), absorbed AS (
    DELETE FROM {schema}.jobs AS j USING target WHERE j.id = target.id AND target.absorbed
    RETURNING j.id
), woken AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM revived) AS q
)
SELECT (SELECT count(*) FROM revived) + (SELECT count(*) FROM absorbed),
       (SELECT count(*) FROM woken)"""

# Deleting a running job would let it finish with nothing to delete and lose its failure, so the
# admin delete skips locked rows and says how many it removed.
DELETE_BY_ID = """
DELETE FROM {schema}.jobs WHERE id IN (
    SELECT id FROM {schema}.jobs WHERE id = ANY(%(ids)s) FOR UPDATE SKIP LOCKED
)"""

PURGE_DEAD = """
DELETE FROM {schema}.jobs
WHERE dead
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(older_than)s::float8 IS NULL
       OR last_attempt_at < now() - make_interval(secs => %(older_than)s))"""


# --- health (monitoring: indexpub check) -------------------------------------------------------

# Every queue's alerting facts in one scan of the table, which holds only unfinished jobs (a
# finished job is deleted), so in a healthy queue it reads next to nothing: how many jobs are
# ready and how long ago the oldest of them was enqueued (as crates.io's monitor measures a
# backlog: a running job is not waiting), how many are running, failing and dead, and the live
# job tried most often without succeeding, with its last error. "running" as in _STATE.
QUEUE_HEALTH = (
    """
WITH states AS (
    SELECT j.id, j.queue, j.job_type, j.created_at, j.attempts, j.dead, j.last_error, """
    + _STATE
    + """ AS state
    FROM {schema}.jobs AS j
), worst AS (
    SELECT DISTINCT ON (queue) queue, id, job_type, attempts, last_error
    FROM states
    WHERE NOT dead AND last_error IS NOT NULL
    ORDER BY queue, attempts DESC, id
)
SELECT s.queue,
       count(*) FILTER (WHERE s.state = 'ready'),
       EXTRACT(EPOCH FROM now() - min(s.created_at) FILTER (WHERE s.state = 'ready'))::float8,
       count(*) FILTER (WHERE s.state = 'running'),
       count(*) FILTER (WHERE s.state = 'failing'),
       count(*) FILTER (WHERE s.state = 'dead'),
       w.id, w.job_type, w.attempts, w.last_error
FROM states AS s LEFT JOIN worst AS w ON w.queue = s.queue
GROUP BY s.queue, w.id, w.job_type, w.attempts, w.last_error
ORDER BY s.queue"""
)


# --- metrics (jobs.metrics) ------------------------------------------------------------------

# What a Prometheus scrape reports, in one scan of the table (unfinished jobs only): the jobs of
# each queue, type and state ("running" as in _STATE), with the age of the oldest ready one
# (since it was enqueued, as QUEUE_HEALTH measures a backlog). A state with no job has no row.
STATE_COUNTS = (
    """
SELECT s.queue, s.job_type, s.state, count(*),
       EXTRACT(EPOCH FROM now() - min(s.created_at) FILTER (WHERE s.state = 'ready'))::float8
FROM (
    SELECT j.queue, j.job_type, j.created_at, """
    + _STATE
    + """ AS state
    FROM {schema}.jobs AS j
) AS s
GROUP BY 1, 2, 3"""
)

# A scrape must answer even when the server is stuck: its statements give up after 5 s.
METRICS_SESSION_SETUP = "SET statement_timeout = 5000"

# The sessions holding consumer locks, by key (a key nobody holds has no row). PostgreSQL shows
# a bigint advisory key as its high half in classid and its low half in objid, with objsubid 1.
CONSUMER_HOLDERS = """
SELECT k.key, a.pid, a.application_name, host(a.client_addr), a.backend_start
FROM unnest(%(keys)s::bigint[]) AS k(key)
JOIN pg_locks AS l
  ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND (l.classid::bigint << 32) | l.objid::bigint = k.key
JOIN pg_stat_activity AS a ON a.pid = l.pid"""


def _schema_fields(schema: str) -> dict[str, sql.Composable]:
    """What every template may name of its schema."""
    return {
        "schema": sql.Identifier(schema),
        # The NOTIFY channel as the enqueue statements name it (see _WAKE_ONE_QUEUE).
        "channel_text": sql.Literal(channel_name(schema)),
    }


@cache
def compose(template: str, schema: str, channel: str | None = None) -> sql.Composed:
    """The statement for one schema; cached because a worker runs the same few all day."""
    fields = _schema_fields(schema)
    if channel is not None:
        fields["channel"] = sql.Identifier(channel)
    return sql.SQL(template).format(**fields)


@cache
def compiled(template: str, schema: str) -> bytes:
    """The statement as the bytes psycopg sends: built once, not on every execute."""
    return compose(template, schema).as_bytes(None)


def _constant(value: str | int | None) -> sql.Composable:
    """A value as a quoted literal in a statement that is executed with parameters: psycopg reads
    every '%' of such a statement's text as a placeholder's start, so the literal's are doubled
    (a type named '50%' would otherwise fail every enqueue, or bind the wrong value)."""
    return sql.SQL(sql.Literal(value).as_string(None).replace("%", "%%"))


@cache
def enqueue_one_statement(schema: str, dedup: bool, constants: TypeConstants | None) -> bytes:
    """ENQUEUE_ONE for one schema, with a job type's constants as literals (and run_at now()),
    or, for a job that overrides its priority or has a delay, all of them parameters."""
    fields: dict[str, sql.Composable]
    if constants is None:
        names = ("queue", "job_type", "priority", "max_attempts")
        fields = {name: sql.Placeholder(name) for name in names}
        fields["run_at"] = sql.SQL("now() + make_interval(secs => {})").format(
            sql.Placeholder("delay")
        )
    else:
        queue, job_type, priority, max_attempts = constants
        fields = {
            "queue": _constant(queue),
            "job_type": _constant(job_type),
            "priority": _constant(priority),
            "max_attempts": _constant(max_attempts),
            "run_at": sql.SQL("now()"),
        }
    fields["dedup_key"] = sql.Placeholder("dedup_key") if dedup else sql.SQL("NULL")
    template = ENQUEUE_ONE_DEDUP if dedup else ENQUEUE_ONE
    return sql.SQL(template).format(**_schema_fields(schema), **fields).as_bytes(None)


def channel_name(schema: str) -> str:
    """The NOTIFY channel of a queue schema, as the enqueue statements name it."""
    return f"jobs.{schema}"
