"""A whole index at one commit, for ``indexpub import``: where its crate files are, and their
bytes as a stream.

The index is somebody else's, so everything in it is hostile. The tree is walked only along the
index layout (``1/``, ``2/``, ``3/<c>/``, ``<ab>/<cd>/``); anything else at the top level
(``config.json``, a README, dot files) is listed as ignored without being read, and anything
unexpected inside the layout (a symlink, a submodule, a file at the wrong depth or under the
wrong name, a directory where a file belongs) is a named problem. Objects are read through one
``git cat-file`` process per phase, as a stream: their sizes first (``--batch-check``), so that a
tree or file over its limit is reported and never read; then the contents, each object held only
while it is handed on. Memory is bounded by the limits, not by the index.

A local repository is read in place (nothing is copied: the objects are read by sha from the
tip commit resolved once, so a push that lands meanwhile changes nothing that is read); a network
remote is fetched first, one commit deep, into a temporary bare clone.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple, NoReturn

from indexpub.domain.limits import IMPORT_MAX_FILES
from indexpub.domain.names import is_index_path
from indexpub.errors import InvalidInput, shorten
from indexpub.gitindex.objects import SHA_RE
from indexpub.gitindex.process import GitError, GitTimeout, run_git, start_git
from indexpub.gitindex.repo import REMOTE, Clone

__all__ = [
    "MAX_FILES",
    "MAX_TREE_BYTES",
    "IndexSnapshot",
    "ListedFile",
    "Listing",
    "SnapshotTooLarge",
    "StreamedObject",
    "is_local_location",
    "list_crate_files",
    "open_snapshot",
    "stream_objects",
]

# The most crate files (and directories) an import reads (``--max-files``; see limits).
MAX_FILES = IMPORT_MAX_FILES
# The largest tree object read. A directory of the layout holds at most 1,444 entries (two
# characters of 38), a crate directory the crates whose names share four letters: hundreds.
MAX_TREE_BYTES = 16 << 20

_READ_SIZE = 1 << 20
_MODE_TREE = b"40000"
_MODE_SYMLINK = b"120000"
_MODE_SUBMODULE = b"160000"
# One tree entry; the matches must cover the tree exactly.
_ENTRY_RE = re.compile(rb"([0-7]{5,6}) ([^\0]*)\0(.{20})", re.DOTALL)
_LAYOUT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class SnapshotTooLarge(InvalidInput):
    """The index is larger than an import reads (``--max-files``)."""


@dataclass(frozen=True)
class IndexSnapshot:
    """The repository ``git_dir`` at ``commit``, the tip of ``branch`` (what HEAD names) in
    ``location`` (as given, without credentials) when it was opened."""

    location: str
    git_dir: Path
    branch: str
    commit: str
    commit_time: datetime
    timeout: float


class ListedFile(NamedTuple):
    path: str
    sha: str
    size: int


@dataclass
class Listing:
    """The crate files of a snapshot in tree order, and what the walk found wrong or ignored."""

    files: list[ListedFile] = field(default_factory=list)
    # (path, reason): symlinks, submodules, entries out of place, trees over the limit.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # Top-level entries outside the layout, not read (config.json among them).
    ignored: list[str] = field(default_factory=list)
    # Crate files stored executable (mode 100755): imported; the next update writes 100644.
    executable: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def is_local_location(location: str) -> bool:
    """Whether ``location`` names a repository on this machine (a path or a file:// URL)
    rather than a network remote (a URL with a scheme, or the scp-like ``host:path``)."""
    if location.startswith("file://"):
        return True
    if "://" in location:
        return False
    head, colon, _ = location.partition(":")
    return not colon or "/" in head or location.startswith((".", "/"))


@contextlib.contextmanager
def open_snapshot(location: str, work_dir: Path, timeout: float) -> Iterator[IndexSnapshot]:
    """The tip of the branch that HEAD names in ``location``.

    A local repository (bare or not) is read where it is. A network remote is fetched one
    commit deep into a temporary bare clone under ``work_dir``, removed on the way out; the
    credentials come from the URL or the environment, as for the index remote.
    """
    if is_local_location(location):
        path = Path(location.removeprefix("file://")).expanduser().absolute()
        yield _local_snapshot(location, path, timeout)
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="import-", dir=work_dir))
    try:
        clone, _ = Clone.open(location, tmp / "clone.git", None, timeout)
        refspec = f"+refs/heads/{clone.branch}:{clone.tracking_ref}"
        clone.git("fetch", "--quiet", "--no-tags", "--depth=1", REMOTE, refspec, what="git fetch")
        commit = clone.tip()
        if commit is None:
            raise GitError(f"git fetch left no commit at {clone.tracking_ref}")
        yield IndexSnapshot(
            clone.remote.url,
            clone.path,
            clone.branch,
            commit,
            _commit_time(clone.path, commit, timeout),
            timeout,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_snapshot(location: str, path: Path, timeout: float) -> IndexSnapshot:
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        git_dir = path
    elif (path / ".git").exists():
        git_dir = path / ".git"
    else:
        raise GitError(f"{shorten(str(path))} is not a git repository")
    head = _git(git_dir, timeout, "symbolic-ref", "-q", "HEAD", check=False).strip()
    commit = _git(git_dir, timeout, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    commit = commit.strip()
    if not head.startswith("refs/heads/") or not SHA_RE.fullmatch(commit):
        raise GitError(
            f"the HEAD of {shorten(str(path))} names no branch with commits, and cargo reads "
            "the branch HEAD names"
        )
    return IndexSnapshot(
        location,
        git_dir,
        head.removeprefix("refs/heads/"),
        commit,
        _commit_time(git_dir, commit, timeout),
        timeout,
    )


def _git(git_dir: Path, timeout: float, *args: str, check: bool = True) -> str:
    result = run_git(
        [f"--git-dir={git_dir}", *args], timeout=timeout, what=f"git {args[0]}", check=check
    )
    return result.stdout.decode(errors="replace") if result.returncode == 0 else ""


def _commit_time(git_dir: Path, commit: str, timeout: float) -> datetime:
    stamp = _git(git_dir, timeout, "log", "-1", "--format=%ct", commit).strip()
    return datetime.fromtimestamp(int(stamp), UTC)


# --------------------------------------------------------------------------- the walk


def list_crate_files(snapshot: IndexSnapshot, *, max_files: int = MAX_FILES) -> Listing:
    """Walk the snapshot's tree along the index layout: its crate files with their sizes.

    The walk holds one tree at a time and, for what it found, a path and a sha per crate file
    and directory; past ``max_files`` of them it stops (SnapshotTooLarge).
    """
    listing = Listing()
    root = next(_read_trees(snapshot, [(snapshot.commit + "^{tree}", "")], listing), None)
    if root is None:
        raise SnapshotTooLarge(
            f"cannot read the top level of {snapshot.commit}: {listing.problems[-1][1]}"
        )
    # (spec, path of the directory): the directories of the next level.
    level: list[tuple[str, str]] = []
    for mode, name, sha in root[1]:
        path = _show(name)
        if _is_layout_dir(name):
            if mode == _MODE_TREE:
                level.append((sha, path))
            else:
                listing.problems.append((path, _out_of_place(mode, "a directory")))
        elif mode in (_MODE_SYMLINK, _MODE_SUBMODULE):
            listing.problems.append((path, _out_of_place(mode, None)))
        else:
            listing.ignored.append(path + ("/" if mode == _MODE_TREE else ""))
    paths: list[str] = []
    shas: list[str] = []
    unusual_mode: set[int] = set()  # positions of files not stored as 100644
    count = len(level)
    while level:
        below: list[tuple[str, str]] = []
        for directory, entries in _read_trees(snapshot, level, listing):
            for mode, name, sha in entries:
                path = f"{directory}/{_show(name)}"
                wanted = _wanted_below(directory, name)
                if wanted == "directory" and mode == _MODE_TREE:
                    below.append((sha, path))
                elif wanted == "file" and mode not in (_MODE_TREE, _MODE_SYMLINK, _MODE_SUBMODULE):
                    if not is_index_path(path):
                        listing.problems.append(
                            (path, "a file at a path where the index layout puts no crate file")
                        )
                        continue
                    if mode != b"100644":
                        unusual_mode.add(len(paths))
                    paths.append(path)
                    shas.append(sha)
                else:
                    what = {"file": "a crate file", "directory": "a directory"}.get(wanted or "")
                    listing.problems.append((path, _out_of_place(mode, what)))
                    continue
                count += 1
                if count > max_files:
                    _too_many(max_files)
        level = below
    sizes = stream_objects(snapshot, shas, check_only=True)
    for position, (path, sha, obj) in enumerate(zip(paths, shas, sizes, strict=True)):
        if obj.kind != "blob":
            listing.problems.append((path, f"names {obj.kind} {sha}, not a file's contents"))
            continue
        listing.files.append(ListedFile(path, sha, obj.size))
        if position in unusual_mode:
            listing.executable.append(path)
    return listing


def _too_many(max_files: int) -> NoReturn:
    raise SnapshotTooLarge(
        f"the index holds more than {max_files} crate files and directories; an import "
        "reads at most that many (--max-files)"
    )


def _show(name: bytes) -> str:
    """A tree entry's name as a path component (shortened: a name can be any length)."""
    text = name.decode(errors="replace")
    return text if len(text) <= 80 and text.isprintable() else shorten(text)


def _is_layout_dir(name: bytes) -> bool:
    return name in (b"1", b"2", b"3") or (
        len(name) == 2 and all(chr(c) in _LAYOUT_CHARS for c in name)
    )


def _wanted_below(directory: str, name: bytes) -> str | None:
    """What the layout has at ``directory/name``: "file", "directory", or None (nothing)."""
    depth = directory.count("/")
    top = directory.split("/", 1)[0]
    if top in ("1", "2") or depth == 1:
        return "file"
    if top == "3":
        return "directory" if len(name) == 1 and chr(name[0]) in _LAYOUT_CHARS else None
    return "directory" if _is_layout_dir(name) and name not in (b"1", b"2", b"3") else None


def _out_of_place(mode: bytes, wanted: str | None) -> str:
    found = {
        _MODE_TREE: "a directory",
        _MODE_SYMLINK: "a symlink",
        _MODE_SUBMODULE: "a submodule",
    }.get(mode, "a file")
    return f"{found} where the index layout has {wanted or 'no entry'}"


def _read_trees(
    snapshot: IndexSnapshot, specs: Sequence[tuple[str, str]], listing: Listing
) -> Iterator[tuple[str, list[tuple[bytes, bytes, str]]]]:
    """The entries (mode, name, sha) of each tree ``specs`` names, with the tree's path, one
    tree at a time; a tree over MAX_TREE_BYTES or malformed is a problem, and left out."""
    objects = stream_objects(snapshot, [spec for spec, _ in specs], max_bytes=MAX_TREE_BYTES)
    for (_, path), obj in zip(specs, objects, strict=True):
        shown = path or "the top level"
        if obj.kind != "tree":
            listing.problems.append((shown, f"expected a directory, found {obj.kind}"))
        elif obj.data is None:
            listing.problems.append(
                (shown, f"a directory of {obj.size} bytes, more than the limit of {MAX_TREE_BYTES}")
            )
        else:
            entries = _tree_entries(obj.data)
            if entries is None:
                listing.problems.append((shown, "a malformed tree object"))
            else:
                yield path, entries


def _tree_entries(data: bytes) -> list[tuple[bytes, bytes, str]] | None:
    entries: list[tuple[bytes, bytes, str]] = []
    covered = 0
    for match in _ENTRY_RE.finditer(data):
        if match.start() != covered:
            return None
        covered = match.end()
        entries.append((match[1], match[2], match[3].hex()))
    return entries if covered == len(data) else None


# --------------------------------------------------------------------------- the stream


class StreamedObject(NamedTuple):
    """One answer of ``git cat-file``: ``kind`` is "missing" for an object that is not there;
    ``data`` is None when only the size was asked or the object is larger than asked for."""

    sha: str
    kind: str
    size: int
    data: bytes | None


def stream_objects(
    snapshot: IndexSnapshot,
    specs: Sequence[str],
    *,
    max_bytes: int = 0,
    check_only: bool = False,
) -> Iterator[StreamedObject]:
    """The objects ``specs`` name, in order, through one ``git cat-file`` process.

    An object larger than ``max_bytes`` comes without its data, which is skipped as it
    arrives, never held. Requests are written while answers are read (either pipe could
    fill while the other side waits); a read that waits longer than the snapshot's timeout
    kills git (GitTimeout). The process ends with the stream, also when it is left early.
    """
    if not specs:
        return iter(())
    request = "".join(f"{spec}\n" for spec in specs)
    if request.count("\n") != len(specs) or "\r" in request or "\0" in request:
        raise ValueError("not single-line object names")
    return _Stream(snapshot, request.encode(), len(specs), max_bytes, check_only).run()


def _finish(proc: subprocess.Popen[bytes]) -> None:
    """End git: it has answered everything, or the stream was left early (then it is killed
    with its process group rather than left writing into a pipe nobody reads)."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):
        proc.stdin.close()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


class _Stream:
    def __init__(
        self,
        snapshot: IndexSnapshot,
        request: bytes,
        count: int,
        max_bytes: int,
        check_only: bool,
    ) -> None:
        self.git_dir = snapshot.git_dir
        self.timeout = snapshot.timeout
        self.request = request
        self.count = count
        self.max_bytes = max_bytes
        self.check_only = check_only
        self.buf = bytearray()
        self.pos = 0
        self.sent = 0

    def run(self) -> Iterator[StreamedObject]:
        mode = "--batch-check" if self.check_only else "--batch"
        with tempfile.TemporaryFile() as stderr:
            proc = start_git(
                [f"--git-dir={self.git_dir}", "cat-file", mode], what="git cat-file", stderr=stderr
            )
            try:
                assert proc.stdin is not None and proc.stdout is not None
                os.set_blocking(proc.stdin.fileno(), False)
                os.set_blocking(proc.stdout.fileno(), False)
                with selectors.DefaultSelector() as selector:
                    selector.register(proc.stdout.fileno(), selectors.EVENT_READ)
                    selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
                    for _ in range(self.count):
                        yield self._next(proc, selector, stderr)
            finally:
                _finish(proc)

    def _next(
        self, proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, stderr: IO[bytes]
    ) -> StreamedObject:
        while True:
            eol = self.buf.find(b"\n", self.pos)
            if eol >= 0:
                break
            if len(self.buf) - self.pos > 4096:
                raise GitError("unexpected git cat-file output: an answer's header is too long")
            self._fill(proc, selector, stderr)
        header = bytes(self.buf[self.pos : eol]).decode(errors="replace")
        self.pos = eol + 1
        fields = header.split(" ")
        if len(fields) == 2 and fields[1] in ("missing", "ambiguous"):
            return StreamedObject(fields[0], "missing", 0, None)
        if len(fields) != 3 or not SHA_RE.fullmatch(fields[0]) or not fields[2].isdigit():
            raise GitError(f"unexpected git cat-file output: {shorten(header)}")
        sha, kind, size = fields[0], fields[1], int(fields[2])
        if self.check_only:
            return StreamedObject(sha, kind, size, None)
        if size > self.max_bytes:
            left = size + 1  # the contents and their newline, dropped as they come
            while True:
                take = min(left, len(self.buf) - self.pos)
                self.pos += take
                left -= take
                self._compact()
                if not left:
                    return StreamedObject(sha, kind, size, None)
                self._fill(proc, selector, stderr)
        while len(self.buf) - self.pos < size + 1:
            self._fill(proc, selector, stderr)
        data = bytes(self.buf[self.pos : self.pos + size])
        self.pos += size + 1
        self._compact()
        return StreamedObject(sha, kind, size, data)

    def _compact(self) -> None:
        if self.pos >= _READ_SIZE or self.pos == len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0

    def _fill(
        self, proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, stderr: IO[bytes]
    ) -> None:
        """Read what git has sent, writing the rest of the request meanwhile."""
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GitTimeout(f"git cat-file sent nothing for {self.timeout:g} s")
            for key, _ in selector.select(left):
                if key.fd == proc.stdout.fileno():
                    chunk = os.read(key.fd, _READ_SIZE)
                    if not chunk:
                        raise GitError(self._death(stderr))
                    self.buf += chunk
                    return
                try:
                    self.sent += os.write(key.fd, self.request[self.sent : self.sent + _READ_SIZE])
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise GitError(self._death(stderr)) from None
                if self.sent == len(self.request):
                    selector.unregister(key.fd)
                    proc.stdin.close()

    def _death(self, stderr: IO[bytes]) -> str:
        stderr.seek(0)
        said = stderr.read(4096).decode(errors="replace").strip().splitlines()
        detail = " | ".join(line for line in said[-3:] if line.strip())
        message = f"git cat-file in {self.git_dir} ended unexpectedly"
        return f"{message}: {detail}" if detail else message
