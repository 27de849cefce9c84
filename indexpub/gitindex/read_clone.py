"""A bare clone of the index remote that only reads: what ``indexpub verify`` looks at.

The sync worker's clone belongs to the one process holding the index queue, and must not be
touched while it works; a verify that read it would race its fetches and packs, and one that
took the queue's lock would stop publishing for as long as it ran. So a verify fetches into a
clone of its own (``config.verify_clone_path``), where only verifies write. It is made and
fetched as the worker's is (repo.Clone: credentials through askpass, every git process with a
timeout), and held under an exclusive ``flock`` while in use, so that an ``indexpub verify``
and the worker's hourly verify job on the same data directory take turns instead of racing
one fetch against another.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexpub.gitindex.cat_file import CatFile
from indexpub.gitindex.listing import Listing, list_files
from indexpub.gitindex.objects import SHA_RE
from indexpub.gitindex.process import GitError
from indexpub.gitindex.repo import Clone

__all__ = ["ReadClone"]


class ReadClone:
    """The remote's tip, its files' blob shas and blobs, from a clone of our own."""

    def __init__(self, clone: Clone) -> None:
        self._clone = clone
        self.path = clone.path
        self.remote_url = clone.remote.url  # without credentials, safe to show
        self.branch = clone.branch
        self.timeout = clone.timeout
        self._cat_file = CatFile(clone.path, clone.timeout)

    @classmethod
    @contextlib.contextmanager
    def opened(
        cls, remote_url: str, path: Path | str, *, timeout: float = 300.0
    ) -> Iterator[ReadClone]:
        """The clone at ``path`` (made on first use), held against other verifies until the
        block ends. The branch is the one the remote's HEAD names, which cargo reads."""
        path = Path(path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f"{path.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            clone, _ = Clone.open(remote_url, path, None, timeout)
            reader = cls(clone)
            try:
                yield reader
            finally:
                reader._cat_file.close()

    def fetch(self) -> str:
        """Fetch the remote's branch; its tip."""
        return self._clone.fetch()

    def files(self, commit: str) -> Listing:
        """Every file of ``commit`` with its blob sha (see listing.list_files)."""
        return list_files(self.path, commit, self.timeout)

    def read_blobs(self, shas: Sequence[str]) -> list[bytes | None]:
        """The blobs ``shas`` name, in order (None for one the clone lacks)."""
        for sha in shas:
            if not SHA_RE.fullmatch(sha):
                raise ValueError(f"not a full lowercase object sha: {sha!r}")
        found = self._cat_file.read(list(shas))
        blobs: list[bytes | None] = []
        for sha, obj in zip(shas, found, strict=True):
            if obj is not None and obj.kind != "blob":
                raise GitError(f"{sha} is a {obj.kind} in {self.path}, not a file")
            blobs.append(None if obj is None else obj.data)
        return blobs
