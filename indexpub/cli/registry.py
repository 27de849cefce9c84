"""The commands that change the registry: init-index, publish, yank, unyank."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexpub import config
from indexpub.cli.common import CommandError, Settings, announce, pass_settings
from indexpub.domain.limits import DEFAULT_MAX_BYTES  # light; other domain modules load lazily

if TYPE_CHECKING:
    from indexpub.domain.entries import IndexEntry


def _read_input(source: str, max_bytes: int) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise CommandError(f"cannot read {source!r}: no such file")
        if path.stat().st_size > max_bytes:
            raise CommandError(f"{source!r} is larger than the limit of {max_bytes} bytes")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise CommandError(f"the input is larger than the limit of {max_bytes} bytes")
    return data


FORMATS = ("auto", "crate", "index-line", "publish-json")


def entry_from_input(
    data: bytes, cksum: str | None, registry_index: str | None, input_format: str = "auto"
) -> tuple[IndexEntry, bytes | None]:
    """An index entry from a .crate file, an index line, or cargo's publish JSON.

    ``auto`` tells them apart by the gzip magic, then by the ``cksum`` key that only an index
    line has. ``registry_index`` is the URL by which crates of this registry name it in their
    packaged Cargo.toml (``registry-index``): their dependencies on it become ``registry: null``.
    """
    from indexpub.domain.crate_file import GZIP_MAGIC, read_crate_bytes
    from indexpub.domain.entries import IndexEntry
    from indexpub.domain.json_input import load_json
    from indexpub.errors import InvalidInput

    if input_format == "crate" or (input_format == "auto" and data.startswith(GZIP_MAGIC)):
        return read_crate_bytes(data, index_url=registry_index), data
    if input_format == "index-line":
        return IndexEntry.from_line(data), None
    parsed = load_json(data, "the input (not a .crate file: no gzip header)")
    if not isinstance(parsed, dict):
        raise InvalidInput(f"the JSON input must be an object, not {type(parsed).__name__}")
    if input_format == "auto" and "cksum" in parsed:
        return IndexEntry.from_json(parsed), None
    if cksum is None:
        raise InvalidInput(
            "publish JSON has no checksum: pass --cksum (the sha256 of the .crate) or publish "
            "the .crate file itself"
        )
    return IndexEntry.from_publish_json(parsed, cksum), None


@click.command("init-index")
@click.option(
    "--dl",
    help="Download URL template for config.json. Default, for the local index under the data "
    "dir: the crate files that `indexpub publish` stores there.",
)
@click.option("--api", help="Registry API URL for config.json (for cargo publish and yank).")
@click.option("--branch", default="master", show_default=True)
@click.argument("path", type=click.Path(path_type=Path), required=False)
@pass_settings
def init_index_command(
    settings: Settings, dl: str | None, api: str | None, branch: str, path: Path | None
) -> None:
    """Create a new bare index repository with its config.json: at PATH, or, without PATH, the
    configured index (--index-url or INDEXPUB_INDEX_URL when it is a local path, else the local
    index under the data dir)."""
    from indexpub.gitindex.index import init_index

    if path is None:
        path = _configured_local_index(settings)
        if path.absolute() == config.local_index_path(settings.data_dir):
            settings.check_writable()
        announce(f"initialising the configured index {path}")
    if dl is None:
        if path.absolute() != config.local_index_path(settings.data_dir):
            raise click.UsageError(
                "--dl is needed for an index outside the data dir (the URL template cargo "
                "downloads .crate files from, e.g. https://HOST/api/v1/crates)"
            )
        dl = config.local_index_dl(settings.data_dir)
    try:
        init_index(path, dl=dl, api=api, branch=branch)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"created index {path} (HEAD -> {branch})")


def _configured_local_index(settings: Settings) -> Path:
    """The configured index remote as a local path, refused when it is a network URL."""
    configured = config.configured_index_url(settings.index_url)
    if configured is None:
        return config.local_index_path(settings.data_dir)
    if configured.startswith("file://"):
        return Path(configured.removeprefix("file://"))
    if "://" in configured or (":" in configured and not configured.startswith(("/", "."))):
        raise click.UsageError(
            f"the configured index {configured!r} is not a local path: init-index creates a "
            "local bare repository (name its PATH), a git server's is created on the server"
        )
    return Path(configured)


@click.command()
@click.argument("source")
@click.option("--cksum", help="sha256 of the .crate, for a publish-JSON input.")
@click.option(
    "--max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="What SOURCE holds.",
)
@click.option(
    "--registry-index",
    help="The index URL that a .crate's dependencies on this registry carry (registry-index in "
    "its Cargo.toml). Default: the configured index URL.",
)
@pass_settings
def publish(
    settings: Settings,
    source: str,
    cksum: str | None,
    max_bytes: int,
    input_format: str,
    registry_index: str | None,
) -> None:
    """Publish a version from SOURCE: a .crate file, or a JSON file (or - for stdin) holding
    cargo's publish metadata or an index line."""
    from indexpub.registry import store
    from indexpub.registry.crate_storage import store_crate_file

    data = _read_input(source, max_bytes)
    entry, crate_bytes = entry_from_input(
        data, cksum, registry_index or settings.index_location, input_format
    )
    with settings.migrated() as conn:
        change = store.publish(conn, entry)
        # After the database accepted it (a refused upload must not overwrite the bytes of
        # a published version), before the commit (no version without its file).
        if crate_bytes is not None:
            crates = config.crate_files_dir(settings.data_dir)
            created = not crates.exists()
            store_crate_file(settings.data_dir, entry, crate_bytes)
            if created:
                announce(f"storing .crate files in {crates}")
    if change.outcome is store.Outcome.UNCHANGED:
        click.echo(f"{change.name} {entry.vers} is already published with this content")
    else:
        click.echo(f"published {change.name} {entry.vers}")


def _yank_command(settings: Settings, name: str, version: str, yanked: bool) -> None:
    from indexpub.registry import store

    with settings.migrated() as conn:
        change = (store.yank if yanked else store.unyank)(conn, name, version)
    verb = "yanked" if yanked else "unyanked"
    if change.outcome is store.Outcome.UNCHANGED:
        click.echo(f"{change.name} {version} was already {verb}")
    else:
        click.echo(f"{verb} {change.name} {version}")


@click.command()
@click.argument("name")
@click.argument("version")
@pass_settings
def yank(settings: Settings, name: str, version: str) -> None:
    """Mark NAME VERSION as yanked (existing lockfiles keep working)."""
    _yank_command(settings, name, version, True)


@click.command()
@click.argument("name")
@click.argument("version")
@pass_settings
def unyank(settings: Settings, name: str, version: str) -> None:
    """Undo a yank."""
    _yank_command(settings, name, version, False)
