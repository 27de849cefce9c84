"""Owners and logins against a real PostgreSQL: the crate row lock that serializes owner
changes, and the login rules that keep bad text out of the database."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from indexpub.cli import main
from indexpub.domain.entries import IndexEntry
from indexpub.errors import InvalidInput
from indexpub.registry import accounts, store

# Logins crates.io would never have, each of which once reached PostgreSQL (NUL: a DataError;
# a lone surrogate: an encoding error) or was accepted although it is not ASCII.
BAD_LOGINS = [
    "",
    "a\x00b",
    "\ud800",
    "bad\udcff",
    "josé",
    "-dash",
    "_under",
    "a.b",
    "a b",
    "x" * 40,
]


def entry(name: str, version: str = "0.1.0") -> IndexEntry:
    return IndexEntry.from_json(
        {"name": name, "vers": version, "deps": [], "cksum": "0" * 64, "features": {}}
    )


def user(url: str, login: str) -> accounts.User:
    with psycopg.connect(url) as conn:
        found = accounts.authenticate(conn, accounts.create_token(conn, login))
    assert found is not None
    return found


def owners(url: str, name: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [u.login for u in accounts.list_owners(conn, name)]


def backend_waits_on_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


def test_two_owners_removing_each_other_at_once_leave_one(database_url: str) -> None:
    url = database_url
    with psycopg.connect(url) as conn:
        store.migrate(conn)
    alice, bob = user(url, "alice"), user(url, "bob")
    with psycopg.connect(url) as conn:
        accounts.publish(conn, entry("shared"), alice)
        accounts.add_owners(conn, "shared", ["bob"], alice)
    assert owners(url, "shared") == ["alice", "bob"]

    first = psycopg.connect(url)
    second = psycopg.connect(url)
    outcome: dict[str, Any] = {}

    def bob_removes_alice() -> None:
        try:
            outcome["result"] = accounts.remove_owners(second, "shared", ["alice"], bob)
            second.commit()
        except Exception as exc:
            second.rollback()
            outcome["error"] = exc

    try:
        # Alice removes bob and holds her transaction open: the crate's row stays locked.
        assert accounts.remove_owners(first, "shared", ["bob"], alice) == ["bob"]
        racer = threading.Thread(target=bob_removes_alice)
        racer.start()
        # Bob's change must wait for the lock (or, without one, it runs to its end).
        pid = second.info.backend_pid
        deadline = time.monotonic() + 10
        while racer.is_alive() and not backend_waits_on_lock(url, pid):
            assert time.monotonic() < deadline, "bob neither finished nor waited on a lock"
            time.sleep(0.01)
        first.commit()
        racer.join(10)
        assert not racer.is_alive()
    finally:
        first.close()
        second.close()
    assert owners(url, "shared") == ["alice"]
    error = outcome.get("error")
    assert isinstance(error, accounts.NotAllowed), outcome
    assert str(error) == "user 'bob' is not an owner of crate 'shared'"


@pytest.fixture
def solo(database_url: str) -> accounts.User:
    """alice, the one owner of crate ``solo``."""
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
    alice = user(database_url, "alice")
    with psycopg.connect(database_url) as conn:
        accounts.publish(conn, entry("solo"), alice)
    return alice


def test_the_last_owner_can_never_be_removed(database_url: str, solo: accounts.User) -> None:
    url, alice = database_url, solo
    with psycopg.connect(url) as conn, pytest.raises(store.Conflict) as refused:
        accounts.remove_owners(conn, "solo", ["alice"], alice)
    assert (
        str(refused.value) == "cannot remove every owner of crate 'solo': it must keep at least one"
    )
    assert owners(url, "solo") == ["alice"]


@pytest.mark.parametrize("login", BAD_LOGINS)
def test_bad_logins_are_invalid_input_in_the_python_api(
    database_url: str, solo: accounts.User, login: str
) -> None:
    url, alice = database_url, solo
    with psycopg.connect(url) as conn:
        for call in (
            lambda: accounts.create_token(conn, login),
            lambda: accounts.add_owners(conn, "solo", [login], alice),
            lambda: accounts.add_owner_as_admin(conn, "solo", login),
        ):
            with pytest.raises(InvalidInput) as refused:
                call()
            message = str(refused.value)
            assert message.startswith("invalid user name ") and "\n" not in message
            assert len(message) < 200
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM indexpub.users").fetchone()
    assert row == (1,)


def test_logins_by_the_rules_are_accepted(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
        for login in ("a", "A-b_9", "9lives", "x" * 39):
            assert accounts.create_token(conn, login).startswith(accounts.TOKEN_PREFIX)


def test_unstorable_text_is_refused_where_only_storable_text_is_asked(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
        for login, name in (
            ("a\x00", None),
            ("\udcff", None),
            ("alice", "ci\x00"),
            ("alice", "\ud800"),
        ):
            with pytest.raises(InvalidInput):
                accounts.revoke_tokens(conn, login, name)
        with pytest.raises(InvalidInput, match="invalid token name"):
            accounts.create_token(conn, "alice", "\udcff")


@pytest.mark.parametrize("login", ["a\x00b", "\udcff", "bad\udcffname", "josé", "y" * 5000])
def test_bad_logins_on_the_command_line_are_one_line_refusals(
    database_url: str, tmp_path: Any, login: str
) -> None:
    def cli(*args: str) -> Any:
        return CliRunner().invoke(
            main, ["--database-url", database_url, "--data-dir", str(tmp_path), *args]
        )

    alice = cli("token", "create", "alice")
    assert alice.exit_code == 0, alice.output
    with psycopg.connect(database_url) as conn:
        owner = accounts.authenticate(conn, alice.stdout.strip())
        assert owner is not None
        accounts.publish(conn, entry("solo"), owner)
    for args in (("token", "create", login), ("owner", "add", "solo", login)):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "invalid user name" in lines[0], result.output
        assert len(lines[0]) < 250
