"""Reading a ``.crate`` file (what ``cargo package`` writes) into an index entry.

The archive comes from a client, so it is treated as hostile: the size is checked before the
file is read, decompression is bounded (a few kilobytes of gzip can expand to gigabytes), and
every member path is checked even though nothing is extracted, because the same bytes are later
served to every ``cargo build`` that unpacks them. The entry is derived from the normalized
``Cargo.toml`` inside, following what ``cargo publish`` would have sent for it, so that the
registry does not have to trust the JSON metadata a client sends alongside.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
import tomllib
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, BinaryIO

from indexpub.entries import (
    Dependency,
    DepKind,
    IndexEntry,
    normalize_target,
    sort_dependencies,
    split_features,
)
from indexpub.errors import InvalidCrateFile, InvalidInput
from indexpub.versions import Version, normalize_version_req

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * MiB
DEFAULT_MAX_UNPACKED_BYTES = 512 * MiB  # crates.io's default limit
DEFAULT_MAX_MEMBERS = 50_000
MAX_MANIFEST_BYTES = 8 * MiB
# What a `.crate` manifest means by a dependency without `registry-index`.
CRATES_IO_INDEX = "https://github.com/rust-lang/crates.io-index"

_GZIP_MAGIC = b"\x1f\x8b"
_DEP_TABLES: dict[str, DepKind] = {
    "dependencies": "normal",
    "dev-dependencies": "dev",
    "dev_dependencies": "dev",
    "build-dependencies": "build",
    "build_dependencies": "build",
}
_UNSUPPORTED_DEP_KEYS = ("artifact", "lib", "target", "workspace", "registry")


def _fail(message: str) -> InvalidCrateFile:
    return InvalidCrateFile(message)


# =========================================================================== reading bytes


def read_bounded(stream: BinaryIO, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole upload, refusing it as soon as it exceeds ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _fail(f"invalid .crate file: larger than the limit of {max_bytes} bytes")
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
        raise _fail(f"invalid .crate file of {size} bytes: larger than the limit of {max_bytes}")
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
    gets ``registry: null`` in the index. Without it, such a dependency keeps the URL, which
    cargo resolves to the same registry anyway. ``expected_name``/``expected_version`` (from
    the publish request) must match the manifest when given.
    """
    if len(data) > max_bytes:
        raise _fail(
            f"invalid .crate file of {len(data)} bytes: larger than the limit of {max_bytes}"
        )
    if not data.startswith(_GZIP_MAGIC):
        raise _fail(f"invalid .crate file starting with {data[:8]!r}: not a gzip file")
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


class _BoundedReader(io.RawIOBase):
    """Decompressed bytes, counted, so that a gzip bomb stops at the limit."""

    def __init__(self, source: gzip.GzipFile, limit: int) -> None:
        super().__init__()
        self.source = source
        self.limit = limit
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self.source.read(len(view))
        self.total += len(chunk)
        if self.total > self.limit:
            raise _fail(
                f"invalid .crate file: unpacks to more than the limit of {self.limit} bytes"
            )
        view[: len(chunk)] = chunk
        return len(chunk)


def _scan_archive(data: bytes, max_unpacked_bytes: int, max_members: int) -> tuple[str, bytes]:
    """Check every member of the archive; return the top directory and Cargo.toml's bytes."""
    source = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
    reader = io.BufferedReader(_BoundedReader(source, max_unpacked_bytes))
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            return _scan_members(archive, max_unpacked_bytes, max_members)
    except (gzip.BadGzipFile, EOFError, zlib.error) as problem:
        raise _fail(f"invalid .crate file: corrupt gzip data ({problem})") from None
    except tarfile.TarError as problem:
        raise _fail(f"invalid .crate file: not a readable tar archive ({problem})") from None


def _scan_members(
    archive: tarfile.TarFile, max_unpacked_bytes: int, max_members: int
) -> tuple[str, bytes]:
    top = ""
    seen: set[str] = set()
    declared = 0
    manifest: bytes | None = None
    for count, member in enumerate(archive, start=1):
        if count > max_members:
            raise _fail(f"invalid .crate file: more than {max_members} members")
        path = _check_member_path(member.name)
        top = top or path.split("/", 1)[0]
        if path != top and not path.startswith(top + "/"):
            raise _fail(f"invalid .crate member {member.name!r}: outside the {top + '/'!r} folder")
        if path in seen:
            raise _fail(f"invalid .crate member {member.name!r}: appears twice")
        seen.add(path)
        _check_member_type(member, path, top)
        declared += max(member.size, 0)
        if declared > max_unpacked_bytes:
            raise _fail(
                f"invalid .crate file: unpacks to more than the limit of {max_unpacked_bytes} bytes"
            )
        if path == f"{top}/Cargo.toml":
            manifest = _read_manifest(archive, member)
    if manifest is None:
        raise _fail(f"invalid .crate file: no Cargo.toml in {top + '/' if top else 'it'!r}")
    return top, manifest


def _check_member_path(name: str) -> str:
    """A member path, refused when absolute, escaping with ``..``, or ambiguous."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise _fail(f"invalid .crate member {name!r}: not a relative POSIX path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _fail(f"invalid .crate member {name!r}: contains '..'")
    if not parts:
        raise _fail(f"invalid .crate member {name!r}: empty path")
    return "/".join(parts)


def _check_member_type(member: tarfile.TarInfo, path: str, top: str) -> None:
    if member.isreg() or member.isdir():
        return
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():
            target = posixpath.join(posixpath.dirname(path), target)
        resolved = posixpath.normpath(target)
        if path == top or member.linkname.startswith("/") or not resolved.startswith(top + "/"):
            raise _fail(
                f"invalid .crate member {member.name!r}: link to {member.linkname!r}"
                f" points outside {top + '/'!r}"
            )
        return
    raise _fail(f"invalid .crate member {member.name!r}: not a file, folder or link")


def _read_manifest(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isreg():
        raise _fail(f"invalid .crate member {member.name!r}: Cargo.toml is not a regular file")
    if member.size > MAX_MANIFEST_BYTES:
        raise _fail(f"invalid .crate file: Cargo.toml is larger than {MAX_MANIFEST_BYTES} bytes")
    stream = archive.extractfile(member)
    if stream is None:  # pragma: no cover - isreg() members always have data
        raise _fail(f"invalid .crate member {member.name!r}: unreadable")
    return stream.read()


# =========================================================================== the manifest


def _parse_manifest(data: bytes) -> dict[str, object]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _fail("invalid Cargo.toml in the .crate file: not UTF-8") from None
    except tomllib.TOMLDecodeError as problem:
        raise _fail(f"invalid Cargo.toml in the .crate file: not TOML ({problem})") from None


def _table(value: object, what: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(f"invalid Cargo.toml: {what} {value!r} is not a table")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"invalid Cargo.toml: {what} {value!r} is not true or false")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        # Workspace inheritance (`{ workspace = true }`) lands here: cargo package resolves it.
        raise _fail(f"invalid Cargo.toml: {what} {value!r} is not a string (not normalized?)")
    return value


def _entry_from_manifest(
    manifest: Mapping[str, object], cksum: str, index_url: str | None, pubtime: str | None
) -> IndexEntry:
    package = _table(manifest.get("package") or manifest.get("project"), "[package]")
    if not package:
        raise _fail("invalid Cargo.toml: no [package] table")
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
            raise _fail(f"invalid Cargo.toml: feature {key!r} is not a list of strings")
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
            where = f"[target.{platform!r}.{table_name}]"
            table = _table(_table(tables, f"[target.{platform!r}]").get(table_name), where)
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
    table = _table(spec, f"dependency {key!r}")
    for unsupported in _UNSUPPORTED_DEP_KEYS:
        if unsupported in table:
            raise _fail(f"invalid Cargo.toml: dependency {key!r} uses {unsupported!r}")
    if "version" not in table:
        raise _fail(f"invalid Cargo.toml: dependency {key!r} has no version requirement")
    default_features = table.get("default-features", table.get("default_features", True))
    features = table.get("features", [])
    if not isinstance(features, list):
        raise _fail(f"invalid Cargo.toml: features of dependency {key!r} are not a list")
    package = table.get("package")
    version = _string(table["version"], f"version of dependency {key!r}")
    try:
        req = normalize_version_req(version, what="req")
    except InvalidInput as problem:
        raise type(problem)(f"dependency {key!r}: {problem}") from None
    return Dependency(
        name=key,
        req=req,
        features=tuple(features),
        optional=_bool(table.get("optional", False), f"optional of dependency {key!r}"),
        default_features=_bool(default_features, f"default-features of dependency {key!r}"),
        target=target,
        kind=kind,
        registry=_dependency_registry(table.get("registry-index"), index_url),
        package=None if package is None else _string(package, f"package of dependency {key!r}"),
    )


def _dependency_registry(registry_index: object, index_url: str | None) -> str | None:
    """Map a manifest's ``registry-index`` to the index's ``registry`` field.

    In Cargo.toml no registry means crates.io; in the index null means "this registry".
    """
    url = CRATES_IO_INDEX if registry_index is None else _string(registry_index, "registry-index")
    if index_url is not None and url.rstrip("/") == index_url.rstrip("/"):
        return None
    return url


def _check_identity(
    entry: IndexEntry, prefix: str, expected_name: str | None, expected_version: str | None
) -> None:
    own = f"{entry.name}-{entry.vers}"
    if prefix != own:
        raise _fail(
            f"invalid .crate file: its folder {prefix!r} does not match Cargo.toml's"
            f" name and version {own!r}"
        )
    if expected_name is not None and expected_name != entry.name:
        raise _fail(
            f"invalid .crate file: Cargo.toml names the crate {entry.name!r}, not {expected_name!r}"
        )
    if expected_version is not None and expected_version != str(entry.vers):
        raise _fail(
            f"invalid .crate file: Cargo.toml has version {str(entry.vers)!r},"
            f" not {expected_version!r}"
        )
