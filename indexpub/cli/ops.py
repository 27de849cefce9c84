"""Operating the index at scale: ``verify`` (is the remote, or with --sparse the sparse
directory, what the database says?), ``repair`` (enqueue the jobs that rewrite whatever drifted)
and ``rebuild`` (regenerate every crate file, through the index queue). The work itself is in
indexpub.pipeline.verify, .sparse_verify and .rebuild."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from indexpub import config
from indexpub.cli.common import CommandError, Settings, failure_of, pass_settings
from indexpub.cli.progress import Progress

if TYPE_CHECKING:
    import psycopg

    from indexpub.pipeline.sparse_verify import SparseVerifyResult
    from indexpub.pipeline.verify import Comparison, Drift, VerifyOutcome, VerifyResult
    from indexpub.registry.runs import RebuildRun

# verify's exit codes (its own, as check has: a script tests "equal" or "differs").
EQUAL, DIFFERS, CANNOT_CHECK = 0, 1, 2
# What a command interrupted by Ctrl-C exits with (128 + SIGINT), as a shell's would.
INTERRUPTED = 130
# Seconds between two looks at a rebuild run.
REBUILD_POLL = 0.5


class CannotCheck(CommandError):
    """verify could not compare: the remote, the database or the data directory failed it."""

    exit_code = CANNOT_CHECK


class Interrupted(CommandError):
    exit_code = INTERRUPTED


_VERIFY_HELP = """Compare the index remote's tip with the database, crate file by crate file:
a file missing from the remote, an extra one, or one whose lines differ (with the versions
named). Exit 0 when they are equal, 1 when they differ, 2 when it could not check.

\b
It reads the remote in a clone of its own under the data directory (never the worker's, never
the index queue's lock: publishing goes on meanwhile), compares blob shas with the database's
renderings (one `git ls-tree -r`, one query), and looks again at what differs, so that a
change whose sync job is on its way counts as pending, not drift. config.json and other files
outside the index layout are not compared. The result is recorded for `indexpub check`.
Progress goes to stderr: a bar on a terminal, a line every few seconds otherwise.

\b
--sparse compares the sparse index directory (--sparse-dir, INDEXPUB_SPARSE_DIR) instead, and
only it: its files are written without fsync, so a power failure can leave one stale. One walk
of the directory hashes every crate file as it reads it, one query renders every crate; a
change whose write_sparse job is on its way is pending, not drift. Symlinks are reported, never
followed; .tmp-* temporaries and other files outside the index layout are not compared. It is
recorded as the sparse directory's run: `indexpub check` grades the last run of each copy on
its own. It checks the sparse directory only, not the remote too: they are separate copies
with their own writers, queues and repairs, so one exit code then says which copy differs.
Run both to check both."""

_SPARSE_OPTION = click.option(
    "--sparse",
    is_flag=True,
    help="Compare the sparse index directory with the database instead of the remote.",
)


@click.command(help=_VERIFY_HELP, short_help="Compare the remote with the database.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_SPARSE_OPTION
@pass_settings
def verify(settings: Settings, as_json: bool, sparse: bool) -> None:
    result, found, lines = _compare(settings, "verify", sparse)
    if as_json:
        click.echo(json.dumps({**found, "exit_code": _exit_code(result)}))
    else:
        for line in lines:
            click.echo(line)
        if result.drifted:
            click.echo(
                "`indexpub repair --sparse` enqueues their write_sparse jobs."
                if sparse
                else "`indexpub repair` enqueues their sync jobs."
            )
    click.get_current_context().exit(_exit_code(result))


_REPAIR_HELP = """Verify (as `indexpub verify`, recorded the same way), then enqueue the sync
job of every drifted crate; the worker makes their files what the database says, in its next
batch. Crates whose sync job is on its way already are left to it. With --dry-run, only list
them (and exit 1 when there are any, as verify does). Exit 2 when it could not check.

\b
--sparse does the same for the sparse index directory (as `indexpub verify --sparse`): it
enqueues write_sparse for every drifted crate, which writes the database's file, or removes
the file of a crate the database has not. Crates whose write_sparse job is on its way are left
to it."""


@click.command(help=_REPAIR_HELP, short_help="Enqueue the sync of every drifted crate.")
@click.option("--dry-run", is_flag=True, help="List what would be enqueued; enqueue nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_SPARSE_OPTION
@pass_settings
def repair(settings: Settings, dry_run: bool, as_json: bool, sparse: bool) -> None:
    from indexpub.domain.names import is_valid_crate_name
    from indexpub.registry import render
    from indexpub.registry.queue import app, sync_crate, write_sparse

    result, found, lines = _compare(settings, "repair", sparse)
    names = [d.name for d in result.drifted if is_valid_crate_name(d.name)]
    unfit = [d.path for d in result.drifted if not is_valid_crate_name(d.name)]
    job_type = write_sparse if sparse else sync_crate
    # "fetch": the sync builds on the tip of its last push, which a foreign push (the usual
    # cause of git drift) has moved; these jobs fetch first. write_sparse has nothing to fetch.
    extra: dict[str, Any] = {} if sparse else {"fetch": True}
    with settings.connect() as conn:
        published = render.published_names(conn, names)
        jobs = [published.get(name, name) for name in names]
        if jobs and not dry_run:
            app.enqueue_many(conn, [job_type.job({"name": name, **extra}) for name in jobs])
    if as_json:
        code = _exit_code(result) if dry_run else EQUAL
        found.update(dry_run=dry_run, enqueued=[] if dry_run else jobs, unfit=unfit)
        found["exit_code"] = code
        if dry_run:
            found["would_enqueue"] = jobs
        click.echo(json.dumps(found))
    else:
        for line in lines:
            click.echo(line)
        if jobs:
            verb = "would enqueue" if dry_run else "enqueued"
            click.echo(f"{verb} {job_type.name} for {len(jobs)} crate(s): {', '.join(jobs)}")
        if unfit:
            remedy = "remove them by hand" if sparse else "`indexpub rebuild` removes them"
            click.echo(
                f"{len(unfit)} file(s) are not at a crate name's path and cannot be synced: "
                f"{', '.join(unfit)} ({remedy})"
            )
    click.get_current_context().exit(_exit_code(result) if dry_run else EQUAL)


_REBUILD_HELP = """Regenerate every crate file from the database and push once: a job on the
index queue, run by the worker that holds it, so that nothing pushes beside it. Files that are
already right make no change (no commit at all when nothing differs); files of crates the
database does not have are removed; config.json and other files outside the index layout are
left alone.

\b
The changes go in commits of --batch-size crate files (default: one commit for the whole
index, as crates.io's bulk sync does). The command waits for the job and shows its progress
(a bar on a terminal, a line every few seconds otherwise). Ctrl-C asks the job to stop: it
stops before it pushes, and the remote stays as it was (a second Ctrl-C stops waiting, and
the job finishes on its own). With --no-wait it only queues the job, which runs when a worker
holds the index queue."""


@click.command(help=_REBUILD_HELP, short_help="Regenerate every crate file from the database.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Crate files per commit. Default: one commit for all of them.",
)
@click.option("--no-wait", is_flag=True, help="Queue the rebuild and return.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def rebuild(settings: Settings, batch_size: int | None, no_wait: bool, as_json: bool) -> None:
    from indexpub.registry import runs
    from indexpub.registry.queue import INDEX_QUEUE, app

    with settings.migrated() as conn:
        holder = app.store.consumer(conn, INDEX_QUEUE)
        if holder is None and not no_wait:
            raise CommandError(
                "no worker holds the index queue, and the rebuild runs there: start one "
                "(indexpub worker), or pass --no-wait to leave the rebuild queued for it"
            )
        run = runs.request_rebuild(conn, batch_size)
        conn.commit()
        click.echo(
            f"rebuild {run.id} queued as job {run.job_id} on the index queue"
            + ("" if holder is None else f" (held by {holder.application_name})"),
            err=True,
        )
        if not no_wait:
            conn.autocommit = True
            run = _follow_rebuild(conn, run)
    if as_json:
        click.echo(json.dumps(_rebuild_json(run), default=str))
    elif no_wait:
        click.echo(f"rebuild {run.id} queued (job {run.job_id})")
    else:
        click.echo(_rebuild_line(run))
    if run.state == "cancelled":
        click.get_current_context().exit(INTERRUPTED)


# --------------------------------------------------------------------------- verify's work


def _compare(
    settings: Settings, label: str, sparse: bool
) -> tuple[Comparison, dict[str, Any], list[str]]:
    """The remote's verify (recorded) or the sparse directory's: its result, JSON and lines."""
    if sparse:
        found, run_id = _verify_sparse(settings, f"{label} --sparse")
        state = "clean" if found.clean else "drift"
        report = {"state": state, "run_id": run_id, **found.as_json()}
        return found, report, _sparse_lines(found)
    outcome = _verify(settings, label)
    assert outcome.result is not None
    return outcome.result, _verify_json(outcome), _verify_lines(outcome.result)


@contextlib.contextmanager
def _checking(settings: Settings, label: str) -> Iterator[None]:
    """A failure to compare, as the one line of CannotCheck; Ctrl-C as Interrupted."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"{label} interrupted: nothing was recorded") from None
    except CommandError as exc:
        raise CannotCheck(f"{label} could not check: {exc.message}") from None
    except Exception as exc:
        failure = failure_of(exc, settings)
        if failure is None:
            raise
        raise CannotCheck(f"{label} could not check: {failure.message}") from None


def _verify_sparse(settings: Settings, label: str) -> tuple[SparseVerifyResult, int]:
    """Compare the sparse directory with progress on stderr and record it (its result and
    run id); CannotCheck when it could not."""
    from indexpub.pipeline.sparse_verify import SparseUnreadable, verify_sparse_and_record
    from indexpub.registry import runs

    with _checking(settings, label):
        try:
            with settings.migrated() as conn, Progress(label) as progress:
                return verify_sparse_and_record(
                    conn,
                    config.sparse_dir(settings.data_dir),
                    ran_by=runs.BY_COMMAND,
                    progress=progress.update,
                    total=progress.start,
                )
        except SparseUnreadable as exc:
            raise CommandError(str(exc)) from None


def _verify(settings: Settings, label: str) -> VerifyOutcome:
    """Run a verify with progress on stderr and record it; CannotCheck when it could not."""
    from indexpub.pipeline.verify import verify_and_record
    from indexpub.registry import runs

    with _checking(settings, label):
        settings.check_writable()
        remote = settings.index_location
        with settings.migrated() as conn, Progress(label) as progress:
            outcome = verify_and_record(
                conn,
                remote,
                config.verify_clone_path(settings.data_dir, remote),
                ran_by=runs.BY_COMMAND,
                progress=progress.update,
                total=progress.start,
            )
    if outcome.error is not None:
        failure = failure_of(_git_error(outcome.error), settings)
        said = outcome.error if failure is None else failure.message
        raise CannotCheck(f"{label} could not check: {said}")
    return outcome


def _git_error(message: str) -> Exception:
    from indexpub.gitindex.process import GitError

    return GitError(message)


def _exit_code(result: Comparison) -> int:
    return EQUAL if result.clean else DIFFERS


def _verify_json(outcome: VerifyOutcome) -> dict[str, Any]:
    assert outcome.result is not None
    result = outcome.result
    state = "clean" if result.clean else "drift"
    return {"state": state, "run_id": outcome.run_id, **result.as_json()}


def _verify_lines(result: VerifyResult) -> list[str]:
    at = f"{result.branch} at {result.tip[:12]}"
    lines: list[str] = []
    if result.clean:
        lines.append(
            f"clean: the {result.files:,} crate files at {at} equal the database's "
            f"{result.crates:,} crates ({result.duration:.1f} s)"
        )
    else:
        count = len(result.drifted)
        lines.append(
            f"drift: {count} crate{'s' * (count != 1)} at {at} differ from the database "
            f"({result.crates:,} crates in the database, {result.files:,} crate files at the "
            f"tip, {result.duration:.1f} s)"
        )
        lines += _drift_lines(result.drifted)
    return lines + _pending_lines(result.pending, "a sync job")


def _sparse_lines(result: SparseVerifyResult) -> list[str]:
    where = f"in {result.directory}"
    lines = [f"the sparse directory {result.directory} does not exist"] if result.absent else []
    if result.clean:
        lines.append(
            f"clean: the {result.files:,} crate files {where} equal the database's "
            f"{result.crates:,} crates ({result.duration:.1f} s)"
        )
    else:
        count = len(result.drifted)
        lines.append(
            f"drift: {count} crate{'s' * (count != 1)} {where} differ from the database "
            f"({result.crates:,} crates in the database, {result.files:,} crate files in the "
            f"directory, {result.duration:.1f} s)"
        )
        lines += _drift_lines(result.drifted)
    return lines + _pending_lines(result.pending, "a write_sparse job")


def _drift_lines(drifted: list[Drift]) -> list[str]:
    width = max(len(d.name) for d in drifted)
    return [f"  {d.name:<{width}}  {d.kind:<8} {d.describe()}" for d in drifted]


def _pending_lines(pending: list[str], job: str) -> list[str]:
    if not pending:
        return []
    count = len(pending)
    return [
        f"{count} crate{'s' * (count != 1)} with {job} on the way (pending, not drift): "
        f"{', '.join(pending[:20])}" + (f" and {count - 20} more" if count > 20 else "")
    ]


# --------------------------------------------------------------------------- rebuild's wait


def _follow_rebuild(conn: psycopg.Connection[Any], run: RebuildRun) -> RebuildRun:
    """Wait for the run to end, with its progress on stderr; Ctrl-C asks it to stop."""
    from indexpub.registry import runs

    failures_seen: set[str] = set()
    with Progress("rebuild") as progress:
        try:
            while True:
                found = runs.rebuild_run(conn, run.id)
                if found is None:
                    raise CommandError(f"rebuild {run.id} is gone from the database")
                run = found
                if run.total is not None and progress.total is None:
                    progress.start(run.total)
                progress.update(run.done)
                if run.ended:
                    return run
                if run.state == "failed" and run.error and run.error not in failures_seen:
                    failures_seen.add(run.error)
                    _report_failure(conn, run)
                time.sleep(REBUILD_POLL)
        except KeyboardInterrupt:
            progress.finish(completed=False)
            return _stop_rebuild(conn, run)


def _report_failure(conn: psycopg.Connection[Any], run: RebuildRun) -> None:
    """An attempt failed: say so, and give up waiting when the job will not run again."""
    from indexpub.registry.queue import app, rebuild_index

    live = [p for p in app.store.live_payloads(conn, rebuild_index.name) if p.get("run") == run.id]
    if not live:
        raise CommandError(
            f"rebuild {run.id} failed and will not be tried again: {run.error} (the remote is "
            "as it was; see indexpub jobs list --state dead)"
        )
    click.echo(
        f"rebuild {run.id}: an attempt failed, the worker tries again after its backoff: "
        f"{run.error}",
        err=True,
    )


def _stop_rebuild(conn: psycopg.Connection[Any], run: RebuildRun) -> RebuildRun:
    """Ctrl-C: a job that has not started is deleted; a running one is asked to stop and
    waited for (a second Ctrl-C leaves it to finish on its own)."""
    from indexpub.registry import runs
    from indexpub.registry.queue import app

    runs.cancel_rebuild(conn, run.id)
    if run.job_id is not None and run.state == "queued" and app.store.delete(conn, [run.job_id]):
        runs.finish_rebuild(conn, run.id, state="cancelled")
        raise Interrupted(f"rebuild {run.id} cancelled before it started: nothing was pushed")
    click.echo(
        f"rebuild {run.id}: asking the worker to stop it before it pushes (Ctrl-C again to "
        "stop waiting)",
        err=True,
    )
    try:
        while True:
            found = runs.rebuild_run(conn, run.id)
            if found is None or found.ended:
                break
            time.sleep(REBUILD_POLL)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped waiting; rebuild {run.id} stops in the worker before it pushes "
            "(indexpub jobs list shows it)"
        ) from None
    if found is None:
        raise CommandError(f"rebuild {run.id} is gone from the database")
    if found.state == "cancelled":
        raise Interrupted(f"rebuild {run.id} cancelled: nothing was pushed")
    return found  # it pushed before it saw the request


def _rebuild_json(run: RebuildRun) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(run)


def _rebuild_line(run: RebuildRun) -> str:
    if run.state != "done":
        return f"rebuild {run.id}: {run.state}"
    if not run.commits:
        return (
            f"rebuild {run.id}: nothing to change, the {run.done:,} crate files at "
            f"{(run.tip or '')[:12]} equal the database"
        )
    skipped = f", {run.skipped} left out (see the worker's log)" if run.skipped else ""
    return (
        f"rebuild {run.id}: {run.changed:,} crate file(s) written and {run.deleted:,} deleted "
        f"in {run.commits} commit(s), pushed {(run.tip or '')[:12]}{skipped}"
    )
