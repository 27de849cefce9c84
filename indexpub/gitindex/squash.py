"""Rewriting the branch: a parentless commit that holds a tip's tree, snapshot branches, and
pushes that replace a ref only if it still holds what we read (``--force-with-lease``).

Everything else in gitindex only ever fast-forwards the branch. A squash does not: it replaces
the branch by one commit without parents, so it is the one push that needs force, and it
takes the force only as a compare-and-swap against the tip it read. It always goes through
``git push`` (never the direct publish of direct_publish, whose walk to the tip proves a
fast-forward and would refuse it): see docs/architecture.md, "Squashing the index".
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from indexpub.gitindex.objects import SHA_RE, format_commit, write_loose_object
from indexpub.gitindex.process import (
    GitError,
    GitRemote,
    PushRejected,
    failure_message,
    run_git,
    scrub_secrets,
)

__all__ = [
    "REWRITE_TIMEOUT",
    "SNAPSHOT_PREFIX",
    "CommitInfo",
    "RefUpdate",
    "parse_commit",
    "push_with_lease",
    "snapshot_name",
    "snapshot_refs",
    "write_parentless_commit",
]

SNAPSHOT_PREFIX = "snapshot-"
# Seconds for each git process of a squash or an archive (GitIndex._rewrite_timeout): the
# first push to an empty archive sends the whole history, and the bitmap walks the whole index.
# Below the jobs' own timeouts (30 and 60 minutes).
REWRITE_TIMEOUT = 1200.0
_SNAPSHOT_RE = re.compile(r"snapshot-\d{4}-\d{2}-\d{2}(?:-\d+)?")


@dataclass(frozen=True)
class CommitInfo:
    """What a commit object says: its tree, its parents and its message."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    # The committer's time, as a Unix time; None when the commit does not say it well-formed.
    committed_at: float | None = None


def parse_commit(sha: str, data: bytes) -> CommitInfo:
    """Read a commit object's headers and message (signatures and other headers skipped)."""
    head, _, message = data.partition(b"\n\n")
    tree = ""
    parents: list[str] = []
    committed_at = None
    for line in head.split(b"\n"):
        if line.startswith(b"tree "):
            tree = line[5:].decode()
        elif line.startswith(b"parent "):
            parents.append(line[7:].decode())
        elif line.startswith(b"committer "):
            committed_at = _signature_time(line)
    if not SHA_RE.fullmatch(tree):
        raise GitError(f"{sha} is not a well-formed commit (no tree)")
    return CommitInfo(sha, tree, tuple(parents), message.decode(errors="replace"), committed_at)


def _signature_time(line: bytes) -> float | None:
    """The Unix time of a commit's ``committer NAME <EMAIL> TIME ZONE`` line."""
    fields = line.rsplit(b" ", 2)
    if len(fields) != 3 or not fields[1].isdigit():
        return None
    return float(fields[1])


def write_parentless_commit(
    git_dir: Path, tree: str, message: str, *, author: bytes, committer: bytes
) -> str:
    """Write a commit without parents that holds ``tree`` into ``git_dir``; its sha.

    One loose object, written durably: the tree and everything under it are the tip's, which
    the repository has already.
    """
    body = format_commit(tree, [], author, committer, message)
    return write_loose_object(git_dir / "objects", "commit", body)


def snapshot_name(day: date, taken: Collection[str]) -> str:
    """``snapshot-YYYY-MM-DD``, or with ``-2``, ``-3``... when that branch exists already:
    a snapshot is never overwritten."""
    base = f"{SNAPSHOT_PREFIX}{day.isoformat()}"
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def snapshot_refs(git_dir: Path, remote: GitRemote, where: str, timeout: float) -> dict[str, str]:
    """The snapshot branches of the remote ``where`` (a remote's name in the clone at
    ``git_dir``, or a URL), by branch name, read with ``git ls-remote``."""
    result = run_git(
        [f"--git-dir={git_dir}", "ls-remote", "--heads", where, f"refs/heads/{SNAPSHOT_PREFIX}*"],
        timeout=timeout,
        what="git ls-remote",
        remote=remote,
    )
    found: dict[str, str] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/heads/")
        if SHA_RE.fullmatch(sha) and _SNAPSHOT_RE.fullmatch(name):
            found[name] = sha
    return found


@dataclass(frozen=True)
class RefUpdate:
    """Set the remote's ``ref`` to the commit ``new``, only if it is ``expect`` now (None: only
    if it does not exist)."""

    new: str
    ref: str
    expect: str | None


def push_with_lease(
    git_dir: Path,
    remote: GitRemote,
    where: str,
    updates: Sequence[RefUpdate],
    *,
    timeout: float,
) -> None:
    """Push ``updates`` to ``where`` (a remote's name or a URL) with one ``git push``: each
    with ``--force-with-lease=<ref>:<expect>``, and all or none of them (``--atomic``) when
    there are several.

    ``PushRejected`` when a ref did not hold what its update expects: when git push compared
    (the lease) or when the remote took its ref locks (its own compare-and-swap, for a ref
    that moved after the remote advertised it). Any other failure raises GitError.
    """
    if not updates:
        return
    for update in updates:
        if not SHA_RE.fullmatch(update.new) or (
            update.expect is not None and not SHA_RE.fullmatch(update.expect)
        ):
            raise ValueError(f"not a full commit sha in {update!r}")
        if not update.ref.startswith("refs/heads/") or any(c in update.ref for c in ": \n\t"):
            raise ValueError(f"not a branch ref: {update.ref!r}")
    args = [f"--git-dir={git_dir}", "push", "--porcelain"]
    if len(updates) > 1:
        args.append("--atomic")
    args += [f"--force-with-lease={u.ref}:{u.expect or ''}" for u in updates]
    args += ["--", where, *(f"{u.new}:{u.ref}" for u in updates)]
    result = run_git(args, timeout=timeout, what="git push", remote=remote, check=False)
    if result.returncode == 0:
        return
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    # Porcelain status lines: "<flag>\t<src>:<dst>\t<summary>"; "!" marks a refused ref.
    refused = [
        line.split("\t")[2]
        for line in out.splitlines()
        if line.startswith("!\t") and line.count("\t") >= 2
    ]
    stale = any(s.startswith("[rejected] (stale info)") for s in refused)
    # The remote's compare-and-swap: "cannot lock ref '...': is at X but expected Y".
    moved = "but expected" in err and any(s.startswith("[remote rejected]") for s in refused)
    if stale or moved:
        refs = ", ".join(u.ref for u in updates)
        said = [line.strip() for line in err.splitlines() if "but expected" in line]
        raise PushRejected(
            scrub_secrets(
                f"git push with lease rejected, {refs} no longer as read: "
                + " | ".join(refused + said[:1]),
                remote,
            )
        )
    message = failure_message("git push", result, remote)
    if refused:
        message += scrub_secrets(" | " + " | ".join(refused), remote)
    raise GitError(message)
