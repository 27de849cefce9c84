"""cargo's registry Web API and the sparse index over HTTP (``indexpub serve``), against a real
database: what cargo sends, what it must get back, and that every refusal stores nothing."""

from __future__ import annotations

import json
import logging
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from starlette.exceptions import StarletteDeprecationWarning
from support.crates import publish_body, simple_meta, valid_crate
from support.index_helpers import (
    DIST,
    Registry,
    fixture_files,
    fixtures_registry_url,
)

from indexpub.cli import main
from indexpub.domain.entries import IndexEntry
from indexpub.registry import accounts, render
from indexpub.serve.app import create_app

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 here; httpx is what the test extra installs, and works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PUBLIC = "http://testserver"
NO_WARNINGS = {"warnings": {"invalid_categories": [], "invalid_badges": [], "other": []}}


# --------------------------------------------------------------------------- helpers


def manifest_entries() -> dict[tuple[str, str], dict[str, Any]]:
    listed: Any = json.loads((DIST / "manifest.json").read_text())
    return {(c["name"], c["version"]): c["index_entry"] for c in listed["crates"]}


def publish_meta(name: str, version: str) -> dict[str, Any]:
    """The JSON ``cargo publish`` sends for a fixture crate (the inverse of crates.io's
    index conversion: renamed dependencies carry the real name and ``explicit_name_in_toml``)."""
    entry = manifest_entries()[(name, version)]
    deps = []
    for dep in entry["deps"]:
        sent = {
            "name": dep.get("package") or dep["name"],
            "version_req": dep["req"],
            "features": dep["features"],
            "optional": dep["optional"],
            "default_features": dep["default_features"],
            "target": dep["target"],
            "kind": dep["kind"],
            "registry": dep.get("registry"),
        }
        if dep.get("package"):
            sent["explicit_name_in_toml"] = dep["name"]
        deps.append(sent)
    return {
        "name": name,
        "vers": version,
        "deps": deps,
        "features": {**entry["features"], **entry.get("features2", {})},
        "authors": [],
        "description": "a fixture crate",
        "license": "MIT OR Apache-2.0",
        "links": entry.get("links"),
        "rust_version": entry.get("rust_version"),
    }


def crate_bytes(name: str, version: str) -> bytes:
    return fixture_files()[(name, version)].read_bytes()


def fixture_body(name: str, version: str) -> bytes:
    return publish_body(publish_meta(name, version), crate_bytes(name, version))


def detail(response: Any) -> str:
    """The one error detail, checking cargo's error shape on the way."""
    body = response.json()
    assert set(body) == {"errors"}, body
    assert len(body["errors"]) == 1 and set(body["errors"][0]) == {"detail"}, body
    return str(body["errors"][0]["detail"])


def counts(url: str) -> dict[str, int]:
    """Rows in every table a publish could touch (users and tokens are set-up, not listed)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM indexpub.crates),"
            " (SELECT count(*) FROM indexpub.versions),"
            " (SELECT count(*) FROM indexpub.crate_owners),"
            " (SELECT count(*) FROM indexpub_jobs.jobs)"
        ).fetchone()
    assert row is not None
    return dict(zip(("crates", "versions", "owners", "jobs"), map(int, row), strict=True))


NOTHING = {"crates": 0, "versions": 0, "owners": 0, "jobs": 0}


def jobs_by_queue(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT queue, count(*) FROM indexpub_jobs.jobs GROUP BY queue"
        ).fetchall()
    return {str(queue): int(count) for queue, count in rows}


def stored_files(reg: Registry) -> list[Path]:
    root = reg.data / "crates"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def version_row(url: str, name: str, version: str) -> tuple[str, bool] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT v.line, v.yanked FROM indexpub.versions v JOIN indexpub.crates c"
            " ON c.id = v.crate_id WHERE c.name = %s AND v.num = %s",
            (name, version),
        ).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": token}


def app_for(reg: Registry, **options: Any) -> Any:
    return create_app(
        reg.url, reg.data, public_url=PUBLIC, index_urls=[fixtures_registry_url()], **options
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def client(reg: Registry) -> Iterator[TestClient]:
    with TestClient(app_for(reg)) as test_client:
        yield test_client


def put_crate(client: TestClient, token: str | None, body: bytes) -> Any:
    headers = {} if token is None else auth(token)
    return client.put("/api/v1/crates/new", content=body, headers=headers)


# --------------------------------------------------------------------------- publish


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "connect-per-request"])
def test_publish_records_version_stores_file_and_enqueues_once(
    reg: Registry, alice: str, pool: bool
) -> None:
    with TestClient(app_for(reg, pool=pool)) as client:
        assert client.app.state.registry.db.pooled is pool  # type: ignore[attr-defined]
        body = fixture_body("plain", "0.1.0")
        response = put_crate(client, alice, body)
        assert response.status_code == 200, response.text
        assert response.json() == NO_WARNINGS
        expected = IndexEntry.from_json(manifest_entries()[("plain", "0.1.0")]).to_line()
        assert version_row(reg.url, "plain", "0.1.0") == (expected, False)
        assert jobs_by_queue(reg.url) == {"index": 1, "sparse": 1}
        assert counts(reg.url) == {"crates": 1, "versions": 1, "owners": 1, "jobs": 2}
        stored = reg.data / "crates" / "plain" / "plain-0.1.0.crate"
        assert stored.read_bytes() == crate_bytes("plain", "0.1.0")

        # A retried upload of the same bytes: success, and nothing new.
        again = put_crate(client, alice, body)
        assert again.status_code == 200 and again.json() == NO_WARNINGS
        assert counts(reg.url) == {"crates": 1, "versions": 1, "owners": 1, "jobs": 2}

        download = client.get("/api/v1/crates/plain/0.1.0/download")
        assert download.status_code == 200
        assert download.content == crate_bytes("plain", "0.1.0")


def test_every_fixture_crate_gets_the_line_crates_io_would_write(
    reg: Registry, client: TestClient, alice: str
) -> None:
    """Dependencies on the registry the crates were packaged for become ``registry: null``;
    renames, features2, targets and kinds come out as in the manifest."""
    for (name, version), expected in manifest_entries().items():
        response = put_crate(client, alice, fixture_body(name, version))
        assert response.status_code == 200, (name, response.text)
        assert response.json() == NO_WARNINGS, name
        row = version_row(reg.url, name, version)
        assert row == (IndexEntry.from_json(expected).to_line(), False), name
        download = client.get(f"/api/v1/crates/{name}/{version}/download")
        assert download.content == crate_bytes(name, version), name


def test_metadata_that_disagrees_with_the_crate_earns_a_warning(
    reg: Registry, client: TestClient, alice: str
) -> None:
    meta = {**publish_meta("abc", "0.1.0"), "deps": []}  # abc depends on q
    response = put_crate(client, alice, publish_body(meta, crate_bytes("abc", "0.1.0")))
    assert response.status_code == 200, response.text
    other = response.json()["warnings"]["other"]
    assert len(other) == 1 and "the index uses the .crate's" in other[0]
    expected = IndexEntry.from_json(manifest_entries()[("abc", "0.1.0")]).to_line()
    assert version_row(reg.url, "abc", "0.1.0") == (expected, False)


def test_conflicting_versions_are_refused_and_keep_the_published_bytes(
    reg: Registry, client: TestClient, alice: str
) -> None:
    original = crate_bytes("plain", "0.1.0")
    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    before = counts(reg.url)

    other = valid_crate("plain", "0.1.0", manifest_extra="# other content\n")
    response = put_crate(client, alice, publish_body(simple_meta("plain", "0.1.0"), other))
    assert response.status_code == 409
    assert "already published with different content" in detail(response)

    build = valid_crate("plain", "0.1.0+build.7")
    response = put_crate(client, alice, publish_body(simple_meta("plain", "0.1.0+build.7"), build))
    assert response.status_code == 409
    assert "equals the published version 0.1.0 once build metadata" in detail(response)

    collides = valid_crate("Plain", "0.3.0")
    response = put_crate(client, alice, publish_body(simple_meta("Plain", "0.3.0"), collides))
    assert response.status_code == 409
    assert "collides with the existing crate 'plain'" in detail(response)

    assert counts(reg.url) == before
    # The refused uploads never touched the file that the index's cksum describes.
    assert (reg.data / "crates" / "plain" / "plain-0.1.0.crate").read_bytes() == original
    assert [p.name for p in stored_files(reg)] == ["plain-0.1.0.crate"]


# --------------------------------------------------------------------------- authentication


def test_missing_wrong_or_revoked_tokens_store_nothing(
    reg: Registry, client: TestClient, alice: str
) -> None:
    body = fixture_body("plain", "0.1.0")
    missing = put_crate(client, None, body)
    assert missing.status_code == 403 and "needs an API token" in detail(missing)
    blank = put_crate(client, "  ", body)
    assert blank.status_code == 403 and "needs an API token" in detail(blank)
    for wrong in ("ipub_not-a-token", "garbage", alice + "x", "Bearer ipub_nope"):
        response = put_crate(client, wrong, body)
        assert response.status_code == 403, wrong
        assert detail(response) == "invalid or revoked API token"
    with psycopg.connect(reg.url) as conn:
        accounts.revoke_tokens(conn, "alice")
    revoked = put_crate(client, alice, body)
    assert revoked.status_code == 403 and detail(revoked) == "invalid or revoked API token"
    assert counts(reg.url) == NOTHING
    assert stored_files(reg) == []

    # The same refusals on yank, unyank and owner changes.
    for method, path in [
        ("DELETE", "/api/v1/crates/plain/0.1.0/yank"),
        ("PUT", "/api/v1/crates/plain/0.1.0/unyank"),
        ("PUT", "/api/v1/crates/plain/owners"),
        ("DELETE", "/api/v1/crates/plain/owners"),
    ]:
        for headers in ({}, auth("ipub_wrong")):
            response = client.request(method, path, headers=headers, json={"users": ["x"]})
            assert response.status_code == 403, (method, path, headers)
            detail(response)
    assert counts(reg.url) == NOTHING


def test_bearer_prefix_is_tolerated(reg: Registry, client: TestClient, alice: str) -> None:
    response = put_crate(client, f"Bearer {alice}", fixture_body("plain", "0.1.0"))
    assert response.status_code == 200, response.text


def test_only_owners_publish_yank_and_change_owners(
    reg: Registry, client: TestClient, alice: str, bob: str
) -> None:
    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    before = counts(reg.url)

    response = put_crate(client, bob, fixture_body("plain", "0.2.0"))
    assert response.status_code == 403
    assert detail(response) == "user 'bob' is not an owner of crate 'plain'"
    response = client.delete("/api/v1/crates/plain/0.1.0/yank", headers=auth(bob))
    assert response.status_code == 403 and "'bob' is not an owner" in detail(response)
    response = client.put("/api/v1/crates/plain/0.1.0/unyank", headers=auth(bob))
    assert response.status_code == 403
    for method in ("PUT", "DELETE"):
        response = client.request(
            method, "/api/v1/crates/plain/owners", headers=auth(bob), json={"users": ["bob"]}
        )
        assert response.status_code == 403 and "'bob' is not an owner" in detail(response)
    assert counts(reg.url) == before
    assert version_row(reg.url, "plain", "0.1.0") is not None
    assert [p.name for p in stored_files(reg)] == ["plain-0.1.0.crate"]

    # Once alice adds bob, bob may publish.
    added = client.put("/api/v1/crates/plain/owners", headers=auth(alice), json={"users": ["bob"]})
    assert added.status_code == 200 and added.json()["ok"] is True
    assert put_crate(client, bob, fixture_body("plain", "0.2.0")).status_code == 200


def test_a_crate_published_from_the_cli_has_no_owner_until_an_admin_adds_one(
    reg: Registry, client: TestClient, alice: str
) -> None:
    path = fixture_files()[("plain", "0.1.0")]
    result = cli(reg, "publish", str(path), "--registry-index", fixtures_registry_url())
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/crates/plain/owners").json() == {"users": []}

    response = put_crate(client, alice, fixture_body("plain", "0.2.0"))
    assert response.status_code == 403 and "not an owner" in detail(response)

    assert cli(reg, "owner", "add", "plain", "alice").output == "added alice as an owner of plain\n"
    again = cli(reg, "owner", "add", "plain", "alice")
    assert again.output == "alice is already an owner of plain\n"
    assert cli(reg, "owner", "list", "plain").output == "alice\n"
    missing = cli(reg, "owner", "add", "plain", "nobody")
    assert missing.exit_code == 1 and "no user named 'nobody'" in missing.output
    assert cli(reg, "owner", "add", "nothere", "alice").exit_code == 1

    assert put_crate(client, alice, fixture_body("plain", "0.2.0")).status_code == 200
    # The API serves the CLI's stored file too: one layout for both.
    download = client.get("/api/v1/crates/plain/0.1.0/download")
    assert download.content == path.read_bytes()


# --------------------------------------------------------------------------- yank, owners


def test_yank_and_unyank_are_idempotent(reg: Registry, client: TestClient, alice: str) -> None:
    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    for _ in range(2):
        response = client.delete("/api/v1/crates/plain/0.1.0/yank", headers=auth(alice))
        assert response.status_code == 200 and response.json() == {"ok": True}
        row = version_row(reg.url, "plain", "0.1.0")
        assert row is not None and row[1] is True
    assert jobs_by_queue(reg.url) == {"index": 1, "sparse": 1}  # deduplicated, not yet run
    for _ in range(2):
        response = client.put("/api/v1/crates/plain/0.1.0/unyank", headers=auth(alice))
        assert response.status_code == 200 and response.json() == {"ok": True}
        row = version_row(reg.url, "plain", "0.1.0")
        assert row is not None and row[1] is False

    missing_version = client.delete("/api/v1/crates/plain/9.9.9/yank", headers=auth(alice))
    assert missing_version.status_code == 404
    assert detail(missing_version) == "crate 'plain' has no version 9.9.9"
    missing_crate = client.delete("/api/v1/crates/nothere/1.0.0/yank", headers=auth(alice))
    assert missing_crate.status_code == 404 and detail(missing_crate) == "no crate named 'nothere'"
    bad_version = client.delete("/api/v1/crates/plain/01.0.0/yank", headers=auth(alice))
    assert bad_version.status_code == 400 and "01.0.0" in detail(bad_version)


def test_owners_list_add_remove(reg: Registry, client: TestClient, alice: str, bob: str) -> None:
    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    owners = client.get("/api/v1/crates/plain/owners").json()
    assert [(u["login"], u["name"]) for u in owners["users"]] == [("alice", None)]
    assert isinstance(owners["users"][0]["id"], int)

    added = client.put("/api/v1/crates/plain/owners", headers=auth(alice), json={"users": ["bob"]})
    assert added.status_code == 200
    assert added.json() == {"ok": True, "msg": "user(s) bob added as owner(s) of crate plain"}
    logins = [u["login"] for u in client.get("/api/v1/crates/plain/owners").json()["users"]]
    assert logins == ["alice", "bob"]

    removed = client.request(
        "DELETE", "/api/v1/crates/plain/owners", headers=auth(bob), json={"users": ["alice"]}
    )
    assert removed.status_code == 200 and removed.json()["ok"] is True
    assert "alice removed" in removed.json()["msg"]

    last = client.request(
        "DELETE", "/api/v1/crates/plain/owners", headers=auth(bob), json={"users": ["bob"]}
    )
    assert last.status_code == 409 and "cannot remove every owner" in detail(last)
    unknown = client.put(
        "/api/v1/crates/plain/owners", headers=auth(bob), json={"users": ["nobody"]}
    )
    assert unknown.status_code == 404 and detail(unknown) == "no user named 'nobody'"
    not_owner = client.request(
        "DELETE", "/api/v1/crates/plain/owners", headers=auth(bob), json={"users": ["alice"]}
    )
    assert not_owner.status_code == 404 and "'alice' is not an owner" in detail(not_owner)
    for bad in ({"users": []}, {"users": "bob"}, {"users": [1]}, {"people": ["bob"]}):
        response = client.put("/api/v1/crates/plain/owners", headers=auth(bob), json=bad)
        assert response.status_code == 400, bad
        assert detail(response) == 'the owners request must be {"users": ["login", ...]}'
    not_json = client.put("/api/v1/crates/plain/owners", headers=auth(bob), content=b"{")
    assert not_json.status_code == 400 and "not valid JSON" in detail(not_json)
    assert client.get("/api/v1/crates/nothere/owners").status_code == 404
    assert [u["login"] for u in client.get("/api/v1/crates/plain/owners").json()["users"]] == [
        "bob"
    ]


def test_download_missing_and_invalid(reg: Registry, client: TestClient, alice: str) -> None:
    assert put_crate(client, alice, fixture_body("MixedCase", "0.1.0")).status_code == 200
    ok = client.get("/api/v1/crates/MixedCase/0.1.0/download")
    assert ok.status_code == 200 and ok.content == crate_bytes("MixedCase", "0.1.0")
    missing = client.get("/api/v1/crates/MixedCase/0.2.0/download")
    assert missing.status_code == 404
    assert detail(missing) == "crate 'MixedCase' has no version 0.2.0 to download"
    for path in ("/api/v1/crates/..%2f..%2fx/0.1.0/download", "/api/v1/crates/a/1.0/download"):
        response = client.get(path)
        assert response.status_code in (400, 404), path
        detail(response)


# --------------------------------------------------------------------------- bad bodies


def test_malformed_bodies_are_refused_each_with_its_own_detail(reg: Registry, alice: str) -> None:
    plain = crate_bytes("plain", "0.1.0")
    meta = json.dumps(publish_meta("plain", "0.1.0")).encode()
    good = publish_body(meta, plain)
    cases: list[tuple[str, bytes, int, str]] = [
        ("empty", b"", 400, "a body of 0 bytes is too short for the 4-byte length"),
        ("short", b"\x01\x00", 400, "a body of 2 bytes is too short"),
        ("json past end", struct.pack("<I", 500) + b"{}", 400, "JSON length 500 reaches past"),
        (
            "no crate length",
            struct.pack("<I", len(meta)) + meta,
            400,
            f"the body ends after the JSON ({len(meta) + 4} bytes in all)",
        ),
        (
            "crate length cut",
            struct.pack("<I", len(meta)) + meta + b"\x01",
            400,
            f"the body ends after the JSON ({len(meta) + 5} bytes in all), without the 4-byte",
        ),
        ("crate past end", good[:-10], 400, f".crate length {len(plain)} reaches past the end"),
        ("trailing bytes", good + b"xyz", 400, "3 unexpected bytes after the .crate file"),
        ("not json", publish_body(b"{nope", plain), 400, "the publish metadata is not valid JSON"),
        (
            "not utf-8",
            publish_body(b"\xff\xfe", plain),
            400,
            "the publish metadata is not valid JSON",
        ),
        ("array", publish_body(b"[1, 2]", plain), 400, "must be a JSON object, not list"),
        (
            "deep",
            publish_body(b"[" * 100_000, plain),
            400,
            "the publish metadata is not valid JSON",
        ),
        (
            "missing deps",
            publish_body({"name": "plain", "vers": "0.1.0"}, plain),
            400,
            "missing field 'deps' in publish metadata",
        ),
        (
            "bad version",
            publish_body(simple_meta("plain", "01.0.0"), plain),
            400,
            "01.0.0",
        ),
        ("not gzip", publish_body(meta, b"PK\x03\x04 zip"), 400, "not a gzip file"),
        ("corrupt gzip", publish_body(meta, plain[:200]), 400, "truncated gzip data"),
        (
            "name mismatch",
            publish_body(simple_meta("abc", "0.1.0"), plain),
            400,
            "Cargo.toml names the crate 'plain', not 'abc'",
        ),
        (
            "version mismatch",
            publish_body(simple_meta("plain", "0.2.0"), plain),
            400,
            "Cargo.toml has version '0.1.0', not '0.2.0'",
        ),
        (
            "wrong folder",
            publish_body(
                simple_meta("plain", "0.1.0"), valid_crate("plain", "0.1.0", folder="x-0.1.0")
            ),
            400,
            "its folder 'x-0.1.0' does not match",
        ),
        (
            "metadata too large",
            struct.pack("<I", 2_000_000) + b"{}",
            413,
            "the publish metadata (JSON) of 2000000 bytes is larger than the limit of 1048576",
        ),
    ]
    seen = set()
    with TestClient(app_for(reg)) as client:
        for case_id, body, status, fragment in cases:
            response = put_crate(client, alice, body)
            assert response.status_code == status, (case_id, response.text)
            message = detail(response)
            assert fragment in message, (case_id, message)
            seen.add(message)
            assert counts(reg.url) == NOTHING, case_id
            assert stored_files(reg) == [], case_id
    assert len(seen) == len(cases)

    # Oversize against a small configured limit: the declared lengths and Content-Length are
    # refused before the bytes they announce are read.
    with TestClient(app_for(reg, max_crate_bytes=500, max_metadata_bytes=4000)) as small:
        big_crate = put_crate(small, alice, good)
        assert big_crate.status_code == 413
        assert detail(big_crate) == (
            f"the .crate file of {len(plain)} bytes is larger than the limit of 500 bytes"
        )
        big_body = put_crate(small, alice, publish_body(b" " * 5000, plain))
        assert big_body.status_code == 413
        assert "the upload of" in detail(big_body) and "at most 500 bytes" in detail(big_body)
    assert counts(reg.url) == NOTHING
    assert stored_files(reg) == []


def test_unexpected_errors_are_generic_logged_and_roll_back(
    reg: Registry, client: TestClient, alice: str, caplog: pytest.LogCaptureFixture
) -> None:
    (reg.data / "crates").write_text("not a folder")  # the .crate cannot be stored
    with caplog.at_level(logging.ERROR, logger="indexpub.serve.app"):
        response = put_crate(client, alice, fixture_body("plain", "0.1.0"))
    assert response.status_code == 500
    assert detail(response) == "internal server error"
    assert "unexpected error in PUT /api/v1/crates/new" in caplog.text
    assert counts(reg.url) == NOTHING


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404 and detail(missing) == "Not Found"
    wrong = client.get("/api/v1/crates/new")
    assert wrong.status_code == 405 and detail(wrong) == "Method Not Allowed"


# --------------------------------------------------------------------------- the sparse index


def test_sparse_index_config_files_and_conditional_requests(
    reg: Registry, client: TestClient, alice: str
) -> None:
    assert client.get("/index/config.json").json() == {
        "dl": f"{PUBLIC}/api/v1/crates",
        "api": PUBLIC,
    }
    before = client.get("/index/pl/ai/plain")
    assert before.status_code == 404  # nothing synced yet, not even the directory

    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    assert reg.drain() == 2
    expected = reg.expected_file("plain")
    assert expected is not None and reg.remote_file("plain") == expected

    first = client.get("/index/pl/ai/plain")
    assert first.status_code == 200 and first.text == expected
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert client.get("/index/pl/ai/plain", headers={"If-None-Match": etag}).status_code == 304
    conditional = client.get("/index/pl/ai/plain", headers={"If-Modified-Since": modified})
    assert conditional.status_code == 304

    assert client.delete("/api/v1/crates/plain/0.1.0/yank", headers=auth(alice)).status_code == 200
    reg.drain()
    changed = client.get("/index/pl/ai/plain", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and '"yanked":true' in changed.text
    assert changed.headers["etag"] != etag

    unknown = client.get("/index/no/th/nothere")
    assert unknown.status_code == 404
    detail(unknown)
    (reg.sparse / "pl" / "ai" / ".tmp-half").write_text("half written")
    assert client.get("/index/pl/ai/.tmp-half").status_code == 404
    assert client.get("/index/../data/crates").status_code == 404


# --------------------------------------------------------------------------- the CLI


def cli(reg: Registry, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", reg.url, "--data-dir", str(reg.data), *args])


def test_token_create_and_revoke(reg: Registry, client: TestClient) -> None:
    created = cli(reg, "token", "create", "carol")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and token.startswith(accounts.TOKEN_PREFIX)
    ci = cli(reg, "token", "create", "carol", "--name", "ci").stdout.strip()

    assert put_crate(client, token, fixture_body("plain", "0.1.0")).status_code == 200
    assert put_crate(client, ci, fixture_body("plain", "0.2.0")).status_code == 200

    assert cli(reg, "token", "revoke", "carol", "--name", "ci").stdout == "revoked 1 token(s)\n"
    assert put_crate(client, ci, fixture_body("q", "0.1.0")).status_code == 403
    yank = client.delete("/api/v1/crates/plain/0.1.0/yank", headers=auth(token))
    assert yank.status_code == 200
    assert cli(reg, "token", "revoke", "carol").stdout == "revoked 1 token(s)\n"
    assert cli(reg, "token", "revoke", "carol").stdout == "revoked 0 token(s)\n"
    assert put_crate(client, token, fixture_body("q", "0.1.0")).status_code == 403

    bad = cli(reg, "token", "create", "no spaces")
    assert bad.exit_code == 1 and "invalid user name" in bad.output
    with psycopg.connect(reg.url) as conn:
        assert render.all_crate_names(conn) == ["plain"]
        row = conn.execute("SELECT count(*) FROM indexpub.api_tokens").fetchone()
    assert row is not None and row[0] == 2


def test_chunked_uploads_without_content_length(reg: Registry, alice: str) -> None:
    """A body without Content-Length is read as it comes and cut off at the limit."""

    def chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    with TestClient(app_for(reg, max_crate_bytes=2000, max_metadata_bytes=1000)) as client:
        huge = publish_body(b"{}", b"\0" * 1500) + b"\0" * 5000
        response = client.put("/api/v1/crates/new", content=chunks(huge), headers=auth(alice))
        assert response.status_code == 413
        assert detail(response) == "the request body is larger than the limit of 3008 bytes"
        cut = fixture_body("plain", "0.1.0")[:-10]
        response = client.put("/api/v1/crates/new", content=chunks(cut), headers=auth(alice))
        assert response.status_code == 400
        assert "the body ends inside the" in detail(response)
        assert counts(reg.url) == NOTHING

        body = fixture_body("plain", "0.1.0")
        response = client.put("/api/v1/crates/new", content=chunks(body), headers=auth(alice))
        assert response.status_code == 200, response.text
    assert counts(reg.url)["versions"] == 1


@pytest.mark.parametrize(
    ("login", "removal"),
    [
        # Text PostgreSQL cannot store is refused on both ways; removing asks no more than
        # that (owners made under older, looser rules stay removable), so it finds no owner.
        (r"a\u0000b", 400),
        (r"\ud800", 400),
        (r"bad\udcffname", 400),
        ("y" * 5000, 400),
        (r"jos\u00e9", 404),
        ("-dash", 404),
        ("a.b", 404),
    ],
)
def test_bad_logins_in_owner_changes_are_refused_not_database_errors(
    reg: Registry, client: TestClient, alice: str, login: str, removal: int
) -> None:
    assert put_crate(client, alice, fixture_body("plain", "0.1.0")).status_code == 200
    before = counts(reg.url)
    body = b'{"users": ["' + login.encode() + b'"]}'  # JSON escapes: NUL, lone surrogates
    for method, status, start in (
        ("PUT", 400, "invalid user name "),
        ("DELETE", removal, "invalid user name " if removal == 400 else ""),
    ):
        response = client.request(
            method, "/api/v1/crates/plain/owners", headers=auth(alice), content=body
        )
        assert response.status_code == status, (method, response.text)
        message = detail(response)
        assert message.startswith(start) and len(message) < 200, message
    assert counts(reg.url) == before
