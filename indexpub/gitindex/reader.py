"""Reading the index's trees and files: parsed trees kept in memory, the rest read through the
clone's long-lived ``git cat-file --batch`` (see cat_file).

A tree is looked for in memory first (the trees parsed already, then the objects a batch has
built but not written yet), and only what memory lacks is asked of git, all of it in one request.
Objects never change, so what is kept stays right; the caches are bounded (TREE_CACHE_BYTES,
COMMIT_CACHE_SIZE) and outlive batches.

A file's blob is found through the parsed trees and read by its sha, never as
``<commit>:<path>`` (see read_file).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from indexpub.gitindex.cat_file import CatFile
from indexpub.gitindex.objects import GitObject, Tree
from indexpub.gitindex.pack import PendingPack
from indexpub.gitindex.process import GitError

__all__ = ["COMMIT_CACHE_SIZE", "TREE_CACHE_BYTES", "TreeCache", "TreeReader"]

# The parsed trees kept across batches, by their estimated memory (see TreeCache): room for the
# directories that the last few batches of a big index edited.
TREE_CACHE_BYTES = 32 << 20
# The commits whose root tree is kept: each batch's (the tip of the next is among them).
COMMIT_CACHE_SIZE = 4096


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


class TreeReader:
    """The trees and files of the repository at ``git_dir``, read through memory first."""

    def __init__(self, git_dir: Path, timeout: float, pending: PendingPack) -> None:
        self.git_dir = git_dir
        self.cat_file = CatFile(git_dir, timeout)
        weakref.finalize(self, self.cat_file.close)
        # How many objects git sent: lets tests and metrics check that an update's cost does
        # not grow with the index.
        self.objects_read = 0
        # Commits (as their root tree's sha) and parsed trees by sha (objects never change):
        # those that file_shas fetched and those that the commits built here hold, kept across
        # batches (bounded: see TREE_CACHE_BYTES and COMMIT_CACHE_SIZE), so that a batch of
        # commits reads git at most once and a directory is parsed again only after it fell out.
        self._commit_trees: dict[str, str] = {}
        self.trees = TreeCache(TREE_CACHE_BYTES)
        self._top_level_read = False  # see _read_top_level
        # The objects built but not written yet: their trees are read from there.
        self._pending = pending

    def read_file(self, path: str, commit: str) -> bytes | None:
        """The bytes of the file at ``path`` in ``commit``; None when absent."""
        # The blob is found through the parsed trees and asked for by its sha, never as
        # "<commit>:<path>": git first tries that whole string as a revision, and one ending
        # in "-g" and four or more hex digits is `git describe` output naming the commit of
        # that abbreviated sha. A crate called "k-gfa55" would read as the one commit whose
        # sha starts with fa55.
        (sha,) = self._blob_shas([path], commit)
        if sha is None:
            return None
        (found,) = self._read_objects([sha])
        if found is None or found.kind != "blob":
            raise GitError(f"{path} in {commit} names {sha}, which is not a blob in {self.git_dir}")
        return found.data

    def file_shas(self, paths: Sequence[str], commit: str) -> list[str | None]:
        """The blob sha of each file at ``commit`` (None for an absent file), the whole top
        level read first if it was not yet (see _read_top_level)."""
        if not self._top_level_read:
            self._read_top_level(commit)
        return self._blob_shas(paths, commit)

    def path_trees(
        self, parent: str, path: str, dirs: list[str]
    ) -> tuple[str, list[tuple[str, Tree] | None]]:
        """The root tree of the commit ``parent`` and the trees along ``dirs``, the directories
        of ``path``, as _cached_path gives them, read from git when memory lacks any."""
        levels = self._cached_path(parent, dirs)
        if levels is None:
            # Only the trees memory lacks; held in ``seen`` too, as filling a small cache may
            # push some of them out again.
            seen: dict[str, Tree] = {}
            specs = self._missing_tree_specs(parent, [dirs], seen)
            found = self._read_objects(specs)
            for spec, obj in zip(specs, found, strict=True):
                if obj is not None and obj.kind != "tree" and spec != parent:
                    raise GitError(f"{spec} is a {obj.kind} in {parent}, expected a directory")
            seen.update(self._remember(found))
            if parent not in self._commit_trees:
                raise GitError(f"parent {parent} is not a commit in {self.git_dir}")
            levels = self._cached_path(parent, dirs, seen)
            if levels is None:
                raise GitError(f"{path} in {parent}: a file is in the way of its directories")
        return self._commit_trees[parent], levels

    def directory_trees(
        self, commit: str, dirs: Sequence[tuple[str, ...]]
    ) -> dict[tuple[str, ...], tuple[str, Tree] | None]:
        """The tree of each directory in ``dirs`` at ``commit`` (``()`` is the root), with its
        sha; None for a directory the commit does not have. Whatever memory lacks is read with
        one request. A file where one of the directories must be raises GitError."""
        seen: dict[str, Tree] = {}
        specs = self._missing_tree_specs(commit, dirs, seen)
        if specs:
            seen.update(self._remember(self._read_objects(specs)))
        root = self._commit_trees.get(commit)
        if root is None:
            raise GitError(f"{commit} is not a commit in {self.git_dir}")
        found: dict[tuple[str, ...], tuple[str, Tree] | None] = {}
        for directory in dirs:
            sha, depth, tree = self._walk(root, directory, seen)
            if tree is None:
                where = "/".join(directory)
                raise GitError(f"cannot read the tree {sha} on the path {where} in {commit}")
            if depth == len(directory):
                found[directory] = (sha, tree)
            elif tree.has_file(directory[depth].encode()):
                in_the_way = "/".join(directory[: depth + 1])
                raise GitError(f"{in_the_way} is a file in {commit}, where a directory must be")
            else:
                found[directory] = None
        return found

    def forget(self, shas: Iterable[str]) -> None:
        """Drop what memory holds of ``shas``: objects that did not make it into the
        repository, which the caches must not name."""
        for sha in shas:
            self.trees.pop(sha)
            self._commit_trees.pop(sha, None)

    def close(self) -> None:
        """End the git process kept for reading (it is also ended when this reader is
        collected or the interpreter exits)."""
        self.cat_file.close()

    def _blob_shas(self, paths: Sequence[str], commit: str) -> list[str | None]:
        """file_shas without reading the whole top level first."""
        split = [path.split("/") for path in paths]
        # The trees this call uses, held here too: filling the cache may push some out of it.
        seen: dict[str, Tree] = {}
        specs = self._missing_tree_specs(commit, [dirs for *dirs, _ in split], seen)
        if specs:
            seen.update(self._remember(self._read_objects(specs)))
        root = self._commit_trees.get(commit)
        if root is None:
            raise GitError(f"{commit} is not a commit in {self.git_dir}")
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
        letters), and in a big index those directories are what a batch spends its git reading
        and parsing on. With them all in memory from the start, a batch's cost does not depend
        on which directories earlier batches happened to touch. Past what the tree cache holds
        the LRU simply drops them again.
        """
        self._top_level_read = True
        if commit not in self._commit_trees:
            self._remember(self._read_objects([commit, f"{commit}^{{tree}}"]))
        root = self._commit_trees.get(commit)
        tree = None if root is None else self._tree(root)
        if tree is None:
            return  # file_shas reports it
        missing = []
        for key in tree.keys:
            if key.endswith(b"/"):
                sub = tree.subtree(key[:-1])
                if sub is not None and sub.hex() not in self.trees:
                    missing.append(sub.hex())
        if missing:
            self._remember(self._read_objects(missing))

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
                self.remember_commit(obj.sha, obj.data[5:45].decode())
            elif obj.kind == "tree":
                tree = self.trees.get(obj.sha)
                if tree is None:
                    tree = Tree.parse(obj.data)
                    self.trees.put(obj.sha, tree)
                trees[obj.sha] = tree
        return trees

    def remember_commit(self, commit: str, root: str) -> None:
        """Keep ``root`` as the root tree of ``commit`` (the oldest commit kept is dropped past
        COMMIT_CACHE_SIZE)."""
        self._commit_trees[commit] = root
        if len(self._commit_trees) > COMMIT_CACHE_SIZE:
            del self._commit_trees[next(iter(self._commit_trees))]  # the oldest

    def _tree(self, sha: str) -> Tree | None:
        """A parsed tree from memory: parsed already, or built by this batch and not written."""
        tree = self.trees.get(sha)
        if tree is None:
            data = self._pending.data(sha)
            if data is not None:
                tree = Tree.parse(data)
                self.trees.put(sha, tree)
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

    def _read_objects(self, specs: list[str]) -> list[GitObject | None]:
        """Read several objects at once, through the clone's long-lived git cat-file."""
        found = self.cat_file.read(specs)
        self.objects_read += sum(obj is not None for obj in found)
        return found
