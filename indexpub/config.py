"""Where indexpub finds its database, its data directory and (later) its index remote.

Each setting has an environment variable and a matching CLI option; with no database URL at all,
every command works on the embedded defaults under the data directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from indexpub import embedded

JOBS_SCHEMA = "indexpub_jobs"


def data_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    if env := os.environ.get("INDEXPUB_DATA_DIR"):
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "indexpub"


def database_url(explicit: str | None = None, data: Path | None = None) -> str:
    """The configured URL, else the embedded server's (started on demand)."""
    url = explicit or os.environ.get("INDEXPUB_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    return embedded.database_url((data or data_dir()) / "postgres")


def index_url(explicit: str | None = None, data: Path | None = None) -> str:
    """The index's git remote: configured, else a local bare repository under the data dir."""
    url = explicit or os.environ.get("INDEXPUB_INDEX_URL")
    if url:
        return url
    return str(local_index(data or data_dir()))


def local_index(data: Path) -> Path:
    """The embedded default's bare index remote, created with its config.json on first use.

    Its ``dl`` points at the crate files that ``indexpub publish`` stores under the data dir,
    so cargo can resolve and download from it with ``file://`` URLs alone.
    """
    from indexpub.git_index import init_index

    path = data / "index.git"
    if not (path / "HEAD").exists():
        init_index(
            path, dl=crate_files_dir(data).as_uri() + "/{crate}/{crate}-{version}.crate", api=None
        )
    return path


def crate_files_dir(data: Path) -> Path:
    return data / "crates"


def clone_path(data: Path, remote_url: str) -> Path:
    """One bare clone per remote, so pointing the worker at another index never mixes them."""
    digest = hashlib.sha256(remote_url.encode()).hexdigest()[:12]
    return data / "clones" / digest


def sparse_dir(data: Path) -> Path:
    """Where the sparse index's files are written (``INDEXPUB_SPARSE_DIR``, else the data dir)."""
    if env := os.environ.get("INDEXPUB_SPARSE_DIR"):
        return Path(env).expanduser().resolve()
    return data / "sparse"
