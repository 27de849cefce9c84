"""verify: the remote's tip against what the database says every crate file must hold.

Neither side is read file by file. The remote's side is one ``git ls-tree -r`` of the tip, in
a clone of its own (gitindex.read_clone: never the worker's clone, never the queue's lock),
which gives every file's blob sha; the database's side is one statement streaming every crate's
rendering (registry.render.crate_files). A crate file is equal exactly when the sha of its
rendering is the blob sha at its path, so a registry of 200,000 crates costs a listing, a
stream and a hash per crate; files are read only for the few that differ, to name their
versions.

A file can differ for a moment without anything being wrong: a publish is committed and its
sync job has not pushed yet, or it pushed after the tip was fetched. So whatever differs in
the first pass is looked at again: rendered again in one snapshot that also lists the crates
with a sync job on the way (those are *pending*, not drift), and compared with the tip fetched
*after* that snapshot, which holds every push of a job that finished before it. What still
differs with no job on the way is drift: a file missing from the remote, an extra one, or one
whose lines differ. Only crate files are compared: ``config.json`` and anything else outside
the index layout belong to whoever wrote them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha1
from pathlib import Path
from typing import Any

import psycopg

from indexpub.domain.names import index_path, is_index_path
from indexpub.gitindex.listing import Listing
from indexpub.gitindex.process import GitError, scrub_secrets
from indexpub.gitindex.read_clone import ReadClone
from indexpub.registry import render, runs
from indexpub.registry.queue import app, sync_crate

log = logging.getLogger("indexpub.pipeline.verify")

# How many drifted crates get their versions named (and go into the recorded sample).
DETAILS = 100
# How many versions of one crate a detail names before it says "and N more".
VERSIONS_SHOWN = 20
# Crates between two calls of the progress callback.
PROGRESS_EVERY = 1000
# Crates rendered per statement when the first pass's differences are looked at again.
RECHECK_CHUNK = 5000
# Seconds a git process of verify's own clone may run: a first clone fetches the whole index, so
# this is a floor that a shorter INDEXPUB_GIT_TIMEOUT does not lower.
VERIFY_GIT_TIMEOUT = 300.0

Progress = Callable[[int], None]
"""Called with the number of crates compared so far, every PROGRESS_EVERY crates and at the
end of the pass."""


@dataclass
class VersionDiff:
    """How a crate file's versions differ between the database and the copy compared with
    it: the remote (verify) or the sparse directory (verify --sparse), named by ``other``."""

    missing: list[str] = field(default_factory=list)  # in the database, not in the copy
    extra: list[str] = field(default_factory=list)  # in the copy, not in the database
    changed: list[tuple[str, str]] = field(default_factory=list)  # (version, how)
    notes: list[str] = field(default_factory=list)
    other: str = "the remote"

    def as_json(self) -> dict[str, Any]:
        return {
            "missing": self.missing,
            "extra": self.extra,
            "changed": [{"version": v, "how": how} for v, how in self.changed],
            "notes": self.notes,
        }

    def describe(self) -> str:
        parts = [f"{v}: {how}" for v, how in self.changed]
        parts += [f"{v}: missing from {self.other}" for v in _shown(self.missing)]
        parts += [f"{v}: not in the database" for v in _shown(self.extra)]
        parts += _more(self.missing, f"missing from {self.other}")
        parts += _more(self.extra, "not in the database")
        return "; ".join(parts + self.notes)


@dataclass
class Drift:
    """A crate whose file (at the tip, or in the sparse directory: ``where``) is not what the
    database renders."""

    name: str  # the file's name: the crate's lowercased name
    path: str
    kind: str  # "missing" (no file there), "extra" (no crate in the database), "differs"
    versions: VersionDiff | None = None  # named for the first DETAILS drifted crates
    where: str = "the remote"

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "kind": self.kind, "path": self.path}
        if self.versions is not None:
            found["versions"] = self.versions.as_json()
        return found

    def describe(self) -> str:
        what = {
            "missing": f"{self.where} has no file {self.path}",
            "extra": f"{self.where} has {self.path}, the database has no such crate",
            "differs": f"{self.path} differs",
        }[self.kind]
        if self.versions is not None:
            detail = self.versions.describe()
            if detail:
                what += f": {detail}"
        return what


@dataclass
class Comparison:
    """What a comparison of a copy of the index (the remote, the sparse directory) with the
    database found, whichever copy it was."""

    started_at: datetime
    duration: float
    crates: int  # crate files the database renders
    files: int  # crate files in the copy
    other_files: int  # entries of the copy outside the index layout (config.json): not compared
    drifted: list[Drift]
    pending: list[str]  # differed, but the job that rewrites them is on its way

    @property
    def clean(self) -> bool:
        return not self.drifted


@dataclass
class VerifyResult(Comparison):
    remote: str  # without credentials
    branch: str
    tip: str

    def record(self, ran_by: str) -> runs.VerifyRun:
        return recorded_run(self, ran_by, self.remote, branch=self.branch, tip=self.tip)

    def as_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "branch": self.branch,
            "tip": self.tip,
            **comparison_json(self),
        }


def comparison_json(found: Comparison) -> dict[str, Any]:
    """The JSON keys every comparison's report shares, so that one script reads both."""
    return {
        "started_at": found.started_at.isoformat(),
        "duration_s": round(found.duration, 3),
        "crates": found.crates,
        "files": found.files,
        "other_files": found.other_files,
        "drifted_count": len(found.drifted),
        "drifted": [d.as_json() for d in found.drifted],
        "pending": found.pending,
    }


def recorded_run(
    found: Comparison,
    ran_by: str,
    where: str,
    *,
    target: str = runs.REMOTE,
    branch: str | None = None,
    tip: str | None = None,
) -> runs.VerifyRun:
    """What a comparison leaves in verify_runs for `indexpub check`, whichever copy it was."""
    return runs.VerifyRun(
        started_at=found.started_at,
        ran_by=ran_by,
        remote=where,
        branch=branch,
        tip=tip,
        crates=found.crates,
        files=found.files,
        drifted_count=len(found.drifted),
        pending_count=len(found.pending),
        sample=tuple(d.as_json() for d in found.drifted[:DETAILS]),
        target=target,
    )


@dataclass
class VerifyOutcome:
    """A verify's result, or why it could not check; and the id of its recorded run."""

    result: VerifyResult | None
    error: str | None
    run_id: int


def verify_and_record(
    conn: psycopg.Connection[Any],
    remote_url: str,
    clone_path: Path,
    *,
    ran_by: str,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    timeout: float = VERIFY_GIT_TIMEOUT,
) -> VerifyOutcome:
    """Verify the remote against the database and record the result, committed; a remote
    that cannot be read is recorded as a verify that could not check. A database that cannot
    be used raises (there is nowhere to record it). ``progress`` and ``total``: see verify."""
    started = datetime.now(UTC)
    shown_remote = scrub_secrets(remote_url)
    try:
        with ReadClone.opened(remote_url, clone_path, timeout=timeout) as reader:
            result = verify(conn, reader, progress=progress, total=total, started=started)
    except GitError as exc:
        error = str(exc)
        conn.rollback()
        run_id = runs.record_verify(
            conn, runs.VerifyRun(started, ran_by, shown_remote, error=error)
        )
        conn.commit()
        return VerifyOutcome(None, error, run_id)
    run_id = runs.record_verify(conn, result.record(ran_by))
    conn.commit()
    return VerifyOutcome(result, None, run_id)


def verify(
    conn: psycopg.Connection[Any],
    reader: ReadClone,
    *,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    started: datetime | None = None,
    details: int = DETAILS,
) -> VerifyResult:
    """Compare the remote's tip with the database (see the module's docstring). ``total`` is
    told how many crates the registry has as the comparison starts (after the fetch)."""
    started = started or datetime.now(UTC)
    clock = time.monotonic()
    tip = reader.fetch()
    listing = reader.files(tip)
    if total is not None:
        total(render.count_crates(conn))
    # The first pass: every crate's rendering against the listing. What differs is kept by
    # name with its path and the blob sha the tip has there (None: no file).
    differ: dict[str, tuple[str, bytes | None]] = {}
    crates = matched = 0
    for crate in render.crate_files(conn):
        data = crate.data
        want = sha1(b"blob %d\0" % len(data) + data).hexdigest().encode()
        path = index_path(crate.name)
        have = listing.pop(path.encode(), None)
        if have is not None:
            matched += 1
        if have != want:
            differ[crate.name] = (path, have)
        crates += 1
        if progress is not None and crates % PROGRESS_EVERY == 0:
            progress(crates)
    conn.rollback()  # no snapshot held while git runs
    if progress is not None:
        progress(crates)
    other = 0
    for left, sha in listing.items():
        text = left.decode(errors="replace")
        if is_index_path(text):
            differ[text.rpartition("/")[2]] = (text, sha)
        else:
            other += 1
    files = matched + len(listing) - other
    log.info(
        "verify: %d crates, %d crate files at %s; %d differ at first look",
        crates,
        files,
        tip,
        len(differ),
    )
    drifted: list[Drift] = []
    pending: list[str] = []
    if differ:
        tip, drifted, pending = _look_again(conn, reader, tip, differ, details)
    return VerifyResult(
        started_at=started,
        duration=time.monotonic() - clock,
        crates=crates,
        files=files,
        other_files=other,
        drifted=drifted,
        pending=pending,
        remote=reader.remote_url,
        branch=reader.branch,
        tip=tip,
    )


def _look_again(
    conn: psycopg.Connection[Any],
    reader: ReadClone,
    tip: str,
    differ: dict[str, tuple[str, bytes | None]],
    details: int,
) -> tuple[str, list[Drift], list[str]]:
    """The crates that differed, rendered again in one snapshot that also names the crates
    with a sync job on the way, against the tip fetched after that snapshot: the new tip, the
    drifted crates and the pending ones, by name."""
    names = sorted(differ)
    wants, on_the_way = render_again(conn, names, sync_crate.name)
    new_tip = reader.fetch()
    haves: dict[str, bytes | None]
    if new_tip == tip:
        haves = {name: have for name, (_, have) in differ.items()}
    else:
        listing: Listing = reader.files(new_tip)
        haves = {name: listing.get(path.encode()) for name, (path, _) in differ.items()}
    drifted: list[Drift] = []
    pending: list[str] = []
    for name in names:
        want = wants.get(name)
        want_sha = None if want is None else sha1(b"blob %d\0" % len(want) + want).hexdigest()
        have = haves.get(name)
        have_sha = None if have is None else have.decode()
        if want_sha == have_sha:
            continue  # it converged meanwhile
        if name in on_the_way:
            pending.append(name)
            continue
        kind = "missing" if have_sha is None else "extra" if want is None else "differs"
        drifted.append(Drift(name, differ[name][0], kind))
    _name_versions(reader, drifted[:details], wants, haves)
    if drifted or pending:
        log.info("verify: %d crate(s) drifted, %d pending", len(drifted), len(pending))
    return new_tip, drifted, pending


def render_again(
    conn: psycopg.Connection[Any], names: list[str], job_type: str
) -> tuple[dict[str, bytes | None], set[str]]:
    """The files of ``names`` rendered in one snapshot, and the (lowercased) crates that have
    a ``job_type`` job on the way in that same snapshot: whatever the copy holds once read
    after it is what those jobs wrote, or will write."""
    wants: dict[str, bytes | None] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for start in range(0, len(names), RECHECK_CHUNK):
            wants.update(render.render_crate_files(conn, names[start : start + RECHECK_CHUNK]))
        on_the_way = {
            str(payload.get("name", "")).lower()
            for payload in app.store.live_payloads(conn, job_type)
            if isinstance(payload, dict)
        }
    return wants, on_the_way


def _name_versions(
    reader: ReadClone,
    drifted: list[Drift],
    wants: dict[str, bytes | None],
    haves: dict[str, bytes | None],
) -> None:
    """Read the remote's file of each drifted crate (one request) and name the versions that
    differ from the database's."""
    shas = [haves[d.name] for d in drifted]
    wanted = [sha.decode() for sha in shas if sha is not None]
    blobs = dict(zip(wanted, reader.read_blobs(wanted), strict=True)) if wanted else {}
    for drift, sha in zip(drifted, shas, strict=True):
        remote = None if sha is None else blobs.get(sha.decode())
        drift.versions = version_diff(wants.get(drift.name), remote)


def version_diff(
    database: bytes | None, remote: bytes | None, where: str = "the remote"
) -> VersionDiff:
    """The versions of a crate file that differ: missing from the copy (``remote``, which
    ``where`` names), not in the database, or in both with another line (the yanked flag said
    apart from the rest)."""
    diff = VersionDiff(other=where)
    ours, our_notes = _versions(database)
    theirs, their_notes = _versions(remote)
    diff.notes += [f"{note} in {where}" for note in their_notes]
    diff.notes += [f"{note} in the database" for note in our_notes]
    diff.missing = [v for v in ours if v not in theirs]
    diff.extra = [v for v in theirs if v not in ours]
    for version, line in ours.items():
        other = theirs.get(version)
        if other is None or other == line:
            continue
        ours_yanked, theirs_yanked = _yanked(line), _yanked(other)
        if ours_yanked != theirs_yanked and _unflagged(line) == _unflagged(other):
            how = (
                f"yanked in the database, not in {where}"
                if ours_yanked
                else f"yanked in {where}, not in the database"
            )
        else:
            how = "its line differs"
        diff.changed.append((version, how))
    if not (diff.missing or diff.extra or diff.changed or diff.notes) and database and remote:
        diff.notes.append("the same lines in another order, or other bytes between them")
    return diff


def _versions(data: bytes | None) -> tuple[dict[str, str], list[str]]:
    """A crate file's lines by version, and what is odd about it."""
    found: dict[str, str] = {}
    unreadable = 0
    twice: list[str] = []
    for raw in (data or b"").split(b"\n"):
        if not raw.strip():
            continue
        line = raw.decode(errors="replace")
        try:
            vers = json.loads(line)["vers"]
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        vers = str(vers)
        if vers in found:
            twice.append(vers)
        found[vers] = line
    notes = [f"{v} twice" for v in twice]
    if unreadable:
        notes.append(f"{unreadable} line(s) without a readable version")
    return found, notes


def _yanked(line: str) -> bool | None:
    try:
        value = json.loads(line).get("yanked")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def _unflagged(line: str) -> str:
    return line.replace('"yanked":true', '"yanked":false')


def _shown(versions: Iterable[str]) -> list[str]:
    return list(versions)[:VERSIONS_SHOWN]


def _more(versions: list[str], what: str) -> list[str]:
    left = len(versions) - VERSIONS_SHOWN
    return [f"and {left} more {what}"] if left > 0 else []
