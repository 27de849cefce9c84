"""The ``indexpub`` commands that change the registry: init-index, publish, yank, unyank, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from indexpub import config, store
from indexpub.cli import Settings, main, pass_settings
from indexpub.crate_file import DEFAULT_MAX_BYTES, read_crate_bytes
from indexpub.crate_storage import store_crate_file
from indexpub.entries import IndexEntry
from indexpub.errors import InvalidInput
from indexpub.git_index import GitIndex, init_index
from indexpub.names import index_path
from indexpub.tasks import INDEX_QUEUE, SPARSE_QUEUE, app, configure_index

GZIP_MAGIC = b"\x1f\x8b"


class InputError(click.ClickException):
    """Bad input: one line on stderr, exit status 1, nothing stored or enqueued."""


def _read_input(source: str, max_bytes: int) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"cannot read {source!r}: no such file")
        if path.stat().st_size > max_bytes:
            raise InputError(f"{source!r} is larger than the limit of {max_bytes} bytes")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise InputError(f"the input is larger than the limit of {max_bytes} bytes")
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
    if input_format == "crate" or (input_format == "auto" and data.startswith(GZIP_MAGIC)):
        return read_crate_bytes(data, index_url=registry_index), data
    if input_format == "index-line":
        return IndexEntry.from_line(data), None
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(
            f"the input is neither a .crate file nor JSON: {exc.__class__.__name__}: {exc}"
        ) from None
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


@main.command("init-index")
@click.option("--dl", required=True, help="Download URL template for config.json.")
@click.option("--api", help="Registry API URL for config.json (for cargo publish and yank).")
@click.option("--branch", default="master", show_default=True)
@click.argument("path", type=click.Path(path_type=Path))
def init_index_command(dl: str, api: str | None, branch: str, path: Path) -> None:
    """Create a new bare index repository at PATH with its config.json."""
    try:
        init_index(path, dl=dl, api=api, branch=branch)
    except FileExistsError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"created index {path} (HEAD -> {branch})")


@main.command()
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
    data = _read_input(source, max_bytes)
    try:
        entry, crate_bytes = entry_from_input(
            data, cksum, registry_index or settings.index(), input_format
        )
        with settings.connect() as conn:
            store.migrate(conn)
            change = store.publish(conn, entry)
            # After the database accepted it (a refused upload must not overwrite the bytes of
            # a published version), before the commit (no version without its file).
            if crate_bytes is not None:
                store_crate_file(settings.data_dir, entry, crate_bytes)
    except InvalidInput as exc:
        raise InputError(str(exc)) from None
    if change.outcome is store.Outcome.UNCHANGED:
        click.echo(f"{change.name} {entry.vers} is already published with this content")
    else:
        click.echo(f"published {change.name} {entry.vers}")


def _yank_command(settings: Settings, name: str, version: str, yanked: bool) -> None:
    try:
        with settings.connect() as conn:
            store.migrate(conn)
            change = (store.yank if yanked else store.unyank)(conn, name, version)
    except InvalidInput as exc:
        raise InputError(str(exc)) from None
    verb = "yanked" if yanked else "unyanked"
    if change.outcome is store.Outcome.UNCHANGED:
        click.echo(f"{change.name} {version} was already {verb}")
    else:
        click.echo(f"{verb} {change.name} {version}")


@main.command()
@click.argument("name")
@click.argument("version")
@pass_settings
def yank(settings: Settings, name: str, version: str) -> None:
    """Mark NAME VERSION as yanked (existing lockfiles keep working)."""
    _yank_command(settings, name, version, True)


@main.command()
@click.argument("name")
@click.argument("version")
@pass_settings
def unyank(settings: Settings, name: str, version: str) -> None:
    """Undo a yank."""
    _yank_command(settings, name, version, False)


def fixture_crates() -> tuple[list[Path], str]:
    """The sample .crate files of a source checkout, dependencies first, and the index URL they
    were packaged for (which the demo's registry stands in for)."""
    dist = Path(__file__).resolve().parent.parent / "fixtures" / "crates-dist"
    manifest = dist / "manifest.json"
    if not manifest.exists():
        raise click.ClickException(f"the demo needs the fixtures of a source checkout ({dist})")
    listed: Any = json.loads(manifest.read_text())
    files = [dist / str(item["file"]) for item in listed["crates"]]
    return files, str(listed["registry_index_in_crates"])


@main.command()
@pass_settings
def demo(settings: Settings) -> None:
    """On embedded defaults: create the index, publish the fixture crates, yank one, run the
    worker until drained, and show the remote's log and one index file."""
    remote = settings.index()
    with settings.connect() as conn:
        store.migrate(conn)
        published = []
        files, packaged_for = fixture_crates()
        for path in files:
            data = path.read_bytes()
            entry = read_crate_bytes(data, index_url=packaged_for)
            change = store.publish(conn, entry)
            store_crate_file(settings.data_dir, entry, data)
            published.append(f"{change.name} {entry.vers} ({change.outcome.value})")
        yanked = store.yank(conn, "plain", "0.1.0")
        conn.commit()
    click.echo("published: " + ", ".join(published))
    click.echo(f"yanked: plain 0.1.0 ({yanked.outcome.value})")
    configure_index(
        remote,
        config.clone_path(settings.data_dir, remote),
        config.sparse_dir(settings.data_dir),
    )
    code = app.supervisor(settings.url(), [INDEX_QUEUE, SPARSE_QUEUE], drain=True).run()
    if code != 0:
        raise click.ClickException(f"the worker exited with status {code}")
    click.echo(f"\nindex remote: {remote}")
    log = subprocess.run(
        ["git", "--git-dir", remote, "log", "--format=%h %s", "-n", "20"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    click.echo(log.rstrip())
    index = GitIndex.open(remote, config.clone_path(settings.data_dir, remote))
    index.fetch()
    crate_path = index_path("plain")
    content = index.read_file(crate_path)
    click.echo(f"\n{crate_path}:")
    click.echo((content or b"").decode().rstrip())
