"""A crate's file as found in an index that someone else wrote: the versions to store, and what
is wrong with it, line by line.

``indexpub import`` treats the index it reads as hostile: every line is validated with the rules
of a publish (:meth:`IndexEntry.from_line`, the line limit, one spelling per crate, no version
twice, not even once build metadata is ignored), and every problem names its line and says why
in one short line that never quotes more than a few dozen characters of the input.

A line is stored as it was found, so that rendering the crate's file from the database gives
back the file's bytes exactly (docs/architecture.md, "Importing an index"). The registry stores
every line with its ``yanked`` flag false and renders the flag with
:func:`~indexpub.domain.entries.set_yanked_flag`; a found line is stored as
``set_yanked_flag(line, False)``, and the round trip is checked for every line, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from indexpub.domain.entries import (
    MAX_LINE_BYTES,
    IndexEntry,
    can_set_yanked_flag,
    check_line_size,
    set_yanked_flag,
)
from indexpub.domain.limits import IMPORT_MAX_FILE_BYTES
from indexpub.domain.names import canonical_name, index_path, is_index_path
from indexpub.errors import InvalidInput, shorten

# The largest crate file an import reads (``--max-file-bytes``; see limits).
MAX_FILE_BYTES = IMPORT_MAX_FILE_BYTES

# The most that setting the yanked flag adds to a line (a missing flag becomes ',"yanked":false').
_FLAG_BYTES = len(',"yanked":false')

# What a problem costs the import when problems are skipped (``--skip-invalid``): the line, the
# whole file, or nothing (the file is imported but will not stay byte for byte: its next sync
# rewrites it).
Skips = Literal["line", "file", "nothing"]


class FileProblem(NamedTuple):
    """Something wrong with a crate file; ``line`` is 1-based, 0 for the file as a whole."""

    line: int
    reason: str
    skips: Skips


class StoredVersion(NamedTuple):
    """One version as the registry stores it (``versions``: num, num_no_build, line, yanked)."""

    num: str
    num_no_build: str
    line: str
    yanked: bool


@dataclass
class CrateFile:
    """What an import takes from one crate file.

    ``name`` is the crate's published spelling (from its first valid line; None when no line
    is valid), ``versions`` the valid lines in file order, ``problems`` the rest.
    """

    path: str
    name: str | None = None
    versions: list[StoredVersion] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    lines: int = 0

    @property
    def canonical(self) -> str | None:
        return None if self.name is None else canonical_name(self.name)

    @property
    def skipped(self) -> bool:
        """Whether nothing of the file can be imported."""
        return self.name is None or any(p.skips == "file" for p in self.problems)

    def rendered(self) -> bytes:
        """The file the registry renders from ``versions`` (registry/render.py's rule)."""
        return "".join(set_yanked_flag(v.line, v.yanked) + "\n" for v in self.versions).encode()


def read_crate_file(path: str, data: bytes, *, max_file_bytes: int = MAX_FILE_BYTES) -> CrateFile:
    """Read the crate file found at ``path`` (a path of the index layout) holding ``data``."""
    found = CrateFile(path)
    file_name = path.rpartition("/")[2]
    if not is_index_path(path):
        found.problems.append(
            FileProblem(0, "not a path where the index layout puts a crate file", "file")
        )
        return found
    if len(data) > max_file_bytes:
        found.problems.append(FileProblem(0, _too_large(len(data), max_file_bytes), "file"))
        return found
    if not data:
        found.problems.append(
            FileProblem(0, "the file is empty (a crate without versions has no file)", "file")
        )
        return found
    raw_lines = data.split(b"\n")
    last = raw_lines.pop()  # b"" when the file ends with a newline
    if last:
        raw_lines.append(last)
    found.lines = len(raw_lines)
    # The versions seen, by their number without build metadata: (line number, number).
    seen: dict[str, tuple[int, str]] = {}
    first_line = 0
    for number, raw in enumerate(raw_lines, start=1):
        problem = _read_line(found, number, raw, file_name, seen, first_line)
        if problem is not None:
            found.problems.append(FileProblem(number, problem, "line"))
        elif first_line == 0:
            first_line = number
    if last:
        found.problems.append(
            FileProblem(
                found.lines,
                "no newline at the end of the file (the registry ends every line with one, so "
                "the file would change at its next sync)",
                "nothing",
            )
        )
    if found.name is None:
        found.problems.append(FileProblem(0, "no valid line: nothing to import", "file"))
    return found


def _read_line(
    found: CrateFile,
    number: int,
    raw: bytes,
    file_name: str,
    seen: dict[str, tuple[int, str]],
    first_line: int,
) -> str | None:
    """Add the line's version to ``found``; or say what is wrong with it."""
    if not raw.strip():
        return "blank line (the registry cannot store it, so the file would lose it)"
    try:
        entry = IndexEntry.from_line(raw)
    except InvalidInput as problem:
        return problem.message
    except RecursionError:
        return "invalid index line: nested too deeply"
    text = raw.decode()  # from_line decoded it already, so this cannot fail
    name = entry.name
    if name.lower() != file_name:
        return f"names the crate {shorten(name)}, whose file is {index_path(name)}, not this one"
    if found.name is not None and name != found.name:
        return (
            f"names the crate {shorten(name)} but line {first_line} names it "
            f"{shorten(found.name)} (a crate has one spelling)"
        )
    num = str(entry.vers)
    no_build = str(entry.vers.without_build())
    earlier = seen.get(no_build)
    if earlier is not None:
        if earlier[1] == num:
            return f"version {num} is already at line {earlier[0]} (cargo silently uses the last)"
        return (
            f"version {num} equals version {earlier[1]} of line {earlier[0]} once build "
            "metadata is ignored (cargo would take them for one version)"
        )
    if not can_set_yanked_flag(text):
        return (
            "the yanked flag's key is written with escapes: the registry sets the flag in the "
            "line's text and cannot find it"
        )
    stored = set_yanked_flag(text, False)
    if set_yanked_flag(stored, entry.yanked) != text:
        return "the line cannot be stored so that it renders byte for byte"
    # Setting the flag changes a line by a few bytes at most (a missing flag is added): only a
    # line that close to the limit needs its other forms measured.
    if len(raw) + _FLAG_BYTES > MAX_LINE_BYTES:
        try:
            check_line_size(stored, MAX_LINE_BYTES)
            check_line_size(set_yanked_flag(stored, True), MAX_LINE_BYTES)
        except InvalidInput as problem:
            return f"{problem.message} once yanked"
    seen[no_build] = (number, num)
    if found.name is None:
        found.name = name
    found.versions.append(StoredVersion(num, no_build, stored, entry.yanked))
    return None


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size} bytes, more than the limit of {limit} (--max-file-bytes)"


def too_large_problem(size: int, limit: int) -> FileProblem:
    """The problem of a file that was not read because of its size."""
    return FileProblem(0, _too_large(size, limit), "file")


def read_crate_files(
    files: list[tuple[str, bytes | None, int]], max_file_bytes: int = MAX_FILE_BYTES
) -> list[CrateFile]:
    """:func:`read_crate_file` for each (path, data, size); data None: not read, too large.

    One call is one task of an import's worker processes, so it takes and returns plain data.
    """
    return [
        read_crate_file(path, data, max_file_bytes=max_file_bytes)
        if data is not None
        else CrateFile(path, problems=[too_large_problem(size, max_file_bytes)])
        for path, data, size in files
    ]
