"""The git side of the index: a bare clone, commits built in the object database, non-force pushes.

The sync worker is the only writer, so this module keeps no locks; the remote's fast-forward check
is the compare-and-swap that catches anybody else (`PushRejected`). A commit never touches a work
tree or an index file: it takes the trees along one path from the parsed trees kept in memory
(a bounded cache that outlives batches) or else from the clone's long-lived `git cat-file
--batch` (see cat_file), builds the new blob, those trees and the commit in Python, and so costs
the same whether the index holds a thousand crate files or a quarter of a million. A batch of
commits is written as one pack (git_objects builds the .pack and .idx), not loose files, with
each edited tree stored as a delta against the version it replaced.

A remote that is a bare repository on the local filesystem is published to without git push when
that is equivalent (see GitIndex.push): the batch's packs are linked into it and `git update-ref`
with the old value is the compare-and-swap.

This module holds GitIndex (clone, fetch, tip, read files, build commits, push) and the making of
a clone or a new index. Beside it: git_process runs every git process (timeouts, credentials),
git_objects holds the object formats that commits are built from (trees, commits, packs), and
local_publish decides on and does the direct publish.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexpub.domain.names import is_index_path
from indexpub.gitindex.cat_file import CatFile
from indexpub.gitindex.direct_publish import (
    LOCAL_PUSH_ENV,
    DirectProbe,
    DirectTarget,
    local_push_mode,
    probe_push_url,
    publish_directly,
)
from indexpub.gitindex.objects import (
    BLOB_MODE,
    EMPTY_TREE,
    SHA_RE,
    TREE_MODE,
    GitObject,
    Tree,
    TreeCache,
    format_commit,
    object_sha,
    parse_identity,
)
from indexpub.gitindex.pack import (
    OfsDelta,
    PackRecord,
    apply_delta,
    delta_record,
    edit_delta,
    pack_record,
    record_data,
    write_pack,
)
from indexpub.gitindex.process import GitError, failure_message
from indexpub.gitindex.repo import (
    DEFAULT_IDENTITY,
    REMOTE,
    Clone,
    init_index,
    maintain,
    remote_head_by_url,
)

__all__ = [
    "GitIndex",
    "check_crate_path",
    "init_index",
    "remote_head_by_url",
]

log = logging.getLogger("indexpub.gitindex.index")


def check_crate_path(path: str) -> None:
    """Refuse anything but a crate file, so a bug upstream can never rewrite config.json."""
    if not is_index_path(path):
        raise ValueError(f"not a crate file path of the index layout: {path!r}")


def _check_read_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or "\n" in path
        or "\0" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(f"not a relative path inside the index: {path!r}")


def _check_sha(sha: str) -> None:
    if not SHA_RE.fullmatch(sha):
        raise ValueError(f"not a full lowercase commit sha: {sha!r}")


# How many pushes between two ``git gc --auto`` checks.
GC_EVERY_PUSHES = 100
# The parsed trees kept across batches, by their estimated memory (see TreeCache): a batch of
# 500 commits at 100,000 crates needs about 6 MB of them, and 32 MB keep the directories that
# the last few batches edited (the worker's whole RSS stays well under 200 MB).
TREE_CACHE_BYTES = 32 << 20
# The commits whose root tree is kept: each batch's (the tip of the next is among them).
COMMIT_CACHE_SIZE = 4096
# A tree stored as a delta against the tree it was edited from: at most this many deltas deep
# (git's default pack.depth), and only when it is big enough for a delta to be smaller.
MAX_DELTA_DEPTH = 50
DELTA_MIN_BYTES = 256
# A batch writes a pack early once its pending objects reach this size (root trees are stored
# as deltas, so a burst's 500 commits make about 2 MB at 100,000 crates).
FLUSH_BYTES = 16 << 20


class GitIndex:
    """A bare clone of the index remote, used by exactly one writer at a time."""

    def __init__(
        self,
        clone: Clone,
        *,
        author: str = DEFAULT_IDENTITY,
        committer: str | None = None,
        local_push: str = "auto",
    ) -> None:
        self._clone = clone
        self.path = path = clone.path
        self.remote_url = clone.remote.url  # without credentials, safe to log
        self._remote = clone.remote
        self.branch = clone.branch
        self.timeout = timeout = clone.timeout
        self.tracking_ref = clone.tracking_ref
        self._author = parse_identity(author)
        self._committer = parse_identity(committer or author)
        self._objects = path / "objects"
        self._reader = CatFile(path, timeout)
        weakref.finalize(self, self._reader.close)
        # Counters that let tests and metrics check an update's cost does not grow with the index.
        self.objects_read = 0
        self.objects_written = 0
        self._pushes_since_gc = 0
        # Commits (as their root tree's sha) and parsed trees by sha (objects never change):
        # those that file_shas fetched and those that commit_file wrote, kept across batches
        # (bounded: see TREE_CACHE_BYTES and COMMIT_CACHE_SIZE), so that a batch of commits
        # reads git at most once and a directory is parsed again only after it fell out.
        self._commit_trees: dict[str, str] = {}
        self._trees = TreeCache(TREE_CACHE_BYTES)
        self._top_level_read = False  # see _read_top_level
        # Objects built but not yet written, as pack records by sha: a batch writes them as one
        # pack (see batch()), or more than one when they outgrow FLUSH_BYTES.
        self._pending: dict[str, PackRecord] = {}
        self._pending_bytes = 0
        # How many deltas deep each pending tree stored as a delta is (see MAX_DELTA_DEPTH).
        self._delta_depth: dict[str, int] = {}
        self._batch_depth = 0
        # Whether a push may publish directly into a local bare remote (see push): decided by
        # open, asked again when the remote's config file changes or could not be read.
        self._local_push = local_push_mode(local_push)
        self._probe = DirectProbe(None, "the remote was not looked at yet", final=False)
        # "direct" or "git": how the last push (successful or not) went about it; None before
        # the first push and when a push failed before it chose.
        self.last_push_mode: str | None = None
        self._direct_pushes_since_gc = 0
        # The commits built since the last push attempt, each with its parent and the pack that
        # holds every object built for it: what a direct publish ships, and its proof that the
        # pushed commit descends from the tip it compares against.
        self._unpushed: dict[str, str] = {}
        self._commit_packs: dict[str, Path] = {}
        self._pending_commits: list[str] = []

    @classmethod
    def open(
        cls,
        remote_url: str,
        path: Path | str,
        *,
        branch: str | None = None,
        timeout: float = 60.0,
        author: str = DEFAULT_IDENTITY,
        committer: str | None = None,
        local_push: str | None = None,
    ) -> GitIndex:
        """Open the bare clone at `path`, cloning first if it is missing or an empty directory.

        Without `branch`, the remote's HEAD decides, because that is the branch cargo reads.
        ``local_push`` ("auto" or "git", default INDEXPUB_GIT_LOCAL_PUSH) says whether pushes
        to a local bare remote may publish directly (see push).
        """
        mode = local_push_mode(local_push)  # a bad setting fails before anything is made
        clone, created = Clone.open(remote_url, path, branch, timeout)
        index = cls(clone, author=author, committer=committer, local_push=mode)
        if created:
            index.fetch()
        index._probe = index._read_direct_target()
        log.debug(
            "pushes to %s: %s (%s)",
            index.remote_url,
            "direct" if index._probe.target else "git push",
            index._probe.reason,
        )
        return index

    def fetch(self) -> str:
        """Move the tracking ref to the remote tip, even backwards (a squash rewrites history)."""
        return self._clone.fetch()

    def tip(self) -> str | None:
        """The remote tip as of the last fetch or push; None before the first fetch (see
        Clone.tip)."""
        return self._clone.tip()

    def read_file(self, path: str, commit: str | None = None) -> bytes | None:
        """The bytes at the tip (or `commit`); None when absent, which the sync treats as new."""
        _check_read_path(path)
        if commit is None:
            commit = self.tip()
            if commit is None:
                return None
        _check_sha(commit)
        # The blob is found through the parsed trees and asked for by its sha, never as
        # "<commit>:<path>": git first tries that whole string as a revision, and one ending
        # in "-g" and four or more hex digits is `git describe` output naming the commit of
        # that abbreviated sha. A crate called "k-gfa55" would read as the one commit whose
        # sha starts with fa55 (a benchmark's check found exactly that).
        (sha,) = self._blob_shas([path], commit)
        if sha is None:
            return None
        (found,) = self._cat_file([sha])
        if found is None or found.kind != "blob":
            raise GitError(f"{path} in {commit} names {sha}, which is not a blob in {self.path}")
        return found.data

    def file_shas(self, paths: Sequence[str], commit: str) -> list[str | None]:
        """The blob sha of each file at ``commit``; None for an absent file.

        A sync only needs to know whether its rendered file differs from the tip's, and the
        sha in the file's directory entry says that (compare with ``object_sha("blob",
        rendered)``) without reading any file: at 100,000 crates the blobs were half of what
        ``git cat-file`` sent. The directory trees along the paths are read with one request
        (none when memory has them all) and kept, so that the commit_file calls of the batch
        that follows (on ``commit``, then on each other's commits) read nothing from git.
        """
        for path in paths:
            _check_read_path(path)
        _check_sha(commit)
        if not self._top_level_read:
            self._read_top_level(commit)
        return self._blob_shas(paths, commit)

    def _blob_shas(self, paths: Sequence[str], commit: str) -> list[str | None]:
        """file_shas without its checks and without reading the whole top level first."""
        split = [path.split("/") for path in paths]
        # The trees this call uses, held here too: filling the cache may push some out of it.
        seen: dict[str, Tree] = {}
        specs = self._missing_tree_specs(commit, [dirs for *dirs, _ in split], seen)
        if specs:
            seen.update(self._remember(self._cat_file(specs)))
        root = self._commit_trees.get(commit)
        if root is None:
            raise GitError(f"{commit} is not a commit in {self.path}")
        shas: list[str | None] = []
        for path, (*dirs, filename) in zip(paths, split, strict=True):
            sha, depth, tree = self._walk(root, dirs, seen)
            if tree is None:
                raise GitError(f"cannot read the tree {sha} on the path {path} in {commit}")
            if depth < len(dirs):
                # A directory of the path is missing (or a file is in its place, which git
                # reads the same way): so is the file.
                shas.append(None)
                continue
            entry = tree.entry(filename.encode())
            if entry is not None and entry.is_tree:
                raise GitError(f"{path} is a tree in {commit}, not a file")
            shas.append(None if entry is None else entry.sha.hex())
        return shas

    def _read_top_level(self, commit: str) -> None:
        """Read the root tree and every directory in it, once per process.

        Every update rewrites the root and one of its directories ("1", "2", "3" or two
        letters, about 1,450 in all), and in a big index those directories are what a batch
        spends its git reading and parsing on (about 70 entries each at 100,000 crates). With
        them all in memory from the start, a batch's cost no longer depends on which
        directories earlier batches happened to touch. Past what the tree cache holds the LRU
        simply drops them again.
        """
        self._top_level_read = True
        if commit not in self._commit_trees:
            self._remember(self._cat_file([commit, f"{commit}^{{tree}}"]))
        root = self._commit_trees.get(commit)
        tree = None if root is None else self._tree(root)
        if tree is None:
            return  # file_shas reports it
        missing = []
        for key in tree.keys:
            if key.endswith(b"/"):
                sub = tree.subtree(key[:-1])
                if sub is not None and sub.hex() not in self._trees:
                    missing.append(sub.hex())
        if missing:
            self._remember(self._cat_file(missing))

    def _missing_tree_specs(
        self, commit: str, paths: Sequence[Sequence[str]], seen: dict[str, Tree]
    ) -> list[str]:
        """``git cat-file`` specs for the trees along ``paths`` (lists of directory names) at
        ``commit`` that memory lacks (those it has are added to ``seen``).

        A missing tree is asked for from the deepest tree memory has above it (``<tree
        sha>:<rest of the path>``), not from the commit: git then does not read the root tree
        again for every path, and no tree memory has is sent again. Such a spec is safe from
        git's reading of "...-g<hex>" as `git describe` output (see read_file): a directory's
        last component is at most two characters.
        """
        root = self._commit_trees.get(commit)
        if root is None:
            below = {"/".join(dirs[:i]) for dirs in paths for i in range(1, len(dirs) + 1)}
            return [commit, f"{commit}^{{tree}}", *(f"{commit}:{d}" for d in sorted(below))]
        wanted: dict[str, None] = {}  # ordered, without repeats
        for dirs in paths:
            anchor, depth, tree = self._walk(root, dirs, seen)
            if tree is None:
                wanted[anchor] = None
                for i in range(depth + 1, len(dirs) + 1):
                    wanted[f"{anchor}:{'/'.join(dirs[depth:i])}"] = None
        return list(wanted)

    def _walk(
        self, root: str, dirs: Sequence[str], seen: dict[str, Tree]
    ) -> tuple[str, int, Tree | None]:
        """Follow ``dirs`` down from the tree ``root`` through the trees in ``seen`` or memory:
        the sha of the last tree reached, how many of ``dirs`` lead to it, and that tree (None
        when memory lacks it). A tree that is found is added to ``seen``. The walk stops, with
        the tree, where the next directory does not exist.
        """
        sha, depth = root, 0
        while True:
            tree = seen.get(sha) or self._tree(sha)
            if tree is None:
                return sha, depth, None
            seen[sha] = tree
            if depth == len(dirs):
                return sha, depth, tree
            sub = tree.subtree(dirs[depth].encode())
            if sub is None:
                return sha, depth, tree
            sha, depth = sub.hex(), depth + 1

    def _remember(self, objects: Sequence[GitObject | None]) -> dict[str, Tree]:
        """Keep the commits' root trees and the parsed trees among ``objects``; return those
        trees by sha."""
        trees: dict[str, Tree] = {}
        for obj in objects:
            if obj is None:
                continue
            if obj.kind == "commit" and obj.data.startswith(b"tree "):
                self._remember_commit(obj.sha, obj.data[5:45].decode())
            elif obj.kind == "tree":
                tree = self._trees.get(obj.sha)
                if tree is None:
                    tree = Tree.parse(obj.data)
                    self._trees.put(obj.sha, tree)
                trees[obj.sha] = tree
        return trees

    def _remember_commit(self, commit: str, root: str) -> None:
        self._commit_trees[commit] = root
        if len(self._commit_trees) > COMMIT_CACHE_SIZE:
            del self._commit_trees[next(iter(self._commit_trees))]  # the oldest

    def _tree(self, sha: str) -> Tree | None:
        """A parsed tree from memory: parsed already, or built by this batch and not written."""
        tree = self._trees.get(sha)
        if tree is None:
            data = self._pending_data(sha)
            if data is not None:
                tree = Tree.parse(data)
                self._trees.put(sha, tree)
        return tree

    def _cached_path(
        self, parent: str, dirs: list[str], fetched: dict[str, Tree] | None = None
    ) -> list[tuple[str, Tree] | None] | None:
        """The root tree of ``parent`` and the trees along ``dirs`` (None where the path creates
        a directory), each with its sha, from ``fetched`` or memory; None when anything is not
        there (then git is asked)."""
        fetched = fetched or {}
        root = self._commit_trees.get(parent)
        tree = None if root is None else fetched.get(root) or self._tree(root)
        if root is None or tree is None:
            return None
        found: list[tuple[str, Tree] | None] = [(root, tree)]
        for name in dirs:
            if tree is not None:
                sub = tree.subtree(name.encode())
                if sub is None:
                    if tree.has_file(name.encode()):
                        return None  # a file in the way: let git report it
                    tree = None  # a directory the path creates: absent, which is an answer
                else:
                    tree = fetched.get(sub.hex()) or self._tree(sub.hex())
                    if tree is None:
                        return None
                    found.append((sub.hex(), tree))
                    continue
            found.append(None)
        return found

    def _cat_file(self, specs: list[str]) -> list[GitObject | None]:
        """Read several objects at once, through the clone's long-lived git cat-file."""
        found = self._reader.read(specs)
        self.objects_read += sum(obj is not None for obj in found)
        return found

    def close(self) -> None:
        """End the git process this GitIndex keeps for reading (it is also ended when the
        GitIndex is collected or the interpreter exits)."""
        self._reader.close()

    def commit_file(self, parent: str, path: str, content: bytes | None, message: str) -> str:
        """Commit one crate file (None deletes it) on top of `parent` and return the new commit.

        Only the trees on the path are read and rewritten. When the result equals `parent`'s
        tree, no commit is made and `parent` is returned, so callers never push empty commits.
        """
        check_crate_path(path)
        _check_sha(parent)
        with self.batch():
            return self._build_commit(parent, path, content, message)

    def _build_commit(self, parent: str, path: str, content: bytes | None, message: str) -> str:
        *dirs, filename = path.split("/")
        levels = self._cached_path(parent, dirs)
        if levels is None:
            # Only the trees memory lacks; held in ``seen`` too, as filling a small cache may
            # push some of them out again.
            seen: dict[str, Tree] = {}
            specs = self._missing_tree_specs(parent, [dirs], seen)
            found = self._cat_file(specs)
            for spec, obj in zip(specs, found, strict=True):
                if obj is not None and obj.kind != "tree" and spec != parent:
                    raise GitError(f"{spec} is a {obj.kind} in {parent}, expected a directory")
            seen.update(self._remember(found))
            if parent not in self._commit_trees:
                raise GitError(f"parent {parent} is not a commit in {self.path}")
            levels = self._cached_path(parent, dirs, seen)
            if levels is None:
                raise GitError(f"{path} in {parent}: a file is in the way of its directories")
        root_tree = self._commit_trees[parent]
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
        # other read again). Kept, the superseded versions would fill the cache within two
        # bursts and push out the directories still in the tip (at 100,000 crates, ~90 of the
        # ~1,000 second-level trees re-read and re-parsed per batch of 500).
        for old in levels:
            if old is not None:
                self._trees.pop(old[0])
        for sha, kind, data, parsed, base in pending:
            self._store(sha, kind, data, parsed, base)
            if parsed is not None:
                self._trees.put(sha, parsed)
        root = new_sha.hex()
        body = format_commit(root, [parent], self._author, self._committer, message)
        commit_sha = object_sha("commit", body)
        self._store(commit_sha, "commit", body)
        self._remember_commit(commit_sha, root)
        self._unpushed[commit_sha] = parent
        self._pending_commits.append(commit_sha)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()  # bounds memory; the batch simply ends up in more than one pack
        return commit_sha

    def commit_files(self, parent: str, changes: Sequence[tuple[str, bytes | None, str]]) -> str:
        """One commit per change, so every crate's history reads as its own commit message.

        All the commits' objects are written together, as one pack.
        """
        with self.batch():
            for path, content, message in changes:
                parent = self.commit_file(parent, path, content, message)
        return parent

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Keep the objects that commit_file builds in memory and write them as one pack when
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
        pending, self._pending = self._pending, {}
        self._delta_depth.clear()
        commits, self._pending_commits = self._pending_commits, []
        self._pending_bytes = 0
        try:
            pack = write_pack(self._objects, pending)
        except BaseException:
            # The caches must not name objects that are not in the repository.
            for sha in pending:
                self._trees.pop(sha)
                self._commit_trees.pop(sha, None)
                self._unpushed.pop(sha, None)
            raise
        # A commit's objects are all built by one _build_commit, stored in one pending set
        # and so written in one pack; what they refer to besides is in its parent's trees.
        for sha in commits:
            self._commit_packs[sha] = pack
        self.objects_written += len(pending)

    def _store(
        self,
        sha: str,
        kind: str,
        data: bytes,
        parsed: Tree | None = None,
        base: str | None = None,
    ) -> None:
        """Add an object to the pending pack: whole, or, for a tree edited from ``base`` (an
        earlier object of the same pack), as a delta against it.

        Each commit of a batch has a new root tree, nearly all of it the previous commit's:
        stored whole, the roots (~30 kB each at 100,000 crates) made 3,000 commits write 91 MB
        of packs, written, checksummed and hashed, and a geometric repack of the remote kept
        82 MB of them (it reuses what it finds); as deltas they are ~60 bytes each, and the
        same commits wrote 9 MB (16 MB after the repack). A chain is cut after
        MAX_DELTA_DEPTH deltas, as git's pack.depth does, so reading stays cheap.
        """
        if sha in self._pending:
            return
        edit = None if parsed is None else parsed.edit
        depth = 1 + self._delta_depth.get(base, 0) if base is not None else 0
        record: PackRecord
        if (
            edit is not None
            and base is not None
            and base in self._pending
            and depth <= MAX_DELTA_DEPTH
            and len(data) >= DELTA_MIN_BYTES
        ):
            record = delta_record(base, edit_delta(edit))
            self._delta_depth[sha] = depth
            self._pending_bytes += len(record.header) + len(record.body)
        else:
            record = pack_record(kind, data)
            self._pending_bytes += len(record)
        self._pending[sha] = record

    def _pending_data(self, sha: str) -> bytes | None:
        """The data of a pending object, or None when it is not pending."""
        record = self._pending.get(sha)
        if record is None:
            return None
        if isinstance(record, OfsDelta):
            base = self._pending_data(record.base)
            if base is None:  # a delta's base is written in the same pack, so never
                raise GitError(f"the delta base of {sha} is not pending")
            return apply_delta(base, record.delta())
        return record_data(record)

    def push(self, commit: str) -> None:
        """Publish ``commit`` on the remote's branch without force; ``PushRejected`` when the
        branch is no longer at ``tip()``.

        To a remote on another host this is ``git push``, whose fast-forward check is our
        compare-and-swap. To a local bare repository it is, when that does what receive-pack
        would do (see ``_read_direct_target`` and ``_direct_plan``), a direct publish: the
        packs this GitIndex wrote for the new commits are linked into the remote's object
        store, then ``git update-ref <branch> <commit> <tip>`` moves the branch only if it is
        still at the tip. That skips receive-pack's connectivity check, which walks every
        tree of the remote (137 ms of a 173 ms push at 100,000 crates) to prove what holds by
        construction here: every object of the new commits is in those packs or reachable
        from the tip, and update-ref's compare-and-swap proves the tip is the remote's.
        ``last_push_mode`` says which way the last push went.
        """
        _check_sha(commit)
        self.flush()  # the objects must be in the clone before git push or the direct publish
        previous, self.last_push_mode = self.last_push_mode, None
        why: str | None = None
        try:
            plan = self._direct_plan(commit)
            if isinstance(plan, str):
                why = plan
            else:
                self.last_push_mode = "direct"
                why = publish_directly(
                    commit, *plan, branch=self.branch, timeout=self.timeout, remote=self._remote
                )
            if why is not None:
                self.last_push_mode = "git"
                self._clone.push(commit)
        finally:
            # Built on a tip that is now the remote's or stale: either way, done with them.
            self._unpushed.clear()
            self._commit_packs.clear()
            mode = self.last_push_mode
            if mode is not None:
                how = "direct publish" if why is None else f"git push, {why}"
                # A change of mode changes a push's cost several times over: worth a line.
                changed = previous is not None and mode != previous
                log.log(
                    logging.INFO if changed else logging.DEBUG,
                    "push of %s to %s: %s",
                    commit,
                    self.remote_url,
                    how,
                )
        self._clone.pushed(commit)
        self._pushes_since_gc += 1
        if self._pushes_since_gc >= GC_EVERY_PUSHES:
            self.collect_garbage()
        target = self._probe.target
        if self.last_push_mode == "direct" and target is not None:
            self._direct_pushes_since_gc += 1
            if self._direct_pushes_since_gc >= GC_EVERY_PUSHES:
                self._maintain_remote(target)

    def _read_direct_target(self) -> DirectProbe:
        """Whether pushes may publish directly: the remote that git push would use is a local
        bare repository whose effective config (system, global and its own) leaves receive-pack
        nothing to do but store the objects and move the branch (see probe_push_url). Hooks are
        looked at per push.
        """
        if self._local_push == "git":
            return DirectProbe(None, f"{LOCAL_PUSH_ENV}=git", final=True)
        # The URL git push would use: pushurl and pushInsteadOf apply.
        result = self._clone.git(
            "remote", "get-url", "--push", "--all", REMOTE, what="git remote get-url", check=False
        )
        if result.returncode != 0:
            return DirectProbe(
                None, failure_message("git remote get-url", result, self._remote), final=False
            )
        urls = result.stdout.decode(errors="replace").splitlines()
        if len(urls) != 1:
            return DirectProbe(None, "the remote has more than one push URL", final=True)
        return probe_push_url(urls[0], self._remote, self.timeout)

    def _direct_plan(self, commit: str) -> tuple[DirectTarget, str, list[Path]] | str:
        """The remote, the tip to compare-and-swap and the packs to ship for publishing
        ``commit`` directly; or why git push has to do it.

        Only commits this GitIndex built since the last push, on the tip, qualify: the walk
        from ``commit`` through their parents must end at the tip, which proves the branch
        moves forward and names the packs that hold every object the tip does not reach.
        """
        probe = self._probe
        if probe.outdated():
            probe = self._probe = self._read_direct_target()
        target = probe.target
        if target is None:
            return probe.reason
        hooks = target.receive_hooks()
        if hooks:
            return f"the remote has receive hooks ({', '.join(hooks)})"
        old = self.tip()
        if old is None:
            return "no remote tip is known yet"
        packs: dict[Path, None] = {}  # ordered, without repeats
        sha = commit
        while sha != old:  # parents never cycle: a commit's sha covers its parent's
            parent, pack = self._unpushed.get(sha), self._commit_packs.get(sha)
            if parent is None or pack is None:
                return f"{commit} is not built on the tip {old} since the last push"
            packs[pack] = None
            sha = parent
        return target, old, list(packs)

    def _maintain_remote(self, target: DirectTarget) -> None:
        """Do for the remote what receive-pack's ``gc --auto`` (receive.autogc) would have done:
        without it, every direct publish leaves one more small pack. The publish has landed by
        now, so a failure here is logged, not raised, as receive-pack ignores its gc's."""
        self._direct_pushes_since_gc = 0
        if not target.autogc:
            return
        try:
            maintain(target.git_dir, self.timeout, self._remote)
        except GitError as e:
            log.warning("maintenance of the remote %s failed: %s", self.remote_url, e)

    def collect_garbage(self) -> None:
        """Merge the small packs that batches write (one per batch) before they slow reads down.

        Only fetch runs git's automatic gc, and the sync fetches only when a push is rejected,
        so without this a busy index would pile up packs (see _maintain).
        """
        self._pushes_since_gc = 0
        self._reader.close()  # so that it holds none of the packs the repack deletes
        maintain(self.path, self.timeout, self._remote)
