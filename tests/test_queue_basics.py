"""Enqueue, claim, success, failure, retry, dead jobs, dedup: the queue's bookkeeping."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from support.jobapp import app
from support.queue_helpers import enqueue, scalar, wait_for

from jobs import App, Worker


def run_until_idle(url: str, queue: str = "default") -> Worker:
    worker = app.worker(url, queue, drain=True)
    worker.run()
    return worker


def job_row(url: str, job_id: int) -> dict[str, Any] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM jobs.jobs WHERE id = %s", (job_id,))
        row = cur.fetchone()
        if row is None:
            return None
        assert cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def test_success_deletes_the_row(queue_url: str) -> None:
    job_id = enqueue(queue_url, "noop", {"x": 1})
    worker = run_until_idle(queue_url)
    assert worker.jobs_run == 1
    assert job_row(queue_url, job_id) is None


def test_enqueue_in_rolled_back_transaction_leaves_nothing(queue_url: str) -> None:
    with psycopg.connect(queue_url) as conn:
        app.enqueue(conn, app.registry["noop"].job({}))
        conn.rollback()
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0


def test_enqueue_does_not_commit(queue_url: str) -> None:
    with psycopg.connect(queue_url) as conn:
        app.enqueue(conn, app.registry["noop"].job({}))
        assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0
        conn.commit()
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 1


def test_raising_job_counts_attempt_stores_error_and_backs_off(queue_url: str) -> None:
    job_id = enqueue(queue_url, "fail", {"n": 1})
    before = time.time()
    run_until_idle(queue_url)
    row = job_row(queue_url, job_id)
    assert row is not None
    assert row["attempts"] == 1
    assert not row["dead"]
    assert "RuntimeError: boom 1" in row["last_error"]
    assert "Traceback" in row["last_error"]
    assert row["worker_pid"] is None
    # FAST backoff: 0.2 s after the first attempt, no jitter.
    delay = row["run_at"].timestamp() - before
    assert 0.15 < delay < 1.0, delay
    # Not ready yet: a drain finds nothing to do.
    assert run_until_idle(queue_url).jobs_run == 0


def test_max_attempts_then_dead_then_retry_revives(queue_url: str) -> None:
    job_id = enqueue(queue_url, "fail", {"n": 2})
    for attempt in (1, 2, 3):
        wait_for(
            lambda: scalar(
                queue_url, "SELECT run_at <= now() FROM jobs.jobs WHERE id = %s", (job_id,)
            ),
            timeout=5,
        )
        run_until_idle(queue_url)
        assert job_row(queue_url, job_id)["attempts"] == attempt  # type: ignore[index]
    row = job_row(queue_url, job_id)
    assert row is not None and row["dead"]
    time.sleep(0.6)
    assert run_until_idle(queue_url).jobs_run == 0  # dead jobs are never claimed
    with psycopg.connect(queue_url, autocommit=True) as conn:
        assert app.store.retry(conn, [job_id]) == 1
    row = job_row(queue_url, job_id)
    assert row is not None and not row["dead"] and row["attempts"] == 0
    assert run_until_idle(queue_url).jobs_run == 1


def test_a_row_written_by_other_sql_with_max_attempts_below_one_is_dead_and_not_run(
    queue_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No CHECK constraint guards max_attempts (sql/0006: it cost every enqueue its parse and
    plan); a registered type refuses such a value, and the claim marks a row that other SQL
    wrote with one dead without running it, saying why."""
    with psycopg.connect(queue_url, autocommit=True) as conn:
        ids = [
            conn.execute(
                "INSERT INTO jobs.jobs (queue, job_type, payload, max_attempts)"
                " VALUES ('default', 'record', %s, %s) RETURNING id",
                (Jsonb({"key": key}), max_attempts),
            ).fetchone()[0]  # type: ignore[index]
            for key, max_attempts in (("zero", 0), ("minus", -3), ("one", 1))
        ]
    with caplog.at_level("ERROR", logger="jobs"):
        worker = run_until_idle(queue_url)
    assert worker.jobs_run == 1
    assert scalar(queue_url, "SELECT array_agg(job_key) FROM public.runs") == ["one"]
    assert job_row(queue_url, ids[2]) is None  # run and done
    for job_id, value in zip(ids[:2], (0, -3), strict=True):
        row = job_row(queue_url, job_id)
        assert row is not None and row["dead"] and row["attempts"] == 0, row
        assert row["last_error"] == (
            f"not run: max_attempts is {value} (at least 1, or NULL for no limit)"
        )
    assert "max_attempts is -3" in caplog.text
    with pytest.raises(ValueError, match="max_attempts must be at least 1 or None"):
        App(schema="other").declare("bad", max_attempts=0)


def test_dedup_absorbs_only_unstarted_duplicates(queue_url: str) -> None:
    with psycopg.connect(queue_url) as conn:
        first = app.enqueue(conn, app.registry["dedup"].job({"a": 1, "b": 2}))
        second = app.enqueue(conn, app.registry["dedup"].job({"b": 2, "a": 1}))
        other = app.enqueue(conn, app.registry["dedup"].job({"a": 2}))
    assert first.inserted and not second.inserted and second.id == first.id
    assert other.inserted
    # Start the first job (claim it) and enqueue the same payload again: not absorbed.
    with psycopg.connect(queue_url, autocommit=True) as control:
        claimed = app.store.claim(control, "default")
        assert [j.id for j in claimed] == [first.id]
        with psycopg.connect(queue_url) as conn:
            third = app.enqueue(conn, app.registry["dedup"].job({"a": 1, "b": 2}))
        assert third.inserted and third.id != first.id


def test_absorbing_enqueue_keeps_the_twin_unclaimable_until_commit(queue_url: str) -> None:
    """A worker must not run the absorbing job before the enqueuer's data is committed."""
    with psycopg.connect(queue_url) as conn:
        app.enqueue(conn, app.registry["dedup"].job({"k": 1}))
    enqueuer = psycopg.connect(queue_url)
    try:
        result = app.enqueue(enqueuer, app.registry["dedup"].job({"k": 1}))
        assert not result.inserted
        with psycopg.connect(queue_url, autocommit=True) as control:
            assert app.store.claim(control, "default") == []
            enqueuer.commit()
            assert len(app.store.claim(control, "default")) == 1
    finally:
        enqueuer.close()


def test_enqueue_many_folds_duplicates_and_notifies_once(queue_url: str) -> None:
    with psycopg.connect(queue_url, autocommit=True) as listener:
        listener.execute('LISTEN "jobs.jobs"')
        # As a waiting worker of the queue does (see JobStore.start_waiting).
        app.store.start_waiting(listener, "default")
        with psycopg.connect(queue_url) as conn:
            results = app.enqueue_many(
                conn,
                [app.registry["noop"].job({"i": i}) for i in range(500)]
                + [app.registry["dedup"].job({"same": True}) for _ in range(3)],
            )
        notes = list(listener.notifies(timeout=0.5))
    assert len(results) == 503
    assert len({r.id for r in results}) == 501
    assert [n.payload for n in notes] == ["default"]
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 501


def test_unknown_type_and_bad_payload_fail_the_job_not_the_worker(queue_url: str) -> None:
    with psycopg.connect(queue_url) as conn:
        conn.execute(
            "INSERT INTO jobs.jobs (queue, job_type, payload) VALUES ('default', 'nope', '{}')"
        )
    bad = enqueue(queue_url, "strict", [1, 2])
    good = enqueue(queue_url, "noop", {})
    run_until_idle(queue_url)
    assert job_row(queue_url, good) is None
    bad_row = job_row(queue_url, bad)
    assert bad_row is not None and bad_row["dead"]
    assert "cannot decode the payload of a 'strict' job" in bad_row["last_error"]
    assert "needs an object with a 'key'" in bad_row["last_error"]
    unknown = scalar(queue_url, "SELECT last_error FROM jobs.jobs WHERE job_type = 'nope'")
    assert unknown.startswith("unknown job type 'nope'")


def test_running_job_is_invisible_and_failure_is_written_before_unlock(queue_url: str) -> None:
    """A blocking FOR UPDATE (no SKIP LOCKED) waits for the run and sees its written failure."""
    release = threading.Event()
    started = threading.Event()

    def slow_fail(ctx: Any, payload: Any) -> None:
        started.set()
        release.wait(10)
        raise RuntimeError("late failure")

    local = app.registry["fail_later"]
    job_id = enqueue(queue_url, "fail_later", {})
    worker = app.worker(queue_url, "default", drain=True)
    original = local.func
    object.__setattr__(local, "func", slow_fail)
    try:
        thread = threading.Thread(target=worker.run)
        thread.start()
        assert started.wait(10)
        with psycopg.connect(queue_url, autocommit=True) as other:
            assert app.store.claim(other, "default") == []  # invisible to other workers
            seen: list[Any] = []

            def blocking_read() -> None:
                with psycopg.connect(queue_url) as conn:
                    seen.append(
                        conn.execute(
                            "SELECT attempts, last_error FROM jobs.jobs WHERE id = %s FOR UPDATE",
                            (job_id,),
                        ).fetchone()
                    )

            reader = threading.Thread(target=blocking_read)
            reader.start()
            time.sleep(0.3)
            assert not seen  # blocked on the run's row lock
            release.set()
            reader.join(10)
            thread.join(10)
        assert seen[0][0] == 1
        assert "late failure" in seen[0][1]
    finally:
        object.__setattr__(local, "func", original)


def test_batch_claim_runs_up_to_batch_size_jobs_in_one_call(queue_url: str) -> None:
    with psycopg.connect(queue_url) as conn:
        app.enqueue_many(conn, [app.registry["batched"].job({"key": str(i)}) for i in range(25)])
    worker = app.worker(queue_url, "batch", drain=True)
    worker.run()
    keys = [
        r[0] for r in psycopg.connect(queue_url).execute("SELECT job_key FROM runs ORDER BY id")
    ]
    sizes = [int(k.split(":")[1]) for k in keys]
    assert sizes == [10] * 10 + [10] * 10 + [5] * 5
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0


def _picky_rows(url: str) -> dict[str, tuple[Any, ...]]:
    """Each picky job's row by key: attempts, dead, last_error, seconds until run_at."""
    rows = psycopg.connect(url).execute(
        "SELECT payload->>'key', attempts, dead, last_error,"
        " round(EXTRACT(EPOCH FROM run_at - now())) FROM jobs.jobs ORDER BY id"
    )
    return {str(r[0]): tuple(r[1:]) for r in rows}


def test_a_batch_fails_only_the_jobs_its_function_returns(queue_url: str) -> None:
    """Returned failures fail their own jobs, each with its own error and its own attempt's
    backoff; the rest are deleted as done and the function's transaction is committed."""
    picky = app.registry["picky"]
    with psycopg.connect(queue_url) as conn:
        app.enqueue_many(conn, [picky.job({"key": "a"}), picky.job({"key": "b", "fail": "no"})])
        app.enqueue_many(conn, [picky.job({"key": "c", "exc": "gone"}), picky.job({"key": "d"})])
        conn.execute("UPDATE jobs.jobs SET attempts = 1 WHERE payload->>'key' = 'c'")
    worker = app.worker(queue_url, "picky", drain=True)
    worker.run()
    assert worker.jobs_run == 4
    runs = [
        r[0] for r in psycopg.connect(queue_url).execute("SELECT job_key FROM runs ORDER BY id")
    ]
    assert runs == ["a", "b", "c", "d"]
    rows = _picky_rows(queue_url)
    assert set(rows) == {"b", "c"}
    attempts, dead, error, due = rows["b"]
    assert (attempts, dead, error) == (1, False, "b: no")
    assert 55 <= due <= 60
    attempts, dead, error, due = rows["c"]
    assert (attempts, dead) == (2, True)
    assert "LookupError: c: gone" in error
    assert 115 <= due <= 120  # the backoff of its own (second) attempt, not the batch's first


def test_a_batch_whose_every_job_failed_apart_keeps_each_error(queue_url: str) -> None:
    picky = app.registry["picky"]
    with psycopg.connect(queue_url) as conn:
        app.enqueue_many(conn, [picky.job({"key": k, "fail": k * 2}) for k in "xy"])
    run_until_idle(queue_url, "picky")
    assert {k: row[2] for k, row in _picky_rows(queue_url).items()} == {"x": "x: xx", "y": "y: yy"}
    assert scalar(queue_url, "SELECT count(*) FROM runs") == 2


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        (["a"], "returned a list; a job function returns None, or a mapping"),
        ({"5": "x"}, "returned a failure keyed '5'"),
    ],
)
def test_a_batch_returning_anything_else_fails_whole_and_rolls_back(
    queue_url: str, returned: Any, fragment: str
) -> None:
    picky = app.registry["picky"]
    with psycopg.connect(queue_url) as conn:
        app.enqueue_many(
            conn, [picky.job({"key": "a", "return": returned}), picky.job({"key": "b"})]
        )
    run_until_idle(queue_url, "picky")
    rows = _picky_rows(queue_url)
    assert set(rows) == {"a", "b"}
    assert all(fragment in row[2] for row in rows.values())
    assert scalar(queue_url, "SELECT count(*) FROM runs") == 0  # the job's transaction rolled back


def test_a_batch_failure_outside_the_batch_fails_it_whole(queue_url: str) -> None:
    """JSON keys are strings; a position past the batch is a bug, not a partial success."""
    picky = app.registry["picky"]
    original = picky.func

    def out_of_range(ctx: Any, payloads: list[Any]) -> Any:
        original(ctx, payloads)
        return {len(payloads): "past the end"}

    object.__setattr__(picky, "func", out_of_range)
    try:
        with psycopg.connect(queue_url) as conn:
            app.enqueue_many(conn, [picky.job({"key": "a"}), picky.job({"key": "b"})])
        run_until_idle(queue_url, "picky")
    finally:
        object.__setattr__(picky, "func", original)
    rows = _picky_rows(queue_url)
    assert set(rows) == {"a", "b"}
    assert all("at position 2, outside its batch of 2" in row[2] for row in rows.values())


def test_twins_in_one_call_fold_like_twins_of_separate_calls(queue_url: str) -> None:
    twin = app.registry["dedup"]
    with psycopg.connect(queue_url) as conn:
        one = app.enqueue_many(conn, [twin.job({"k": 1}, delay=60), twin.job({"k": 1}, priority=5)])
    with psycopg.connect(queue_url) as conn:
        app.enqueue(conn, twin.job({"k": 2}, delay=60))
        app.enqueue(conn, twin.job({"k": 2}, priority=5))
    rows = (
        psycopg.connect(queue_url)
        .execute("SELECT payload->>'k', priority, run_at <= now() FROM jobs.jobs ORDER BY 1")
        .fetchall()
    )
    assert one[0].id == one[1].id
    assert rows == [("1", 5, True), ("2", 5, True)]


def _observing(url: str, seen: list[tuple[Any, Any]], then: Any = None) -> Any:
    """A job function that notes its payload, its attempt and every job row's attempts."""

    def observe(ctx: Any, payload: Any) -> None:
        rows = scalar(url, "SELECT array_agg(attempts ORDER BY id) FROM jobs.jobs")
        seen.append((payload["i"], ctx.attempts[0], rows))
        if then is not None:
            then()

    return observe


def test_each_run_claims_the_next_job_and_runs_every_job_once(queue_url: str) -> None:
    """The commit that deletes a finished job also claims the next one: nothing runs twice,
    the job it just deleted is never claimed again, and each job runs on its first attempt."""
    for i in range(3):
        enqueue(queue_url, "noop", {"i": i})
    seen: list[tuple[Any, Any]] = []
    local = app.registry["noop"]
    original = local.func
    object.__setattr__(local, "func", _observing(queue_url, seen))
    try:
        worker = run_until_idle(queue_url)
    finally:
        object.__setattr__(local, "func", original)
    assert worker.jobs_run == 3
    assert seen == [(0, 1, [1, 0, 0]), (1, 1, [1, 0]), (2, 1, [1])]
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0


def _row_state(url: str, job_id: int) -> tuple[Any, bool]:
    """From another connection: the job's committed attempts and whether its row is locked."""
    with psycopg.connect(url, autocommit=True) as other:
        attempts = scalar(url, "SELECT attempts FROM jobs.jobs WHERE id = %s", (job_id,))
        try:
            other.execute("SELECT 1 FROM jobs.jobs WHERE id = %s FOR UPDATE NOWAIT", (job_id,))
            return attempts, False
        except psycopg.errors.LockNotAvailable:
            return attempts, True


def test_the_next_job_is_claimed_and_locked_in_the_last_runs_round_trip(
    queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first job, each job's claim, attempt count and row lock come with the previous
    run's commit: no lock statement of its own, yet it runs locked with its attempt counted."""
    ids = [enqueue(queue_url, "noop", {"i": i}) for i in range(3)]
    states: list[tuple[Any, bool]] = []
    local = app.registry["noop"]
    original = local.func
    opened: list[list[int]] = []
    open_run = app.store.open_run

    def counting_open_run(conn: Any, claimed: Any, **options: Any) -> set[int]:
        opened.append([job.id for job in claimed])
        return open_run(conn, claimed, **options)

    monkeypatch.setattr(app.store, "open_run", counting_open_run)
    object.__setattr__(
        local, "func", lambda ctx, payload: states.append(_row_state(queue_url, ctx.job_ids[0]))
    )
    try:
        worker = run_until_idle(queue_url)
    finally:
        object.__setattr__(local, "func", original)
    assert worker.jobs_run == 3
    assert opened == [[ids[0]]]
    assert states == [(1, True)] * 3
    assert scalar(queue_url, "SELECT count(*) FROM jobs.jobs") == 0


def test_a_batch_head_claimed_after_a_run_still_gets_its_followers(queue_url: str) -> None:
    """A queue that mixes a batch type with a single one: the head that the last run claimed and
    locked is let go, its followers are claimed and counted, and the batch runs as one."""
    mixed = App(schema="mixed")
    seen: list[tuple[int, list[Any]]] = []

    def attempts_of_many() -> list[Any]:
        return list(
            scalar(
                queue_url,
                "SELECT array_agg(attempts ORDER BY id) FROM mixed.jobs WHERE job_type = 'many'",
            )
        )

    @mixed.job_type(queue="q")
    def one(ctx: Any, payload: Any) -> None:
        pass

    @mixed.job_type(queue="q", batch_size=10)
    def many(ctx: Any, payloads: list[Any]) -> None:
        seen.append((len(payloads), attempts_of_many()))

    with psycopg.connect(queue_url) as conn:
        mixed.migrate(conn)
        mixed.enqueue(conn, one.job({}))
        mixed.enqueue_many(conn, [many.job({"i": i}) for i in range(5)])
    worker = mixed.worker(queue_url, "q", drain=True)
    worker.run()
    assert worker.jobs_run == 6
    assert seen == [(5, [1] * 5)]
    assert scalar(queue_url, "SELECT count(*) FROM mixed.jobs") == 0


def test_a_stopping_worker_does_not_claim_the_next_job(queue_url: str) -> None:
    first = enqueue(queue_url, "noop", {"i": 0})
    second = enqueue(queue_url, "noop", {"i": 1})
    seen: list[tuple[Any, Any]] = []
    worker = app.worker(queue_url, "default")
    local = app.registry["noop"]
    original = local.func
    object.__setattr__(local, "func", _observing(queue_url, seen, then=worker.stop))
    try:
        worker.run()
    finally:
        object.__setattr__(local, "func", original)
    assert [s[0] for s in seen] == [0]
    assert job_row(queue_url, first) is None
    row = job_row(queue_url, second)
    assert row is not None
    assert (row["attempts"], row["worker_pid"], row["last_error"]) == (0, None, None)


def test_a_worker_stopped_after_locking_its_next_job_gives_it_back(
    queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that lands between the commit that claimed and locked the next job and that job's
    run: the lock is let go and the claim given back, so the job does not wait out a lease."""
    first = enqueue(queue_url, "noop", {"i": 0})
    second = enqueue(queue_url, "noop", {"i": 1})
    worker = app.worker(queue_url, "default")
    complete_run = app.store.complete_run

    def complete_then_stop(*args: Any, **kwargs: Any) -> Any:
        result = complete_run(*args, **kwargs)
        worker.stop()
        return result

    monkeypatch.setattr(app.store, "complete_run", complete_then_stop)
    worker.run()
    assert worker.jobs_run == 1
    assert job_row(queue_url, first) is None
    row = job_row(queue_url, second)
    assert row is not None
    assert (row["attempts"], row["worker_pid"], row["last_error"]) == (0, None, None)
    assert _row_state(queue_url, second) == (0, False)


def test_release_gives_a_claim_back(queue_url: str) -> None:
    job_id = enqueue(queue_url, "noop", {})
    with psycopg.connect(queue_url, autocommit=True) as control:
        claimed = app.store.claim(control, "default")
        assert [j.id for j in claimed] == [job_id]
        assert app.store.claim(control, "default") == []
        app.store.release(control, claimed)
        row = job_row(queue_url, job_id)
        assert row is not None and row["attempts"] == 0 and row["worker_pid"] is None
        again = app.store.claim(control, "default")
        assert [(j.id, j.attempt) for j in again] == [(job_id, 1)]


@pytest.mark.parametrize(
    ("job_type", "queue", "lease"),
    [
        # The default queue mixes backoffs: the claim looks each type's up.
        ("fail_later", "default", 60.0),
        ("fail", "default", 0.2),
        # The solo queue has one type: the claim gets its backoff as plain parameters.
        ("solo_record", "solo", 0.2),
    ],
)
def test_the_claim_leases_a_job_for_its_types_backoff(
    queue_url: str, job_type: str, queue: str, lease: float
) -> None:
    """A job whose worker dies comes back after its own type's first backoff delay."""
    enqueue(queue_url, job_type, {"key": "k"})
    with psycopg.connect(queue_url, autocommit=True) as control:
        (claimed,) = app.store.claim(control, queue)
        assert claimed.job_type == job_type
        row = control.execute(
            "SELECT EXTRACT(EPOCH FROM run_at - last_attempt_at)::float8 FROM jobs.jobs"
        ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(lease, abs=0.01)


@pytest.mark.parametrize("uniform", [True, False])
def test_a_batch_of_one_type_enqueues_like_a_mixed_one(queue_url: str, uniform: bool) -> None:
    """A batch whose jobs share type and options takes the shorter statement; it must store,
    absorb and report exactly as the general one does."""
    dedup = app.registry["dedup"]
    with psycopg.connect(queue_url) as conn:
        waiting = app.enqueue(conn, dedup.job({"k": 0}))
        jobs = [dedup.job({"k": k}, priority=3) for k in (0, 1, 2, 1)]
        if not uniform:
            jobs.append(app.registry["noop"].job({"k": 9}, delay=60))
        results = app.enqueue_many(conn, jobs)
    assert [r.inserted for r in results[:4]] == [False, True, True, True]
    assert results[0].id == waiting.id and results[1].id == results[3].id
    with psycopg.connect(queue_url) as conn:
        rows = conn.execute(
            "SELECT payload, priority, run_at > now() + interval '30 s', attempts"
            " FROM jobs.jobs ORDER BY id"
        ).fetchall()
    expected = [({"k": 0}, 3, False, 0), ({"k": 1}, 3, False, 0), ({"k": 2}, 3, False, 0)]
    if not uniform:
        expected.append(({"k": 9}, 0, True, 0))
    assert rows == expected


def test_a_uniform_batch_stores_every_kind_of_json_payload_in_order(queue_url: str) -> None:
    """The uniform batch sends its payloads as one JSON array that the server splits: every
    JSON value comes back as it went in, each under the id reported for it."""
    payloads: list[Any] = [{"k": [1, 2.5, None]}, [1, "two"], "ü ☃", 7, None, True, {}]
    with psycopg.connect(queue_url) as conn:
        results = app.enqueue_many(conn, [app.registry["noop"].job(p) for p in payloads])
    with psycopg.connect(queue_url) as conn:
        stored = dict(conn.execute("SELECT id, payload FROM jobs.jobs").fetchall())
    assert [stored[r.id] for r in results] == payloads


def test_a_declared_type_is_enqueued_without_its_function_and_run_once_implemented(
    queue_url: str,
) -> None:
    """The enqueuing side declares the type (its row's options) and the worker's side binds the
    function: the row carries the declaration's queue, priority and dedup either way."""
    split = App(schema="split")
    declared = split.declare("index_it", queue="q", priority=7, dedup=True, batch_size=10)
    with psycopg.connect(queue_url) as conn:
        split.migrate(conn)
        split.enqueue_many(conn, [declared.job({"n": 1}), declared.job({"n": 1})])
    assert scalar(queue_url, "SELECT count(*) FROM split.jobs WHERE queue = 'q'") == 1
    assert scalar(queue_url, "SELECT priority FROM split.jobs") == 7
    with pytest.raises(ValueError, match=r"queue 'q' has job types with no function.*index_it"):
        split.worker(queue_url, "q", drain=True)

    seen: list[list[Any]] = []

    @split.implement(declared)
    def run(ctx: Any, payloads: list[Any]) -> None:
        seen.append(payloads)

    with pytest.raises(ValueError, match="implemented twice"):
        split.implement("index_it")(run.func)  # type: ignore[arg-type]
    worker = split.worker(queue_url, "q", drain=True)
    worker.run()
    assert seen == [[{"n": 1}]]
    assert scalar(queue_url, "SELECT count(*) FROM split.jobs") == 0


def test_a_single_job_stores_its_types_options_whether_they_are_literals_or_parameters(
    queue_url: str,
) -> None:
    """A single job with its type's own priority and no delay is inserted by a statement with the
    type's queue, name, priority and max_attempts as literals in its text (one per type); any
    other by the one with all of them parameters. Both store the same columns, and a name that
    needs quoting, or holds what psycopg would read as a placeholder, stays a value in either."""
    quoted = App(schema="quoted")
    name = "it's 50%(payload)s %s %b %%'); DROP TABLE x; --"
    odd = quoted.declare(name, queue="q'ueue%s", priority=-32768, max_attempts=None)
    plain = quoted.declare("plain", queue="q'ueue%s", priority=32767, max_attempts=3)
    with psycopg.connect(queue_url) as conn:
        quoted.migrate(conn)
        literal = quoted.enqueue(conn, odd.job({"n": 1}))
        overridden = quoted.enqueue(conn, odd.job({"n": 2}, priority=-32768))
        delayed = quoted.enqueue(conn, plain.job({"n": 3}, delay=60))
        typed = quoted.enqueue(conn, plain.job({"n": 4}))
        rows = conn.execute(
            "SELECT id, queue, job_type, priority, max_attempts, payload,"
            " run_at - created_at < interval '1 s', dedup_key FROM quoted.jobs ORDER BY id"
        ).fetchall()
    assert [r.id for r in (literal, overridden, delayed, typed)] == [r[0] for r in rows]
    assert all(r.inserted for r in (literal, overridden, delayed, typed))
    assert [r[1:] for r in rows] == [
        ("q'ueue%s", name, -32768, None, {"n": 1}, True, None),
        ("q'ueue%s", name, -32768, None, {"n": 2}, True, None),
        ("q'ueue%s", "plain", 32767, 3, {"n": 3}, False, None),
        ("q'ueue%s", "plain", 32767, 3, {"n": 4}, True, None),
    ]


def test_a_schema_name_that_psycopg_would_read_as_a_placeholder_is_refused() -> None:
    """The schema is composed into every statement's text, which psycopg scans for placeholders
    when the statement has parameters: a '%' in it would fail them all, so App refuses it."""
    with pytest.raises(ValueError, match="schema name 'a%b': empty, or with a '%'"):
        App(schema="a%b")
    with pytest.raises(ValueError, match="schema name '': empty"):
        App(schema="")
