"""The squash: replace the index branch by one commit that holds its tip's tree, keeping the old
history on a snapshot branch, as crates.io does every few weeks.

Two ways to keep the history:

- on the index remote (``squash`` alone): one atomic push moves the branch to the new commit
  and creates ``snapshot-YYYY-MM-DD`` at the old tip, both with a lease, so either both happen
  or neither;
- on an archive remote (``archive`` first, then ``squash`` with ``archived=``): the archive job
  pushes the tip to the archive's snapshot branch and only then enqueues the squash. An archive
  that fails is retried on its own and never squashes; the squash makes sure the archive holds
  the tip it replaces (pushing the commits that landed since the archive job, a fast-forward of
  the same snapshot branch) before it moves the index branch.

Either way the branch moves only by a compare-and-swap against the tip the job read: a
squash that finds the branch moved fails (``PushRejected``) and its retry reads the new tip;
nothing is lost. A retry of a squash that had pushed before its worker died finds its own
commit (by the request id in its message) at the root of the branch and does nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from indexpub.gitindex.index import GitIndex
from indexpub.gitindex.squash import snapshot_name
from indexpub.pipeline.faults import crash_point

log = logging.getLogger("indexpub.pipeline.squash")

# The first lines are crates.io's: tools that follow an index across squashes (crates-index-diff,
# for one) read the old tip and the snapshot branch from "Previous HEAD was <sha>, now on the
# `snapshot-YYYY-MM-DD` branch".
SUBJECT = "Collapse index into one commit"
MARKER = "Indexpub-Squash-Job"


@dataclass(frozen=True)
class Archived:
    """Where the archive job left the history: the archive remote and its snapshot branch."""

    url: str
    snapshot: str


@dataclass(frozen=True)
class SquashResult:
    """What a squash did: ``commit`` None when it had nothing to do (``reason`` says why)."""

    old_tip: str
    commit: str | None
    snapshot: str | None
    archive_url: str | None
    reason: str


def squash_message(old_tip: str, snapshot: str, archive_url: str | None, request: str) -> str:
    where = "" if archive_url is None else f" of the archive {archive_url}"
    return (
        f"{SUBJECT}\n\n"
        f"Previous HEAD was {old_tip}, now on the `{snapshot}` branch{where}.\n\n"
        f"{MARKER}: {request}\n"
    )


def squashed_by(message: str) -> str | None:
    """The request id that a squash commit's message names; None for any other commit."""
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key == MARKER and value.strip():
            return value.strip()
    return None


def squash(
    index: GitIndex,
    *,
    day: date,
    request: str,
    archived: Archived | None = None,
) -> SquashResult:
    """Squash the remote branch once for ``request`` (see the module's docstring).

    ``day`` names a new snapshot branch. A branch whose history starts from this request's
    squash commit (an earlier attempt pushed, then its worker died) is left alone. Raises
    ``PushRejected`` when the branch moved between the read and the push (the job's retry
    reads it again), GitError for anything else.
    """
    tip = index.fetch()  # the remote's real tip: ours may be stale after a foreign push
    info = index.commit_info(tip)
    url = None if archived is None else archived.url
    if not info.parents:
        return SquashResult(tip, None, None, url, "the branch is one commit already")
    for root in index.root_commits(tip):
        if squashed_by(index.commit_info(root).message) == request:
            return SquashResult(tip, None, None, url, f"an earlier attempt squashed it: {root}")
    if archived is None:
        snapshot = snapshot_name(day, index.snapshots())
        message = squash_message(tip, snapshot, None, request)
        crash_point("squash-before-push")
        commit = index.squash(tip, message, snapshot=snapshot)
    else:
        snapshot = archive(index, archived.url, tip, day, preferred=archived.snapshot)
        message = squash_message(tip, snapshot, archived.url, request)
        crash_point("squash-before-push")
        commit = index.squash(tip, message, snapshot=None)
    crash_point("squash-pushed")
    return SquashResult(tip, commit, snapshot, url, "squashed")


def archive(index: GitIndex, url: str, tip: str, day: date, *, preferred: str | None = None) -> str:
    """Make a snapshot branch of the archive remote at ``url`` hold ``tip``; its name.

    A branch at ``tip`` already is reused (a retry after the push). Else ``preferred``, when it
    holds an ancestor of ``tip``, is fast-forwarded to it (the commits that landed after the
    archive job). Else a new branch is created, named for ``day`` and never overwriting one.
    Every push is a compare-and-swap against what was read.
    """
    refs = index.snapshots(url)
    for name in ([preferred] if preferred else []) + sorted(refs):
        if refs.get(name) == tip:
            return name
    if preferred is not None and preferred in refs and index.is_ancestor(refs[preferred], tip):
        index.push_snapshot(url, tip, preferred, refs[preferred])
        return preferred
    name = snapshot_name(day, refs)
    index.push_snapshot(url, tip, name, None)
    return name


def archive_tip(index: GitIndex, url: str, day: date) -> tuple[str, str] | None:
    """The archive job: push the remote tip to a snapshot branch of ``url``; the tip and the
    branch, or None when the branch is one commit already (nothing to archive or squash)."""
    tip = index.fetch()
    if not index.commit_info(tip).parents:
        return None
    name = archive(index, url, tip, day)
    crash_point("archive-pushed")
    return tip, name
