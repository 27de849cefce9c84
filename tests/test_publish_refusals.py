"""Bad publishes through the CLI and the store: each refused with its own clear message, and
nothing stored or enqueued."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from support.bad_inputs import BAD_LINES, BAD_PUBLISH_JSON, GOOD_ENTRY
from support.crates import file, gzip_tar, manifest
from support.index_helpers import fixture_files

from indexpub.cli import main
from indexpub.domain.entries import MAX_LINE_BYTES, IndexEntry
from indexpub.errors import InvalidEntry
from indexpub.registry import render, store


def cli(url: str, tmp_path: Path, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(
        main,
        ["--database-url", url, "--data-dir", str(tmp_path / "data"), *args],
        input=input,
    )


def counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM indexpub.crates), (SELECT count(*) FROM"
            " indexpub.versions), (SELECT count(*) FROM indexpub_jobs.jobs)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def refused(result: Result, fragment: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_corpus_of_bad_index_lines(registry_url: str, tmp_path: Path) -> None:
    assert len(BAD_LINES) + len(BAD_PUBLISH_JSON) >= 40
    messages = set()
    for case_id, text, fragment in BAD_LINES:
        result = cli(
            registry_url, tmp_path, "publish", "-", "--format", "index-line", input=text.encode()
        )
        messages.add(refused(result, fragment))
        assert counts(registry_url) == (0, 0, 0), case_id
    assert len(messages) == len(BAD_LINES)


def publish_json(url: str, tmp_path: Path, body: bytes) -> Result:
    """``indexpub publish - --format publish-json`` with ``body`` on stdin."""
    args = ["publish", "-", "--format", "publish-json", "--cksum", "0" * 64]
    return cli(url, tmp_path, *args, input=body)


def test_corpus_of_bad_publish_json(registry_url: str, tmp_path: Path) -> None:
    for case_id, meta, fragment in BAD_PUBLISH_JSON:
        refused(publish_json(registry_url, tmp_path, json.dumps(meta).encode()), fragment)
        assert counts(registry_url) == (0, 0, 0), case_id


def test_store_conflicts_collisions_and_duplicates(registry_url: str, tmp_path: Path) -> None:
    good = json.dumps(GOOD_ENTRY)
    assert cli(registry_url, tmp_path, "publish", "-", input=good.encode()).exit_code == 0
    assert counts(registry_url) == (1, 1, 2)
    again = cli(registry_url, tmp_path, "publish", "-", input=good.encode())
    assert again.exit_code == 0 and "already published with this content" in again.output
    assert counts(registry_url) == (1, 1, 2)

    cases = [
        ({**GOOD_ENTRY, "cksum": "1" * 64}, "already published with different content"),
        ({**GOOD_ENTRY, "vers": "1.0.0+build.7"}, "equals the published version 1.0.0 once build"),
        ({**GOOD_ENTRY, "name": "Good-Crate"}, "collides with the existing crate 'good-crate'"),
        ({**GOOD_ENTRY, "name": "good_crate"}, "collides with the existing crate 'good-crate'"),
    ]
    for entry, fragment in cases:
        refused(
            cli(registry_url, tmp_path, "publish", "-", input=json.dumps(entry).encode()), fragment
        )
        assert counts(registry_url) == (1, 1, 2)


def test_bad_files_and_oversized_input(registry_url: str, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crate"
    garbage.write_bytes(b"not a crate at all")
    refused(
        cli(registry_url, tmp_path, "publish", str(garbage)),
        "(not a .crate file: no gzip header) is not valid JSON",
    )
    truncated = tmp_path / "truncated.crate"
    truncated.write_bytes(next(iter(fixture_files().values())).read_bytes()[:200])
    refused(
        cli(registry_url, tmp_path, "publish", str(truncated)),
        "invalid .crate file: truncated gzip data",
    )
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    refused(
        cli(registry_url, tmp_path, "publish", str(big), "--max-bytes", "1000"),
        "larger than the limit of 1000 bytes",
    )
    refused(cli(registry_url, tmp_path, "publish", str(tmp_path / "missing.crate")), "no such file")
    # A .crate whose paths escape its {name}-{version}/ folder.
    evil = tmp_path / "evil.crate"
    evil.write_bytes(gzip_tar(file("../evil/Cargo.toml", manifest("evil", "0.1.0"))))
    refused(cli(registry_url, tmp_path, "publish", str(evil)), "evil")
    assert counts(registry_url) == (0, 0, 0)
    assert not (tmp_path / "data" / "crates").exists()


def test_publish_crate_file_yank_unyank_cli(registry_url: str, tmp_path: Path) -> None:
    path = fixture_files()[("plain", "0.1.0")]
    result = cli(registry_url, tmp_path, "publish", str(path), "--registry-index", "x")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"storing .crate files in {tmp_path / 'data' / 'crates'}"
    assert result.stdout.strip() == "published plain 0.1.0"
    again = cli(registry_url, tmp_path, "publish", str(path), "--registry-index", "x")
    assert again.output.strip() == "plain 0.1.0 is already published with this content"
    stored = tmp_path / "data" / "crates" / "plain" / "plain-0.1.0.crate"
    assert stored.read_bytes() == path.read_bytes()
    with psycopg.connect(registry_url) as conn:
        row = conn.execute("SELECT line FROM indexpub.versions").fetchone()
    assert row is not None
    assert IndexEntry.from_line(row[0]).cksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        cli(registry_url, tmp_path, "yank", "plain", "0.1.0").output.strip() == "yanked plain 0.1.0"
    )
    assert (
        cli(registry_url, tmp_path, "yank", "plain", "0.1.0").output.strip()
        == "plain 0.1.0 was already yanked"
    )
    assert (
        cli(registry_url, tmp_path, "unyank", "plain", "0.1.0").output.strip()
        == "unyanked plain 0.1.0"
    )
    refused(
        cli(registry_url, tmp_path, "yank", "plain", "9.9.9"), "crate 'plain' has no version 9.9.9"
    )
    refused(cli(registry_url, tmp_path, "yank", "plain", "01.0"), "01.0")
    refused(cli(registry_url, tmp_path, "yank", "no such", "1.0.0"), "no such")
    assert counts(registry_url) == (1, 1, 2)  # one deduplicated sync job, not yet run


def test_a_refused_crate_never_overwrites_the_published_bytes(
    registry_url: str, tmp_path: Path
) -> None:
    original = fixture_files()[("plain", "0.1.0")]
    assert cli(registry_url, tmp_path, "publish", str(original)).exit_code == 0
    impostor = tmp_path / "impostor.crate"
    toml = manifest("plain", "0.1.0", 'edition = "2021"\n')
    impostor.write_bytes(gzip_tar(file("plain-0.1.0/Cargo.toml", toml)))
    refused(
        cli(registry_url, tmp_path, "publish", str(impostor)), "already published with different"
    )
    stored = tmp_path / "data" / "crates" / "plain" / "plain-0.1.0.crate"
    assert stored.read_bytes() == original.read_bytes()


def test_a_line_over_the_limit_is_refused_where_it_is_built(registry_url: str) -> None:
    """An entry built in Python (or from a .crate or publish JSON) whose line would be refused
    when read back is refused by the store, before anything is written."""
    features = {f"f{i:05}": [] for i in range(MAX_LINE_BYTES // 9)}
    entry = IndexEntry.from_json(dict(GOOD_ENTRY, features=features))
    assert len(entry.to_line()) > MAX_LINE_BYTES
    with psycopg.connect(registry_url) as conn, pytest.raises(InvalidEntry) as refusal:
        store.publish(conn, entry)
    assert str(refusal.value).startswith("invalid index line of ")
    assert str(refusal.value).endswith(f"bytes: longer than the limit of {MAX_LINE_BYTES}")
    assert counts(registry_url) == (0, 0, 0)


def test_stored_lines_render_as_stored_and_a_yank_flips_only_the_flag(registry_url: str) -> None:
    """Rendering never parses a stored line: one that today's rules (or a later version's)
    refuse, here an over-long one written before the limit, still renders and yanks."""
    entry = IndexEntry.from_json(dict(GOOD_ENTRY, name="old"))
    with psycopg.connect(registry_url) as conn:
        store.publish(conn, entry)
        stored = entry.to_line()[:-1] + ',"links":"' + "x" * MAX_LINE_BYTES + '"}'
        conn.execute("UPDATE indexpub.versions SET line = %s", (stored,))
        store.yank(conn, "old", "1.0.0")
        yanked = render.render_crate_file(conn, "old")
        store.unyank(conn, "old", "1.0.0")
        unyanked = render.render_crate_file(conn, "old")
    assert yanked == stored.replace('"yanked":false', '"yanked":true').encode() + b"\n"
    assert unyanked == stored.encode() + b"\n"
