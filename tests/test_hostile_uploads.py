"""Hostile ``.crate`` archives and publish metadata: each refused in one short line by the
domain reader, by ``indexpub publish FILE`` and by ``PUT /api/v1/crates/new``, with nothing
stored; and a fuzz test that mutates valid archives."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.crates import file, gzipped, publish_body, simple_meta, tar_archive
from support.hostile_crates import MANIFEST, NAME, TOP, VERSION, crate, hostile_corpus, member, tar
from support.index_helpers import Registry
from test_publish_refusals import cli, publish_json, refused
from test_publish_refusals import counts as cli_counts
from test_serve_api import (
    NOTHING,
    TestClient,
    app_for,
    detail,
    put_crate,
    stored_files,
)
from test_serve_api import counts as api_counts

from indexpub.domain.crate_file import read_crate_bytes
from indexpub.errors import InvalidInput

CORPUS = hostile_corpus()
IDS = [case_id for case_id, _, _ in CORPUS]
MAX_MESSAGE = 1024
# What refusing any case may cost beyond the archive's own bytes (tracemalloc's peak).
MAX_PEAK = 4 * 1024 * 1024


def test_the_corpus_is_large_and_every_case_distinct() -> None:
    assert len(CORPUS) >= 30
    assert len(set(IDS)) == len(IDS)
    assert read_crate_bytes(crate()).name == NAME  # the good members alone are fine


@pytest.mark.parametrize(("data", "fragment"), [case[1:] for case in CORPUS], ids=IDS)
def test_read_crate_bytes_refuses_in_one_short_line_and_bounded_memory(
    data: bytes, fragment: str
) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput) as caught:
            read_crate_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message and len(message) < MAX_MESSAGE, len(message)
    assert peak < MAX_PEAK, peak


def test_indexpub_publish_refuses_each_and_stores_nothing(
    registry_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "upload.crate"
    for case_id, data, fragment in CORPUS:
        path.write_bytes(data)
        # Without a gzip header, `publish FILE` reads the input as JSON.
        fragment = "no gzip header" if case_id == "not-gzip" else fragment
        line = refused(cli(registry_url, tmp_path, "publish", str(path)), fragment)
        assert len(line) < MAX_MESSAGE, case_id
        assert "Traceback" not in line, case_id
    assert cli_counts(registry_url) == (0, 0, 0)
    assert not (tmp_path / "data" / "crates").exists()


def test_the_publish_api_refuses_each_and_stores_nothing(reg: Registry, alice: str) -> None:
    meta = simple_meta(NAME, VERSION)
    with TestClient(app_for(reg)) as client:
        for case_id, data, fragment in CORPUS:
            response = put_crate(client, alice, publish_body(meta, data))
            assert response.status_code == 400, (case_id, response.status_code)
            assert fragment in detail(response), case_id
            assert len(response.content) < MAX_MESSAGE, case_id
        assert api_counts(reg.url) == NOTHING  # no crate, version, owner or job rows
        assert stored_files(reg) == []
        # The same token, metadata and good members publish: the refusals were the archives'.
        good = put_crate(client, alice, publish_body(meta, crate()))
        assert good.status_code == 200, good.text
    assert [p.name for p in stored_files(reg)] == [f"{TOP}.crate"]


def test_an_upload_over_the_size_limit_is_413(reg: Registry, alice: str) -> None:
    data = crate(member(f"{TOP}/blob", random.Random(1).randbytes(4000)))
    with TestClient(app_for(reg, max_crate_bytes=2000)) as client:
        response = put_crate(client, alice, publish_body(simple_meta(NAME, VERSION), data))
    assert response.status_code == 413
    assert "larger than the limit of 2000 bytes" in detail(response)
    assert api_counts(reg.url) == NOTHING


# --------------------------------------------------------------------------- JSON metadata

BAD_JSON: list[tuple[str, bytes, str]] = [
    ("deep-arrays", b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ("deep-objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
    ("huge-int", b'{"name": "demo", "vers": ' + b"9" * 5000 + b"}", "is out of range"),
    ("u64-overflow", b'{"name": "demo", "deps": [], "v": ' + b"9" * 25 + b"}", "out of range"),
    ("huge-float", b'{"name": "demo", "vers": 1e999}', "the number '1e999' is out of range"),
    (
        "huge-version",
        b'{"name": "demo", "deps": [], "vers": "' + b"k" * 500_000 + b'"}',
        "invalid vers 'kkkk",
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [case[1:] for case in BAD_JSON], ids=[case[0] for case in BAD_JSON]
)
def test_bad_publish_json_is_a_400_in_cargo_s_shape(
    reg: Registry,
    alice: str,
    body: bytes,
    fragment: str,
) -> None:
    with TestClient(app_for(reg)) as client:
        response = put_crate(client, alice, publish_body(body, crate()))
    assert response.status_code == 400, response.text[:200]
    assert fragment in detail(response)
    assert len(response.content) < MAX_MESSAGE
    assert api_counts(reg.url) == NOTHING


def test_bad_publish_json_is_one_line_from_the_cli(registry_url: str, tmp_path: Path) -> None:
    for case_id, body, fragment in BAD_JSON:
        assert len(refused(publish_json(registry_url, tmp_path, body), fragment)) < MAX_MESSAGE, (
            case_id
        )
        assert cli_counts(registry_url) == (0, 0, 0), case_id


# --------------------------------------------------------------------------- fine after all


def test_an_archive_inside_the_crate_is_just_a_file() -> None:
    """crates.io accepts it, and so does cargo: nothing unpacks the inner archive."""
    inner = gzipped(tar(member("other-1.0.0/src/lib.rs", b"evil")))
    entry = read_crate_bytes(crate(member(f"{TOP}/tests/data.tar.gz", inner)))
    assert entry.name == NAME


def test_padding_zeros_after_the_end_marker_and_no_end_marker_are_fine() -> None:
    """tarfile pads to 10 KiB records with zeros; tar-rs stops at a clean end without one."""
    assert read_crate_bytes(crate(member(f"{TOP}/a", b"x"), end=bytes(20 * 512))).name == NAME
    assert read_crate_bytes(crate(member(f"{TOP}/a", b"x"), end=b"")).name == NAME
    with pytest.raises(InvalidInput, match="data after the end of the gzip stream"):
        read_crate_bytes(crate(member(f"{TOP}/a", b"x"), end=b"") + b"\x00")


# --------------------------------------------------------------------------- fuzzing


def _pack(members: list[tuple[str, bytes]], tar_format: int) -> tuple[bytes, list[int]]:
    """The tar bytes and where each member's own (last) 512-byte header starts."""
    raw = tar_archive(*(file(name, data) for name, data in members), tar_format=tar_format)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r") as archive:
        headers = [info.offset_data - 512 for info in archive.getmembers()]
    return raw, headers


MEMBERS = [
    (f"{TOP}/Cargo.toml", MANIFEST.encode()),
    (f"{TOP}/src/lib.rs", b"pub fn demo() {}\n"),
    (f"{TOP}/" + "long/" * 30 + "name.rs", b"// a GNU long name or a pax path\n"),
    (f"{TOP}/data.bin", bytes(range(256)) * 7),
]
FORMATS = [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
# Header fields and values that mean something: the type (links, devices, extension headers),
# the name (a twin, a way out), the size (octal, base-256).
FIELDS: list[tuple[int, list[bytes]]] = [
    (156, [bytes([kind]) for kind in b"0123456S7xgLK"]),
    (0, [f"{TOP}/SRC/lib.rs\0".encode(), f"{TOP}/../x\0".encode(), f"{TOP}/Cargo.toml\0".encode()]),
    (124, [b"00000000000\0", b"00000001000\0", b"\x80" + bytes(10) + b"\x10", b"\xff" * 12]),
    # size 0 and a link type at once (size, mtime, checksum, type): a link with no data
    (124, [b"00000000000\0" * 2 + b" " * 8 + kind for kind in (b"1", b"2", b"6")]),
    (157, [b"../../victim-1.0.0/src\0", b"lib.rs\0"]),
    (257, [b"ustar\x0000", b"ustar  \0", bytes(8)]),
]


def _set_field(raw: bytearray, start: int, offset: int, value: bytes) -> None:
    raw[start + offset : start + offset + len(value)] = value
    raw[start + 148 : start + 156] = b" " * 8
    raw[start + 148 : start + 156] = b"%06o\x00 " % sum(raw[start : start + 512])


@st.composite
def mutated_crates(draw: st.DrawFn) -> bytes:
    """A valid .crate mutated: header fields set to telling values (with a matching checksum),
    bytes changed, members reordered, the tar or the gzip stream cut or bit-flipped."""
    order = draw(st.permutations(range(len(MEMBERS))))
    packed, headers = _pack([MEMBERS[i] for i in order], draw(st.sampled_from(FORMATS)))
    raw = bytearray(packed)
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            offset, values = draw(st.sampled_from(FIELDS))
            _set_field(raw, draw(st.sampled_from(headers)), offset, draw(st.sampled_from(values)))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    data = bytearray(gzipped(bytes(raw)))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def assert_only_distinct_files_and_folders(data: bytes) -> None:
    """What an accepted archive holds, as another tar reader (tarfile) sees it."""
    seen = set()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r|") as archive:
        for info in archive:
            assert info.isreg() or info.isdir(), (info.name, info.type)
            assert info.name.rstrip("/").lower() not in seen, info.name
            seen.add(info.name.rstrip("/").lower())


CLEAN = read_crate_bytes(gzipped(_pack(MEMBERS, tarfile.GNU_FORMAT)[0]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_crates())
def test_mutated_crates_are_refused_or_read_as_the_clean_one(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            entry = read_crate_bytes(data)
        except InvalidInput as refusal:
            message = str(refusal)
            assert "\n" not in message and len(message) < MAX_MESSAGE
        else:
            assert entry.to_line() == CLEAN.to_line().replace(CLEAN.cksum, entry.cksum)
            assert_only_distinct_files_and_folders(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_PEAK
