"""The ``db`` commands: the embedded PostgreSQL server used when no database URL is set."""

from __future__ import annotations

import click

from indexpub.cli.common import Settings, pass_settings


@click.group()
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
    """Stop the embedded server of the data dir."""
    from indexpub import embedded

    if embedded.stop(settings.pgdata):
        click.echo(f"stopped the embedded server in {settings.pgdata}")
        return
    click.echo(
        f"no embedded server runs in {settings.pgdata} (one started for another data dir stops "
        "with --data-dir DIR or INDEXPUB_DATA_DIR=DIR; `./dev stop` stops the one of `./dev demo`)"
    )
