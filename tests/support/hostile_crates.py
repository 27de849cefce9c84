"""A corpus of hostile ``.crate`` archives, written byte by byte.

``tarfile`` cannot write most of these (a pax header that announces 450 MiB, a checksum that
lies, a folder with data, a second gzip member), so the tar headers are built here by hand (the
archives ``tarfile`` can write come from :mod:`support.crates`, which also gzips these).
Every case is ``(id, archive, fragment)``: ``fragment`` is a piece of the one-line refusal
that only this problem produces, so a case cannot pass by tripping over an earlier check.

Import it as ``from support.hostile_crates import hostile_corpus`` (``tests/conftest.py`` puts
``tests/`` on ``sys.path``; ``bench/_paths.py`` does the same for the benchmarks).
``hostile_corpus(full_size=True)`` builds the bombs at the sizes seen in the wild (a 450 MiB pax
header in a ~460 KB upload), for ``bench/hostile.py``; the tests use smaller ones that still
exceed every limit.
"""

from __future__ import annotations

import functools
import unicodedata
import zlib

from support import crates

NAME = "demo"
VERSION = "0.1.0"
TOP = f"{NAME}-{VERSION}"
EDITION = 'edition = "2021"\n'
MANIFEST = crates.manifest(NAME, VERSION, EDITION)
MiB = 1024 * 1024
BLOCK = 512
USTAR = b"ustar\x0000"
GNU = b"ustar  \x00"


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\x00"


def header(
    name: str | bytes,
    *,
    kind: bytes = b"0",
    size: int = 0,
    linkname: str = "",
    magic: bytes = GNU,
    prefix: bytes = b"",
    size_field: bytes | None = None,
    bad_checksum: bool = False,
) -> bytes:
    """One 512-byte tar header; ``size_field`` replaces the octal size (base-256, garbage)."""
    raw = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[0:100] = raw[:100].ljust(100, b"\x00")
    block[100:108] = _octal(0o755 if kind == b"5" else 0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = size_field if size_field is not None else _octal(size, 12)
    block[136:148] = _octal(1_153_704_088, 12)
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157:257] = linkname.encode()[:100].ljust(100, b"\x00")
    block[257:265] = magic
    if magic == USTAR:
        block[345:500] = prefix[:155].ljust(155, b"\x00")
    checksum = sum(block) + (1 if bad_checksum else 0)
    block[148:156] = f"{checksum:06o}".encode() + b"\x00 "
    return bytes(block)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: str | bytes, data: bytes = b"", *, kind: bytes = b"0", **fields: object) -> bytes:
    """A header and its data; ``kind`` 5 (folder) gets no data unless ``size`` says so."""
    size = int(fields.pop("size", len(data)))  # type: ignore[call-overload]
    return header(name, kind=kind, size=size, **fields) + _padded(data)  # type: ignore[arg-type]


def folder(name: str) -> bytes:
    return member(name.rstrip("/") + "/", kind=b"5")


def link(name: str, target: str, *, hard: bool = False) -> bytes:
    return member(name, kind=b"1" if hard else b"2", linkname=target)


def pax_record(key: str, value: bytes | str) -> bytes:
    body = f" {key}=".encode() + (value.encode() if isinstance(value, str) else value) + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: bytes, *, kind: bytes = b"x") -> bytes:
    return member("././@PaxHeader", records, kind=kind)


def gnu_long(kind: bytes, name: bytes) -> bytes:
    """A GNU long name (``L``) or long link name (``K``) entry holding ``name``."""
    return member("././@LongLink", name + b"\x00", kind=kind)


def good_members(manifest: str = MANIFEST, top: str = TOP) -> list[bytes]:
    return [
        folder(top),
        member(f"{top}/Cargo.toml", manifest.encode()),
        member(f"{top}/src/lib.rs", b"pub fn demo() {}\n"),
    ]


END = bytes(2 * BLOCK)


def tar(*members: bytes, end: bytes = END) -> bytes:
    return b"".join(members) + end


def crate(*members: bytes, end: bytes = END) -> bytes:
    """A gzip tar with the good members then the given ones."""
    return crates.gzipped(tar(*good_members(), *members, end=end))


def _huge_entry(kind: bytes, size: int) -> bytes:
    """An extension header announcing ``size`` bytes, followed by them, gzipped in a stream:
    a bomb that costs its builder no memory either."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [
        squeeze.compress(
            tar(*good_members(), end=b"") + header("././@LongLink", kind=kind, size=size)
        )
    ]
    chunk = b"a" * MiB
    for _ in range(size // MiB):
        parts.append(squeeze.compress(chunk))
    parts.append(squeeze.compress(b"a" * (size % MiB) + bytes(-size % BLOCK)))
    parts.append(squeeze.compress(member(f"{TOP}/x") + END))
    parts.append(squeeze.flush())
    return b"".join(parts)


def symlink_chain(name: str, version: str, victim: str, manifest: str | None = None) -> bytes:
    """The attack of issue 11: each link stays inside ``{name}-{version}/`` on its own, but
    unpacked in order they write ``{victim}/src/lib.rs`` next to it (cargo's registry/src)."""
    top = f"{name}-{version}"
    manifest = manifest or crates.manifest(name, version, EDITION)
    members = [
        folder(top),
        member(f"{top}/Cargo.toml", manifest.encode()),
        member(f"{top}/src/lib.rs", b"pub fn attacker() {}\n"),
        folder(f"{top}/A"),
        folder(f"{top}/C"),
        link(f"{top}/A/B", "../C"),
        link(f"{top}/A/B/L", f"../../{victim}/src"),
        member(f"{top}/A/B/L/lib.rs", b'compile_error!("overwritten by the attacker");\n'),
    ]
    return crates.gzipped(tar(*members))


def _manifest_crate(extra: str) -> bytes:
    return crates.gzipped(tar(*good_members(MANIFEST + extra)))


@functools.cache
def hostile_corpus(full_size: bool = False) -> tuple[tuple[str, bytes, str], ...]:
    """Every case refused by read_crate_bytes with its default limits."""
    bomb = 450 * MiB if full_size else 8 * MiB
    long_name = b"demo-0.1.0/" + b"n" * (40 * MiB)
    nfd = unicodedata.normalize("NFD", f"{TOP}/src/caf\u00e9.rs")
    many_pax = [pax(pax_record("comment", "c" * 60_000)) + member(f"{TOP}/f{i}") for i in range(75)]
    cases: list[tuple[str, bytes, str]] = [
        # ---- links and special files, whatever their target
        ("symlink-chain", symlink_chain(NAME, VERSION, "victim-1.0.0"), "a symbolic link"),
        ("symlink-inside", crate(link(f"{TOP}/alias.rs", "src/lib.rs")), "a symbolic link"),
        ("symlink-absolute", crate(link(f"{TOP}/passwd", "/etc/passwd")), "a symbolic link"),
        ("symlink-up", crate(link(f"{TOP}/up", "../../../etc")), "a symbolic link"),
        ("hardlink", crate(link(f"{TOP}/hard", f"{TOP}/src/lib.rs", hard=True)), "a hard link"),
        ("char-device", crate(member(f"{TOP}/tty", kind=b"3")), "a character device"),
        ("block-device", crate(member(f"{TOP}/sda", kind=b"4")), "a block device"),
        ("fifo", crate(member(f"{TOP}/pipe", kind=b"6")), "a FIFO"),
        ("contiguous", crate(member(f"{TOP}/big", b"x", kind=b"7")), "a contiguous file"),
        ("sparse-gnu", crate(member(f"{TOP}/holes", b"x", kind=b"S")), "a sparse file"),
        (
            "sparse-pax",
            crate(pax(pax_record("GNU.sparse.major", "1")) + member(f"{TOP}/holes", b"x")),
            "a sparse file",
        ),
        (
            "pax-global",
            crate(pax(pax_record("comment", "g"), kind=b"g")),
            "a pax global header is not allowed",
        ),
        ("unknown-type", crate(member(f"{TOP}/odd", kind=b"Z")), "an entry of tar type b'Z'"),
        # ---- paths that collide on macOS and Windows
        ("case-manifest", crate(member(f"{TOP}/CARGO.TOML", b"[package]\n")), "case-insensitive"),
        ("case-lower", crate(member(f"{TOP}/cargo.toml", b"x")), "'demo-0.1.0/Cargo.toml' on a"),
        ("case-source", crate(member(f"{TOP}/SRC/lib.rs", b"x")), "case-insensitive"),
        (
            "unicode-twin",
            crate(member(f"{TOP}/src/caf\u00e9.rs"), member(nfd.encode())),
            "case-insensitive",
        ),
        ("duplicate", crate(member(f"{TOP}/src/lib.rs", b"again")), "appears twice"),
        # ---- extension headers: bounded before they are read
        ("pax-bomb", _huge_entry(b"x", bomb), "a pax extended header of"),
        ("gnu-long-name-bomb", _huge_entry(b"L", bomb), "a GNU long name of"),
        ("gnu-long-link-bomb", _huge_entry(b"K", bomb), "a GNU long link name of"),
        ("pax-total", crate(*many_pax), "add up to more than 4194304 bytes"),
        ("long-name-40mib", crate(gnu_long(b"L", long_name) + member("x")), "a GNU long name of"),
        (
            "long-name-outside",
            crate(gnu_long(b"L", b"other/" + b"o" * 60_000) + member("x")),
            "outside the 'demo-0.1.0/' folder",
        ),
        (
            "long-name-and-pax-path",
            crate(
                gnu_long(b"L", f"{TOP}/a".encode())
                + pax(pax_record("path", f"{TOP}/b"))
                + member("x")
            ),
            "both a GNU long name and a pax path",
        ),
        ("two-pax", crate(pax(b"") + pax(b"") + member(f"{TOP}/x")), "two pax extended headers"),
        ("pax-at-end", crate(pax(pax_record("path", f"{TOP}/x"))), "ends after an extension"),
        (
            "pax-duplicate-key",
            crate(
                pax(pax_record("path", f"{TOP}/a") + pax_record("path", f"{TOP}/b")) + member("x")
            ),
            "pax key b'path' appears twice",
        ),
        ("pax-malformed", crate(pax(b"99 path=x\n") + member("x")), "malformed pax extended"),
        (
            "pax-size-mismatch",
            crate(pax(pax_record("size", "0")) + member(f"{TOP}/hidden", b"#!/bin/sh\n")),
            "its pax size b'0' differs from its tar header's 10",
        ),
        # ---- tar headers
        ("bad-checksum", crate(header(f"{TOP}/x", bad_checksum=True)), "checksum is wrong"),
        ("v7-header", crate(header(f"{TOP}/x", magic=bytes(8))), "not ustar or GNU"),
        (
            "negative-size",
            crate(header(f"{TOP}/x", size_field=b"\xff" * 12)),
            "negative size",
        ),
        (
            "base256-huge-size",
            crate(header(f"{TOP}/x", size_field=b"\x80" + (2**60).to_bytes(11, "big"))),
            "unpacks to more than the limit",
        ),
        ("octal-garbage", crate(header(f"{TOP}/x", size_field=b"12x4\x00       ")), "not octal"),
        (
            "folder-with-data",
            crate(member(f"{TOP}/d/", b"hidden", kind=b"5")),
            "folder with content",
        ),
        ("file-like-folder", crate(member(f"{TOP}/f/", b"x")), "a file named like a folder"),
        ("non-utf8-path", crate(member(f"{TOP}/".encode() + b"\xff.rs")), "its path is not UTF-8"),
        # ---- paths
        ("empty-name", crate(member(b"")), "not a relative POSIX path"),
        ("absolute", crate(member("/etc/cron.d/evil", b"x")), "not a relative POSIX path"),
        ("dot-dot", crate(member(f"{TOP}/../victim-1.0.0/src/lib.rs", b"x")), "contains '..'"),
        ("backslash", crate(member(f"{TOP}\\..\\evil", b"x")), "not a relative POSIX path"),
        ("only-dots", crate(member("./.")), "empty path"),
        ("outside", crate(member("victim-1.0.0/src/lib.rs", b"x")), "outside the 'demo-0.1.0/'"),
        ("top-is-file", crates.gzipped(tar(member(TOP, b"x"))), "a file, not the folder"),
        (
            "missing-manifest",
            crates.gzipped(tar(folder(TOP), member(f"{TOP}/src/lib.rs"))),
            "no Cargo.toml in 'demo-0.1.0/'",
        ),
        (
            "wrong-folder",
            crates.gzipped(tar(*good_members(top="victim-1.0.0"))),
            "its folder 'victim-1.0.0' does not match",
        ),
        # ---- what surrounds the tar stream
        ("truncated-gzip", crate()[:-30], "truncated gzip data"),
        ("garbage-after-gzip", crate() + b"garbage", "data after the end of the gzip stream"),
        (
            "second-gzip-member",
            crate() + crates.gzipped(tar(member(f"{TOP}/build.rs", b"fn main(){}"))),
            "data after the end of the gzip stream",
        ),
        (
            "member-after-end",
            crate(end=END + member(f"{TOP}/build.rs", b"fn main() {}") + END),
            "data after the end of the tar archive",
        ),
        ("tar-ends-in-member", crate(header(f"{TOP}/big", size=4096), end=b""), "ends inside"),
        ("not-gzip", tar(*good_members()), "not a gzip file"),
        # ---- Cargo.toml
        ("toml-deep-arrays", _manifest_crate("x = " + "[" * 5000 + "]" * 5000), "nested deeper"),
        (
            "toml-deep-tables",
            _manifest_crate("x = " + "{a=" * 500 + "1" + "}" * 500),
            "nested deeper",
        ),
        ("toml-dotted-bomb", _manifest_crate("x" + ".b" * 200_000 + " = 1\n"), "dotted key parts"),
        (
            "toml-many-tables",
            _manifest_crate("[package.metadata]\nx = [" + "{}," * 340_000 + "]\n"),
            "more than 50000 arrays and tables",
        ),
        (
            "toml-huge-int",
            _manifest_crate("[package.metadata]\nx = " + "9" * 5000),
            "integer is out",
        ),
        (
            "toml-i64-overflow",
            _manifest_crate("[package.metadata]\nx = " + "9" * 30),
            "integer is out",
        ),
        ("toml-huge-float", _manifest_crate("[package.metadata]\nx = 1e999"), "1e999' is out of"),
        ("toml-oversized", _manifest_crate("# " + "x" * (2 * MiB)), "Cargo.toml is larger than"),
        (
            "toml-long-key",
            _manifest_crate("[dependencies]\n" + "k" * 100_000 + " = { path = 'x' }\n"),
            "'kkkkk",
        ),
    ]
    return tuple(cases)
