"""``indexpub serve``'s connection limits, against a real server process on 127.0.0.1 and raw
sockets: clients that stall in the headers or the body, strangers who never send their body,
and more connections than the limit. Timeouts are set to half a second to keep this fast."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.cargo_registry import free_port, stop_groups

from indexpub.registry import accounts, render, store

FAST = ["--header-timeout", "0.5", "--body-timeout", "0.5"]


@contextlib.contextmanager
def serving(database_url: str, tmp: Path, *options: str) -> Iterator[int]:
    """A real ``indexpub serve`` on 127.0.0.1 with these options; yields its port."""
    port = free_port()
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    log = tmp / "serve.log"
    env = {**os.environ, "INDEXPUB_DATABASE_URL": database_url, "INDEXPUB_DATA_DIR": str(data)}
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "indexpub", "serve", "--port", str(port), *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                    # The server closes this connection, and forgets it before the EOF comes
                    # out: it does not count against the concurrency limit afterwards.
                    probe.sendall(request("GET", "/index/config.json", {"Connection": "close"}))
                    assert read_response(probe)[0] == 200
                    assert closed_by_server(probe)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield port
    finally:
        stop_groups([process])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)  # a server that never answers fails the test, it does not hang it
    return sock


def request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset); False on a timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def cargo_detail(body: bytes) -> str:
    parsed = json.loads(body)
    assert set(parsed) == {"errors"} and len(parsed["errors"]) == 1, parsed
    return str(parsed["errors"][0]["detail"])


@pytest.fixture
def token(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
        return accounts.create_token(conn, "alice")


def test_headers_that_stall_are_cut_off_but_idle_keep_alive_is_not(
    database_url: str, tmp_path: Path, token: str
) -> None:
    with serving(database_url, tmp_path, *FAST) as port:
        # Half the headers, then nothing: closed after the header timeout.
        with connect(port) as slow:
            slow.sendall(b"GET /index/config.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half:")
            started = time.monotonic()
            assert closed_by_server(slow)
            assert 0.4 < time.monotonic() - started < 3
        # A connection that sends nothing at all: the same.
        with connect(port) as silent:
            started = time.monotonic()
            assert closed_by_server(silent)
            assert 0.4 < time.monotonic() - started < 3
        # Trickled headers, a byte at a time: the deadline counts from the first one.
        with connect(port) as trickle:
            started = time.monotonic()
            with contextlib.suppress(OSError):
                for byte in request("GET", "/index/config.json"):
                    trickle.sendall(bytes([byte]))
                    time.sleep(0.05)
            assert closed_by_server(trickle)
            assert time.monotonic() - started < 3
        # A well-behaved client idle between two requests for longer than the header timeout
        # (but within keep-alive) keeps its connection.
        with connect(port) as good:
            good.sendall(request("GET", "/index/config.json"))
            assert read_response(good)[0] == 200
            time.sleep(1.0)
            good.sendall(request("GET", "/index/config.json"))
            assert read_response(good)[0] == 200


def test_a_body_that_stalls_gets_408_and_the_connection_closes(
    database_url: str, tmp_path: Path, token: str
) -> None:
    with serving(database_url, tmp_path, *FAST) as port:
        for method, path in (("PUT", "/api/v1/crates/new"), ("PUT", "/api/v1/crates/x/owners")):
            with connect(port) as sock:
                head = {"Authorization": token, "Content-Length": "1000"}
                sock.sendall(request(method, path, head) + b"\x10\x00\x00\x00{")
                started = time.monotonic()
                status, headers, body = read_response(sock)
                assert 0.4 < time.monotonic() - started < 3
                assert status == 408, body
                assert (
                    cargo_detail(body)
                    == "the request body stalled: no data for 0.5 s after 5 bytes"
                )
                assert headers["connection"] == "close"
                assert closed_by_server(sock)
    with psycopg.connect(database_url) as conn:
        assert render.all_crate_names(conn) == []


def test_a_bad_token_is_refused_before_the_body_is_awaited(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # A body timeout far longer than the test: only an answer that waits for no body passes.
    with serving(database_url, tmp_path, "--body-timeout", "60") as port:
        for method, path in (
            ("PUT", "/api/v1/crates/new"),
            ("PUT", "/api/v1/crates/x/owners"),
            ("DELETE", "/api/v1/crates/x/owners"),
            ("DELETE", "/api/v1/crates/x/1.0.0/yank"),
            ("PUT", "/api/v1/crates/x/1.0.0/unyank"),
        ):
            for auth in ({"Authorization": "ipub_wrong"}, {}):
                with connect(port) as sock:
                    sock.sendall(request(method, path, {**auth, "Content-Length": "100"}))
                    status, headers, body = read_response(sock)
                    assert status == 403, (method, path, body)
                    cargo_detail(body)
                    assert headers["connection"] == "close"
                    assert closed_by_server(sock)


def test_connections_beyond_the_concurrency_limit_get_503(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # uvicorn counts the connection asking too: with a limit of 3, two others may be open.
    with serving(database_url, tmp_path, "--limit-concurrency", "3") as port:
        with connect(port) as first, connect(port) as second:
            for sock in (first, second):
                sock.sendall(request("GET", "/index/config.json"))
                assert read_response(sock)[0] == 200
            with connect(port) as third:
                third.sendall(request("GET", "/index/config.json"))
                status, _, body = read_response(third)
                assert status == 503, body
        # With the others gone, requests are served again.
        deadline = time.monotonic() + 5
        while True:
            with connect(port) as again:
                again.sendall(request("GET", "/index/config.json"))
                if read_response(again)[0] == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_limits_are_checked_on_the_command_line(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "INDEXPUB_DATABASE_URL": database_url}
    for option, value in (
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--limit-concurrency", "0"),
        ("--keep-alive-timeout", "0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "indexpub", "serve", option, value],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (option, done.stderr)
        assert f"Invalid value for '{option}'" in done.stderr


def test_the_command_line_defaults_are_the_modules_defaults() -> None:
    """`indexpub serve --help` must not import the HTTP stack, so cli/http.py writes the
    defaults out; they must stay the ones the modules use."""
    from indexpub.cli import http
    from indexpub.serve import http_limits, upload

    assert http.DEFAULT_HEADER_TIMEOUT == http_limits.DEFAULT_HEADER_TIMEOUT
    assert http.DEFAULT_KEEP_ALIVE_TIMEOUT == http_limits.DEFAULT_KEEP_ALIVE_TIMEOUT
    assert http.DEFAULT_LIMIT_CONCURRENCY == http_limits.DEFAULT_LIMIT_CONCURRENCY
    assert http.DEFAULT_BODY_TIMEOUT == upload.DEFAULT_BODY_TIMEOUT
