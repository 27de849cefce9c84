"""The real cargo resolves from the index the worker pushed over smart HTTP, fetching it from
the same server (anonymously, as from a public repository on GitHub), with its own git
(libgit2, ``net.git-fetch-with-cli = false``) and with the git command line."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cargo_registry import cargo
from support.index_helpers import Registry, make_registry, publish_fixture_crates
from support.net_remotes import NetRemote, serve_remote

from indexpub import config
from indexpub.pipeline import jobs
from indexpub.registry import store
from indexpub.registry.queue import INDEX_QUEUE, app

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")


@pytest.fixture
def served(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Registry, NetRemote]]:
    for var in list(os.environ):
        if var.startswith("INDEXPUB_GIT_"):
            monkeypatch.delenv(var)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    reg = make_registry(database_url, tmp_path)
    with serve_remote("http", reg.remote, tmp_path / "net") as net:
        for var, value in net.env.items():
            monkeypatch.setenv(var, value)
        with reg.connect() as conn:
            publish_fixture_crates(conn, reg.data)
        drain(reg, net)
        yield reg, net


def drain(reg: Registry, net: NetRemote) -> None:
    jobs.configure_index(net.url, config.clone_path(reg.data, net.url))
    app.worker(reg.url, INDEX_QUEUE, drain=True).run()
    with reg.connect() as conn:
        left = conn.execute("SELECT count(*) FROM indexpub_jobs.jobs WHERE queue = 'index'")
        assert left.fetchone() == (0,)


@pytest.mark.parametrize("with_cli", [False, True], ids=["libgit2", "git-cli"])
def test_cargo_resolves_and_builds_from_the_index_over_smart_http(
    served: tuple[Registry, NetRemote], tmp_path: Path, with_cli: bool
) -> None:
    reg, net = served
    home = tmp_path / "cargo-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[registries.local]\nindex = "{net.url}"\n'
        f"[net]\ngit-fetch-with-cli = {'true' if with_cli else 'false'}\n"
    )
    project = tmp_path / "consumer"
    (project / "src").mkdir(parents=True)
    (project / "Cargo.toml").write_text(
        '[package]\nname = "consumer"\nversion = "0.1.0"\nedition = "2021"\n\n'
        "[dependencies]\n"
        'plain = { version = "0.1", registry = "local" }\n'
        'MixedCase = { version = "0.1", registry = "local" }\n'
        'opt-deps = { version = "0.1", registry = "local", features = ["with-plain"] }\n'
    )
    (project / "src" / "main.rs").write_text("fn main() {}\n")
    before = len(net.server.requests())
    cargo(project, home, "generate-lockfile")
    cargo(project, home, "build")
    lock = (project / "Cargo.lock").read_text()
    assert 'name = "plain"\nversion = "0.1.0"' in lock and 'name = "MixedCase"' in lock
    # cargo fetched the index from this server, anonymously, with the git it was told to use.
    fetches = net.server.requests()[before:]
    assert fetches, "cargo did not fetch from the server"
    assert all(r["service"] == "upload-pack" and r["user"] is None for r in fetches), fetches
    assert all(r["status"] == 200 for r in fetches), fetches
    agents = {r["agent"] for r in fetches}
    if with_cli:
        assert all(a.startswith("git/") and "libgit2" not in a for a in agents), agents
    else:
        assert all("libgit2" in a for a in agents), agents

    # A yank through the pipeline reaches cargo on its next fetch of the index.
    with reg.connect() as conn:
        store.yank(conn, "plain", "0.1.0")
    drain(reg, net)
    pushes = [r for r in net.server.requests() if r["service"] == "receive-pack"]
    assert {r["user"] for r in pushes if r["status"] == 200} == {"x-access-token"}
    (project / "Cargo.lock").unlink()
    refused = cargo(project, home, "generate-lockfile", ok=False)
    assert refused.returncode != 0 and "yanked" in refused.stderr, refused.stderr
