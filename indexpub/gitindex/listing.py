"""Every file of a commit with its blob sha, from one ``git ls-tree -r``: how ``verify`` and
``rebuild`` look at a whole index without reading a single file.

A crate file is equal to what the database renders exactly when its blob sha is the sha of the
rendered bytes (``objects.object_sha("blob", data)``), so comparing a quarter of a million files
costs one listing (half a second at 200,000 files) and a hash per rendering.
"""

from __future__ import annotations

from pathlib import Path

from indexpub.gitindex.objects import SHA_RE
from indexpub.gitindex.process import GitError, run_git

__all__ = ["Listing", "list_files", "parent_directories"]

Listing = dict[bytes, bytes]
"""A commit's files: path (bytes, as git stores it) -> the blob's sha (40 hex digits, as
bytes). Directories are not in it; neither are submodules or symbolic links' targets."""


def list_files(git_dir: Path, commit: str, timeout: float) -> Listing:
    """Every blob of ``commit`` in the repository at ``git_dir``, by path."""
    if not SHA_RE.fullmatch(commit):
        raise ValueError(f"not a full lowercase commit sha: {commit!r}")
    # "-r" walks every tree; "-z" ends records with NUL and leaves paths unquoted. The
    # classic output, "<mode> SP <type> SP <sha> TAB <path>", is the same in every git version.
    result = run_git(
        [f"--git-dir={git_dir}", "ls-tree", "-r", "-z", commit],
        timeout=timeout,
        what="git ls-tree",
    )
    files: Listing = {}
    for record in result.stdout.split(b"\0"):
        meta, tab, path = record.partition(b"\t")
        if not tab:
            if record:
                raise GitError(f"unexpected git ls-tree output: {record[:200]!r}")
            continue
        if meta[-46:-40] == b" blob ":  # a submodule's entry is a commit, not a file
            files[path] = meta[-40:]
    return files


def parent_directories(listing: Listing) -> set[bytes]:
    """Every directory that holds a file of ``listing`` (``ab`` and ``ab/cd`` for
    ``ab/cd/abcd``): where a file cannot be written, because a directory is in the way."""
    found: set[bytes] = set()
    for path in listing:
        end = path.rfind(b"/")
        while end > 0:
            directory = path[:end]
            if directory in found:
                break
            found.add(directory)
            end = path.rfind(b"/", 0, end)
    return found
