"""Reading a ``.crate`` file (what ``cargo package`` writes) into an index entry.

The archive comes from a client, so it is treated as hostile: the size is checked before the
file is read, decompression is bounded (a few kilobytes of gzip can expand to gigabytes), and
every member is checked even though nothing is extracted, because the same bytes are later
served to every ``cargo build`` that unpacks them: only regular files and folders inside the
``{name}-{version}/`` folder, no two paths that a case-insensitive file system would merge, and
no tar or gzip construct that two readers could read differently. The rules and limits are
listed in the README ("What an upload may contain"). The entry is derived from the normalized
``Cargo.toml`` inside, following what ``cargo publish`` would have sent for it, so that the
registry does not have to trust the JSON metadata a client sends alongside.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
import unicodedata
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from indexpub.domain.cfg import normalize_target
from indexpub.domain.entries import (
    Dependency,
    DepKind,
    IndexEntry,
    is_own_registry,
    sort_dependencies,
)
from indexpub.domain.features import split_features
from indexpub.domain.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_UNPACKED_BYTES,
    MAX_EXTENSION_HEADER_BYTES,
    MAX_EXTENSION_TOTAL_BYTES,
    MAX_MANIFEST_BRACKETS,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DOTS,
    MAX_MANIFEST_NESTING,
    KiB,
)
from indexpub.domain.versions import Version, normalize_version_req
from indexpub.errors import InvalidCrateFile, InvalidInput, shorten

# What a `.crate` manifest means by a dependency without `registry-index`.
CRATES_IO_INDEX = "https://github.com/rust-lang/crates.io-index"

# How a .crate file (a gzip stream) starts.
GZIP_MAGIC = b"\x1f\x8b"
_DEP_TABLES: dict[str, DepKind] = {
    "dependencies": "normal",
    "dev-dependencies": "dev",
    "dev_dependencies": "dev",
    "build-dependencies": "build",
    "build_dependencies": "build",
}
_UNSUPPORTED_DEP_KEYS = ("artifact", "lib", "target", "workspace", "registry")


def _invalid(message: str) -> InvalidCrateFile:
    """The refusal to raise: ``raise _invalid(...)``."""
    return InvalidCrateFile(message)


# =========================================================================== reading bytes


def read_bounded(stream: BinaryIO, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole upload, refusing it as soon as it exceeds ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _invalid(f"invalid .crate file: larger than the limit of {max_bytes} bytes")
    return data


def read_crate_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    index_url: str | None = None,
    expected_name: str | None = None,
    expected_version: str | None = None,
    pubtime: str | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> IndexEntry:
    """Read a ``.crate`` file from disk; see :func:`read_crate_bytes` for the parameters."""
    size = os.stat(path).st_size
    if size > max_bytes:
        raise _invalid(f"invalid .crate file of {size} bytes: larger than the limit of {max_bytes}")
    with open(path, "rb") as stream:
        data = read_bounded(stream, max_bytes)
    return read_crate_bytes(
        data,
        max_bytes=max_bytes,
        index_url=index_url,
        expected_name=expected_name,
        expected_version=expected_version,
        pubtime=pubtime,
        max_unpacked_bytes=max_unpacked_bytes,
        max_members=max_members,
    )


def read_crate_bytes(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    index_url: str | None = None,
    expected_name: str | None = None,
    expected_version: str | None = None,
    pubtime: str | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> IndexEntry:
    """Validate a ``.crate`` archive and return the index entry ``cargo publish`` implies.

    ``index_url`` is this registry's index URL: a dependency whose ``registry-index`` equals it
    (:func:`~indexpub.domain.entries.is_own_registry`) gets ``registry: null`` in the index.
    Without it, such a dependency keeps the URL, which cargo resolves to the same registry
    anyway. ``expected_name``/``expected_version`` (from the publish request) must match the
    manifest when given.
    """
    if len(data) > max_bytes:
        raise _invalid(
            f"invalid .crate file of {len(data)} bytes: larger than the limit of {max_bytes}"
        )
    if not data.startswith(GZIP_MAGIC):
        raise _invalid(f"invalid .crate file starting with {data[:8]!r}: not a gzip file")
    prefix, manifest_bytes = _scan_archive(data, max_unpacked_bytes, max_members)
    manifest = _parse_manifest(manifest_bytes)
    try:
        entry = _entry_from_manifest(manifest, hashlib.sha256(data).hexdigest(), index_url, pubtime)
    except InvalidCrateFile:
        raise
    except InvalidInput as problem:
        raise type(problem)(f"Cargo.toml: {problem}") from None
    _check_identity(entry, prefix, expected_name, expected_version)
    return entry


# =========================================================================== the archive
#
# A small tar reader of our own rather than ``tarfile``: ``tarfile`` reads a pax extended
# header or a GNU long name whole into memory before anyone can look at its size, quietly
# skips what it does not understand, and follows rules (a pax ``size`` over the header's,
# old-style directories, ``ignore_zeros``) that cargo's tar crate does not share. Here every
# length is checked before the bytes it announces are read, only one extension header is held
# at a time, and whatever two tar readers could read differently is refused rather than
# guessed at.

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_CHUNK = 64 * KiB
_REGULAR = (b"0", b"\x00")
_DIRECTORY = b"5"
_PAX = b"x"
_LONG_NAME = b"L"
_LONG_LINK = b"K"
_EXTENSIONS = {
    _PAX: "pax extended header",
    _LONG_NAME: "GNU long name",
    _LONG_LINK: "GNU long link name",
}
_REFUSED_KINDS = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"S": "a sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume continuation",
}
_USTAR = b"ustar\x0000"
_GNU = b"ustar  \x00"


class _Inflater:
    """The decompressed tar stream, produced only as far as it is read, and counted.

    zlib is asked for at most the bytes wanted, so a gzip bomb costs no memory, and the total
    stops at ``limit``. Exactly one gzip member is read (cargo's decoder reads one): anything
    after it is refused by :meth:`finish`.
    """

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = memoryview(data)
        self._position = 0
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._limit = limit
        self.total = 0

    def _some(self, wanted: int) -> bytes:
        """Up to ``wanted`` (> 0) decompressed bytes; b"" only at the end of the input."""
        while not self._zlib.eof:
            source: bytes | memoryview = self._zlib.unconsumed_tail
            if not source:
                if self._position >= len(self._data):
                    return b""
                source = self._data[self._position : self._position + _CHUNK]
                self._position += len(source)
            try:
                out = self._zlib.decompress(source, wanted)
            except zlib.error as problem:
                raise _invalid(f"invalid .crate file: corrupt gzip data ({problem})") from None
            if out:
                self.total += len(out)
                if self.total > self._limit:
                    raise _invalid(
                        f"invalid .crate file: unpacks to more than the limit of {self._limit}"
                        " bytes"
                    )
                return out
        return b""

    def _ended(self, what: str) -> InvalidCrateFile:
        if not self._zlib.eof:
            return _invalid("invalid .crate file: truncated gzip data (the stream ends early)")
        return _invalid(f"invalid .crate file: the tar archive ends inside {what}")

    def read(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes (the caller has bounded ``size``)."""
        parts = bytearray()
        while len(parts) < size:
            chunk = self._some(size - len(parts))
            if not chunk:
                raise self._ended(what)
            parts += chunk
        return bytes(parts)

    def skip(self, size: int, what: str) -> None:
        """Decompress and drop ``size`` bytes, holding at most one chunk of them."""
        while size > 0:
            chunk = self._some(min(size, _CHUNK))
            if not chunk:
                raise self._ended(what)
            size -= len(chunk)

    def header_block(self) -> bytes | None:
        """The next 512-byte header; None when the stream ends cleanly before it."""
        first = self._some(_BLOCK)
        if not first:
            if not self._zlib.eof:
                raise self._ended("a header")
            return None
        if len(first) == _BLOCK:
            return first
        return first + self.read(_BLOCK - len(first), "a header")

    def finish(self) -> None:
        """After the end-of-archive block (or a clean end without one, which tar-rs accepts
        too): only zeros may follow, then nothing at all.

        Other tar readers (``tar --ignore-zeros``) would find members hidden after the end,
        and a second gzip member is invisible to cargo but not to every other gzip reader.
        """
        while chunk := self._some(_CHUNK):
            if chunk.count(0) != len(chunk):
                raise _invalid("invalid .crate file: data after the end of the tar archive")
        if not self._zlib.eof:
            raise self._ended("the end-of-archive marker")
        if self._zlib.unused_data or self._position < len(self._data):
            raise _invalid("invalid .crate file: data after the end of the gzip stream")


@dataclass
class _Member:
    """One tar member as every mainstream reader would see it."""

    name: str
    kind: bytes
    size: int
    raw_name: bytes


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal digits, or GNU base-256 (first byte 0x80)."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise _invalid(f"invalid .crate file: not a readable tar archive (negative {what})")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= byte <= 55 for byte in text):
        raise _invalid(
            f"invalid .crate file: not a readable tar archive ({what} {shorten(text)} is not octal)"
        )
    return int(text, 8)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(f"invalid .crate member {shorten(raw)}: {what} is not UTF-8") from None


def _parse_pax(payload: bytes) -> dict[bytes, bytes]:
    """Records ``"%d %s=%s\\n"`` whose length counts itself, tiling the payload exactly."""
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(payload):
        space = payload.find(b" ", position, position + 20)
        digits = payload[position:space] if space > position else b""
        if not digits.isdigit() or digits[:1] == b"0":
            raise _invalid("invalid .crate file: malformed pax extended header record")
        end = position + int(digits)
        if end > len(payload) or payload[end - 1 : end] != b"\n":
            raise _invalid("invalid .crate file: malformed pax extended header record")
        key, equals, value = payload[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise _invalid("invalid .crate file: malformed pax extended header record")
        if key in records:
            raise _invalid(f"invalid .crate file: pax key {shorten(key)} appears twice")
        records[key] = value
        position = end
    return records


class _TarReader:
    """Members of the tar stream, with every extension header bounded before it is read."""

    def __init__(self, stream: _Inflater) -> None:
        self.stream = stream
        self.extension_bytes = 0
        self._unread = 0

    def members(self) -> Iterator[_Member]:
        pending: dict[bytes, bytes] = {}
        while True:
            block = self.stream.header_block()
            if block is None or block == _ZERO_BLOCK:
                if pending:
                    raise _invalid(
                        "invalid .crate file: the archive ends after an extension header"
                    )
                self.stream.finish()
                return
            kind, size, raw_name = self._header(block)
            if kind == b"g":
                # It would change how every later member reads; cargo never writes one.
                raise _invalid("invalid .crate file: a pax global header is not allowed")
            if kind in _EXTENSIONS:
                pending[kind] = self._extension(kind, size, pending)
                continue
            member = self._member(kind, size, raw_name, pending)
            self._unread = member.size
            yield member
            self.stream.skip(self._unread + (-member.size % _BLOCK), "a member's data")
            pending = {}

    def read_data(self, member: _Member) -> bytes:
        """The data of the member just yielded (whose size the caller has bounded)."""
        data = self.stream.read(member.size, "a member's data")
        self._unread = 0
        return data

    def _header(self, block: bytes) -> tuple[bytes, int, bytes]:
        stored = _number(block[148:156], "checksum")
        if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise _invalid(
                "invalid .crate file: not a readable tar archive (a header's checksum is wrong)"
            )
        magic = block[257:265]
        if magic not in (_USTAR, _GNU):
            raise _invalid(
                f"invalid .crate file: tar header format {shorten(magic)} (not ustar or GNU)"
            )
        raw_name = block[:100].split(b"\x00", 1)[0]
        if magic == _USTAR:
            prefix = block[345:500].split(b"\x00", 1)[0]
            if prefix:
                raw_name = prefix + b"/" + raw_name
        return block[156:157], _number(block[124:136], "size"), raw_name

    def _extension(self, kind: bytes, size: int, pending: dict[bytes, bytes]) -> bytes:
        what = _EXTENSIONS[kind]
        if kind in pending:
            raise _invalid(f"invalid .crate file: two {what}s for one member")
        if size > MAX_EXTENSION_HEADER_BYTES:
            raise _invalid(
                f"invalid .crate file: a {what} of {size} bytes (the limit is"
                f" {MAX_EXTENSION_HEADER_BYTES})"
            )
        self.extension_bytes += size
        if self.extension_bytes > MAX_EXTENSION_TOTAL_BYTES:
            raise _invalid(
                "invalid .crate file: its pax headers and GNU long names add up to more than"
                f" {MAX_EXTENSION_TOTAL_BYTES} bytes"
            )
        payload = self.stream.read(size, f"a {what}")
        self.stream.skip(-size % _BLOCK, f"a {what}")
        return payload

    def _member(
        self, kind: bytes, size: int, raw_name: bytes, pending: dict[bytes, bytes]
    ) -> _Member:
        pax = _parse_pax(pending[_PAX]) if _PAX in pending else {}
        long_name = pending.get(_LONG_NAME)
        if long_name is not None:
            long_name = long_name.split(b"\x00", 1)[0]
            if b"path" in pax:
                raise _invalid(
                    "invalid .crate file: a member has both a GNU long name and a pax path"
                )
            raw_name = long_name
        raw_name = pax.get(b"path", raw_name)
        if any(key.startswith(b"GNU.sparse.") for key in pax):
            kind = b"S"
        pax_size = pax.get(b"size")
        # As crates.io: readers that trust different size fields must not disagree.
        if pax_size is not None and (
            not pax_size.isdigit() or len(pax_size) > 20 or int(pax_size) != size
        ):
            raise _invalid(
                f"invalid .crate member {shorten(raw_name)}: its pax size"
                f" {shorten(pax[b'size'])} differs from its tar header's {size}"
            )
        return _Member(_text(raw_name, "its path"), kind, size, raw_name)


def _scan_archive(data: bytes, max_unpacked_bytes: int, max_members: int) -> tuple[str, bytes]:
    """Check every member of the archive; return the top directory and Cargo.toml's bytes."""
    reader = _TarReader(_Inflater(data, max_unpacked_bytes))
    top = ""
    seen: dict[str, str] = {}
    declared = 0
    manifest: bytes | None = None
    for count, member in enumerate(reader.members(), start=1):
        if count > max_members:
            raise _invalid(f"invalid .crate file: more than {max_members} members")
        path = _check_member_path(member.name)
        top = top or path.split("/", 1)[0]
        if path != top and not path.startswith(top + "/"):
            raise _invalid(
                f"invalid .crate member {shorten(member.name)}: outside the"
                f" {shorten(top + '/')} folder"
            )
        _check_member_kind(member, path, top)
        _check_unique(seen, path)
        declared += member.size
        if declared > max_unpacked_bytes:
            raise _invalid(
                f"invalid .crate file: unpacks to more than the limit of {max_unpacked_bytes} bytes"
            )
        if path == f"{top}/Cargo.toml":
            if member.size > MAX_MANIFEST_BYTES:
                raise _invalid(
                    f"invalid .crate file: Cargo.toml is larger than {MAX_MANIFEST_BYTES} bytes"
                )
            manifest = reader.read_data(member)
    if manifest is None:
        raise _invalid(
            f"invalid .crate file: no Cargo.toml in {shorten(top + '/' if top else 'it')}"
        )
    return top, manifest


def _check_member_path(name: str) -> str:
    """A member path, refused when absolute, escaping with ``..``, or ambiguous."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise _invalid(f"invalid .crate member {shorten(name)}: not a relative POSIX path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _invalid(f"invalid .crate member {shorten(name)}: contains '..'")
    if not parts:
        raise _invalid(f"invalid .crate member {shorten(name)}: empty path")
    return "/".join(parts)


def _check_member_kind(member: _Member, path: str, top: str) -> None:
    """Only regular files and folders, as crates.io and cargo's unpacker allow.

    Links are refused whatever their target: a chain of links that each stay inside the folder
    (``a/b -> ../c``, then ``a/b/l -> ../../other-1.0.0/src``, then ``a/b/l/lib.rs``) still
    writes outside it when unpacked.
    """
    if member.kind in _REGULAR:
        if member.raw_name.endswith(b"/"):
            # Old tar readers take such a file for a folder, newer ones for a file.
            raise _invalid(
                f"invalid .crate member {shorten(member.name)}: a file named like a folder"
            )
        if path == top:
            raise _invalid(f"invalid .crate member {shorten(member.name)}: a file, not the folder")
        return
    if member.kind == _DIRECTORY:
        if member.size:
            # Readers disagree on whether a folder's data blocks follow its header.
            raise _invalid(f"invalid .crate member {shorten(member.name)}: a folder with content")
        return
    kind = _REFUSED_KINDS.get(member.kind, f"an entry of tar type {shorten(member.kind)}")
    raise _invalid(
        f"invalid .crate member {shorten(member.name)}: {kind}; only files and folders are allowed"
    )


def _check_unique(seen: dict[str, str], path: str) -> None:
    """Refuse a path seen before, also once case-folded (and in Unicode NFC form): on macOS
    and Windows cargo would unpack one of the two over the other."""
    key = unicodedata.normalize("NFC", path).casefold()
    other = seen.get(key)
    if other == path:
        raise _invalid(f"invalid .crate member {shorten(path)}: appears twice")
    if other is not None:
        raise _invalid(
            f"invalid .crate member {shorten(path)}: the same path as {shorten(other)}"
            " on a case-insensitive file system"
        )
    seen[key] = key if key == path else path


# =========================================================================== the manifest


# Outside strings and comments: opening and closing brackets and dots (a multi-line string may
# end with up to two extra quotes, which belong to it).
_TOML_SHAPE = re.compile(
    r'''"""(?:[^"\\]|\\[\s\S]|"(?!""))*"{3,5}|''\'[\s\S]*?'{3,5}'''
    r"""|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|\#[^\n]*|([\[{])|([\]}])|(\.)"""
)


def _parse_manifest(data: bytes) -> dict[str, object]:
    """Parse Cargo.toml into one clear refusal whatever it holds.

    ``tomllib`` recurses on nested arrays and inline tables, builds a dict per dotted key part
    (megabytes of memory per kilobyte of text), and raises ValueError for integers of thousands
    of digits: the shape is checked before parsing, and the values after.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("invalid Cargo.toml in the .crate file: not UTF-8") from None
    _check_manifest_shape(text)
    try:
        manifest = tomllib.loads(text, parse_float=_toml_float)
    except tomllib.TOMLDecodeError as problem:
        raise _invalid(f"invalid Cargo.toml in the .crate file: not TOML ({problem})") from None
    except RecursionError:
        raise _invalid("invalid Cargo.toml in the .crate file: nested too deeply") from None
    except InvalidInput:
        raise
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
        raise _invalid(
            "invalid Cargo.toml in the .crate file: an integer is out of range"
        ) from None
    _check_manifest_values(manifest)
    return manifest


def _check_manifest_shape(text: str) -> None:
    depth = dots = brackets = 0
    for match in _TOML_SHAPE.finditer(text):
        group = match.lastindex
        if group == 1:
            depth += 1
            brackets += 1
            if depth > MAX_MANIFEST_NESTING:
                raise _invalid(
                    "invalid Cargo.toml in the .crate file: arrays or tables nested deeper than"
                    f" {MAX_MANIFEST_NESTING}"
                )
            if brackets > MAX_MANIFEST_BRACKETS:
                raise _invalid(
                    f"invalid Cargo.toml in the .crate file: more than {MAX_MANIFEST_BRACKETS}"
                    " arrays and tables"
                )
        elif group == 2:
            depth -= 1
        elif group == 3:
            dots += 1
            if dots > MAX_MANIFEST_DOTS:
                raise _invalid(
                    f"invalid Cargo.toml in the .crate file: more than {MAX_MANIFEST_DOTS}"
                    " dotted key parts or decimal points"
                )


def _toml_float(text: str) -> float:
    value = float(text)
    if math.isinf(value) and "inf" not in text:
        raise _invalid(
            f"invalid Cargo.toml in the .crate file: the float {shorten(text)} is out of range"
        )
    return value


def _check_manifest_values(manifest: dict[str, object]) -> None:
    """TOML integers are 64-bit (cargo refuses others); tomllib takes any up to 4300 digits."""
    stack: list[object] = [manifest]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            raise _invalid("invalid Cargo.toml in the .crate file: an integer is out of range")


def _table(value: object, what: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _invalid(f"invalid Cargo.toml: {what} {shorten(value)} is not a table")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"invalid Cargo.toml: {what} {shorten(value)} is not true or false")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        # Workspace inheritance (`{ workspace = true }`) lands here: cargo package resolves it.
        raise _invalid(
            f"invalid Cargo.toml: {what} {shorten(value)} is not a string (not normalized?)"
        )
    return value


def _entry_from_manifest(
    manifest: Mapping[str, object], cksum: str, index_url: str | None, pubtime: str | None
) -> IndexEntry:
    package = _table(manifest.get("package") or manifest.get("project"), "[package]")
    if not package:
        raise _invalid("invalid Cargo.toml: no [package] table")
    name = _string(package.get("name"), "package.name")
    version = Version.parse(_string(package.get("version"), "package.version"), what="vers")
    links = package.get("links")
    rust_version = package.get("rust-version")
    features, features2 = split_features(_features(manifest.get("features")))
    return IndexEntry(
        name=name,
        vers=version,
        deps=sort_dependencies(_dependencies(manifest, index_url)),
        cksum=cksum,
        features=features,
        yanked=False,
        links=None if links is None else _string(links, "package.links"),
        features2=features2 or None,
        v=2 if features2 else None,
        rust_version=None if rust_version is None else _string(rust_version, "rust-version"),
        pubtime=pubtime,
    )


def _features(value: object) -> dict[str, list[str]]:
    features: dict[str, list[str]] = {}
    for key, values in _table(value, "[features]").items():
        if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
            raise _invalid(f"invalid Cargo.toml: feature {shorten(key)} is not a list of strings")
        features[key] = values
    return features


def _dependencies(manifest: Mapping[str, object], index_url: str | None) -> list[Dependency]:
    deps: list[Dependency] = []
    for table_name, kind in _DEP_TABLES.items():
        table = _table(manifest.get(table_name), f"[{table_name}]")
        deps.extend(_dependency(key, spec, kind, None, index_url) for key, spec in table.items())
    for platform, tables in _table(manifest.get("target"), "[target]").items():
        target = normalize_target(platform, what="target")
        for table_name, kind in _DEP_TABLES.items():
            where = f"[target.{shorten(platform)}.{table_name}]"
            table = _table(_table(tables, f"[target.{shorten(platform)}]").get(table_name), where)
            deps.extend(
                _dependency(key, spec, kind, target, index_url) for key, spec in table.items()
            )
    return deps


def _dependency(
    key: str, spec: object, kind: DepKind, target: str | None, index_url: str | None
) -> Dependency:
    """One manifest dependency, turned into what cargo publish sends for it."""
    if isinstance(spec, str):
        spec = {"version": spec}
    table = _table(spec, f"dependency {shorten(key)}")
    for unsupported in _UNSUPPORTED_DEP_KEYS:
        if unsupported in table:
            raise _invalid(
                f"invalid Cargo.toml: dependency {shorten(key)} uses {shorten(unsupported)}"
            )
    if "version" not in table:
        raise _invalid(f"invalid Cargo.toml: dependency {shorten(key)} has no version requirement")
    default_features = table.get("default-features", table.get("default_features", True))
    features = table.get("features", [])
    if not isinstance(features, list):
        raise _invalid(f"invalid Cargo.toml: features of dependency {shorten(key)} are not a list")
    package = table.get("package")
    version = _string(table["version"], f"version of dependency {shorten(key)}")
    try:
        req = normalize_version_req(version, what="req")
    except InvalidInput as problem:
        raise type(problem)(f"dependency {shorten(key)}: {problem}") from None
    return Dependency(
        name=key,
        req=req,
        features=tuple(features),
        optional=_bool(table.get("optional", False), f"optional of dependency {shorten(key)}"),
        default_features=_bool(default_features, f"default-features of dependency {shorten(key)}"),
        target=target,
        kind=kind,
        registry=_dependency_registry(table.get("registry-index"), index_url),
        package=None
        if package is None
        else _string(package, f"package of dependency {shorten(key)}"),
    )


def _dependency_registry(registry_index: object, index_url: str | None) -> str | None:
    """Map a manifest's ``registry-index`` to the index's ``registry`` field.

    In Cargo.toml no registry means crates.io; in the index null means "this registry".
    """
    url = CRATES_IO_INDEX if registry_index is None else _string(registry_index, "registry-index")
    if index_url is not None and is_own_registry(url, (index_url,)):
        return None
    return url


def _check_identity(
    entry: IndexEntry, prefix: str, expected_name: str | None, expected_version: str | None
) -> None:
    own = f"{entry.name}-{entry.vers}"
    if prefix != own:
        raise _invalid(
            f"invalid .crate file: its folder {shorten(prefix)} does not match Cargo.toml's"
            f" name and version {shorten(own)}"
        )
    if expected_name is not None and expected_name != entry.name:
        raise _invalid(
            f"invalid .crate file: Cargo.toml names the crate {shorten(entry.name)},"
            f" not {shorten(expected_name)}"
        )
    if expected_version is not None and expected_version != str(entry.vers):
        raise _invalid(
            f"invalid .crate file: Cargo.toml has version {shorten(str(entry.vers))},"
            f" not {shorten(expected_version)}"
        )
