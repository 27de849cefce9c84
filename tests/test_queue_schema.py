"""The schema: migrations, and the claim query's plan on a large backlog."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import psycopg
import pytest
from support.jobapp import app

from jobs import migrations, queries

CATALOG = """
SELECT 'column', c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || ' null=' || (NOT a.attnotnull)::text || ' default=' || coalesce(pg_get_expr(d.adbin,
       d.adrelid), '') || ' identity=' || a.attidentity::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'jobs' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
UNION ALL
SELECT 'table', c.relname || ' persistence=' || c.relpersistence::text FROM pg_class c
WHERE c.relnamespace = 'jobs'::regnamespace AND c.relkind = 'r'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'jobs'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'jobs'::regnamespace
UNION ALL
SELECT 'trigger', pg_get_triggerdef(t.oid) FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'jobs'::regnamespace
  AND NOT t.tgisinternal
UNION ALL
SELECT 'function', p.proname || ' ' || p.prosrc FROM pg_proc p
WHERE p.pronamespace = 'jobs'::regnamespace
ORDER BY 1, 2"""


def catalog(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(str(k), str(v)) for k, v in conn.execute(CATALOG).fetchall()]


def test_step_by_step_migration_equals_fresh_install(pg_server: Any) -> None:
    from support import pg

    versions = [m.version for m in migrations.load_migrations("jobs")]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2
    with pg.fresh_database(pg_server[0]) as fresh, pg.fresh_database(pg_server[0]) as stepped:
        with psycopg.connect(fresh) as conn:
            assert app.migrate(conn) == versions
        with psycopg.connect(stepped) as conn:
            for version in versions:
                assert app.migrate(conn, target=version) == [version]
            assert app.migrate(conn) == []
        assert catalog(fresh) == catalog(stepped)
        assert len(catalog(fresh)) > 15


def test_concurrent_migrations_apply_each_version_once(database_url: str) -> None:
    errors: list[BaseException] = []
    applied: list[list[int]] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url) as conn:
                applied.append(app.migrate(conn))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = [m.version for m in migrations.load_migrations("jobs")]
    assert sorted(len(a) for a in applied) == [0, 0, 0, len(versions)]
    with psycopg.connect(database_url) as conn:
        assert migrations.applied_versions(conn, "jobs") == versions


def test_the_listeners_migration_keeps_the_jobs_and_notifies_only_waiting_queues(
    database_url: str,
) -> None:
    """0003 on a database that has jobs: they stay, the listeners table is unlogged, and the
    trigger that used to notify every insert now notifies a queue only while it has a listener
    row."""
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        psycopg.connect(database_url, autocommit=True) as ears,
    ):
        ears.execute('LISTEN "jobs.jobs"')
        assert app.migrate(conn, target=2) == [1, 2]
        insert = "INSERT INTO jobs.jobs (queue, job_type, payload) VALUES (%s, 'noop', '{}')"
        conn.execute(insert, ("default",))
        assert [n.payload for n in ears.notifies(timeout=0.3)] == ["default"]
        assert app.migrate(conn, target=3) == [3]
        assert conn.execute("SELECT count(*) FROM jobs.jobs").fetchone() == (1,)
        persistence = "SELECT relpersistence FROM pg_class WHERE oid = 'jobs.listeners'::regclass"
        assert conn.execute(persistence).fetchone() == ("u",)
        conn.execute(insert, ("default",))
        assert list(ears.notifies(timeout=0.3)) == []
        conn.execute("INSERT INTO jobs.listeners VALUES ('default', pg_backend_pid())")
        conn.execute(insert, ("other",))
        conn.execute(insert, ("default",))
        assert [n.payload for n in ears.notifies(timeout=0.3)] == ["default"]


def test_the_notify_in_enqueue_migration_drops_the_trigger(database_url: str) -> None:
    """0005: the insert trigger is gone, so a row that other SQL inserts notifies nobody even
    while a worker waits; the enqueue statements notify in its place."""
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        psycopg.connect(database_url, autocommit=True) as ears,
    ):
        ears.execute('LISTEN "jobs.jobs"')
        assert app.migrate(conn, target=4) == [1, 2, 3, 4]
        conn.execute("INSERT INTO jobs.listeners VALUES ('default', pg_backend_pid())")
        insert = "INSERT INTO jobs.jobs (queue, job_type, payload) VALUES ('default', 'noop', '{}')"
        conn.execute(insert)
        assert [n.payload for n in ears.notifies(timeout=0.3)] == ["default"]
        assert app.migrate(conn, target=5) == [5]
        assert conn.execute("SELECT count(*) FROM jobs.jobs").fetchone() == (1,)
        triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'jobs.jobs'::regclass"
        assert conn.execute(triggers + " AND NOT tgisinternal").fetchone() == (0,)
        conn.execute(insert)
        assert list(ears.notifies(timeout=0.3)) == []
        app.enqueue(conn, app.registry["noop"].job({}))
        assert [n.payload for n in ears.notifies(timeout=0.3)] == ["default"]


def test_unknown_recorded_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
        conn.execute("INSERT INTO jobs.schema_migrations (version, name) VALUES (99, 'future')")
        conn.commit()
        with pytest.raises(migrations.MigrationError, match="0099_future"):
            app.migrate(conn)


def _numbered(conn: psycopg.Connection[Any], template: str) -> tuple[str, list[str]]:
    """The statement with $1, $2... in place of its named parameters, and their names in order:
    the form PREPARE takes, so that the plan is the generic one a worker runs."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = queries.compose(template, "jobs").as_string(conn)
    return re.sub(r"%\((\w+)\)[sb]", number, text), names


def _generic_plan(
    conn: psycopg.Connection[Any], template: str, params: dict[str, Any], *, analyze: bool = False
) -> Any:
    """The plan a worker's control connection runs (plan_cache_mode = force_generic_plan, see
    queries.CONTROL_SESSION_SETUP): planned once, without the parameters' values."""
    text, names = _numbered(conn, template)
    conn.execute("DEALLOCATE ALL")
    conn.execute(queries.CONTROL_SESSION_SETUP)
    conn.execute(f"PREPARE planned AS {text}")  # type: ignore[arg-type]
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    values = f"({', '.join(['%s'] * len(names))})" if names else ""
    explain = f"EXPLAIN ({options}) EXECUTE planned{values}"
    # EXECUTE takes no bound parameters: the client writes the values in.
    cursor = psycopg.ClientCursor(conn)
    row = cursor.execute(explain, [params[n] for n in names]).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0][0]["Plan"]


BACKLOGS = {
    # 100,000 ready jobs of other queues and types, 50,000 dead ones of our own queue, and ours.
    "mixed": [
        "INSERT INTO jobs.jobs (queue, job_type, payload)"
        " SELECT 'q' || (i % 7), 't' || (i % 13), '{}' FROM generate_series(1, 100000) i",
        "INSERT INTO jobs.jobs (queue, job_type, payload, dead)"
        " SELECT 'default', 'noop', '{}', true FROM generate_series(1, 50000)",
        "INSERT INTO jobs.jobs (queue, job_type, payload)"
        " SELECT 'default', 'noop', '{}' FROM generate_series(1, 20000)",
    ],
    # One queue's backlog and nothing else: there a generic plan's guess of the LIMIT (a tenth
    # of the queue) made a hash join over a scan of the table look cheaper than the index.
    "one queue": [
        "INSERT INTO jobs.jobs (queue, job_type, payload)"
        " SELECT 'default', 'noop', '{}' FROM generate_series(1, 8000)",
    ],
}


@pytest.mark.parametrize("backlog", sorted(BACKLOGS))
def test_the_worker_statements_use_indexes_not_a_scan_of_the_backlog(
    database_url: str, backlog: str
) -> None:
    """Every statement a worker runs per job reads through an index, whatever the backlog, in
    the generic plans the worker uses."""
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
        for statement in BACKLOGS[backlog]:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("ANALYZE jobs.jobs")
        conn.commit()  # the statistics too: each plan below is rolled back
        params: dict[str, Any] = {
            "queue": "default",
            "limit": 1,
            "job_type": "noop",
            "backoff": json.dumps({"noop": [1.0, 2.0, 10.0, 0.5]}),
            "default_backoff": json.dumps([1.0, 2.0, 600.0, 0.5]),
            "base": 1.0,
            "factor": 2.0,
            "cap": 10.0,
            "jitter": 0.5,
            "done": [0],
            "id": 1,
            "ids": [1],
            "attempts": 0,
            "errors": ["e"],
            "delays": [1.0],
        }
        statements = [
            (queries.LOCK_ONE, "jobs_pkey"),
            (queries.LOCK_CLAIMED, "jobs_pkey"),
            (queries.LOCK_RECORDED, "jobs_pkey"),
            (queries.RELEASE_CLAIMED, "jobs_pkey"),
            (queries.DELETE_JOBS, "jobs_pkey"),
            (queries.FAIL_JOBS, "jobs_pkey"),
        ]
        for shared in (True, False):
            statements += [
                (queries.claim(shared_backoff=shared), "jobs_claim_idx"),
                (queries.claim(of_type=True, shared_backoff=shared), "jobs_claim_type_idx"),
                (queries.claim(after_done="one", shared_backoff=shared), "jobs_claim_idx"),
                (queries.claim(after_done="many", shared_backoff=shared), "jobs_claim_idx"),
                (
                    queries.claim(after_done="one", shared_backoff=shared, record=True),
                    "jobs_claim_idx",
                ),
            ]
        for template, index in statements:
            params["attempts"] = [0] if "unnest" in template else 0
            params["done"] = [0] if "ANY(%(done)s)" in template else 0
            plan = json.dumps(_generic_plan(conn, template, params))
            assert index in plan, (template, plan)
            assert '"Seq Scan"' not in plan, (template, plan)
            conn.rollback()
        # And a claim really reads only what it claims: a handful of buffers, not the backlog.
        for template in (
            queries.claim(shared_backoff=True),
            queries.claim(after_done="many", shared_backoff=True),
            queries.claim(after_done="one", shared_backoff=True, record=True),
        ):
            params["done"] = [0] if "ANY(%(done)s)" in template else 0
            top = _generic_plan(conn, template, params, analyze=True)
            conn.rollback()  # EXPLAIN ANALYZE ran the claim: undo it
            assert top["Shared Hit Blocks"] + top.get("Shared Read Blocks", 0) < 200, top
