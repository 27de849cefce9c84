"""The schema: migrations, and the claim query's plan on a large backlog."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from jobapp import app

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
    import pg

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
    assert sorted(len(a) for a in applied) == [0, 0, 0, 2]
    with psycopg.connect(database_url) as conn:
        assert migrations.applied_versions(conn, "jobs") == [1, 2]


def test_unknown_recorded_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
        conn.execute("INSERT INTO jobs.schema_migrations (version, name) VALUES (99, 'future')")
        conn.commit()
        with pytest.raises(migrations.MigrationError, match="0099_future"):
            app.migrate(conn)


def _plan(conn: psycopg.Connection[Any], template: str, params: dict[str, Any]) -> str:
    statement = queries.compose(template, "jobs")
    rows = conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + statement, params).fetchone()
    assert rows is not None
    return json.dumps(rows[0])


def test_claim_uses_the_index_not_a_scan_of_the_backlog(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
        # 100,000 ready jobs of other queues and types, 50,000 dead ones of our own queue.
        conn.execute(
            "INSERT INTO jobs.jobs (queue, job_type, payload)"
            " SELECT 'q' || (i % 7), 't' || (i % 13), '{}' FROM generate_series(1, 100000) i"
        )
        conn.execute(
            "INSERT INTO jobs.jobs (queue, job_type, payload, dead)"
            " SELECT 'default', 'noop', '{}', true FROM generate_series(1, 50000)"
        )
        conn.execute(
            "INSERT INTO jobs.jobs (queue, job_type, payload)"
            " SELECT 'default', 'noop', '{}' FROM generate_series(1, 10)"
        )
        conn.commit()
        conn.execute("ANALYZE jobs.jobs")
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
        }
        for shared in (True, False):
            for template, index in (
                (queries.claim(shared_backoff=shared), "jobs_claim_idx"),
                (queries.claim(of_type=True, shared_backoff=shared), "jobs_claim_type_idx"),
                (queries.claim(after_done=True, shared_backoff=shared), "jobs_claim_idx"),
            ):
                plan = _plan(conn, template, params)
                assert index in plan, plan
                assert '"Seq Scan"' not in plan, plan
        # And it really reads only what it claims: a handful of buffers, not the backlog.
        row = conn.execute(
            psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ")
            + queries.compose(queries.claim(shared_backoff=True), "jobs"),
            params,
        ).fetchone()
        conn.rollback()  # EXPLAIN ANALYZE ran the claim: undo it
        assert row is not None
        top = row[0][0]["Plan"]
        assert top["Shared Hit Blocks"] + top.get("Shared Read Blocks", 0) < 200, top
