"""Every SQL statement of the indexpub package, by name (the queue's own live in jobs.queries)."""

from __future__ import annotations

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"

CREATE_DATABASE = "CREATE DATABASE {database}"
