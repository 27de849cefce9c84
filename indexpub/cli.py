"""The ``indexpub`` command line."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg

from indexpub import config, embedded, store
from indexpub.local_publish import local_push_mode
from indexpub.tasks import app, configure_index
from jobs.store import STATES


@dataclass
class Settings:
    database_url: str | None
    data_dir: Path
    index_url: str | None

    def url(self) -> str:
        return config.database_url(self.database_url, self.data_dir)

    def index(self) -> str:
        return config.index_url(self.index_url, self.data_dir)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(), autocommit=autocommit)


pass_settings = click.make_pass_decorator(Settings)


@click.group()
@click.option(
    "--database-url",
    envvar="INDEXPUB_DATABASE_URL",
    help="PostgreSQL URL (also DATABASE_URL). Unset: an embedded server under the data dir.",
)
@click.option(
    "--data-dir",
    envvar="INDEXPUB_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local state: the embedded database, the bare clone. Default ~/.local/share/indexpub.",
)
@click.option(
    "--index-url",
    envvar="INDEXPUB_INDEX_URL",
    help="The index's git remote. Unset: a local bare repository under the data dir.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.pass_context
def main(
    ctx: click.Context,
    database_url: str | None,
    data_dir: Path | None,
    index_url: str | None,
    verbose: bool,
) -> None:
    """Publish a Cargo registry's git index from a PostgreSQL job queue."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Settings(database_url or None, config.data_dir(data_dir), index_url or None)


@main.command()
@pass_settings
def migrate(settings: Settings) -> None:
    """Create or upgrade indexpub's tables."""
    with settings.connect() as conn:
        applied = store.migrate(conn)
    done = [
        f"{schema} {', '.join(map(str, versions))}"
        for schema, versions in applied.items()
        if versions
    ]
    click.echo("applied migrations: " + "; ".join(done) if done else "up to date")


@main.command()
@click.option("--queue", "queues", multiple=True, help="Queue to work (repeatable). Default: all.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Worker processes per queue.")
@click.option("--drain", is_flag=True, help="Exit once nothing is ready.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option("--grace-period", type=click.FloatRange(min=0), default=30.0, show_default=True)
@pass_settings
def worker(
    settings: Settings,
    queues: tuple[str, ...],
    concurrency: int | None,
    drain: bool,
    poll_interval: float,
    grace_period: float,
) -> None:
    """Run the job queues (SIGTERM: finish the running job, then exit)."""
    try:
        # The git job reads it when it opens the index; a typo should stop the worker here,
        # not fail every job later.
        local_push_mode()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    url = settings.url()
    with psycopg.connect(url) as conn:
        store.migrate(conn)
    remote = settings.index()
    configure_index(
        remote,
        config.clone_path(settings.data_dir, remote),
        config.sparse_dir(settings.data_dir),
    )
    unknown = [q for q in queues if q not in app.registry.queues]
    if unknown:
        raise click.UsageError(
            f"unknown queue {unknown[0]!r}; known: {', '.join(sorted(app.registry.queues))}"
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
    sys.exit(supervisor.run())


def _redact(url: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


# --- jobs admin ---------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Inspect and repair the job queue."""


@jobs.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def stats(settings: Settings, as_json: bool) -> None:
    """Counts by queue, job type and state."""
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
@click.option("--state", type=click.Choice(STATES))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@pass_settings
def list_jobs(
    settings: Settings, queue: str | None, job_type: str | None, state: str | None, limit: int
) -> None:
    """Jobs with their state, attempts and last error."""
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
    with settings.connect() as conn:
        count = app.store.purge_dead(conn, queue=queue, older_than=older_than)
    click.echo(f"purged {count} dead job(s)")


# --- embedded database --------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The embedded PostgreSQL server (used when no database URL is set)."""


@db.command("url")
@pass_settings
def db_url(settings: Settings) -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    click.echo(settings.url())


@db.command("stop")
@pass_settings
def db_stop(settings: Settings) -> None:
    """Stop the embedded server."""
    stopped = embedded.stop(settings.data_dir / "postgres")
    click.echo("stopped" if stopped else "no embedded server in " + str(settings.data_dir))


# The registry commands live in their own module; importing it registers them on ``main``.
import indexpub.cli_serve  # noqa: E402, F401
from indexpub import cli_index  # noqa: E402, F401
