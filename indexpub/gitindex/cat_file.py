"""One long-lived ``git cat-file --batch`` per clone, so reading objects starts no process.

The process is started on first use and answers every read after it. git finds objects written
after it started (it looks at the pack directory again when an object is missing); GitIndex
still closes it after a repack of the clone, so it never holds deleted packs open for long.

A read has the same deadline as any git process (the index's timeout): past it, the process
group is killed and the read raises GitTimeout. A process that died between reads (killed,
out of memory) is started again once, transparently; one that dies in the middle of a read
raises GitError with what it printed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from indexpub.gitindex.objects import SHA_RE, GitObject
from indexpub.gitindex.process import GitError, GitTimeout, kill_git, start_git

__all__ = ["CatFile"]

_READ_SIZE = 1 << 16


class CatFile:
    """Reads objects of the repository at ``git_dir`` through one ``git cat-file --batch``."""

    def __init__(self, git_dir: Path, timeout: float) -> None:
        self.git_dir = git_dir
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._pid = 0  # the process that started it: a forked child must not share its pipes
        self.started = 0  # how many processes were started: lets tests see the reuse

    def read(self, specs: Sequence[str]) -> list[GitObject | None]:
        """The objects that ``specs`` name (None for a missing one), in order."""
        if not specs:
            return []
        text = "".join(s + "\n" for s in specs)
        # One look at the whole request, not one per name: a batch sends ~500 of them. An
        # empty name shows as a leading or doubled newline, a name spanning lines in the count.
        if (
            text[0] == "\n"
            or "\n\n" in text
            or text.count("\n") != len(specs)
            or "\r" in text
            or "\0" in text
        ):
            bad = next(s for s in specs if not s or any(c in s for c in "\n\r\0"))
            raise ValueError(f"not a single-line object name: {bad!r}")
        request = text.encode()
        fresh = self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None
        while True:
            if fresh:
                self._start()
            try:
                return self._exchange(request, specs)
            except _DiedBeforeAnswering:
                if fresh:
                    raise GitError(self._death_message()) from None
            fresh = True  # it had died since the last read: one new process, one more try

    def close(self) -> None:
        """End the process (it exits on the end of its input; killed if it does not at once)."""
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                kill_git(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _start(self) -> None:
        self.close()  # a process the parent of a fork started is left to that parent
        # A file, not a pipe: git may write any amount there, and nobody reads it but us.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process)
        self._proc = start_git(
            [f"--git-dir={self.git_dir}", "cat-file", "--batch"],
            what="git cat-file",
            stderr=self._stderr,
        )
        self._pid = os.getpid()
        self.started += 1

    def _exchange(self, request: bytes, specs: Sequence[str]) -> list[GitObject | None]:
        proc = self._proc
        assert proc is not None
        try:
            return self._send_and_parse(proc, request, specs)
        except BaseException:
            # Half an answer may still be in the pipe (a bad header, an interrupt): the next
            # read would take it for its own, so this process is done.
            if self._proc is proc:
                self._proc = None
                kill_git(proc)
            raise

    def _send_and_parse(
        self, proc: subprocess.Popen[bytes], request: bytes, specs: Sequence[str]
    ) -> list[GitObject | None]:
        """Send the request while reading the answers (either side's pipe could fill while the
        other waits), and parse them as they arrive."""
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(stdin, False)
        os.set_blocking(stdout, False)
        out = bytearray()
        results: list[GitObject | None] = []
        sent = 0
        pos = 0
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            selector.register(stdin, selectors.EVENT_WRITE)
            while len(results) < len(specs):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GitTimeout(f"git cat-file timed out after {self.timeout:g} s")
                for key, _ in selector.select(left):
                    if key.fd == stdin:
                        try:
                            sent += os.write(stdin, request[sent : sent + _READ_SIZE])
                        except BlockingIOError:
                            continue  # the pipe filled up since select said otherwise
                        except BrokenPipeError:
                            raise self._died(results) from None
                        if sent == len(request):
                            selector.unregister(stdin)
                    else:
                        chunk = os.read(stdout, _READ_SIZE)
                        if not chunk:
                            raise self._died(results)
                        out += chunk
                pos = _parse(out, pos, specs, results)
        return results

    def _died(self, results: list[GitObject | None]) -> Exception:
        """What to raise when the process is gone mid-read (_exchange kills what is left)."""
        return _DiedBeforeAnswering() if not results else GitError(self._death_message())

    def _death_message(self) -> str:
        detail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            detail = " | ".join(line for line in lines[-5:] if line.strip())
        message = f"git cat-file in {self.git_dir} ended unexpectedly"
        return f"{message}: {detail}" if detail else message


class _DiedBeforeAnswering(Exception):
    """The process was gone before it answered anything of this request."""


def _parse(out: bytearray, pos: int, specs: Sequence[str], results: list[GitObject | None]) -> int:
    """Append to ``results`` the answers complete in ``out`` from ``pos``; the new position."""
    while len(results) < len(specs):
        eol = out.find(b"\n", pos)
        if eol < 0:
            return pos
        header = out[pos:eol].decode(errors="replace")
        fields = header.split(" ")
        if len(fields) != 3 or not SHA_RE.fullmatch(fields[0]):
            if header.endswith((" missing", " ambiguous")):
                results.append(None)
                pos = eol + 1
                continue
            spec = specs[len(results)]
            raise GitError(f"unexpected git cat-file output for {spec}: {header!r}")
        size = int(fields[2])
        end = eol + 1 + size
        if len(out) < end + 1:
            return pos
        results.append(GitObject(fields[0], fields[1], bytes(out[eol + 1 : end])))
        pos = end + 1
    return pos
