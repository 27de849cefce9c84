"""The symlink-chain attack of issue 11 against a whole registry and the real cargo.

A victim crate is published and built, so cargo has unpacked its sources in
``$CARGO_HOME/registry/src/<index>/plain-0.1.0``. The attacker then uploads a ``.crate`` whose
links each stay inside its own folder but, unpacked in order, write into the victim's. The
upload must be refused with a 400 in cargo's error shape, and the victim's unpacked sources
must be byte-identical afterwards and still build.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.cargo_registry import CargoRegistry
from support.crates import publish_body, simple_meta
from support.hostile_crates import symlink_chain

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def upload(reg: CargoRegistry, meta: dict[str, object], crate: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{reg.base}/api/v1/crates/new",
        data=publish_body(meta, crate),
        method="PUT",
        headers={"Authorization": reg.tokens["alice"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as refusal:
        return refusal.code, refusal.read()


def test_a_symlink_chain_cannot_overwrite_another_crate_s_unpacked_sources(
    registry: CargoRegistry,
) -> None:
    home = registry.cargo_home("victim-user", "sparse")
    registry.publish("plain-0.1.0", home)
    project = registry.consumer("uses-plain", 'plain = { version = "0.1", registry = "local" }\n')
    registry.cargo(project, home, "build")
    (victim,) = (home / "registry" / "src").glob("*/plain-0.1.0")
    before = snapshot(victim)
    assert "src/lib.rs" in before

    attack = symlink_chain("attacker", "0.1.0", "plain-0.1.0")
    status, body = upload(registry, simple_meta("attacker", "0.1.0"), attack)
    assert status == 400, body[:300]
    assert len(body) < 1024
    (error,) = json.loads(body)["errors"]
    assert "a symbolic link; only files and folders are allowed" in error["detail"]
    assert not registry.version_recorded("attacker", "0.1.0")

    # Whatever cargo would have done with it, it cannot fetch it: the index never had it.
    attacker = registry.consumer(
        "uses-attacker", 'attacker = { version = "0.1", registry = "local" }\n'
    )
    fetched = registry.cargo(attacker, home, "fetch", ok=False)
    assert fetched.returncode != 0
    assert snapshot(victim) == before
    shutil.rmtree(project / "target")
    registry.cargo(project, home, "build")
    assert snapshot(victim) == before
