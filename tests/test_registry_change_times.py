"""The registry dates every change the index shows: a publish by published_at, a yank or
unyank by updated_at (what `indexpub check` compares with the remote tip's commit time)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg

from indexpub.domain.entries import IndexEntry
from indexpub.domain.versions import Version
from indexpub.registry import store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def entry(name: str, version: str) -> IndexEntry:
    return IndexEntry(name=name, vers=Version.parse(version), deps=(), cksum="0" * 64)


def test_publish_yank_and_unyank_are_dated_and_no_ops_are_not(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
        nothing = store.changes_after(conn, EPOCH)
        assert (nothing.first, nothing.newest) == (None, None)

        store.publish(conn, entry("alpha", "1.0.0"))
        conn.commit()
        published = store.changes_after(conn, EPOCH)
        assert published.first is not None and published.first == published.newest
        assert published.first <= published.now
        assert store.changes_after(conn, published.newest).first is None

        time.sleep(0.01)
        store.yank(conn, "alpha", "1.0.0")
        conn.commit()
        yanked = store.changes_after(conn, published.newest)
        assert yanked.first is not None and yanked.first > published.newest
        assert yanked.newest == yanked.first

        # Yanking a yanked version changes nothing, and dates nothing.
        store.yank(conn, "alpha", "1.0.0")
        conn.commit()
        assert store.changes_after(conn, yanked.newest).first is None

        time.sleep(0.01)
        store.unyank(conn, "alpha", "1.0.0")
        store.publish(conn, entry("beta", "0.1.0"))
        conn.commit()
        # One transaction: both changes carry its start time.
        later = store.changes_after(conn, yanked.newest)
        assert later.first is not None and later.first > yanked.newest
        assert later.newest == later.first
        # The first change after a moment, not the newest.
        assert store.changes_after(conn, EPOCH).first == published.first
