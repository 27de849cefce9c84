"""``indexpub squash``: request that the worker collapse the index's history into one commit,
and the schedule option ``indexpub worker --squash-every`` reads (see docs/architecture.md,
"Squashing the index")."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from indexpub.cli.common import CommandError, Settings, announce, first_line, pass_settings

if TYPE_CHECKING:
    import psycopg

    from jobs import JobInfo, Schedule

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Seconds between two "still waiting" lines of --wait: a squash of a large index takes a while
# (seconds at 200,000 crates, longer with an archive), and a silent command looks hung.
WAIT_LINE_EVERY = 5.0


def parse_squash_schedule(value: str) -> Schedule:
    """``--squash-every``: an interval (``7d``, ``1w``, ``12h``, ``3600``, whole seconds) or a
    cron expression read in UTC (``"0 3 * * 0"``, ``@weekly``). Raises ValueError."""
    from jobs import Cron, Every

    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", value)
    if match is not None:
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
        if seconds < 1:
            raise ValueError(f"--squash-every {value!r}: the interval must be at least a second")
        return Every(seconds=seconds)
    if " " in value.strip() or value.strip().startswith("@"):
        return Cron(value.strip())
    raise ValueError(
        f"--squash-every {value!r} is neither an interval (7d, 1w, 12h, seconds) nor a cron "
        'expression ("0 3 * * 0", @weekly)'
    )


def archive_url_option(value: str | None) -> str | None:
    """An archive remote's URL as a job may carry it: no credentials (jobs and logs show
    payloads; the worker's INDEXPUB_GIT_TOKEN or SSH key reaches the archive as it reaches the
    index), and a local path made absolute (the worker runs elsewhere than the shell)."""
    if value is None:
        return None
    from indexpub.gitindex.process import GitRemote, is_ssh_url

    url = value.strip()
    if not url or any(c in url for c in "\n\r\0") or url.startswith("-"):
        raise click.BadParameter(f"{value!r} is not a git remote URL", param_hint="--archive-url")
    parsed = GitRemote.parse(url)
    if parsed.username or parsed.password:
        raise click.BadParameter(
            "the URL holds credentials, which the job's payload would show: give the token in "
            "INDEXPUB_GIT_TOKEN (and INDEXPUB_GIT_USERNAME) on the worker instead",
            param_hint="--archive-url",
        )
    if "://" not in url and not is_ssh_url(url):
        return str(Path(url).expanduser().absolute())
    return url


@click.command()
@click.option(
    "--archive-url",
    help="Keep the old history on a snapshot branch of this git remote instead of the index "
    "remote's own (archived first, by its own job; the squash follows once it succeeded).",
)
@click.option("--wait", is_flag=True, help="Wait until the squash is done (or --timeout).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="With --wait: seconds to wait before giving up (the job stays queued).",
)
@pass_settings
def squash(settings: Settings, archive_url: str | None, wait: bool, timeout: float) -> None:
    """Collapse the index's history into one commit, keeping the old history on a
    snapshot-YYYY-MM-DD branch.

    Enqueues a job (one at a time: a request while a squash is under way joins it) that the
    worker runs between syncs; pushes use --force-with-lease against the tip the job read, so
    a branch that moved makes it retry, and nothing is lost.
    """
    from indexpub.registry.queue import INDEX_QUEUE, app, request_squash

    url = archive_url_option(archive_url)
    with settings.migrated() as conn:
        job, new = request_squash(conn, url)
        conn.commit()
        consumer = app.store.consumer(conn, INDEX_QUEUE)
    if new:
        click.echo(f"enqueued {job.job_type} job {job.id}")
    else:
        click.echo(f"a squash is under way already: {job.job_type} job {job.id} ({job.state})")
        if url is not None and job.payload.get("archive_url") != url:
            announce("(it keeps the old history where it was asked to, not at --archive-url)")
    if consumer is None:
        announce("no worker holds the index queue now: the squash runs when `indexpub worker` does")
    if wait:
        _wait_for(settings, job, timeout)


def _wait_for(settings: Settings, job: JobInfo, timeout: float) -> None:
    """Wait until ``job`` and the squash it leads to are done; report their failures as they
    come (they are retried: a failure is not the end)."""
    from indexpub.gitindex.index import remote_head_by_url

    started = time.monotonic()
    deadline = started + timeout
    said_at = started
    reported: set[tuple[int, int]] = set()
    watching = job
    with settings.connect(autocommit=True) as conn:
        while True:
            current = _find(conn, watching.job_type, job_id=watching.id)
            if current is None and watching.job_type == "archive_index":
                # The archive job enqueued its squash in the transaction that finished it.
                follow = _find(conn, "squash_index", archive_job=watching.id)
                if follow is not None:
                    watching, current = follow, follow
            if current is None:
                break
            if current.last_error and (current.id, current.attempts) not in reported:
                reported.add((current.id, current.attempts))
                announce(
                    f"{current.job_type} job {current.id}, attempt {current.attempts} failed "
                    f"(retried): {first_line(current.last_error.strip().splitlines()[-1])}"
                )
            if current.state == "dead":
                said = (current.last_error or "").strip().splitlines() or ["no error recorded"]
                raise CommandError(f"{current.job_type} job {current.id} is dead: {said[-1]}")
            now = time.monotonic()
            if now - said_at >= WAIT_LINE_EVERY:
                said_at = now
                announce(
                    f"squash: {current.job_type} job {current.id} {current.state}, "
                    f"{now - started:.0f} s"
                )
            if now > deadline:
                raise CommandError(
                    f"the squash is not done after {timeout:g} s; {current.job_type} job "
                    f"{current.id} stays queued (indexpub jobs list --type {current.job_type})"
                )
            time.sleep(0.2)
    branch, tip = remote_head_by_url(settings.index_location, timeout=60.0)
    click.echo(f"done: the index branch {branch} is at {tip}")


def _find(
    conn: psycopg.Connection[Any],
    job_type: str,
    *,
    job_id: int | None = None,
    archive_job: int | None = None,
) -> JobInfo | None:
    """The job of ``job_type`` with that id, or enqueued by that archive job."""
    from indexpub.registry.queue import app

    for job in app.store.list_jobs(conn, job_type=job_type):
        if job.id == job_id or (
            archive_job is not None
            and isinstance(job.payload, dict)
            and job.payload.get("archive_job") == archive_job
        ):
            return job
    return None
