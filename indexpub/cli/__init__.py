"""The ``indexpub`` command line: the group, its global options, and where each command lives.

Every command module imports only click and light parts of indexpub at module level, so that
``indexpub --help`` starts in a few tens of milliseconds; psycopg, GitPython and the HTTP stack
are imported inside the commands that use them (tests/test_cli_startup.py keeps it so).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from indexpub import __version__, config
from indexpub.cli import (
    check,
    database,
    demo,
    http,
    import_index,
    logs,
    ops,
    queue,
    registry,
    squash,
    status,
)
from indexpub.cli.common import EXIT_CODES_HELP, Settings, failure_of


class _Main(click.Group):
    """The group that ends every failure a person can cause in one line with its exit code
    (see :func:`indexpub.cli.common.failure_of`); bugs still show their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except Exception as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            failure = failure_of(exc, settings)
            if failure is None:
                raise
            raise failure from None


F = TypeVar("F", bound=Callable[..., Any])

# The path settings that indexpub.config, indexpub.gitindex.process and the worker's processes
# read from the environment: the main command takes each as an option too and exports it,
# absolute. (flag, variable, a directory?, help)
_EXPORTED_PATHS = (
    (
        "--sparse-dir",
        "INDEXPUB_SPARSE_DIR",
        True,
        "Where the worker writes the sparse index and serve reads it. Default: DATA_DIR/sparse "
        "(a directory shared by several hosts: see the README's Running on several hosts).",
    ),
    (
        "--crate-dir",
        "INDEXPUB_CRATE_DIR",
        True,
        "Where published .crate files are stored and served from. Default: DATA_DIR/crates.",
    ),
    (
        "--git-known-hosts",
        "INDEXPUB_GIT_KNOWN_HOSTS",
        False,
        "The known_hosts file pinning an SSH remote's host key (required for SSH remotes).",
    ),
    (
        "--git-ca-file",
        "INDEXPUB_GIT_CA_FILE",
        False,
        "The CA certificates (PEM) an HTTPS remote's certificate is checked against, instead "
        "of the system's (a private CA).",
    ),
    (
        "--git-token-file",
        "INDEXPUB_GIT_TOKEN_FILE",
        False,
        "A file holding the HTTPS token, read again for every push and fetch (replace the file "
        "to rotate the token of a running worker). Wins over INDEXPUB_GIT_TOKEN.",
    ),
)


def _exported_paths(command: F) -> F:
    """The options of _EXPORTED_PATHS, in its order."""
    for flag, var, directory, help_text in reversed(_EXPORTED_PATHS):
        kind = click.Path(file_okay=not directory, dir_okay=directory, path_type=Path)
        command = click.option(flag, envvar=var, type=kind, help=help_text)(command)
    return command


@click.group(cls=_Main, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="indexpub", message="%(prog)s %(version)s")
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
@_exported_paths
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.option(
    "--log-format",
    envvar="INDEXPUB_LOG_FORMAT",
    type=click.Choice(logs.LOG_FORMATS, case_sensitive=False),
    default="human",
    show_default=True,
    help="Logs on stderr: a line for people, or one JSON object per line (time, level, logger, "
    "message, and the job and crate inside a job). Credentials never appear in either.",
)
@click.pass_context
def main(
    ctx: click.Context,
    /,
    database_url: str | None,
    data_dir: Path | None,
    index_url: str | None,
    verbose: bool,
    log_format: str,
    **exported: Path | None,
) -> None:
    """Publish a Cargo registry's git index from a PostgreSQL job queue."""
    logs.configure(
        log_format.lower(),
        verbose=verbose,
        index_url=config.configured_index_url(index_url),
        database_url=config.configured_database_url(database_url),
    )
    for flag, var, _, _ in _EXPORTED_PATHS:
        if path := exported[flag.removeprefix("--").replace("-", "_")]:
            os.environ[var] = str(path.expanduser().absolute())
    ctx.obj = Settings(database_url or None, config.data_dir(data_dir), index_url or None)


for command in (
    queue.migrate,
    queue.worker,
    queue.jobs,
    registry.init_index_command,
    registry.publish,
    registry.yank,
    registry.unyank,
    import_index.import_index,
    http.serve,
    http.token,
    http.owner,
    database.db,
    status.status,
    check.check,
    ops.verify,
    ops.repair,
    ops.rebuild,
    demo.demo,
    squash.squash,
):
    main.add_command(command)
