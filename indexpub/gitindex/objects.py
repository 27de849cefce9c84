"""git's object formats, written and read in Python: trees, commits and loose objects.

GitIndex builds a commit without a git process per object, so it needs the formats themselves:
a tree parsed into a form that an edit changes with a bisect, the hashing of an object, a commit,
and a loose object for the few that init_index writes (a batch's objects go into a pack: see
pack). Only what that needs: sha1 objects.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import time
import zlib
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
    once known, and ``replaced`` splices it rather than joining every entry again. A tree
    never changes once built: ``replaced`` returns a new one, which remembers the splice as its
    ``edit``.

    ``replaced`` hands this tree's ``keys`` and ``chunks`` over to the new tree instead of
    copying them, whenever this tree keeps its serialization to parse them again from. An
    edit chain (every commit of a batch edits the root its predecessor made) then copies no
    dict and list of all the root's entries per commit. The superseded tree is rarely asked
    again; when it is, it parses its own bytes once more.
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


_IDENTITY_RE = re.compile(r"([^<>\n]+) <([^<>\n]*)>")


def parse_identity(identity: str) -> bytes:
    """An author or committer as a commit names it (without the time), checked."""
    if not _IDENTITY_RE.fullmatch(identity):
        raise ValueError(f"identity must look like 'Name <email>': {identity!r}")
    return identity.encode()


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
