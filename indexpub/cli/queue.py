"""The commands of the job queue: migrate, worker, and ``jobs`` to inspect and repair it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from indexpub import config
from indexpub.cli.check import DURATION
from indexpub.cli.common import RemoteUnusable, Settings, pass_settings

# jobs.store.STATES, written out so that `indexpub jobs list --help` need not import the queue
# (and psycopg); tests/test_cli_startup.py checks that the two agree.
JOB_STATES = ("ready", "scheduled", "running", "failing", "dead")


@click.command()
@pass_settings
def migrate(settings: Settings) -> None:
    """Create or upgrade indexpub's tables."""
    from indexpub.registry import store

    with settings.connect() as conn:
        applied = store.migrate(conn)
    done = [
        f"{schema} {', '.join(map(str, versions))}"
        for schema, versions in applied.items()
        if versions
    ]
    click.echo("applied migrations: " + "; ".join(done) if done else "up to date")


@click.command()
@click.option("--queue", "queues", multiple=True, help="Queue to work (repeatable). Default: all.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Worker processes per queue.")
@click.option("--drain", is_flag=True, help="Exit once nothing is ready.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option("--grace-period", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option(
    "--squash-every",
    metavar="SCHEDULE",
    envvar="INDEXPUB_SQUASH_EVERY",
    help="Squash the index on a schedule: an interval (7d, 1w, 12h; counted from 1970-01-01 "
    'UTC) or a cron expression in UTC ("0 3 * * 0"). Give every worker the same.',
)
@click.option(
    "--squash-archive-url",
    envvar="INDEXPUB_SQUASH_ARCHIVE_URL",
    help="With --squash-every: keep the old history on this archive remote (as `indexpub "
    "squash --archive-url`).",
)
@click.option(
    "--verify-every",
    envvar="INDEXPUB_VERIFY_EVERY",
    **DURATION,
    default="1h",
    show_default=True,
    help="Verify the remote against the database this often (on the hour for 1h), on the "
    "verify queue, once per period across all workers; `indexpub check` reads the result. "
    "0: never (the verify queue is then not run).",
)
@click.option(
    "--git-timeout",
    envvar=config.GIT_TIMEOUT_ENV,
    metavar="SECONDS",
    callback=lambda ctx, param, value: _git_timeout(value),
    help="Kill a git process (push, fetch) that runs longer than this, with its ssh or HTTPS "
    f"helper, and fail its job to retry later. Default {config.DEFAULT_GIT_TIMEOUT:g}.",
)
@click.option(
    "--metrics-port",
    envvar="INDEXPUB_METRICS_PORT",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port at /metrics (docs/metrics.md): the queue's "
    "state, job runs, the index's lag and pushes, summed over the worker processes.",
)
@click.option(
    "--metrics-host",
    envvar="INDEXPUB_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on (0.0.0.0: every interface).",
)
@pass_settings
def worker(
    settings: Settings,
    queues: tuple[str, ...],
    concurrency: int | None,
    drain: bool,
    poll_interval: float,
    grace_period: float,
    squash_every: str | None,
    squash_archive_url: str | None,
    verify_every: float,
    git_timeout: float,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the job queues (SIGTERM: finish the running job, then exit)."""
    if metrics_port is not None:
        use_metrics_dir()
    from indexpub.cli.squash import archive_url_option, parse_squash_schedule
    from indexpub.gitindex.direct_publish import local_push_mode
    from indexpub.gitindex.index import maintenance_every
    from indexpub.gitindex.process import check_git_settings
    from indexpub.pipeline.jobs import configure_index, configure_squash
    from indexpub.registry.queue import (
        INDEX_QUEUE,
        VERIFY_QUEUE,
        app,
        scheduled_squash,
        sync_crate,
        verify_index,
    )
    from jobs import Every

    if sync_crate.timeout is not None and git_timeout >= sync_crate.timeout:
        # The job's watchdog would end the worker before git's timeout could fail the job.
        raise click.UsageError(
            f"--git-timeout ({config.GIT_TIMEOUT_ENV}) must be below the sync job's own "
            f"timeout of {sync_crate.timeout:g} s, not {git_timeout:g}"
        )

    try:
        # The git job reads it when it opens the index; a typo should stop the worker here,
        # not fail every job later.
        local_push_mode()
        maintenance_every()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # An SSH remote without a pinned host key, a missing CA or token file: refused (GitError)
    # before the database starts.
    check_git_settings(settings.index_location)
    if squash_archive_url and not squash_every:
        raise click.UsageError("--squash-archive-url needs --squash-every")
    if squash_every:
        try:
            app.periodic(scheduled_squash, parse_squash_schedule(squash_every))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        configure_squash(archive_url_option(squash_archive_url))
    unknown = [q for q in queues if q not in app.registry.queues]
    if unknown:
        raise click.UsageError(
            f"unknown queue {unknown[0]!r}; known: {', '.join(sorted(app.registry.queues))}"
        )
    if verify_every:
        if verify_every < 1 or verify_every != int(verify_every):
            raise click.UsageError("--verify-every: whole seconds, at least 1 (or 0: never)")
        # Every host computes the same periods, and one job per period is enqueued across
        # them all (docs/periodic-jobs.md); hosts that disagree share the type's mark.
        app.periodic(verify_index, Every(seconds=int(verify_every)), replace=True)
    elif VERIFY_QUEUE in queues:
        raise click.UsageError(f"--queue {VERIFY_QUEUE} runs nothing with --verify-every 0")
    elif not queues:
        queues = tuple(q for q in sorted(app.registry.queues) if q != VERIFY_QUEUE)
    url = settings.url()
    settings.migrated().close()
    remote = settings.index()
    if not queues or INDEX_QUEUE in queues:
        # A remote that cannot be used stops the worker here, with one line, instead of failing
        # every job of the queue in the background.
        check_index_remote(remote, git_timeout)
    configure_index(
        remote,
        config.clone_path(settings.data_dir, remote),
        config.sparse_dir(settings.data_dir),
        config.verify_clone_path(settings.data_dir, remote),
        git_timeout=git_timeout,
    )
    try:
        supervisor = app.supervisor(
            url,
            queues or None,
            concurrency=concurrency,
            drain=drain,
            grace_period=grace_period,
            poll_interval=poll_interval,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if metrics_port is not None:
        serve_worker_metrics(url, metrics_host, metrics_port)
    sys.exit(supervisor.run())


def _git_timeout(value: str | None) -> float:
    """The --git-timeout (or INDEXPUB_GIT_TIMEOUT) in seconds, checked (see config.git_timeout)."""
    try:
        return config.git_timeout("" if value is None else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def use_metrics_dir() -> None:
    """Point prometheus_client's multiprocess mode at a new temporary directory, removed when
    the command ends: the forked workers' instruments write their files there, which the
    metrics port sums. Before anything imports prometheus_client: it chooses then."""
    import shutil
    import tempfile

    from jobs.metrics import use_multiprocess_dir

    path = Path(tempfile.mkdtemp(prefix="indexpub-metrics-"))
    use_multiprocess_dir(path)
    click.get_current_context().call_on_close(lambda: shutil.rmtree(path, ignore_errors=True))


def serve_worker_metrics(url: str, host: str, port: int) -> None:
    """Serve the worker's metrics (the queue's state, and what every worker process measured)
    from a thread of the supervisor's process."""
    from indexpub.pipeline.metrics import declare_index_series
    from indexpub.registry.queue import app
    from jobs.metrics import (
        JobsCollector,
        declare_run_series,
        exposition_registry,
        start_http_server,
    )

    # Every series at zero from the start (the workers' files add to these).
    for queue in app.registry.queues:
        declare_run_series(queue, [t.name for t in app.registry.types_of_queue(queue)])
    declare_index_series()
    registry = exposition_registry(JobsCollector(app.store, url))
    try:
        bound = start_http_server(registry, port, host)
    except OSError as exc:
        raise click.UsageError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None
    click.echo(f"metrics on http://{host}:{bound}/metrics", err=True)


def check_index_remote(remote: str, timeout: float = config.DEFAULT_GIT_TIMEOUT) -> None:
    """Check, without the worker's clone (which only the active consumer may touch), that the
    remote answers and its HEAD names a branch with commits; for a remote on this machine, that
    the branch holds config.json too. A remote that cannot be read raises GitError."""
    import subprocess

    from indexpub.gitindex.index import remote_head_by_url
    from indexpub.gitindex.process import scrub_secrets

    branch, _ = remote_head_by_url(remote, timeout=timeout)
    shown = scrub_secrets(remote)
    if branch is None:
        raise RemoteUnusable(
            f"the index remote {shown} has a HEAD that names no branch with commits: cargo reads"
            " the branch HEAD names (point it at the index's branch: git symbolic-ref HEAD"
            " refs/heads/BRANCH in the remote)"
        )
    local = Path(remote.removeprefix("file://"))
    if (local / "HEAD").is_file():
        found = subprocess.run(
            ["git", f"--git-dir={local}", "cat-file", "-e", f"refs/heads/{branch}:config.json"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if found.returncode != 0:
            raise RemoteUnusable(
                f"the index remote {shown} has no config.json on its branch {branch!r}: cargo"
                " needs it (create the index with `indexpub init-index`, or commit a"
                " config.json with its dl URL)"
            )


@click.group()
def jobs() -> None:
    """Inspect and repair the job queue."""


@jobs.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def stats(settings: Settings, as_json: bool) -> None:
    """Counts by queue, job type and state."""
    from indexpub.registry.queue import app

    with settings.connect(autocommit=True) as conn:
        rows = app.store.stats(conn)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows]))
        return
    if not rows:
        click.echo("no jobs")
        return
    click.echo(f"{'queue':<12} {'job type':<20} {'state':<10} {'count':>8}")
    for r in rows:
        click.echo(f"{r.queue:<12} {r.job_type:<20} {r.state:<10} {r.count:>8}")


@jobs.command("list")
@click.option("--queue")
@click.option("--type", "job_type")
@click.option("--state", type=click.Choice(JOB_STATES))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@pass_settings
def list_jobs(
    settings: Settings, queue: str | None, job_type: str | None, state: str | None, limit: int
) -> None:
    """Jobs with their state, attempts and last error."""
    from indexpub.registry.queue import app

    with settings.connect(autocommit=True) as conn:
        found = app.store.list_jobs(conn, queue=queue, job_type=job_type, state=state, limit=limit)
    for job in found:
        attempts = f"{job.attempts}/{job.max_attempts or 'inf'}"
        click.echo(
            f"{job.id:>8} {job.queue:<10} {job.job_type:<16} {job.state:<9} {attempts:<7} "
            f"{json.dumps(job.payload)}"
        )
        if job.last_error:
            click.echo("         last error: " + job.last_error.strip().splitlines()[-1])
    if not found:
        click.echo("no jobs")


@jobs.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--queue", help="With --all-dead: only this queue.")
@pass_settings
def retry(settings: Settings, ids: tuple[int, ...], all_dead: bool, queue: str | None) -> None:
    """Run dead or failing jobs again now, with a fresh set of attempts."""
    from indexpub.registry.queue import app

    if not ids and not all_dead:
        raise click.UsageError("name job ids, or pass --all-dead")
    with settings.connect() as conn:
        count = app.store.retry(conn, ids, all_dead=all_dead, queue=queue)
    click.echo(f"retried {count} job(s)")


@jobs.command()
@click.argument("ids", nargs=-1, type=int, required=True)
@pass_settings
def delete(settings: Settings, ids: tuple[int, ...]) -> None:
    """Delete jobs that are not running."""
    from indexpub.registry.queue import app

    with settings.connect() as conn:
        count = app.store.delete(conn, ids)
    click.echo(f"deleted {count} job(s)")
    if count < len(ids):
        click.echo(f"{len(ids) - count} not deleted: running now, or no such job", err=True)


@jobs.command()
@click.option("--queue")
@click.option("--older-than", type=click.FloatRange(min=0), help="Seconds since the last attempt.")
@pass_settings
def purge(settings: Settings, queue: str | None, older_than: float | None) -> None:
    """Delete dead jobs."""
    from indexpub.registry.queue import app

    with settings.connect() as conn:
        count = app.store.purge_dead(conn, queue=queue, older_than=older_than)
    click.echo(f"purged {count} dead job(s)")
