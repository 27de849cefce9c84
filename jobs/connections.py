"""Connections as the worker needs them: alive-checked, kept alive, never timed out in a job."""

from __future__ import annotations

from typing import Any

import psycopg

from jobs import queries

# A dead peer is noticed within about a minute even when no query is running, so a worker does
# not sit forever on a connection that a failover or a NAT already dropped.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def connect(
    conninfo: str,
    *,
    autocommit: bool,
    application_name: str,
    control: bool = False,
    connect_timeout: int = 10,
) -> psycopg.Connection[Any]:
    """Open a connection for queue work; ``control`` for the one that claims and locks.

    The session disables ``idle_in_transaction_session_timeout`` because the run's transaction is
    idle (holding the row lock) for as long as the job runs; a server-wide setting meant for
    forgotten sessions would otherwise end every long job.
    """
    conn = psycopg.connect(
        conninfo,
        autocommit=autocommit,
        application_name=application_name,
        connect_timeout=connect_timeout,
        **KEEPALIVES,
    )
    conn.execute(queries.SESSION_SETUP)
    if control:
        conn.execute(queries.CONTROL_SESSION_SETUP)
    if not autocommit:
        conn.commit()
    return conn
