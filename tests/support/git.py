"""The one way the tests (and the benchmarks) run git: ``git(*args)``.

Its output comes back decoded as UTF-8 (``text=False``: the bytes), with no newline translation;
a non-zero exit raises :class:`GitFailed`, a ``CalledProcessError`` whose message carries git's
stderr.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, overload


class GitFailed(subprocess.CalledProcessError):
    """A git command that exited non-zero; ``str()`` ends with what git said on stderr."""

    def __str__(self) -> str:
        said = self.stderr
        if isinstance(said, bytes):
            said = said.decode(errors="replace")
        said = (said or "").strip()
        return f"{super().__str__().rstrip('.')}: {said}" if said else super().__str__()


@overload
def git(
    *args: str,
    cwd: Path | None = None,
    input: bytes | str | None = None,
    text: Literal[True] = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> str: ...


@overload
def git(
    *args: str,
    cwd: Path | None = None,
    input: bytes | str | None = None,
    text: Literal[False],
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> bytes: ...


def git(
    *args: str,
    cwd: Path | None = None,
    input: bytes | str | None = None,
    text: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> str | bytes:
    """Run ``git *args`` in ``cwd`` with ``input`` on stdin; what it printed on stdout.

    ``env`` adds to (or overrides) this process's environment for the one command.
    """
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=input.encode() if isinstance(input, str) else input,
        capture_output=True,
        env=None if env is None else {**os.environ, **env},
        timeout=timeout,
    )
    if done.returncode != 0:
        raise GitFailed(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout.decode() if text else done.stdout
