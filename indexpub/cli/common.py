"""What every command shares: its settings, and the one way a failure ends it.

Nothing here imports psycopg, GitPython or the HTTP stack at module level: every command module
imports this one, and ``indexpub --help`` must not pay for what only running a command needs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from indexpub import config

if TYPE_CHECKING:
    import psycopg

# The exit codes, in the order a script would test them (also in `indexpub --help`).
EXIT_FAILED = 1  # refused input, or an operation that failed; the message says which
EXIT_USAGE = 2  # click's own: a wrong option or argument
EXIT_DATABASE = 3  # the database cannot be reached
EXIT_REMOTE = 4  # the index remote cannot be used
EXIT_DATA_DIR = 5  # the data directory cannot be written

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 refused or failed (the message says why); 2 usage error; "
    "3 the database cannot be reached; 4 the index remote cannot be used; "
    "5 the data directory cannot be written. `indexpub check` follows the Nagios "
    "convention instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `indexpub verify` (and "
    "`repair --dry-run`) its own: 0 equal, 1 they differ, 2 it could not check."
)


class CommandError(click.ClickException):
    """A failure a person can cause and fix: one line on stderr, with its own exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class DatabaseUnreachable(CommandError):
    exit_code = EXIT_DATABASE


class RemoteUnusable(CommandError):
    exit_code = EXIT_REMOTE


class DataDirUnwritable(CommandError):
    exit_code = EXIT_DATA_DIR

    @classmethod
    def of(cls, data_dir: Path, path: object) -> DataDirUnwritable:
        return cls(
            f"cannot write the data directory {data_dir}: permission denied on {path} (choose "
            "one you can write with --data-dir or INDEXPUB_DATA_DIR)"
        )


def announce(message: str) -> None:
    """Tell the person running the command about something it made for them (on stderr, so
    that output meant for scripts stays clean)."""
    click.echo(message, err=True)


@dataclass
class Settings:
    database_url: str | None
    data_dir: Path
    index_url: str | None

    @property
    def embedded(self) -> bool:
        """Whether the database is the embedded server under the data directory."""
        return config.configured_database_url(self.database_url) is None

    @property
    def pgdata(self) -> Path:
        return config.embedded_pgdata(self.data_dir)

    def url(self) -> str:
        """The database URL, starting (and on first use creating) the embedded server."""
        created = self.embedded and not (self.pgdata / "PG_VERSION").exists()
        if created:
            self.check_writable()
        url = config.database_url(self.database_url, self.data_dir)
        if created:
            announce(f"created an embedded PostgreSQL server in {self.pgdata}")
        return url

    def running_url(self) -> str | None:
        """The database URL without starting anything: None when the database is the embedded
        server and it is not running (for commands that only look, such as ``check``)."""
        if self.embedded:
            if not (self.pgdata / "postmaster.pid").exists():
                return None
            return config.database_url(self.database_url, self.data_dir)
        return config.configured_database_url(self.database_url) or ""

    @property
    def shown_database(self) -> str:
        """The database in use, for a person: a URL without its password, or the embedded one."""
        return _database(self)

    @property
    def index_location(self) -> str:
        """The index remote's URL, without creating the local default."""
        configured = config.configured_index_url(self.index_url)
        return configured or str(config.local_index_path(self.data_dir))

    def index(self) -> str:
        """The index remote's URL, creating the local default on first use."""
        if config.configured_index_url(self.index_url) is not None:
            return self.index_location
        path = config.local_index_path(self.data_dir)
        if not (path / "HEAD").exists():
            from indexpub.gitindex.index import init_index

            self.check_writable()
            init_index(path, dl=config.local_index_dl(self.data_dir), api=None)
            announce(f"created a local index remote in {path}")
        return str(path)

    def check_writable(self) -> None:
        """Before the first thing is made in the data directory: can we write there at all?
        (The server and git would otherwise fail with messages of their own, far from it.)"""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.data_dir):
                pass
        except PermissionError as exc:
            raise DataDirUnwritable.of(self.data_dir, exc.filename or self.data_dir) from None

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(self.url(), autocommit=autocommit)

    def migrated(self) -> psycopg.Connection[Any]:
        """A connection to a database whose tables are in place (created on first use)."""
        from indexpub.registry import store

        conn = self.connect()
        try:
            store.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn


pass_settings = click.make_pass_decorator(Settings)


def failure_of(exc: BaseException, settings: Settings | None) -> CommandError | None:
    """The one-line failure that an exception a person can cause stands for; None for a bug.

    Classes are compared by name where importing their module would cost every command its
    start-up: a psycopg error can only have been raised once psycopg was imported.
    """
    from indexpub.errors import InvalidInput
    from indexpub.gitindex.process import GitError, scrub_secrets

    if isinstance(exc, InvalidInput):
        return CommandError(str(exc))
    if isinstance(exc, GitError):
        said = first_line(scrub_secrets(str(exc)))
        remote = "" if settings is None else scrub_secrets(settings.index_location)
        named = f" {remote}" if remote and remote not in said else ""
        hint = "" if "INDEXPUB_" in said else " (check --index-url or INDEXPUB_INDEX_URL)"
        return RemoteUnusable(f"the index remote{named} cannot be used: {said}{hint}")
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        where = "the database" if settings is None else f"the database {_database(settings)}"
        fix = (
            "is the embedded server's directory intact? `indexpub db stop` and try again"
            if settings is not None and settings.embedded
            else "check --database-url or INDEXPUB_DATABASE_URL, or unset both to use the "
            "embedded server"
        )
        return DatabaseUnreachable(f"cannot reach {where}: {first_line(str(exc))} ({fix})")
    if isinstance(exc, PermissionError):
        path = Path(exc.filename) if exc.filename else None
        if settings is not None and path is not None and _inside(path, settings.data_dir):
            return DataDirUnwritable.of(settings.data_dir, path)
        return CommandError(f"permission denied: {path or exc}")
    return None


def first_line(text: str) -> str:
    """The first non-blank line of a message from git or PostgreSQL, which say the most there."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text.strip()


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(folder)
    except ValueError:
        return False
    return True


def _database(settings: Settings) -> str:
    """The database in use, for a person: a URL without its password, or the embedded one."""
    if settings.embedded:
        return f"(embedded, in {settings.pgdata})"
    url = config.configured_database_url(settings.database_url) or ""
    return redact_url(url)


def redact_url(url: str) -> str:
    """A PostgreSQL URL or conninfo string without its password."""
    import urllib.parse

    if url.startswith(("postgres://", "postgresql://")):
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "(an unparsable database URL)"
    if "password" in info:
        info["password"] = "***"
    return make_conninfo(**info)  # type: ignore[arg-type]


def invocation() -> str:
    """How the person ran this command, so that a hint can be pasted back as it is."""
    script = Path(sys.argv[0])
    if script.name == "indexpub":
        return "indexpub" if shutil.which("indexpub") == str(script) else str(script)
    return f"{Path(sys.executable).name} -m indexpub"
