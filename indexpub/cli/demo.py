"""``indexpub demo``: the whole pipeline on the fixture crates, on embedded defaults."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click

from indexpub import config
from indexpub.cli.common import CommandError, Settings, invocation, pass_settings, redact_url


def fixture_crates() -> tuple[list[Path], str]:
    """The sample .crate files of a source checkout, dependencies first, and the index URL they
    were packaged for (which the demo's registry stands in for)."""
    dist = Path(__file__).resolve().parents[2] / "fixtures" / "crates-dist"
    manifest = dist / "manifest.json"
    if not manifest.exists():
        raise CommandError(f"the demo needs the fixtures of a source checkout ({dist})")
    listed: Any = json.loads(manifest.read_text())
    files = [dist / str(item["file"]) for item in listed["crates"]]
    return files, str(listed["registry_index_in_crates"])


@click.command()
@pass_settings
def demo(settings: Settings) -> None:
    """On embedded defaults: create the index, publish the fixture crates, yank one, run the
    worker until drained, and show the remote's log and one index file."""
    from indexpub.domain.crate_file import read_crate_bytes
    from indexpub.domain.names import index_path
    from indexpub.gitindex.index import GitIndex
    from indexpub.pipeline.jobs import configure_index
    from indexpub.registry import store
    from indexpub.registry.crate_storage import store_crate_file
    from indexpub.registry.queue import INDEX_QUEUE, SPARSE_QUEUE, app

    remote = settings.index()
    with settings.migrated() as conn:
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
        raise CommandError(f"the worker exited with status {code}")
    click.echo("\nthe index's log:")
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
    click.echo()
    for line in where_things_are(settings, remote):
        click.echo(line)


def where_things_are(settings: Settings, remote: str) -> list[str]:
    """Three lines: where the index and the database live, how to look, how to stop."""
    base = f"{invocation()} --data-dir {settings.data_dir}"
    lines = [f"the index: {remote} (look: git --git-dir {remote} log --stat)"]
    if settings.embedded:
        lines += [
            f"the database: embedded PostgreSQL in {settings.pgdata} (look: {base} status,"
            f' or psql "$({base} db url)")',
            f"it keeps running for the next command; stop it with: {base} db stop",
        ]
    else:
        url = redact_url(config.configured_database_url(settings.database_url) or "")
        lines += [
            f"the database: {url} (look: {base} status)",
            "it is yours: indexpub neither started it nor stops it",
        ]
    return lines
