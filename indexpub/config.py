"""Where indexpub finds its database, its data directory and (later) its index remote.

Each setting has an environment variable and a matching CLI option; with no database URL at all,
every command works on the embedded defaults under the data directory.
"""

from __future__ import annotations

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
