"""A remote that has hung, and a look for processes left behind.

:class:`HungRemote` accepts every TCP connection on 127.0.0.1 and then never sends a byte nor
closes it: an HTTP client waits for its answer and an SSH client for its banner, until someone
gives up. :func:`processes_mentioning` lists the live processes whose command line contains a
string (a port, a URL), whoever their parent is now: an orphan adopted by init counts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path


class HungRemote:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(sock)  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for sock in self.accepted:
            sock.close()

    def __enter__(self) -> HungRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def processes_mentioning(text: str) -> list[str]:
    """``"PID: command line"`` of every live process but this one whose command line (or
    environment-free argv) contains ``text``; zombies are not processes any more."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            status = (entry / "stat").read_text()
            if status.rpartition(")")[2].split()[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in argv:
                found.append(f"{entry.name}: {argv.strip()}")
    return found
