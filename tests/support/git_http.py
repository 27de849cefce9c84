"""git's smart HTTP for the tests and benchmarks: ``git http-backend`` behind uvicorn, with Basic
auth, over HTTP or HTTPS.

The server runs as a process of its own (:class:`GitHttpServer` starts, stops and restarts it on
the same port, which is how a test takes the remote down and brings it back)::

    python -m support.git_http --root DIR --port N --token-file F [--tls CERT KEY] ...

Every repository under ``--root`` is served. Reading (``git-upload-pack``) is anonymous with
``--anonymous-read`` (as GitHub serves a public repository), else it needs the credentials a push
needs: user ``--user`` and the token that ``--token-file`` holds, read again for every request
(so a test rotates it by replacing the file). A token in ``--read-only-token-file`` may read but
its push is answered 403. Request and response bodies are streamed through http-backend (a
chunked push body too), each request is one CGI run of it, and ``receive-pack`` runs the
repository's hooks as it would behind any web server. ``--hang-push`` reads a push's request
body and never answers: a remote that stalls in the middle of a push.

``--log FILE`` gets one JSON line per request (method, path, service, user, status, the
client's User-Agent, and ``ms``, the time from the request to the end of the answer); never a
token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from support.tls import Certificates

TESTS = Path(__file__).resolve().parents[1]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    with contextlib.suppress(OSError):
        return path.read_text().strip() or None
    return None


class GitHttpApp:
    """The ASGI application: authorization, then ``git http-backend`` as CGI."""

    def __init__(
        self,
        root: Path,
        *,
        user: str,
        token_file: Path | None,
        read_only_token_file: Path | None = None,
        anonymous_read: bool = False,
        hang_push: bool = False,
        log: Path | None = None,
    ) -> None:
        self.root = root
        self.user = user
        self.token_file = token_file
        self.read_only_token_file = read_only_token_file
        self.anonymous_read = anonymous_read
        self.hang_push = hang_push
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        path: str = scope["path"]
        query = scope["query_string"].decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        push = path.endswith("/git-receive-pack") or "service=git-receive-pack" in query
        service = "receive-pack" if push else "upload-pack"
        agent = headers.get("user-agent", "")
        user: str | None = None
        if push or not self.anonymous_read:
            user, refusal = self._authorize(headers.get("authorization"), push)
            if refusal is not None:
                status, body = refusal
                extra = (
                    [(b"www-authenticate", b'Basic realm="indexpub test"')] if status == 401 else []
                )
                await self._reply(send, status, body, extra)
                self._log(scope["method"], path, service, user, status, agent, started)
                return
        if push and self.hang_push and scope["method"] == "POST":
            await _drain(receive)
            self._log(scope["method"], path, service, user, 0, agent, started)
            await asyncio.Event().wait()  # never answers; ends when the server stops
        status = await self._backend(scope, receive, send, path, query, headers, user)
        self._log(scope["method"], path, service, user, status, agent, started)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _authorize(
        self, authorization: str | None, push: bool
    ) -> tuple[str | None, tuple[int, bytes] | None]:
        if authorization is None or not authorization.lower().startswith("basic "):
            return None, (401, b"authentication required\n")
        try:
            decoded = base64.b64decode(authorization.split(None, 1)[1]).decode()
        except ValueError:
            return None, (401, b"bad authorization header\n")
        user, _, token = decoded.partition(":")
        if user == self.user and token and token == _read_token(self.token_file):
            return user, None
        if user == self.user and token and token == _read_token(self.read_only_token_file):
            if push:
                return user, (403, b"this token may not push\n")
            return user, None
        return user, (401, b"bad credentials\n")

    async def _backend(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        query: str,
        headers: dict[str, str],
        user: str | None,
    ) -> int:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": scope["method"],
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if "content-length" in headers:
            env["CONTENT_LENGTH"] = headers["content-length"]  # else http-backend reads to EOF
        if user is not None:
            env["REMOTE_USER"] = user  # http-backend serves receive-pack only to a known user
        for header in ("content-encoding", "git-protocol"):
            if header in headers:
                env["HTTP_" + header.upper().replace("-", "_")] = headers[header]
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeding = asyncio.create_task(_feed(receive, proc.stdin))
        errors = asyncio.create_task(proc.stderr.read())
        try:
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                head += chunk
            sep = b"\r\n\r\n" if b"\r\n\r\n" in head else b"\n\n"
            raw, _, rest = head.partition(sep)
            status, out_headers = 200, []
            for line in raw.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    out_headers.append((name.strip().lower().encode(), value.strip().encode()))
            if not raw:
                status = 502
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            if rest:
                await send({"type": "http.response.body", "body": rest, "more_body": True})
            while chunk := await proc.stdout.read(65536):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # The response's end is sent by the caller once the request is logged, so a client
            # that has finished its push or fetch always finds it in the log.
            await feeding
            said = await errors
            await proc.wait()
            if said.strip() and self.log is not None:
                said_text = said.decode(errors="replace")[-2000:]
                self._log(scope["method"], path, "stderr", user, status, "", None, said_text)
            return status
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            feeding.cancel()
            errors.cancel()

    @staticmethod
    async def _reply(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]
    ) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body})

    def _log(
        self,
        method: str,
        path: str,
        service: str,
        user: str | None,
        status: int,
        agent: str,
        started: float | None,
        stderr: str | None = None,
    ) -> None:
        if self.log is None:
            return
        record: dict[str, object] = {"method": method, "path": path, "service": service}
        record.update(user=user, status=status, agent=agent)
        if started is not None:
            record["ms"] = round((time.monotonic() - started) * 1000, 2)
        if stderr is not None:
            record["stderr"] = stderr
        with self.log.open("a") as f:
            f.write(json.dumps(record) + "\n")


async def _feed(receive: Receive, stdin: asyncio.StreamWriter) -> None:
    """The request body into http-backend's stdin, as it arrives; EOF at its end."""
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            if body:
                stdin.write(body)
                await stdin.drain()
            if not message.get("more_body", False):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


# --- the server process and its controller --------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitHttpServer:
    """The server above as a process of its own on 127.0.0.1: ``start``, ``stop``, ``start``
    again on the same port; ``url(repo)`` for git. A context manager that stops it at the end."""

    def __init__(
        self,
        root: Path,
        work: Path,
        *,
        token: str,
        tls: Certificates | None = None,
        user: str = "x-access-token",
        read_only_token: str | None = None,
        anonymous_read: bool = True,
        hang_push: bool = False,
    ) -> None:
        self.root = root
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.user = user
        self.token_file = work / "accepted-token"
        self.read_only_token_file = work / "read-only-token"
        self.set_token(token)
        if read_only_token is not None:
            self.read_only_token_file.write_text(read_only_token + "\n")
        self.anonymous_read = anonymous_read
        self.hang_push = hang_push
        self.log = work / "requests.log"
        self.stderr = work / "server.stderr"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, repo: str = "index.git") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{repo}"

    def set_token(self, token: str) -> None:
        """The token the server accepts from now on (the old one is revoked)."""
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(token + "\n")
        tmp.replace(self.token_file)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "support.git_http", "--root", str(self.root)]
        argv += ["--port", str(self.port), "--user", self.user]
        argv += ["--token-file", str(self.token_file), "--log", str(self.log)]
        if self.read_only_token_file.exists():
            argv += ["--read-only-token-file", str(self.read_only_token_file)]
        if self.tls is not None:
            argv += ["--tls", str(self.tls.cert), str(self.tls.key)]
        if self.anonymous_read:
            argv.append("--anonymous-read")
        if self.hang_push:
            argv.append("--hang-push")
        return argv

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
        with self.stderr.open("ab") as sink:
            self.proc = subprocess.Popen(
                self.argv(),
                env=env,
                cwd=TESTS,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the git HTTP server exited:\n{self.stderr.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the git HTTP server did not listen:\n{self.stderr.read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and every process it started (its process group)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a hung http-backend left in the group

    def __enter__(self) -> GitHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="x-access-token")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--read-only-token-file", type=Path)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--anonymous-read", action="store_true")
    parser.add_argument("--hang-push", action="store_true")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    app = GitHttpApp(
        args.root,
        user=args.user,
        token_file=args.token_file,
        read_only_token_file=args.read_only_token_file,
        anonymous_read=args.anonymous_read,
        hang_push=args.hang_push,
        log=args.log,
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        http="h11",
        ssl_certfile=args.tls[0] if args.tls else None,
        ssl_keyfile=args.tls[1] if args.tls else None,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
