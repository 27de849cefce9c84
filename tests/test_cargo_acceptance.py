"""Acceptance with the real cargo: publish, resolve, build, yank and refuse through
`indexpub serve` and `indexpub worker`, over the git index and the sparse index."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from support.cargo_registry import PUBLISH_ORDER, CargoRegistry
from support.git import git

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")


def build_over_both_protocols(reg: CargoRegistry, name: str, dependencies: str) -> None:
    for protocol in ("git", "sparse"):
        project = reg.consumer(f"{name}-{protocol}", dependencies)
        home = reg.cargo_home(f"{name}-{protocol}", protocol)
        reg.cargo(project, home, "generate-lockfile")
        reg.cargo(project, home, "build")


def test_cargo_publish_then_resolve_over_git_and_sparse(registry: CargoRegistry) -> None:
    home = registry.cargo_home("publisher")
    done = registry.publish("plain-0.1.0", home)
    assert "Published plain v0.1.0" in done.stderr, done.stderr  # cargo's wait succeeded
    build_over_both_protocols(registry, "one", 'plain = { version = "0.1", registry = "local" }\n')


def test_path_layout_one_two_three_letters_and_mixed_case(registry: CargoRegistry) -> None:
    home = registry.cargo_home("publisher")
    for directory in ("plain-0.1.0", "q", "xy", "abc", "MixedCase"):
        registry.publish(directory, home)
    assert registry.remote_file("1/q").startswith('{"name":"q",')
    assert registry.remote_file("2/xy").startswith('{"name":"xy",')
    assert registry.remote_file("3/a/abc").startswith('{"name":"abc",')
    assert registry.remote_file("mi/xe/mixedcase").startswith('{"name":"MixedCase",')
    build_over_both_protocols(
        registry,
        "layout",
        "".join(
            f'{name} = {{ version = "0.1", registry = "local" }}\n'
            for name in ("q", "xy", "abc", "MixedCase", "plain")
        ),
    )


def test_dependencies_features_targets_and_cargo_tree(registry: CargoRegistry) -> None:
    home = registry.cargo_home("publisher")
    for directory in PUBLISH_ORDER:
        if directory != "MixedCase":
            registry.publish(directory, home)
    entry = json.loads(registry.remote_file("op/t-/opt-deps"))
    renamed = next(d for d in entry["deps"] if d["name"] == "flags")
    assert renamed["package"] == "feats" and renamed["default_features"] is False
    assert entry["features2"] == {"with-plain": ["dep:plain"]} and entry["v"] == 2
    target = json.loads(registry.remote_file("ta/rg/target_deps"))
    kinds = {d["name"]: (d["kind"], d["target"]) for d in target["deps"]}
    assert kinds == {"plain": ("normal", "cfg(unix)"), "abc": ("dev", None), "q": ("build", None)}

    for protocol in ("git", "sparse"):
        with_feature = registry.consumer(
            f"with-{protocol}",
            'opt-deps = { version = "0.1", registry = "local", features = ["with-plain"] }\n'
            'target_deps = { version = "0.1", registry = "local" }\n',
        )
        without = registry.consumer(
            f"without-{protocol}", 'opt-deps = { version = "0.1", registry = "local" }\n'
        )
        home = registry.cargo_home(f"tree-{protocol}", protocol)
        registry.cargo(with_feature, home, "build")
        registry.cargo(without, home, "build")
        tree = registry.cargo(
            with_feature, home, "tree", "--prefix", "none", "-e", "normal,build"
        ).stdout
        assert "opt-deps v0.1.0" in tree and "feats v0.1.0" in tree
        assert "plain v0.1.0" in tree  # behind the with-plain feature
        assert "plain v0.2.0" in tree  # cfg(unix) target dependency of target_deps
        assert "q v0.1.0" in tree  # build dependency
        assert "abc" not in tree  # a dependency's dev-dependency is not in the graph
        tree_without = registry.cargo(without, home, "tree", "--prefix", "none").stdout
        assert "feats v0.1.0" in tree_without and "plain" not in tree_without


def test_yank_and_undo_with_cargo(registry: CargoRegistry) -> None:
    home = registry.cargo_home("publisher")
    registry.publish("plain-0.1.0", home)
    project = registry.consumer("yanker", 'plain = { version = "0.1", registry = "local" }\n')
    registry.cargo(project, home, "generate-lockfile")
    lock = (project / "Cargo.lock").read_text()

    for _ in range(2):  # yanking twice succeeds
        registry.cargo(project, home, "yank", "--registry", "local", "--version", "0.1.0", "plain")
    registry.wait_for_index(lambda: '"yanked":true' in registry.remote_file("pl/ai/plain"))
    (project / "Cargo.lock").unlink()
    fresh = registry.cargo(project, home, "generate-lockfile", ok=False)
    assert fresh.returncode != 0 and "yanked" in fresh.stderr, fresh.stderr
    (project / "Cargo.lock").write_text(lock)
    registry.cargo(project, registry.cargo_home("existing-lock"), "build")

    registry.cargo(
        project, home, "yank", "--registry", "local", "--undo", "--version", "0.1.0", "plain"
    )
    registry.wait_for_index(lambda: '"yanked":false' in registry.remote_file("pl/ai/plain"))
    (project / "Cargo.lock").unlink()
    registry.cargo(project, home, "generate-lockfile")


def test_second_version_and_cargo_update(registry: CargoRegistry) -> None:
    home = registry.cargo_home("publisher")
    registry.publish("plain-0.1.0", home)
    first_line = registry.remote_file("pl/ai/plain")
    project = registry.consumer("updater", 'plain = { version = ">=0.1", registry = "local" }\n')
    registry.cargo(project, home, "generate-lockfile")
    assert 'name = "plain"\nversion = "0.1.0"' in (project / "Cargo.lock").read_text()
    registry.publish("plain-0.2.0", home)
    registry.cargo(project, home, "update")
    assert 'name = "plain"\nversion = "0.2.0"' in (project / "Cargo.lock").read_text()
    assert registry.remote_file("pl/ai/plain").splitlines()[0] == first_line.rstrip("\n")


def test_refusals_show_our_detail_and_leave_the_index_alone(
    registry: CargoRegistry, tmp_path: Path
) -> None:
    home = registry.cargo_home("publisher")
    registry.publish("plain-0.1.0", home)
    registry.publish("q", home)
    index_before = git(f"--git-dir={registry.remote}", "rev-parse", "HEAD")

    # A wrong token.
    wrong = registry.cargo(
        registry.source("xy"),
        home,
        "publish",
        "--registry",
        "local",
        "--allow-dirty",
        "--token",
        "ipub_not-a-token",
        ok=False,
    )
    assert wrong.returncode != 0 and "token" in wrong.stderr.lower(), wrong.stderr

    # Someone who does not own the crate yanks it.
    bob = registry.cargo_home("bob", user="bob")
    theirs = registry.cargo(
        registry.source("plain-0.1.0"),
        bob,
        "yank",
        "--registry",
        "local",
        "--version",
        "0.1.0",
        "plain",
        ok=False,
    )
    assert "is not an owner of crate 'plain'" in theirs.stderr, theirs.stderr

    # A duplicate version with other content, uploaded before the index shows the first one
    # (the worker is stopped), so only the server can refuse it. cargo's wait for the index is
    # cut short once the server has the first upload.
    worker = registry.processes[1]
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(15)
    quick = registry.cargo_home("no-wait")
    first = registry.start_cargo(
        registry.source("xy"), quick, "publish", "--registry", "local", "--allow-dirty"
    )
    registry.wait_for_index(lambda: registry.version_recorded("xy", "0.1.0"), timeout=60)
    first.kill()
    first.wait()
    changed = registry.source("xy")
    (changed / "src" / "lib.rs").write_text((changed / "src" / "lib.rs").read_text() + "\n// 2\n")
    duplicate = registry.publish("xy", quick, ok=False)
    assert "already published with different content" in duplicate.stderr, duplicate.stderr
    # Likewise a version equal to 0.1.0 once build metadata is ignored (cargo refuses that one
    # itself when the index already shows 0.1.0).
    manifest = changed / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.1.0+b1"'))
    metadata = registry.publish("xy", quick, ok=False)
    assert "once build metadata is ignored" in metadata.stderr, metadata.stderr

    head = git(f"--git-dir={registry.remote}", "rev-parse", "HEAD")
    assert head == index_before  # nothing refused reached the index (and xy waits for a worker)


def test_config_json_edited_by_another_writer_survives(
    registry: CargoRegistry, tmp_path: Path
) -> None:
    other = tmp_path / "other-writer"
    git("clone", "-q", str(registry.remote), str(other))
    config = json.loads((other / "config.json").read_text())
    config["x-operator-note"] = "kept"
    (other / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for args in (
        ["config", "user.email", "ops@example.org"],
        ["config", "user.name", "ops"],
        ["commit", "-qam", "Edit config.json"],
        ["push", "-q", "origin", "HEAD"],
    ):
        git(*args, cwd=other)
    home = registry.cargo_home("publisher")
    registry.publish("plain-0.1.0", home)
    registry.publish("q", home)
    assert json.loads(registry.remote_file("config.json"))["x-operator-note"] == "kept"
    build_over_both_protocols(
        registry, "after-edit", 'q = { version = "0.1", registry = "local" }\n'
    )
