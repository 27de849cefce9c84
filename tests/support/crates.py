"""Synthetic ``.crate`` files, and the body of cargo's publish request around them.

Three layers, each used by the tests and the benchmarks alike:

* :func:`gzip_tar` (and :func:`tar_archive`): a gzip tar holding exactly the given members, as
  ``tarfile`` writes them (:func:`file`, :func:`folder`, :func:`link`, :func:`special`). The
  archives that ``tarfile`` cannot write are built byte by byte in :mod:`support.hostile_crates`.
* :func:`valid_crate`: a small valid ``.crate`` for a name and version, a ``Cargo.toml`` (see
  :func:`manifest`) and a ``src/lib.rs`` in ``{name}-{version}/``.
* :func:`publish_body`: cargo's ``PUT /api/v1/crates/new`` body around publish metadata (see
  :func:`simple_meta`) and a ``.crate``.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from typing import Any

# The modification time cargo writes for every member (it keeps .crate files reproducible).
MTIME = 1_153_704_088

Member = tuple[tarfile.TarInfo, bytes | None]


def file(path: str, data: bytes | str, *, mode: int = 0o644) -> Member:
    raw = data.encode() if isinstance(data, str) else data
    info = tarfile.TarInfo(path)
    info.size = len(raw)
    info.mode = mode
    info.mtime = MTIME
    return info, raw


def folder(path: str) -> Member:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = MTIME
    return info, None


def link(path: str, target: str, *, hard: bool = False) -> Member:
    info = tarfile.TarInfo(path)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    info.mtime = MTIME
    return info, None


def special(path: str, kind: bytes) -> Member:
    """A member of another tar type (``tarfile.FIFOTYPE``, ``CHRTYPE``, ...), without data."""
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mtime = MTIME
    return info, None


def tar_archive(*members: Member, tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar holding exactly ``members``, in order (pax, as cargo writes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as archive:
        for info, data in members:
            archive.addfile(info, None if data is None else io.BytesIO(data))
    return raw.getvalue()


def gzipped(data: bytes) -> bytes:
    """``data`` in one gzip member with no timestamp, as cargo compresses a ``.crate``."""
    return gzip.compress(data, mtime=0)


def gzip_tar(*members: Member, tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A gzip tar like ``cargo package`` writes, with exactly the given members."""
    return gzipped(tar_archive(*members, tar_format=tar_format))


def manifest(name: str, version: str, extra: str = "") -> str:
    """The smallest ``Cargo.toml`` for ``name`` and ``version``, then ``extra``."""
    return f'[package]\nname = "{name}"\nversion = "{version}"\n{extra}'


def valid_crate(
    name: str, version: str, *, folder: str | None = None, manifest_extra: str = ""
) -> bytes:
    """A small valid ``.crate`` (not made by cargo): ``Cargo.toml`` and ``src/lib.rs`` in
    ``{name}-{version}/``, or in ``folder`` to make one that is not valid."""
    top = folder or f"{name}-{version}"
    return gzip_tar(
        file(f"{top}/Cargo.toml", manifest(name, version, manifest_extra)),
        file(f"{top}/src/lib.rs", "// synthetic\n"),
    )


def simple_meta(name: str, version: str, **fields: Any) -> dict[str, Any]:
    """The publish metadata cargo sends, with no dependencies or features, then ``fields``."""
    return {"name": name, "vers": version, "deps": [], "features": {}, **fields}


def publish_body(meta: dict[str, Any] | bytes, crate: bytes) -> bytes:
    """cargo's publish body: u32 LE JSON length, the JSON (``meta``, or bytes sent as they are),
    u32 LE ``.crate`` length, the ``.crate``."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack("<I", len(raw)) + raw + struct.pack("<I", len(crate)) + crate
