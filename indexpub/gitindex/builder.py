"""Building commits in Python, one crate file each, and writing them as packs.

A commit never touches a work tree or an index file: it takes the trees along one path from the
reader (memory first, else git), builds the new blob, those trees and the commit, and keeps them
pending; a batch of commits is written as one pack, with each edited tree stored as a delta
against the version it replaced (see PendingPack). So a commit costs the same whether the index
holds a thousand crate files or a quarter of a million.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from indexpub.gitindex.objects import (
    BLOB_MODE,
    EMPTY_TREE,
    TREE_MODE,
    Tree,
    format_commit,
    object_sha,
)
from indexpub.gitindex.pack import PendingPack, write_pack
from indexpub.gitindex.process import GitError
from indexpub.gitindex.reader import TreeReader

__all__ = ["FLUSH_BYTES", "CommitBuilder"]

# A batch writes a pack early once its pending objects reach this size, which bounds its memory.
FLUSH_BYTES = 16 << 20


class CommitBuilder:
    """Builds commits in the repository at ``git_dir`` and writes them, by the author and
    committer given (identities as parse_identity returns them)."""

    def __init__(
        self,
        git_dir: Path,
        reader: TreeReader,
        pending: PendingPack,
        *,
        author: bytes,
        committer: bytes,
    ) -> None:
        self._objects = git_dir / "objects"
        self._reader = reader
        # Objects built but not yet written: a batch writes them as one pack (see batch()), or
        # more than one when they outgrow FLUSH_BYTES.
        self._pending = pending
        self._author = author
        self._committer = committer
        self._batch_depth = 0
        # How many objects were written: lets tests and metrics check that an update's cost
        # does not grow with the index.
        self.objects_written = 0
        # The commits built since the last push attempt, each with its parent and the packs that
        # hold every object built for it: what a direct publish ships (see unpushed_packs).
        self._unpushed: dict[str, str] = {}
        self._commit_packs: dict[str, list[Path]] = {}
        self._pending_commits: list[str] = []
        # Packs written with no commit in them (the blobs and trees of a commit_changes that
        # outgrew FLUSH_BYTES): they belong to the next commit written.
        self._packs_before_commit: list[Path] = []

    def commit(self, parent: str, path: str, content: bytes | None, message: str) -> str:
        """Commit one crate file (None deletes it) on top of ``parent`` and return the new
        commit, or ``parent`` when its tree would not change. Only the trees on the path are
        read and rewritten; the objects are pending until the next flush."""
        *dirs, filename = path.split("/")
        root_tree, levels = self._reader.path_trees(parent, path, dirs)
        name = filename.encode()
        last = levels[-1]
        if last is not None and last[1].subtree(name) is not None:
            raise GitError(f"{path} is a directory in {parent}, expected a file")

        # Hash bottom-up (the file's directory first, the root last) and write only when the
        # root changed, so a no-op update leaves nothing behind.
        # sha, kind, data, parsed, and the sha of the tree it was edited from
        pending: list[tuple[str, str, bytes, Tree | None, str | None]] = []
        new_sha: bytes | None = None
        if content is not None:
            sha = object_sha("blob", content)
            pending.append((sha, "blob", content, None, None))
            new_sha = bytes.fromhex(sha)
        child_name, child_mode = name, BLOB_MODE
        for level in range(len(levels) - 1, -1, -1):
            at_level = levels[level]
            tree = EMPTY_TREE if at_level is None else at_level[1]
            new_tree = tree.replaced(child_name, child_mode, new_sha)
            if not new_tree.keys and level > 0:
                new_sha = None  # an empty directory disappears from its parent
            else:
                data = new_tree.serialize()
                sha = object_sha("tree", data)
                base = None if at_level is None else at_level[0]
                pending.append((sha, "tree", data, new_tree, base))
                new_sha = bytes.fromhex(sha)
            if level > 0:
                child_name, child_mode = dirs[level - 1].encode(), TREE_MODE
        assert new_sha is not None
        if new_sha.hex() == root_tree:
            return parent
        # The old trees along the path are no longer in the new tip, so they are unlikely to
        # be needed again: drop their parsed form (a pending one can be parsed again, any
        # other read again). Kept, the superseded versions would fill the cache and push out
        # the directories still in the tip.
        for old in levels:
            if old is not None:
                self._reader.trees.pop(old[0])
        for sha, kind, data, parsed, base in pending:
            self._pending.add(sha, kind, data, None if parsed is None else parsed.edit, base)
            if parsed is not None:
                self._reader.trees.put(sha, parsed)
        root = new_sha.hex()
        body = format_commit(root, [parent], self._author, self._committer, message)
        commit_sha = object_sha("commit", body)
        self._pending.add(commit_sha, "commit", body)
        self._reader.remember_commit(commit_sha, root)
        self._unpushed[commit_sha] = parent
        self._pending_commits.append(commit_sha)
        if self._pending.bytes >= FLUSH_BYTES:
            self.flush()  # bounds memory; the batch simply ends up in more than one pack
        return commit_sha

    def add_blob(self, content: bytes) -> str:
        """Store a file's bytes for a later commit_changes; its blob sha. Pending like every
        object built here, and written once the pending objects reach FLUSH_BYTES, so that a
        commit of a whole index never holds more than that in memory."""
        sha = object_sha("blob", content)
        self._pending.add(sha, "blob", content)
        if self._pending.bytes >= FLUSH_BYTES:
            self.flush()
        return sha

    def commit_changes(self, parent: str, changes: Mapping[str, str | None], message: str) -> str:
        """One commit on top of ``parent`` that sets each path of ``changes`` to the blob sha
        given (None removes the file), and return it; ``parent`` when its tree would not change.

        The blobs must be in the repository or pending already (add_blob). Every directory
        along the paths is rewritten once, however many of its files change, deepest first; a
        directory left empty disappears. A file where a directory must be, or a directory
        where a file must be, raises GitError before anything is built.
        """
        if not changes:
            return parent
        edits: dict[tuple[str, ...], dict[bytes, bytes | None]] = {(): {}}
        for path, sha in changes.items():
            *dirs, filename = path.split("/")
            edits.setdefault(tuple(dirs), {})[filename.encode()] = (
                None if sha is None else bytes.fromhex(sha)
            )
        for directory in list(edits):  # and every directory above them
            for depth in range(len(directory)):
                edits.setdefault(directory[:depth], {})
        trees = self._reader.directory_trees(parent, list(edits))
        for directory, files in edits.items():
            found = trees[directory]
            for name, raw in files.items():
                if raw is not None and found is not None and found[1].subtree(name) is not None:
                    path = "/".join([*directory, name.decode()])
                    raise GitError(f"{path} is a directory in {parent}, expected a file")
        root = trees[()]
        assert root is not None
        # The new sha of each rewritten directory (None: gone), deepest first, so that every
        # directory is written after the directories in it.
        subdirs: dict[tuple[str, ...], dict[bytes, bytes | None]] = {}
        new_root = root[0]
        for directory in sorted(edits, key=len, reverse=True):
            found = trees[directory]
            chunks = dict(found[1].chunks) if found is not None else {}
            for name, raw in edits[directory].items():
                chunks.pop(name, None)
                if raw is not None:
                    chunks[name] = BLOB_MODE + b" " + name + b"\0" + raw
            for name, raw in subdirs.pop(directory, {}).items():
                chunks.pop(name + b"/", None)
                if raw is not None:
                    chunks[name + b"/"] = TREE_MODE + b" " + name + b"\0" + raw
            if not chunks and directory:
                new_sha: bytes | None = None
            else:
                tree = Tree(sorted(chunks), chunks)
                data = tree.serialize()
                hex_sha = object_sha("tree", data)
                new_sha = bytes.fromhex(hex_sha)
                if found is None or found[0] != hex_sha:
                    self._pending.add(hex_sha, "tree", data)
                    self._reader.trees.put(hex_sha, tree)
                    if self._pending.bytes >= FLUSH_BYTES:
                        self.flush()
            if directory:
                subdirs.setdefault(directory[:-1], {})[directory[-1].encode()] = new_sha
            else:
                assert new_sha is not None
                new_root = new_sha.hex()
        if new_root == root[0]:
            return parent
        body = format_commit(new_root, [parent], self._author, self._committer, message)
        commit_sha = object_sha("commit", body)
        self._pending.add(commit_sha, "commit", body)
        self._reader.remember_commit(commit_sha, new_root)
        self._unpushed[commit_sha] = parent
        self._pending_commits.append(commit_sha)
        if self._pending.bytes >= FLUSH_BYTES:
            self.flush()
        return commit_sha

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Keep the objects that commit builds in memory and write them as one pack when
        the outermost batch ends (or earlier, once they reach FLUSH_BYTES). A batch ended by an
        exception writes them too: the commits built so far are valid objects, and unreferenced
        ones are git gc's business.

        Inside a batch the new commits exist only in this process: nothing outside it (git,
        another GitIndex) can read them until the batch ends or ``flush`` runs. ``push`` flushes.
        """
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self.flush()

    def flush(self) -> None:
        """Write the pending objects as one durable pack (a no-op when there are none)."""
        if not self._pending:
            return
        pending = self._pending.take()
        commits, self._pending_commits = self._pending_commits, []
        try:
            pack = write_pack(self._objects, pending)
        except BaseException:
            # The caches must not name objects that are not in the repository.
            self._reader.forget(pending)
            for sha in pending:
                self._unpushed.pop(sha, None)
            raise
        # A commit's objects are all built by one commit(), stored in one pending set
        # and so written in one pack; what they refer to besides is in its parent's trees.
        # A commit_changes too big for one pack left the packs before it (_packs_before_commit).
        if commits:
            packs = [*self._packs_before_commit, pack]
            self._packs_before_commit = []
            for sha in commits:
                self._commit_packs[sha] = packs
        else:
            self._packs_before_commit.append(pack)
        self.objects_written += len(pending)

    def unpushed_packs(self, commit: str, tip: str) -> list[Path] | None:
        """The packs that hold every object of ``commit`` that ``tip`` does not reach, the
        newest first; None unless the walk from ``commit`` through the parents of the commits
        built here since the last push attempt reaches ``tip`` (see docs/architecture.md, 'The
        direct publish').
        """
        packs: dict[Path, None] = {}  # ordered, without repeats
        sha = commit
        while sha != tip:  # parents never cycle: a commit's sha covers its parent's
            parent, built = self._unpushed.get(sha), self._commit_packs.get(sha)
            if parent is None or built is None:
                return None
            for pack in reversed(built):
                packs[pack] = None
            sha = parent
        return list(packs)

    def clear_unpushed(self) -> None:
        """Forget the commits built so far: after a push attempt they are either the remote's
        or built on a stale tip."""
        self._unpushed.clear()
        self._commit_packs.clear()
        self._packs_before_commit.clear()
