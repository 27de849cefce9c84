"""The real cargo resolves and builds against the index the worker pushed (file:// only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.cargo_registry import cargo
from support.index_helpers import Registry, make_registry, publish_fixture_crates

from indexpub.registry import store

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")


@pytest.fixture
def reg(database_url: str, tmp_path: Path) -> Registry:
    reg = make_registry(database_url, tmp_path)
    with reg.connect() as conn:
        publish_fixture_crates(conn, reg.data)
    reg.drain()
    return reg


def consumer(tmp: Path, reg: Registry, deps: str) -> Path:
    project = tmp / "consumer"
    (project / "src").mkdir(parents=True)
    (project / ".cargo").mkdir()
    (project / ".cargo" / "config.toml").write_text(
        f'[registries.local]\nindex = "{reg.remote.as_uri()}"\n'
    )
    (project / "Cargo.toml").write_text(
        '[package]\nname = "consumer"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f"[dependencies]\n{deps}"
    )
    (project / "src" / "main.rs").write_text("fn main() {}\n")
    return project


def test_cargo_builds_against_the_pushed_index_and_honours_yanks(
    reg: Registry, tmp_path: Path
) -> None:
    project = consumer(
        tmp_path,
        reg,
        'plain = { version = "0.1", registry = "local" }\n'
        'MixedCase = { version = "0.1", registry = "local" }\n'
        'q = { version = "0.1", registry = "local" }\n'
        'xy = { version = "0.1", registry = "local" }\n'
        'abc = { version = "0.1", registry = "local" }\n'
        'opt-deps = { version = "0.1", registry = "local", features = ["with-plain"] }\n'
        'target_deps = { version = "0.1", registry = "local" }\n',
    )
    home = tmp_path / "cargo-home"
    cargo(project, home, "generate-lockfile")
    cargo(project, home, "build")
    lock = (project / "Cargo.lock").read_text()
    assert 'name = "plain"\nversion = "0.1.0"' in lock
    assert 'name = "MixedCase"' in lock
    saved_lock = lock

    with reg.connect() as conn:
        store.yank(conn, "plain", "0.1.0")
    reg.drain()
    (project / "Cargo.lock").unlink()
    fresh = cargo(project, home, "generate-lockfile", ok=False)
    assert fresh.returncode != 0
    assert "yanked" in fresh.stderr, fresh.stderr

    # An existing lockfile that pins the yanked version keeps building, even from a new cache.
    (project / "Cargo.lock").write_text(saved_lock)
    shutil.rmtree(project / "target")
    cargo(project, tmp_path / "cargo-home-2", "build")

    with reg.connect() as conn:
        store.unyank(conn, "plain", "0.1.0")
    reg.drain()
    (project / "Cargo.lock").unlink()
    cargo(project, home, "generate-lockfile")
    assert 'name = "plain"\nversion = "0.1.0"' in (project / "Cargo.lock").read_text()
