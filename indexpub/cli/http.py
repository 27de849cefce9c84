"""The commands of the HTTP registry: serve, token create/revoke, owner add/list."""

from __future__ import annotations

import logging

import click

from indexpub.cli.common import CommandError, Settings, pass_settings
from indexpub.domain.limits import DEFAULT_MAX_BYTES as DEFAULT_MAX_CRATE_BYTES
from indexpub.domain.limits import DEFAULT_MAX_METADATA_BYTES

# indexpub.serve.upload's and indexpub.serve.http_limits' timeouts, written out so that `indexpub
# serve --help` need not import the HTTP stack; tests/test_serve_limits.py checks that they agree.
DEFAULT_HEADER_TIMEOUT = 20.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_LIMIT_CONCURRENCY = 100
DEFAULT_KEEP_ALIVE_TIMEOUT = 5


def _verbose(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("verbose"))


class _DropUpgradeWarnings(logging.Filter):
    """Drop uvicorn's two warnings about upgrade requests, which cargo makes on every request.

    cargo's libcurl asks plain-HTTP servers to upgrade the connection to HTTP/2 (``Upgrade:
    h2c``). uvicorn answers in HTTP/1.1, which is correct and what cargo then uses, but logs
    "Unsupported upgrade request" and a hint about WebSocket libraries each time: two warnings
    per index fetch would drown every real one.
    """

    NOISE = ("Unsupported upgrade request", "No supported WebSocket library detected")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--public-url",
    help="Where clients reach this server, for config.json's dl and api. "
    "Default: http://HOST:PORT.",
)
@click.option(
    "--max-crate-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CRATE_BYTES,
    show_default=True,
)
@click.option(
    "--max-metadata-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_METADATA_BYTES,
    show_default=True,
    help="Limit of the publish JSON (it carries the README).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_HEADER_TIMEOUT,
    show_default=True,
    help="Seconds a client may take to send a request's headers; then the connection closes.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BODY_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the next piece of a request body; then 408 and close.",
)
@click.option(
    "--limit-concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT_CONCURRENCY,
    show_default=True,
    help="Connections served at once; requests beyond are answered 503.",
)
@click.option(
    "--keep-alive-timeout",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP_ALIVE_TIMEOUT,
    show_default=True,
    help="Seconds an idle connection is kept open between requests.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    public_url: str | None,
    max_crate_bytes: int,
    max_metadata_bytes: int,
    header_timeout: float,
    body_timeout: float,
    limit_concurrency: int,
    keep_alive_timeout: int,
) -> None:
    """Serve cargo's registry Web API (publish, yank, owners, downloads) and the sparse index
    (/index/) over HTTP, in one process.

    The git index is written by `indexpub worker`, never here; create it with
    `indexpub init-index --dl PUBLIC_URL/api/v1/crates --api PUBLIC_URL PATH` so that cargo
    publishes and downloads through this server. Access lines are logged with -v.
    """
    import uvicorn

    from indexpub.serve.app import create_app
    from indexpub.serve.http_limits import h11_with_header_timeout

    settings: Settings = ctx.obj
    verbose = _verbose(ctx)
    url = settings.url()
    settings.migrated().close()
    # The git index's URL, as crates packaged for it name it; never created from here.
    git_index = settings.index_location
    public = public_url or f"http://{host}:{port}"
    try:
        app = create_app(
            url,
            settings.data_dir,
            public_url=public,
            max_crate_bytes=max_crate_bytes,
            max_metadata_bytes=max_metadata_bytes,
            index_urls=[git_index],
            body_timeout=body_timeout,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.getLogger("uvicorn.error").addFilter(_DropUpgradeWarnings())
    click.echo(f"serving the registry API and sparse index on http://{host}:{port}", err=True)
    click.echo(f"sparse index for cargo: sparse+{public.rstrip('/')}/index/", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # keep indexpub's logging set-up (stderr, -v for INFO)
        log_level=logging.INFO if verbose else logging.WARNING,
        access_log=verbose,
        server_header=False,
        http=h11_with_header_timeout(header_timeout),
        timeout_keep_alive=keep_alive_timeout,
        limit_concurrency=limit_concurrency,
    )


# --- tokens ---------------------------------------------------------------------------------------


@click.group()
def token() -> None:
    """API tokens (what cargo sends in the Authorization header)."""


@token.command("create")
@click.argument("user")
@click.option("--name", default="", help="A label for the token, to revoke it alone later.")
@pass_settings
def token_create(settings: Settings, user: str, name: str) -> None:
    """Create a token for USER (created if new) and print it: the only time it is shown."""
    from indexpub.registry import accounts

    with settings.migrated() as conn:
        secret = accounts.create_token(conn, user, name)
    click.echo(secret)


@token.command("revoke")
@click.argument("user")
@click.option("--name", help="Revoke only the tokens with this label. Default: all of USER's.")
@pass_settings
def token_revoke(settings: Settings, user: str, name: str | None) -> None:
    """Revoke USER's tokens."""
    from indexpub.registry import accounts

    with settings.migrated() as conn:
        count = accounts.revoke_tokens(conn, user, name)
    click.echo(f"revoked {count} token(s)")


# --- owners (administration) --------------------------------------------------------------------


@click.group()
def owner() -> None:
    """Crate owners, as an administrator (owners change owners through the API)."""


@owner.command("add")
@click.argument("crate")
@click.argument("user")
@pass_settings
def owner_add(settings: Settings, crate: str, user: str) -> None:
    """Make USER an owner of CRATE."""
    from indexpub.registry import accounts

    try:
        with settings.migrated() as conn:
            published, added = accounts.add_owner_as_admin(conn, crate, user)
    except accounts.UnknownUser as exc:
        raise CommandError(f"{exc} (`indexpub token create {user}` creates the user)") from None
    if added:
        click.echo(f"added {user} as an owner of {published}")
    else:
        click.echo(f"{user} is already an owner of {published}")


@owner.command("list")
@click.argument("crate")
@pass_settings
def owner_list(settings: Settings, crate: str) -> None:
    """Print CRATE's owners, one login a line."""
    from indexpub.registry import accounts

    with settings.migrated() as conn:
        owners = accounts.list_owners(conn, crate)
    for user in owners:
        click.echo(user.login)
    if not owners:
        click.echo(f"{crate} has no owners", err=True)
