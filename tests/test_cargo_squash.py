"""The real cargo across a squash: clients that fetched the index before it keep resolving after
it, with cargo's built-in git and with `net.git-fetch-with-cli`, through `indexpub serve` and
`indexpub worker` (tests/support/cargo_registry.py)."""

from __future__ import annotations

import shutil

import pytest
from support.cargo_registry import CargoRegistry
from support.git import git

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")


def test_cargo_resolves_before_and_after_a_squash_and_sees_the_next_publish(
    registry: CargoRegistry,
) -> None:
    publisher = registry.cargo_home("publisher")
    registry.publish("plain-0.1.0", publisher)
    registry.publish("q", publisher)
    clients = {}
    for fetch in ("builtin", "cli"):
        home = registry.cargo_home(f"client-{fetch}")
        if fetch == "cli":
            with (home / "config.toml").open("a") as config:
                config.write("[net]\ngit-fetch-with-cli = true\n")
        project = registry.consumer(
            f"before-{fetch}",
            'plain = { version = ">=0.1", registry = "local" }\n'
            'q = { version = "0.1", registry = "local" }\n',
        )
        registry.cargo(project, home, "generate-lockfile")
        registry.cargo(project, home, "build")
        assert 'name = "plain"\nversion = "0.1.0"' in (project / "Cargo.lock").read_text()
        clients[fetch] = (home, project)

    remote = f"--git-dir={registry.remote}"
    old = git(remote, "rev-parse", "HEAD").strip()
    done = registry.indexpub("squash", "--wait")
    squashed = git(remote, "rev-parse", "HEAD").strip()
    assert done.splitlines()[-1] == f"done: the index branch master is at {squashed}"
    assert git(remote, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(remote, "rev-parse", f"{squashed}^{{tree}}") == git(
        remote, "rev-parse", f"{old}^{{tree}}"
    )
    snapshot = git(remote, "for-each-ref", "--format=%(objectname)", "refs/heads/snapshot-*")
    assert snapshot.split() == [old]

    # The publisher's cargo fetched the old history; its wait for the index reads the new one.
    published = registry.publish("plain-0.2.0", publisher)
    assert "Published plain v0.2.0" in published.stderr, published.stderr
    assert git(remote, "rev-parse", "HEAD^").strip() == squashed

    tip = git(remote, "rev-parse", "HEAD").strip()
    for fetch, (home, project) in clients.items():
        updated = registry.cargo(project, home, "update")
        lock = (project / "Cargo.lock").read_text()
        assert 'name = "plain"\nversion = "0.2.0"' in lock, (fetch, updated.stderr)
        # cargo fetched the rewritten history into the clone it had (+HEAD:refs/remotes/
        # origin/HEAD), rather than cloning again: the old tip is still in it.
        (clone,) = (home / "registry" / "index").glob("*/.git")
        assert git(f"--git-dir={clone}", "rev-parse", "refs/remotes/origin/HEAD").strip() == tip
        assert git(f"--git-dir={clone}", "cat-file", "-t", old).strip() == "commit"
        registry.cargo(project, home, "build")
        # A project that locked nothing yet resolves from the squashed index too.
        fresh = registry.consumer(
            f"after-{fetch}", 'plain = { version = "0.2", registry = "local" }\n'
        )
        registry.cargo(fresh, home, "generate-lockfile")
        assert 'name = "plain"\nversion = "0.2.0"' in (fresh / "Cargo.lock").read_text()
