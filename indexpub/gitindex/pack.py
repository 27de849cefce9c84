"""git's pack format, written and read in Python: a version-2 pack with its .idx.

A batch of commits is written as one pack (see write_pack), not as loose objects; PendingPack
holds the batch's objects until then. Only what that needs: packs under 2 GiB, and as deltas
only trees stored against the version they were edited from (see edit_delta).
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from indexpub.atomic_file import write_atomically
from indexpub.gitindex.objects import TreeEdit
from indexpub.gitindex.process import GitError

_PACK_TYPES = {"commit": 1, "tree": 2, "blob": 3}
_OFS_DELTA = 6


def _record_header(kind: int, size: int) -> bytes:
    """A pack record's type-and-size header."""
    header = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        header.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    header.append(byte)
    return bytes(header)


def pack_record(kind: str, data: bytes) -> bytes:
    """One undeltified object as a pack stores it: type-and-size header, zlib data.

    Only blobs (the crate files, which compress several times over) are deflated. A tree is
    mostly raw SHA-1s, which do not compress, and a commit is a few hundred bytes: both are
    stored, in zlib's format without deflating (see stored_zlib), which costs a copy and a
    checksum and not the ~256 kB deflate state that even zlib.compress at level 0 sets up.
    """
    packed = zlib.compress(data) if kind == "blob" else stored_zlib(data)
    return _record_header(_PACK_TYPES[kind], len(data)) + packed


# A stored deflate block holds at most this many bytes (its length field is 16 bits).
_STORED_BLOCK = 0xFFFF


def stored_zlib(data: bytes) -> bytes:
    """``data`` as a zlib stream of stored (uncompressed) deflate blocks (RFC 1950/1951),
    made without setting up a compressor: byte for byte what zlib.compress(data, 0) returns
    for data under 65,000 bytes (zlib cuts longer data into blocks of its own choosing)."""
    parts = [b"\x78\x01"]  # deflate, 32 kB window, no dictionary, fastest; a multiple of 31
    start = 0
    while True:
        block = data[start : start + _STORED_BLOCK]
        start += len(block)
        final = start >= len(data)
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
        if final:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)


class OfsDelta(NamedTuple):
    """An object a pack stores as a delta against ``base``, an object before it in the same
    pack. The record's middle, the distance back to the base, is known only once the pack is
    laid out: write_pack puts ``header``, that distance and ``body`` together."""

    base: str
    header: bytes  # type OFS_DELTA and the size of the delta
    body: bytes  # the zlib'd delta

    def delta(self) -> bytes:
        return zlib.decompress(self.body)


PackRecord = bytes | OfsDelta


def _varint(n: int) -> bytes:
    """A size in a delta's header: 7 bits a byte, least significant first."""
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _delta_copy(offset: int, size: int) -> bytes:
    """Delta instructions copying base[offset : offset + size]."""
    out = bytearray()
    while size > 0:
        n = min(size, 0xFFFFFF)
        op = 0x80
        args = bytearray()
        for i in range(4):
            byte = (offset >> (8 * i)) & 0xFF
            if byte:
                op |= 1 << i
                args.append(byte)
        for i in range(3):
            byte = (n >> (8 * i)) & 0xFF
            if byte:
                op |= 0x10 << i
                args.append(byte)
        out.append(op)
        out += args
        offset += n
        size -= n
    return bytes(out)


def edit_delta(edit: TreeEdit) -> bytes:
    """The git delta that makes a tree from its base by the splice ``edit`` describes: copy
    what comes before the edit, insert the new bytes, copy what comes after."""
    size = edit.base_size - edit.removed + len(edit.inserted)
    out = bytearray(_varint(edit.base_size) + _varint(size))
    out += _delta_copy(0, edit.offset)
    for start in range(0, len(edit.inserted), 0x7F):
        piece = edit.inserted[start : start + 0x7F]
        out.append(len(piece))
        out += piece
    end = edit.offset + edit.removed
    out += _delta_copy(end, edit.base_size - end)
    return bytes(out)


def delta_record(base: str, delta: bytes) -> OfsDelta:
    # Stored, like trees: a delta is mostly the new entry's raw sha, ~60 bytes in all.
    return OfsDelta(base, _record_header(_OFS_DELTA, len(delta)), stored_zlib(delta))


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """The object a git delta makes from ``base`` (what git does reading an OFS_DELTA)."""
    pos = 0
    sizes: list[int] = []
    for _ in range(2):
        value = shift = 0
        while True:
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        sizes.append(value)
    if sizes[0] != len(base):
        raise GitError("delta does not fit its base")
    out = bytearray()
    while pos < len(delta):
        op = delta[pos]
        pos += 1
        if op & 0x80:
            offset = size = 0
            for i in range(4):
                if op & (1 << i):
                    offset |= delta[pos] << (8 * i)
                    pos += 1
            for i in range(3):
                if op & (0x10 << i):
                    size |= delta[pos] << (8 * i)
                    pos += 1
            out += base[offset : offset + (size or 0x10000)]
        elif op:
            out += delta[pos : pos + op]
            pos += op
        else:
            raise GitError("delta opcode 0 is reserved")
    if len(out) != sizes[1]:
        raise GitError("delta result has the wrong size")
    return bytes(out)


def record_data(record: bytes) -> bytes:
    """The object data of a record made by pack_record."""
    start = 0
    while record[start] & 0x80:
        start += 1
    return zlib.decompress(record[start + 1 :])


def _ofs_distance(distance: int) -> bytes:
    """How an OFS_DELTA record says how far back its base starts (git's offset encoding)."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def _pack_index(entries: list[tuple[bytes, int, int]], checksum: bytes) -> bytes:
    """A version-2 .idx for (raw sha, crc32 of the record, offset) entries of a pack < 2 GiB."""
    entries = sorted(entries)
    counts = [0] * 256
    for raw, _, _ in entries:
        counts[raw[0]] += 1
    idx = b"".join(
        [
            b"\377tOc",
            struct.pack(">I", 2),
            struct.pack(">256I", *itertools.accumulate(counts)),
            *(raw for raw, _, _ in entries),
            *(struct.pack(">I", crc) for _, crc, _ in entries),
            *(struct.pack(">I", off) for _, _, off in entries),
            checksum,
        ]
    )
    return idx + hashlib.sha1(idx).digest()


def write_pack(objects_dir: Path, records: Mapping[str, PackRecord]) -> Path:
    """Write a version-2 pack of ``records`` (sha -> pack_record, or an OfsDelta whose base
    comes before it) and its .idx, durably: the .pack first, then the .idx that makes git see
    it; return the .pack's path. The pack is named by its trailing checksum, as git names packs.

    Temporary files carry git's own prefixes (tmp_pack_, tmp_idx_), which git gc removes after a
    crash. Each file is fsynced before its rename and the folder after it, so the .idx never
    survives a power loss without its .pack.
    """
    header = b"PACK" + struct.pack(">II", 2, len(records))
    digest = hashlib.sha1(header)
    entries: list[tuple[bytes, int, int]] = []
    offsets: dict[str, int] = {}
    laid_out: list[bytes] = []
    offset = len(header)
    for sha, item in records.items():
        if isinstance(item, OfsDelta):
            base = offsets.get(item.base)
            if base is None:
                raise GitError(f"the delta base of {sha} does not come before it in the pack")
            record = item.header + _ofs_distance(offset - base) + item.body
        else:
            record = item
        laid_out.append(record)
        digest.update(record)
        entries.append((bytes.fromhex(sha), zlib.crc32(record), offset))
        offsets[sha] = offset
        offset += len(record)
    if offset >= 1 << 31:
        raise GitError("a pack would need 64-bit offsets; commit fewer files at once")
    checksum = digest.digest()
    name = checksum.hex()
    folder = objects_dir / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[bytes]] = {
        "pack": [header, *laid_out, checksum],
        "idx": [_pack_index(entries, checksum)],
    }
    for suffix, chunks in parts.items():
        write_atomically(
            folder / f"pack-{name}.{suffix}",
            chunks,
            mode=0o444,
            durable=True,
            temp_prefix=f"tmp_{suffix}_",
        )
    return folder / f"pack-{name}.pack"


# A tree stored as a delta against the tree it was edited from: at most this many deltas deep
# (git's default pack.depth), and only when it is big enough for a delta to be smaller.
MAX_DELTA_DEPTH = 50
DELTA_MIN_BYTES = 256


class PendingPack:
    """Objects built but not written yet, as pack records by sha in the order they came: what
    write_pack writes as one pack once ``take`` hands them over."""

    def __init__(self) -> None:
        self._records: dict[str, PackRecord] = {}
        self.bytes = 0  # the records' size, to write them early once they grow big
        # How many deltas deep each pending tree stored as a delta is (see MAX_DELTA_DEPTH).
        self._delta_depth: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, sha: str) -> bool:
        return sha in self._records

    def add(
        self,
        sha: str,
        kind: str,
        data: bytes,
        edit: TreeEdit | None = None,
        base: str | None = None,
    ) -> None:
        """Add an object to the pending pack: whole, or, for a tree made from ``base`` (an
        earlier object of the same pack) by ``edit``, as a delta against it.

        Each commit of a batch has a new root tree, nearly all of it the previous commit's, so
        its delta (copy, insert, copy) is a small fraction of the whole tree, and a repack of
        the remote keeps deltas as it finds them. A chain is cut after MAX_DELTA_DEPTH deltas,
        as git's pack.depth does, so reading stays cheap.
        """
        if sha in self._records:
            return
        depth = 1 + self._delta_depth.get(base, 0) if base is not None else 0
        record: PackRecord
        if (
            edit is not None
            and base is not None
            and base in self._records
            and depth <= MAX_DELTA_DEPTH
            and len(data) >= DELTA_MIN_BYTES
        ):
            record = delta_record(base, edit_delta(edit))
            self._delta_depth[sha] = depth
            self.bytes += len(record.header) + len(record.body)
        else:
            record = pack_record(kind, data)
            self.bytes += len(record)
        self._records[sha] = record

    def data(self, sha: str) -> bytes | None:
        """The data of a pending object, or None when it is not pending."""
        record = self._records.get(sha)
        if record is None:
            return None
        if isinstance(record, OfsDelta):
            base = self.data(record.base)
            if base is None:  # a delta's base is written in the same pack, so never
                raise GitError(f"the delta base of {sha} is not pending")
            return apply_delta(base, record.delta())
        return record_data(record)

    def take(self) -> dict[str, PackRecord]:
        """Hand the pending records over for write_pack, and start afresh."""
        records, self._records = self._records, {}
        self._delta_depth.clear()
        self.bytes = 0
        return records
