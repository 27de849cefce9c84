"""git's object formats, written and read in Python: trees, commits, loose objects and packs.

GitIndex builds a commit without a git process per object (see git_index), so it needs the
formats themselves: a tree parsed into a form that an edit changes with a bisect, the hashing of
an object, a loose object for the few that init_index writes, and a version-2 pack with its .idx
for a batch of commits. Only what that needs: sha1 objects, packs under 2 GiB, and as deltas
only trees stored against the version they were edited from (see edit_delta).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from indexpub.atomic_file import write_atomically
from indexpub.gitindex.process import GitError

# An object name as git prints it: 40 lowercase hex digits (sha1 repositories only).
SHA_RE = re.compile(r"[0-9a-f]{40}")

TREE_MODE = b"40000"
BLOB_MODE = b"100644"


class TreeEntry(NamedTuple):
    mode: bytes
    name: bytes
    sha: bytes  # 20 raw bytes

    @property
    def is_tree(self) -> bool:
        return self.mode == TREE_MODE


@dataclass(frozen=True)
class GitObject:
    sha: str
    kind: str
    data: bytes


def format_tree(entries: list[TreeEntry]) -> bytes:
    # git orders a directory as if its name ended in "/".
    ordered = sorted(entries, key=lambda e: e.name + b"/" if e.is_tree else e.name)
    return b"".join(e.mode + b" " + e.name + b"\0" + e.sha for e in ordered)


# One tree entry: "<mode> <name>\0<20-byte sha>"; a directory's name in group 1, else group 2.
_ENTRY_RE = re.compile(rb"(?:40000 ([^\0]*)\0.{20})|(?:[0-7]+ ([^\0]*)\0.{20})", re.DOTALL)


class TreeEdit(NamedTuple):
    """How a tree's serialization differs from that of the tree it was made from (its base,
    ``base_size`` bytes long): ``removed`` bytes at ``offset`` replaced by ``inserted``. A pack
    can store the tree as a delta saying just that (the base is not referenced: keeping it
    alive would chain every version of the root tree together)."""

    base_size: int
    offset: int
    removed: int
    inserted: bytes


class Tree:
    """A parsed directory kept in git's order, so that an edit costs a bisect and not a sort.

    ``keys`` are the entries' sort keys in order (a directory's name ends in "/", as git sorts
    it); ``chunks`` maps each key to the entry's serialized bytes. The serialization is kept
    once known, and ``replaced`` splices it rather than joining every entry again (the root of
    a big index has ~1,500). A tree never changes once built: ``replaced`` returns a new one,
    which remembers the splice as its ``edit``.

    ``replaced`` hands this tree's ``keys`` and ``chunks`` over to the new tree instead of
    copying them, whenever this tree keeps its serialization to parse them again from. An
    edit chain (every commit of a batch edits the root its predecessor made) then no longer
    copies a dict and a list of ~1,500 entries per commit, which at 100,000 crates was the
    largest cost that grows with the index (~25 µs of ~250 µs per update). The superseded
    tree is rarely asked again; when it is, it parses its own bytes once more.
    """

    __slots__ = ("_chunks", "_data", "_keys", "count", "edit")

    def __init__(
        self,
        keys: list[bytes],
        chunks: dict[bytes, bytes],
        data: bytes | None = None,
        edit: TreeEdit | None = None,
    ) -> None:
        self._keys: list[bytes] | None = keys
        self._chunks: dict[bytes, bytes] | None = chunks
        self._data = data
        self.edit = edit
        self.count = len(keys)  # fixed, so the cache's estimate never needs the entries

    @classmethod
    def parse(cls, data: bytes) -> Tree:
        keys, parts = _split_entries(data)
        if any(a >= b for a, b in itertools.pairwise(keys)):
            # Not git's order: keep ours canonical (and drop the data, which is not).
            chunks = dict(zip(keys, parts, strict=True))
            return cls(sorted(chunks), chunks)
        return cls(keys, dict(zip(keys, parts, strict=True)), data)

    @property
    def keys(self) -> list[bytes]:
        if self._keys is None:
            self._unpack()
            assert self._keys is not None
        return self._keys

    @property
    def chunks(self) -> dict[bytes, bytes]:
        if self._chunks is None:
            self._unpack()
            assert self._chunks is not None
        return self._chunks

    def _unpack(self) -> None:
        """Parse the entries again after ``replaced`` handed them over (only a tree that
        keeps its serialization, which is in git's order, ever does)."""
        assert self._data is not None
        keys, parts = _split_entries(self._data)
        self._keys, self._chunks = keys, dict(zip(keys, parts, strict=True))

    def subtree(self, name: bytes) -> bytes | None:
        """The raw sha of the directory ``name``, or None."""
        chunk = self.chunks.get(name + b"/")
        return None if chunk is None else chunk[-20:]

    def has_file(self, name: bytes) -> bool:
        return name in self.chunks

    def entry(self, name: bytes) -> TreeEntry | None:
        """The entry called ``name`` (a file's or a directory's), or None."""
        chunks = self.chunks
        chunk = chunks.get(name)
        if chunk is None:
            chunk = chunks.get(name + b"/")
            if chunk is None:
                return None
        return TreeEntry(chunk[: chunk.index(b" ")], name, chunk[-20:])

    def replaced(self, name: bytes, mode: bytes, sha: bytes | None) -> Tree:
        """A tree with ``name`` removed and, unless ``sha`` is None, added as (mode, sha)."""
        data = self._data
        if data is not None and self._keys is not None and self._chunks is not None:
            keys, chunks = self._keys, self._chunks  # handed over: see the class docstring
            self._keys = self._chunks = None
        else:
            keys, chunks = self.keys.copy(), self.chunks.copy()
        removed: list[tuple[int, bytes]] = []  # (index in keys, chunk)
        for old in (name, name + b"/"):
            chunk = chunks.pop(old, None)
            if chunk is not None:
                index = bisect.bisect_left(keys, old)
                del keys[index]
                removed.append((index, chunk))
        inserted = b""
        index = removed[0][0] if removed else len(keys)
        if sha is not None:
            key = name + b"/" if mode == TREE_MODE else name
            index = bisect.bisect_left(keys, key)
            keys.insert(index, key)
            inserted = chunks[key] = mode + b" " + name + b"\0" + sha
        tree = Tree(keys, chunks)
        # One entry replaced in place, added or removed: splice the old serialization.
        if data is not None and len(removed) <= 1 and (not removed or removed[0][0] == index):
            old_chunk = removed[0][1] if removed else b""
            # Where the edit goes: the old entry's bytes, or those of the entry after it.
            after = index + 1 if inserted else index
            anchor = old_chunk or (chunks[keys[after]] if after < len(keys) else b"")
            offset = data.find(anchor) if anchor else len(data)
            # An entry's bytes end in its sha; found once, they can only be that entry.
            if offset >= 0 and (not anchor or data.find(anchor, offset + 1) < 0):
                end = offset + len(old_chunk)
                tree._data = data[:offset] + inserted + data[end:]
                tree.edit = TreeEdit(len(data), offset, len(old_chunk), inserted)
        return tree

    def serialize(self) -> bytes:
        if self._data is None:
            self._data = b"".join([self.chunks[k] for k in self.keys])
        return self._data


def _split_entries(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The sort keys and serialized bytes of a tree's entries, in the order they come."""
    keys: list[bytes] = []
    parts: list[bytes] = []
    # A regular expression walks the entries at C speed; the matches must cover the data
    # exactly (each starts where the last ended), or it is not a well-formed tree.
    for match in _ENTRY_RE.finditer(data):
        directory = match[1]
        keys.append(match[2] if directory is None else directory + b"/")
        parts.append(match[0])
    if sum(map(len, parts)) != len(data):
        raise GitError("malformed tree object")
    return keys, parts


class TreeCache:
    """Parsed trees by sha, the least recently used dropped first once their estimated memory
    passes ``max_bytes``.

    Objects never change, so a parsed tree stays right for as long as it is kept: the trees a
    batch builds are the next batch's tip, and the directories of a big index are edited again
    and again, so keeping them saves asking git for them and parsing them anew. The estimate
    (``TREE_BYTES`` per tree plus ``TREE_ENTRY_BYTES`` per entry, measured with tracemalloc on
    CPython 3.11) is what bounds the worker's memory, whatever the index's size.
    """

    TREE_BYTES = 400
    TREE_ENTRY_BYTES = 160

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._trees: OrderedDict[str, Tree] = OrderedDict()

    def __len__(self) -> int:
        return len(self._trees)

    def __contains__(self, sha: str) -> bool:
        return sha in self._trees

    @classmethod
    def cost(cls, tree: Tree) -> int:
        return cls.TREE_BYTES + cls.TREE_ENTRY_BYTES * tree.count

    def get(self, sha: str) -> Tree | None:
        tree = self._trees.get(sha)
        if tree is not None:
            self._trees.move_to_end(sha)
        return tree

    def put(self, sha: str, tree: Tree) -> None:
        self.pop(sha)
        self._trees[sha] = tree
        self.bytes += self.cost(tree)
        while self.bytes > self.max_bytes and len(self._trees) > 1:
            _, dropped = self._trees.popitem(last=False)
            self.bytes -= self.cost(dropped)

    def pop(self, sha: str) -> None:
        tree = self._trees.pop(sha, None)
        if tree is not None:
            self.bytes -= self.cost(tree)


def object_sha(kind: str, data: bytes) -> str:
    digest = hashlib.sha1(f"{kind} {len(data)}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def _hash_object(kind: str, data: bytes) -> tuple[str, bytes]:
    raw = f"{kind} {len(data)}\0".encode() + data
    return hashlib.sha1(raw).hexdigest(), raw


def write_loose_object(objects_dir: Path, kind: str, data: bytes) -> str:
    """Write one loose object the way git does: temp file, then an atomic rename into place."""
    sha, raw = _hash_object(kind, data)
    target = objects_dir / sha[:2] / sha[2:]
    if target.exists():
        return sha
    # git's own temporary prefix: git gc removes leftovers of a crash.
    write_atomically(target, zlib.compress(raw), mode=0o444, temp_prefix="tmp_obj_")
    return sha


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
    stored, in zlib's format without deflating, which costs a copy and a checksum. Even
    zlib.compress at level 0 allocates a ~256 kB deflate state per call, which cost as much as
    the rest of writing the object (the root tree at 100,000 crates: 80 us against 12 us).
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


def format_commit(
    tree: str, parents: list[str], author: bytes, committer: bytes, msg: str
) -> bytes:
    if "\0" in msg:
        raise ValueError("commit message contains a NUL byte")
    if not msg.endswith("\n"):
        msg += "\n"
    stamp = f" {int(time.time())} +0000".encode()
    lines = [b"tree " + tree.encode()]
    lines += [b"parent " + p.encode() for p in parents]
    lines += [b"author " + author + stamp, b"committer " + committer + stamp, b"", msg.encode()]
    return b"\n".join(lines)


EMPTY_TREE = Tree([], {})
