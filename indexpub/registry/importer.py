"""The database side of ``indexpub import``: crates read from an existing index, written into the
registry in the caller's transaction.

The caller (``indexpub.pipeline.importing``) hands over crates a batch at a time, each already
validated line by line (:mod:`indexpub.domain.index_files`). Every batch is compared with what
the registry holds: a crate the registry does not have is new; one it holds with the same
spelling and a rendered file equal to the imported one, byte for byte, is identical and left
alone; anything else is a conflict, which the caller turns into a refusal of the whole import.
New crates are inserted with one statement per batch and their versions with COPY.

Nothing enqueues ``sync_crate``: the git index already holds the imported files, and rendering
gives back their bytes. ``write_sparse`` is enqueued for each new crate (unless the caller says
not to), because the sparse index's directory is written only by that job. A version's
``published_at`` is the commit time of the tip the import read: the index held the line then,
and when it was really published the database cannot know (``indexpub check`` compares these
times with the remote's tip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from indexpub.domain.index_files import StoredVersion
from indexpub.errors import shorten
from indexpub.registry import sql
from indexpub.registry.queue import app, write_sparse
from indexpub.registry.render import render_crate_files
from indexpub.registry.sql import Conn, statement

# Where a crate's id goes in the rows of copy_rows: a NUL byte, which no valid index line holds
# (JSON escapes control characters) and COPY's text format cannot carry.
CRATE_ID_MARK = b"\0"


@dataclass(frozen=True)
class ImportedCrate:
    """A crate read from an index, ready to be written: the file the registry must render for
    it (``rendered``, to compare with a crate the registry holds) and its versions as COPY rows
    (``rows``, see :func:`copy_rows`)."""

    path: str
    name: str
    canonical: str
    versions: int
    yanked: int
    rendered: bytes
    rows: bytes


def copy_rows(versions: Sequence[StoredVersion], published_at: datetime) -> bytes:
    """The versions as rows of sql.COPY_IMPORTED_VERSIONS in COPY's text format, each starting
    with CRATE_ID_MARK where :meth:`Importer.write` puts the crate's id.

    Built where the lines are validated (an import's worker processes), so that the process
    that writes does one replace per crate instead of encoding every row.
    """
    stamp = published_at.isoformat()
    rows = []
    for version in versions:
        line = version.line
        if "\0" in line or "\n" in line or "\r" in line:
            raise ValueError("a stored line cannot hold a NUL, CR or LF")  # from_line refused it
        if "\\" in line or "\t" in line:
            line = line.replace("\\", "\\\\").replace("\t", "\\t")
        flag = "t" if version.yanked else "f"
        rows.append(f"\0\t{version.num}\t{version.num_no_build}\t{line}\t{flag}\t{stamp}\n")
    return "".join(rows).encode()


@dataclass(frozen=True)
class ImportConflict:
    """A crate of the index that the registry holds otherwise."""

    path: str
    name: str
    reason: str


@dataclass
class Compared:
    """A batch compared with the registry."""

    new: list[ImportedCrate] = field(default_factory=list)
    identical: list[ImportedCrate] = field(default_factory=list)
    conflicts: list[ImportConflict] = field(default_factory=list)


class Importer:
    """Writes imported crates in the caller's transaction, which it locks against other imports
    and against publishes of new crates (see sql.LOCK_CRATES_FOR_IMPORT) until it ends."""

    def __init__(self, conn: Conn, *, sparse_jobs: bool = True) -> None:
        self.conn = conn
        conn.execute(statement(sql.LOCK_CRATES_FOR_IMPORT))
        row = conn.execute(statement(sql.ANY_CRATE)).fetchone()
        # Whether there is anything to compare with: an empty registry needs no lookups.
        self.merging = bool(row and row[0])
        self.sparse_jobs = sparse_jobs

    def compare(self, files: Sequence[ImportedCrate]) -> Compared:
        """Sort a batch (crates with a name and at least one version, no two with the same
        canonical name) into new, identical and conflicting crates."""
        compared = Compared()
        if not self.merging:
            compared.new.extend(files)
            return compared
        wanted = [f.canonical for f in files]
        held: dict[str, str] = dict(
            self.conn.execute(statement(sql.EXISTING_CRATES), (wanted,)).fetchall()
        )
        same = [f.name.lower() for f in files if held.get(f.canonical) == f.name]
        rendered = render_crate_files(self.conn, same) if same else {}
        for found in files:
            name = found.name
            spelled = held.get(found.canonical)
            if spelled is None:
                compared.new.append(found)
            elif spelled != name:
                compared.conflicts.append(
                    ImportConflict(
                        found.path,
                        name,
                        f"the registry holds this crate as {shorten(spelled)} (names that differ "
                        "only in case or in '-' versus '_' are one crate)",
                    )
                )
            else:
                have = rendered.get(name.lower())
                if have == found.rendered:
                    compared.identical.append(found)
                else:
                    compared.conflicts.append(
                        ImportConflict(found.path, name, _difference(have or b"", found.rendered))
                    )
        return compared

    def write(self, files: Sequence[ImportedCrate]) -> None:
        """Insert new crates (as :meth:`compare` found them) with their versions."""
        if not files:
            return
        rows = self.conn.execute(
            statement(sql.IMPORT_CRATES), ([f.name for f in files], [f.canonical for f in files])
        ).fetchall()
        ids = {str(canonical): str(crate_id).encode() for crate_id, canonical in rows}
        with (
            self.conn.cursor() as cursor,
            cursor.copy(statement(sql.COPY_IMPORTED_VERSIONS)) as copy,
        ):
            for found in files:
                copy.write(found.rows.replace(CRATE_ID_MARK, ids[found.canonical]))
        if self.sparse_jobs:
            app.enqueue_many(self.conn, [write_sparse.job({"name": f.name}) for f in files])

    def crate_count(self) -> int:
        """How many crates the registry holds (in this transaction: with the import's)."""
        row = self.conn.execute(statement(sql.COUNT_CRATES)).fetchone()
        return int(row[0]) if row else 0


def _difference(have: bytes, want: bytes) -> str:
    """How the registry's file of a crate differs from the imported one, in a few words."""
    held, found = have.split(b"\n")[:-1], want.split(b"\n")[:-1]
    line = next(
        (i for i, (a, b) in enumerate(zip(held, found, strict=False), start=1) if a != b),
        min(len(held), len(found)) + 1,
    )
    return (
        f"the registry holds other versions of this crate ({len(held)} there, {len(found)} "
        f"here; they differ from line {line} of this file)"
    )
