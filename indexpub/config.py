"""Where indexpub finds its database, its data directory and (later) its index remote.

Each setting has an environment variable and a matching CLI option; with no database URL at all,
every command works on the embedded defaults under the data directory.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

JOBS_SCHEMA = "indexpub_jobs"

GIT_TIMEOUT_ENV = "INDEXPUB_GIT_TIMEOUT"
# Seconds a git process of the index pipeline (a push, a fetch, ls-remote, cat-file) may run
# before it is killed with its process group: long enough for a push of 500 updates over a slow
# link, short enough that a hung remote does not hold the single git writer for long.
DEFAULT_GIT_TIMEOUT = 60.0


def data_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    if env := os.environ.get("INDEXPUB_DATA_DIR"):
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "indexpub"


def configured_database_url(explicit: str | None = None) -> str | None:
    """The database URL from the option or the environment; None means the embedded server."""
    return explicit or os.environ.get("INDEXPUB_DATABASE_URL") or os.environ.get("DATABASE_URL")


def embedded_pgdata(data: Path) -> Path:
    """Where the embedded server keeps its files under the data directory."""
    return data / "postgres"


def database_url(explicit: str | None = None, data: Path | None = None) -> str:
    """The configured URL, else the embedded server's (started on demand)."""
    url = configured_database_url(explicit)
    if url:
        return url
    from indexpub import embedded  # psycopg and the server wheel, only when they are used

    return embedded.database_url(embedded_pgdata(data or data_dir()))


def git_timeout(value: str | float | None = None) -> float:
    """The git timeout in seconds: ``value`` (an option's), else ``INDEXPUB_GIT_TIMEOUT``, else
    the default. A value that is not a positive, finite number of seconds is a ValueError with
    one line, so that a typo stops the worker at start instead of leaving it with no timeout."""
    raw = os.environ.get(GIT_TIMEOUT_ENV, "") if value is None else value
    if isinstance(raw, str) and not raw.strip():
        return DEFAULT_GIT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        shown = repr(raw if not isinstance(raw, str) or len(raw) <= 40 else raw[:40] + "...")
        raise ValueError(
            f"{GIT_TIMEOUT_ENV} must be a positive number of seconds (such as 60 or 2.5), "
            f"not {shown}"
        )
    return seconds


def configured_index_url(explicit: str | None = None) -> str | None:
    """The index remote from the option or the environment; None means the local default."""
    return explicit or os.environ.get("INDEXPUB_INDEX_URL") or None


def local_index_path(data: Path) -> Path:
    """Where the embedded default's bare index remote lives under the data directory."""
    return data / "index.git"


def local_index_dl(data: Path) -> str:
    """The ``dl`` of the local default: the crate files ``indexpub publish`` stores, by
    ``file://`` URL, so cargo can resolve and download with no server at all."""
    return crate_files_dir(data).as_uri() + "/{crate}/{crate}-{version}.crate"


def crate_files_dir(data: Path) -> Path:
    """Where published ``.crate`` files are stored and served from (``INDEXPUB_CRATE_DIR``, else
    ``crates`` in the data dir): set apart from the data dir when several hosts, each with a
    data dir of its own, must read and write the same files (a shared mount)."""
    if env := os.environ.get("INDEXPUB_CRATE_DIR"):
        return Path(env).expanduser().resolve()
    return data / "crates"


def clone_path(data: Path, remote_url: str) -> Path:
    """One bare clone per remote, so pointing the worker at another index never mixes them."""
    digest = hashlib.sha256(remote_url.encode()).hexdigest()[:12]
    return data / "clones" / digest


def verify_clone_path(data: Path, remote_url: str) -> Path:
    """The bare clone that ``verify`` reads the remote in, apart from the worker's, which only
    the index queue's consumer may touch."""
    digest = hashlib.sha256(remote_url.encode()).hexdigest()[:12]
    return data / "verify" / digest


def sparse_dir(data: Path) -> Path:
    """Where the sparse index's files are written (``INDEXPUB_SPARSE_DIR``, else ``sparse`` in
    the data dir); apart from the data dir for the same reason as :func:`crate_files_dir`."""
    if env := os.environ.get("INDEXPUB_SPARSE_DIR"):
        return Path(env).expanduser().resolve()
    return data / "sparse"
