"""``indexpub import``: an existing index read into the registry, in the caller's transaction.

The index is walked along its layout (:mod:`indexpub.gitindex.snapshot`), its crate files are
streamed out of git and validated line by line (:mod:`indexpub.domain.index_files`, in worker
processes for a big index), checked against each other (two files whose crate names collide
once case and ``-``/``_`` are ignored) and against the registry, and written a batch at a time
(:mod:`indexpub.registry.importer`). Nothing is committed here: the caller commits when the
report says the import is not refused, and rolls back otherwise, so an import is all or nothing
whatever stops it (a refusal, Ctrl-C, a crash).

Memory is bounded by the limits, not by the index: a file is held from the moment git sends it
until its batch is written, a few batches at most are in flight, and only the first
``MAX_LISTED`` problems and conflicts are kept in full (the rest are counted).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from indexpub.domain.index_files import (
    MAX_FILE_BYTES,
    FileProblem,
    Skips,
    read_crate_files,
    too_large_problem,
)
from indexpub.domain.names import canonical_name
from indexpub.gitindex.snapshot import (
    MAX_FILES,
    IndexSnapshot,
    ListedFile,
    list_crate_files,
    stream_objects,
)
from indexpub.registry.importer import ImportConflict, ImportedCrate, Importer, copy_rows
from indexpub.registry.sql import Conn

__all__ = ["MAX_LISTED", "ImportProblem", "ImportProgress", "ImportReport", "import_index"]

# Problems and conflicts kept in full for the report; the rest are counted.
MAX_LISTED = 1000
# Crates per database batch (one INSERT, one COPY), and files per validation task.
BATCH_CRATES = 1000
TASK_FILES = 256
TASK_BYTES = 4 << 20
# Tasks queued per worker process: enough that the workers go on while this process writes a
# batch to the database (memory: at most this many tasks of TASK_BYTES each, per worker).
IN_FLIGHT_PER_WORKER = 4
# Below this many files the lines are validated in this process: starting worker processes
# costs more than it saves.
POOL_FROM_FILES = 2000


@dataclass(frozen=True)
class ImportProblem:
    """Something wrong with the index: ``line`` is 1-based, 0 for a whole file or directory;
    ``skips`` what ``--skip-invalid`` leaves out for it (see index_files.Skips)."""

    path: str
    line: int
    reason: str
    skips: Skips

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ImportProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass
class ImportReport:
    """What an import found and did. ``crates`` and ``versions`` count what is (or, when the
    import is refused, would have been) imported; ``identical`` the crates the registry held
    already, byte for byte, which are left as they are."""

    location: str
    branch: str
    commit: str
    skip_invalid: bool
    crate_files: int = 0
    crates: int = 0
    versions: int = 0
    yanked: int = 0
    identical: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    problem_count: int = 0
    skipped_lines: int = 0
    skipped_files: int = 0
    # Crate files imported whose next sync will rewrite them (skipped lines, a missing newline).
    rewritten: list[str] = field(default_factory=list)
    rewritten_count: int = 0
    conflicts: list[ImportConflict] = field(default_factory=list)
    conflict_count: int = 0
    # Top-level entries outside the layout (config.json among them), not read.
    ignored: list[str] = field(default_factory=list)
    executable: list[str] = field(default_factory=list)
    # Crates the registry held that the index does not have (left as they are).
    registry_only: int = 0
    sparse_jobs: int = 0
    seconds: float = 0.0

    @property
    def refused(self) -> bool:
        return self.conflict_count > 0 or (self.problem_count > 0 and not self.skip_invalid)

    def add_problem(self, problem: ImportProblem) -> None:
        self.problem_count += 1
        if problem.skips == "line":
            self.skipped_lines += 1
        elif problem.skips == "file":
            self.skipped_files += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def add_conflict(self, conflict: ImportConflict) -> None:
        self.conflict_count += 1
        if len(self.conflicts) < MAX_LISTED:
            self.conflicts.append(conflict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.location,
            "branch": self.branch,
            "commit": self.commit,
            "imported": not self.refused,
            "crate_files": self.crate_files,
            "crates": self.crates,
            "versions": self.versions,
            "yanked": self.yanked,
            "identical": self.identical,
            "registry_only": self.registry_only,
            "problem_count": self.problem_count,
            "skipped_lines": self.skipped_lines,
            "skipped_files": self.skipped_files,
            "problems": [
                {"file": p.path, "line": p.line, "reason": p.reason, "skips": p.skips}
                for p in self.problems
            ],
            "rewritten_count": self.rewritten_count,
            "rewritten": self.rewritten,
            "conflict_count": self.conflict_count,
            "conflicts": [
                {"file": c.path, "crate": c.name, "reason": c.reason} for c in self.conflicts
            ],
            "ignored": self.ignored,
            "executable": self.executable,
            "sparse_jobs": self.sparse_jobs,
            "seconds": round(self.seconds, 3),
        }


def import_index(
    conn: Conn,
    snapshot: IndexSnapshot,
    *,
    skip_invalid: bool = False,
    sparse_jobs: bool = True,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_files: int = MAX_FILES,
    workers: int | None = None,
    progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Read every crate file of ``snapshot`` into the registry through ``conn``, uncommitted.

    ``workers``: processes that validate lines (None: one per CPU for a big index, none for a
    small one; 0: none). They are started with multiprocessing's "spawn", so a script that
    calls this with workers must keep its top level under ``if __name__ == "__main__"``.
    ``progress`` is called before the first file and after each group of files.
    """
    started = time.monotonic()
    report = ImportReport(snapshot.location, snapshot.branch, snapshot.commit, skip_invalid)
    listing = list_crate_files(snapshot, max_files=max_files)
    report.ignored = listing.ignored[:MAX_LISTED]
    report.executable = listing.executable[:MAX_LISTED]
    for path, reason in listing.problems:
        report.add_problem(ImportProblem(path, 0, reason, "file"))
    readable: list[ListedFile] = []
    # The file of each canonical name, for collisions: a crate's name is its file's name up to
    # case, which the layout lowercases, so two files collide when their names are equal once
    # '-' and '_' are (the first one in tree order is read).
    first: dict[str, str] = {}
    for listed in listing.files:
        file_name = listed.path.rpartition("/")[2]
        other = first.setdefault(canonical_name(file_name), listed.path)
        if other is not listed.path:
            reason = (
                f"the crate {file_name!r} collides with {other}: crate names that differ only "
                "in case or in '-' versus '_' are one crate"
            )
            report.add_problem(ImportProblem(listed.path, 0, reason, "file"))
        elif listed.size > max_file_bytes:
            problem = too_large_problem(listed.size, max_file_bytes)
            report.add_problem(ImportProblem(listed.path, 0, problem.reason, "file"))
        else:
            readable.append(listed)
    del first
    report.crate_files = len(listing.files)

    importer = Importer(conn, sparse_jobs=sparse_jobs)
    held_before = importer.crate_count() if importer.merging else 0
    if workers is None:
        workers = (os.cpu_count() or 1) if len(readable) >= POOL_FROM_FILES else 0
    batch: list[ImportedCrate] = []
    files = _read_files(snapshot, readable, max_file_bytes, workers, progress)
    for path, problems, found in files:
        for problem in problems:
            report.add_problem(ImportProblem(path, problem.line, problem.reason, problem.skips))
        if found is None:
            continue
        if problems:
            report.rewritten_count += 1
            if len(report.rewritten) < MAX_LISTED:
                report.rewritten.append(path)
        batch.append(found)
        if len(batch) >= BATCH_CRATES:
            _write(importer, batch, report)
            batch = []
    _write(importer, batch, report)
    # By file (those of one file in the order found): the walk reports some before the reading.
    report.problems.sort(key=lambda problem: problem.path)
    report.registry_only = max(0, held_before - report.identical - report.conflict_count)
    report.seconds = time.monotonic() - started
    return report


def _write(importer: Importer, batch: list[ImportedCrate], report: ImportReport) -> None:
    """Compare a batch with the registry and, while the import is not refused, write it."""
    if not batch:
        return
    compared = importer.compare(batch)
    report.identical += len(compared.identical)
    for conflict in compared.conflicts:
        report.add_conflict(conflict)
    report.crates += len(compared.new)
    report.versions += sum(found.versions for found in compared.new)
    report.yanked += sum(found.yanked for found in compared.new)
    if not report.refused:  # a refused import is rolled back: writing more is wasted
        importer.write(compared.new)
        if importer.sparse_jobs:
            report.sparse_jobs += len(compared.new)


class FileRead(NamedTuple):
    """What a worker process sends back for one crate file: its problems and, unless nothing of
    it can be imported (``name`` None), its versions as COPY rows, how many there are and how
    many are yanked, and the file the registry will render for it (None: the file's own
    bytes, as for every file without problems)."""

    problems: list[FileProblem]
    name: str | None
    versions: int
    yanked: int
    rows: bytes
    rendered: bytes | None


Task = list[tuple[str, bytes | None, int]]  # (path, data, size); data None: too large


def read_task(task: Task, max_file_bytes: int, published_at: datetime) -> list[FileRead]:
    """Validate a group of crate files: one task of the worker processes (or of this one)."""
    done = []
    for found in read_crate_files(task, max_file_bytes):
        if found.skipped or found.name is None:
            done.append(FileRead(found.problems, None, 0, 0, b"", None))
            continue
        done.append(
            FileRead(
                found.problems,
                found.name,
                len(found.versions),
                sum(v.yanked for v in found.versions),
                copy_rows(found.versions, published_at),
                found.rendered() if found.problems else None,
            )
        )
    return done


def _read_files(
    snapshot: IndexSnapshot,
    files: Sequence[ListedFile],
    max_file_bytes: int,
    workers: int,
    progress: Callable[[ImportProgress], None] | None,
) -> Iterator[tuple[str, list[FileProblem], ImportedCrate | None]]:
    """Each file read and validated, in order, as (path, problems, the crate to import or
    None); validated in ``workers`` processes if any."""
    total = ImportProgress(0, len(files), 0, sum(f.size for f in files))
    done = [0, 0]

    def finish(
        task: Task, reads: list[FileRead]
    ) -> Iterator[tuple[str, list[FileProblem], ImportedCrate | None]]:
        for (path, data, _), read in zip(task, reads, strict=True):
            crate = None
            if read.name is not None:
                rendered = read.rendered if read.rendered is not None else data
                assert rendered is not None
                crate = ImportedCrate(
                    path,
                    read.name,
                    canonical_name(read.name),
                    read.versions,
                    read.yanked,
                    rendered,
                    read.rows,
                )
            yield path, read.problems, crate
        done[0] += len(task)
        done[1] += sum(size for _, _, size in task)
        if progress is not None:
            progress(ImportProgress(done[0], total.files_total, done[1], total.bytes_total))

    if progress is not None:
        progress(total)
    published_at = snapshot.commit_time
    stream = stream_objects(snapshot, [f.sha for f in files], max_bytes=max_file_bytes)
    tasks = _tasks(files, stream)
    if workers <= 0:
        for task in tasks:
            yield from finish(task, read_task(task, max_file_bytes, published_at))
        return
    # Spawned, not forked: the parent holds a database connection and git's pipes, which a
    # forked child would share. The workers ignore SIGINT: Ctrl-C is the parent's to handle.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=partial(signal.signal, signal.SIGINT, signal.SIG_IGN),
    )
    pending: deque[tuple[Future[list[FileRead]], Task]] = deque()
    try:
        for task in tasks:
            pending.append((pool.submit(read_task, task, max_file_bytes, published_at), task))
            while len(pending) > IN_FLIGHT_PER_WORKER * workers:
                future, oldest = pending.popleft()
                yield from finish(oldest, future.result())
        while pending:
            future, oldest = pending.popleft()
            yield from finish(oldest, future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _tasks(files: Sequence[ListedFile], objects: Iterable[Any]) -> Iterator[Task]:
    """The streamed files in groups of at most TASK_FILES files or TASK_BYTES bytes."""
    task: Task = []
    size = 0
    for listed, obj in zip(files, objects, strict=True):
        task.append((listed.path, obj.data, listed.size))
        size += listed.size
        if len(task) >= TASK_FILES or size >= TASK_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task
