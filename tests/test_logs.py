"""``--log-format``: the human line and one JSON object per line, with the running job's fields,
durations as numbers, and never a credential — down to a real ``indexpub worker`` whose pushes to
an HTTP remote are refused after git hands over the token."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from indexpub.cli import main
from indexpub.cli.logs import HumanFormatter, JsonFormatter, Scrubber
from jobs import App, JobContext
from jobs.logcontext import JobFieldsFilter, add_fields

SECRET = "s3cr3t-Token-4711"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --------------------------------------------------------------------------- formatters


@contextlib.contextmanager
def captured(formatter: logging.Formatter, *names: str) -> Iterator[io.StringIO]:
    """What the loggers ``names`` write through a handler with ``formatter``."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def log_every_kind_of_leak(log: logging.Logger, url: str) -> None:
    log.warning("pushing to %s", url)
    log.warning("the token is %s", SECRET)
    log.info("cloned", extra={"remote": url, "tokens": [SECRET], "duration_s": 0.25})
    try:
        raise RuntimeError(f"git said: fatal: unable to access '{url}': 403 ({SECRET})")
    except RuntimeError:
        log.exception("push failed")


@pytest.mark.parametrize(
    "where", ["url-password", "url-token-as-user", "environment"], ids=lambda w: w
)
@pytest.mark.parametrize("kind", ["human", "json"])
def test_formatters_scrub_every_secret_everywhere(
    kind: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = {
        "url-password": f"https://someone:{SECRET}@git.example.org/index.git",
        "url-token-as-user": f"https://{SECRET}@git.example.org/index.git",
        "environment": "https://git.example.org/index.git",
    }[where]
    if where == "environment":
        monkeypatch.setenv("INDEXPUB_GIT_TOKEN", SECRET)
    scrub = Scrubber(configured, None)
    formatter = JsonFormatter(scrub) if kind == "json" else HumanFormatter(scrub)
    with captured(formatter, "test.leaks") as out:
        log_every_kind_of_leak(logging.getLogger("test.leaks"), configured)
    text = out.getvalue()
    assert SECRET not in text
    assert "***" in text
    assert "push failed" in text and "RuntimeError: git said" in text
    if kind == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["message"] for line in lines] == [
            "pushing to " + scrub(configured),
            "the token is ***",
            "cloned",
            "push failed",
        ]
        assert lines[2]["tokens"] == ["***"] and lines[2]["duration_s"] == 0.25
        assert "RuntimeError: git said" in lines[3]["exception"]


@pytest.mark.parametrize("kind", ["human", "json"])
def test_the_database_password_is_scrubbed_from_urls_and_conninfo(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "pg-env-" + SECRET)
    for url in (
        f"postgresql://app:{SECRET}@db.internal/registry",
        f"host=db.internal user=app password='{SECRET}' dbname=registry",
        f"host=db.internal password={SECRET}",
    ):
        scrub = Scrubber(None, url)
        formatter = JsonFormatter(scrub) if kind == "json" else HumanFormatter(scrub)
        with captured(formatter, "test.db") as out:
            log = logging.getLogger("test.db")
            log.warning("connecting with %s", url)
            log.warning("the password alone: %s; PGPASSWORD: pg-env-%s", SECRET, SECRET)
        assert SECRET not in out.getvalue(), (url, out.getvalue())


def test_a_json_line_has_the_documented_fields() -> None:
    with captured(JsonFormatter(Scrubber(None, None)), "test.shape") as out:
        logging.getLogger("test.shape").warning(
            "took %.1f s", 1.5, extra={"duration_s": 1.5, "odd": float("nan"), "obj": Path("/x")}
        )
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert set(record) == {"time", "level", "logger", "message", "pid", "duration_s", "odd", "obj"}
    assert TIME.match(record["time"]), record["time"]
    assert (record["level"], record["logger"], record["message"]) == (
        "WARNING",
        "test.shape",
        "took 1.5 s",
    )
    assert record["pid"] == os.getpid()
    assert record["duration_s"] == 1.5 and isinstance(record["duration_s"], float)
    assert (record["odd"], record["obj"]) == ("nan", "/x")


# --------------------------------------------------------------------------- job fields

app = App(schema="logs_jobs")
job_log = logging.getLogger("test.logs.job")


@app.job_type(queue="logs", max_attempts=None)
def speak(ctx: JobContext, payload: Any) -> None:
    add_fields(crate=payload["crate"])
    job_log.info("working on %s", payload["crate"])
    if payload.get("fail"):
        raise RuntimeError("this crate cannot be written")


@app.job_type(queue="batches", batch_size=10)
def speak_in_batches(ctx: JobContext, payloads: list[Any]) -> None:
    add_fields(crates=[p["crate"] for p in payloads])
    job_log.info("a batch of %d", len(payloads))


@pytest.mark.parametrize("through", ["context", "filter"])
def test_records_inside_a_job_carry_its_fields(database_url: str, through: str) -> None:
    """A real worker runs real jobs; its lines and the job's own carry the job's fields, read
    from the context at format time or put on the record by JobFieldsFilter."""
    with psycopg.connect(database_url) as conn:
        app.migrate(conn)
        ok, bad = app.enqueue_many(
            conn, [speak.job({"crate": "alpha"}), speak.job({"crate": "beta", "fail": True})]
        )
        batch = app.enqueue_many(conn, [speak_in_batches.job({"crate": c}) for c in "xyz"])
    formatter = JsonFormatter(Scrubber(None, None))
    with captured(formatter, "test.logs.job", "jobs.worker") as out:
        handler = logging.getLogger("jobs.worker").handlers[-1]
        if through == "filter":
            handler.addFilter(JobFieldsFilter())
        job_log.info("before any job")
        app.worker(database_url, "logs", drain=True).run()
        app.worker(database_url, "batches", drain=True).run()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    by_message = {line["message"].split(":")[-1].strip(): line for line in lines}

    assert "job_id" not in by_message["before any job"]
    alpha = by_message["working on alpha"]
    assert {k: alpha[k] for k in ("job_id", "job_type", "queue", "attempt", "crate")} == {
        "job_id": ok.id,
        "job_type": "speak",
        "queue": "logs",
        "attempt": 1,
        "crate": "alpha",
    }
    assert by_message["working on beta"]["job_id"] == bad.id
    (failed,) = [line for line in lines if " failed: " in line["message"]]
    assert failed["logger"] == "jobs.worker" and failed["level"] == "WARNING"
    assert failed["message"].endswith("RuntimeError: this crate cannot be written")
    assert (failed["job_id"], failed["crate"], failed["queue"]) == (bad.id, "beta", "logs")
    assert isinstance(failed["duration_s"], float) and 0 <= failed["duration_s"] < 10
    batched = by_message["a batch of 3"]
    assert batched["job_ids"] == [e.id for e in batch] and batched["attempts"] == [1, 1, 1]
    assert batched["crates"] == ["x", "y", "z"] and "job_id" not in batched


# --------------------------------------------------------------------------- a real worker


class GitHttp(BaseHTTPRequestHandler):
    """git's smart HTTP through `git http-backend`: anyone may fetch; a push is asked for
    credentials, and refused once it brings them (which the test records)."""

    root: Path
    seen_credentials: list[str]

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "git-receive-pack" in path or "service=git-receive-pack" in query:
            auth = self.headers.get("Authorization")
            if auth is None:
                self._reply(401, b"who are you?\n", {"WWW-Authenticate": 'Basic realm="index"'})
            else:
                self.seen_credentials.append(base64.b64decode(auth.split()[1]).decode())
                self._reply(403, b"pushes are refused here\n", {})
            return
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        for header, var in (
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
        ):
            if self.headers.get(header):
                env[var] = self.headers[header]
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        )
        head, _, content = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        self._reply(status, content, headers)

    def _reply(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


@contextlib.contextmanager
def git_http_server(root: Path) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (GitHttp,), {"root": root, "seen_credentials": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("where", ["url", "environment"])
@pytest.mark.parametrize("log_format", ["human", "json"])
def test_a_worker_refused_by_an_http_remote_never_logs_the_token(
    database_url: str, tmp_path: Path, log_format: str, where: str
) -> None:
    remote = tmp_path / "served" / "index.git"
    made = CliRunner().invoke(main, ["init-index", "--dl", "http://x.invalid/{crate}", str(remote)])
    assert made.exit_code == 0, made.output
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    env.pop("DATABASE_URL", None)
    env["INDEXPUB_LOG_FORMAT"] = log_format
    with git_http_server(remote.parent) as (host, seen):
        if where == "url":
            env["INDEXPUB_INDEX_URL"] = f"http://someone:{SECRET}@{host}/index.git"
            env["INDEXPUB_GIT_TOKEN"] = "other-" + SECRET  # the URL's wins: must not show either
        else:
            env["INDEXPUB_INDEX_URL"] = f"http://{host}/index.git"
            env["INDEXPUB_GIT_TOKEN"] = SECRET
        common = [sys.executable, "-m", "indexpub", "--data-dir", str(data)]
        common += ["--database-url", database_url, "-v"]
        line = json.dumps({"name": "alpha", "vers": "1.0.0", "deps": [], "cksum": "0" * 64})
        published = subprocess.run(
            [*common, "publish", "-", "--format", "index-line"],
            input=line,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert published.returncode == 0, published.stderr
        log_file = tmp_path / "worker.log"
        with log_file.open("wb") as sink:
            worker = subprocess.Popen(
                [*common, "worker", "--queue", "index"],
                env=env,
                stderr=sink,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 90
                while "failed: " not in log_file.read_text() and time.monotonic() < deadline:
                    assert worker.poll() is None, log_file.read_text()
                    time.sleep(0.1)
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(60)
    output = log_file.read_text() + published.stderr
    assert "failed: " in output, output
    # git did hand the secret over, and the remote refused it.
    expected = f"someone:{SECRET}" if where == "url" else f"x-access-token:{SECRET}"
    assert expected in seen
    assert "403" in output
    assert SECRET not in output
    if log_format == "human":
        assert all(
            re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ", line)
            for line in output.splitlines()
            if line and not line.startswith((" ", "Traceback"))
        ), output
        return
    records = [json.loads(line) for line in output.splitlines()]
    (failure,) = [r for r in records if " failed: " in r["message"]][:1]
    assert failure["logger"] == "jobs.worker" and failure["level"] == "WARNING"
    assert (failure["job_type"], failure["queue"], failure["crate"]) == (
        "sync_crate",
        "index",
        "alpha",
    )
    assert isinstance(failure["job_id"], int) and failure["attempt"] >= 1
    assert isinstance(failure["duration_s"], float)
    assert all(TIME.match(r["time"]) for r in records)
