"""Running ``indexpub verify``, ``repair`` and friends in the test process, on a ``Registry``,
with the environment's INDEXPUB_ settings cleared so that only the test's apply."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from indexpub.domain.entries import IndexEntry
from indexpub.domain.versions import Version
from support.index_helpers import Registry


def entry(name: str, version: str = "1.0.0") -> IndexEntry:
    return IndexEntry(name=name, vers=Version.parse(version), deps=(), cksum="0" * 64)


def common(reg: Registry) -> list[str]:
    return ["--data-dir", str(reg.data), "--database-url", reg.url]


def env(*, index: Path | None = None) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    found.pop("DATABASE_URL", None)
    if index is not None:
        found["INDEXPUB_INDEX_URL"] = str(index)
    return found


def cli(*args: str, index: Path | None = None) -> Result:
    overlay: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INDEXPUB_")}
    overlay["DATABASE_URL"] = None
    overlay.update(env(index=index))
    from indexpub.cli import main

    return CliRunner().invoke(main, list(args), env=overlay)


def ops(reg: Registry, *args: str, index: Path | None = None) -> Result:
    return cli(*common(reg), *args, index=index or reg.remote)


def ops_json(reg: Registry, *args: str) -> dict[str, Any]:
    done = ops(reg, *args, "--json")
    assert done.stdout, done.output
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["exit_code"] == done.exit_code
    return report


def status_screen(reg: Registry) -> dict[str, str]:
    """``indexpub status``'s lines by their label ("last verify", "last squash", ...)."""
    done = ops(reg, "status")
    assert done.exit_code == 0, done.output
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
