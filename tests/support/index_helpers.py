"""Shared pieces of the index tests: a registry with a bare remote, fixture crates, git reads."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from indexpub import config
from indexpub.domain.crate_file import read_crate_bytes
from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import index_path
from indexpub.gitindex.index import GitIndex, init_index
from indexpub.pipeline.jobs import configure_index
from indexpub.registry import accounts, render, store
from indexpub.registry.queue import INDEX_QUEUE, SPARSE_QUEUE, app
from support.git import git

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "fixtures" / "crates-dist"


def fixture_files() -> dict[tuple[str, str], Path]:
    manifest: Any = json.loads((DIST / "manifest.json").read_text())
    return {(c["name"], c["version"]): DIST / c["file"] for c in manifest["crates"]}


def fixtures_registry_url() -> str:
    """The index URL the fixture crates were packaged for: ours plays that registry."""
    manifest: Any = json.loads((DIST / "manifest.json").read_text())
    return str(manifest["registry_index_in_crates"])


def fixture_entry(name: str, version: str) -> IndexEntry:
    data = fixture_files()[(name, version)].read_bytes()
    return read_crate_bytes(data, index_url=fixtures_registry_url())


def publish_fixture_crates(conn: psycopg.Connection[Any], data_dir: Path) -> None:
    """Publish every fixture crate, its .crate file stored where serve and cargo's download
    URL find it (``DATA_DIR/crates/NAME/NAME-VERSION.crate``), in the caller's transaction."""
    for path in fixture_files().values():
        data = path.read_bytes()
        entry = read_crate_bytes(data, index_url=fixtures_registry_url())
        folder = data_dir / "crates" / entry.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{entry.name}-{entry.vers}.crate").write_bytes(data)
        store.publish(conn, entry)


@dataclass
class Registry:
    """A migrated database, a bare index remote with config.json, and a data directory."""

    url: str
    data: Path
    remote: Path

    @property
    def clone(self) -> Path:
        return config.clone_path(self.data, str(self.remote))

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url)

    def token(self, login: str) -> str:
        """A new API token of user ``login`` (created with it)."""
        with self.connect() as conn:
            return accounts.create_token(conn, login)

    def publish(self, *entries: IndexEntry) -> None:
        with self.connect() as conn:
            for entry in entries:
                store.publish(conn, entry)

    def index(self) -> GitIndex:
        return GitIndex.open(str(self.remote), self.clone)

    @property
    def sparse(self) -> Path:
        return self.data / "sparse"

    def drain(self) -> int:
        """Run the git and sparse queues in this process until nothing is ready; jobs run."""
        configure_index(str(self.remote), self.clone, self.sparse)
        ran = 0
        for queue in (INDEX_QUEUE, SPARSE_QUEUE):
            worker = app.worker(self.url, queue, drain=True)
            worker.run()
            ran += worker.jobs_run
        return ran

    def remote_file(self, name: str) -> str | None:
        try:
            return git(f"--git-dir={self.remote}", "show", f"HEAD:{index_path(name)}")
        except subprocess.CalledProcessError:
            return None

    def messages(self) -> list[str]:
        """Commit subjects on the remote, oldest first, without the initial commit."""
        out = git(f"--git-dir={self.remote}", "log", "--reverse", "--format=%s", "HEAD")
        return out.splitlines()[1:]

    def expected_file(self, name: str) -> str | None:
        with self.connect() as conn:
            rendered = render.render_crate_file(conn, name.lower())
        return None if rendered is None else rendered.decode()

    def pending_jobs(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM indexpub_jobs.jobs").fetchone()
            assert row is not None
            return int(row[0])


def make_registry(url: str, tmp: Path) -> Registry:
    data = tmp / "data"
    data.mkdir()
    remote = tmp / "index.git"
    init_index(remote, dl=(data / "crates").as_uri() + "/{crate}/{crate}-{version}.crate", api=None)
    with psycopg.connect(url) as conn:
        store.migrate(conn)
    return Registry(url, data, remote)


def foreign_push(reg: Registry, tmp_path: Path, edit: Callable[[Path], None], message: str) -> None:
    """Another writer clones the remote, edits its work tree, and pushes."""
    other = tmp_path / "foreign"
    if not other.exists():
        git("clone", "-q", str(reg.remote), str(other))
    git("pull", "-q", cwd=other)
    edit(other)
    git("add", "-A", cwd=other)
    git("-c", "user.name=ops", "-c", "user.email=o@e", "commit", "-qm", message, cwd=other)
    git("push", "-q", "origin", "HEAD", cwd=other)


def index_consumer_pid(url: str) -> int | None:
    """The pid of the worker process that holds the ``index`` queue's single-consumer lock (the
    active one), read from its control connection's application_name; None while none does."""
    with psycopg.connect(url, autocommit=True) as conn:
        holder = app.store.consumer(conn, INDEX_QUEUE)
    found = None if holder is None else re.search(r"pid (\d+)", holder.application_name)
    return None if found is None else int(found.group(1))
