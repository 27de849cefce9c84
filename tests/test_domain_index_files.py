"""A crate file found in another index: what is stored of it, and every problem with its line."""

from __future__ import annotations

import pytest
from support.index_sources import crate_files, line, varied_lines

from indexpub.domain.entries import MAX_LINE_BYTES, IndexEntry, set_yanked_flag
from indexpub.domain.index_files import read_crate_file, read_crate_files


@pytest.mark.parametrize("path", sorted(crate_files(varied_lines())))
def test_every_kind_of_valid_line_is_stored_so_that_it_renders_byte_for_byte(path: str) -> None:
    data = crate_files(varied_lines())[path]
    found = read_crate_file(path, data)
    assert found.problems == []
    assert found.rendered() == data
    assert found.lines == len(found.versions) == data.count(b"\n")
    for version, raw in zip(found.versions, data.decode().splitlines(), strict=True):
        entry = IndexEntry.from_line(raw)
        assert version.yanked is entry.yanked
        assert (version.num, version.num_no_build) == (
            str(entry.vers),
            str(entry.vers.without_build()),
        )
        # Stored with the flag false, as a published line is: a yank or unyank is a valid
        # line of the same entry.
        assert IndexEntry.from_line(version.line) == entry.with_yanked(False)
        assert IndexEntry.from_line(set_yanked_flag(version.line, True)) == entry.with_yanked(True)


def test_the_crates_spelling_comes_from_its_lines() -> None:
    found = read_crate_file("mi/xe/mixedcase", (line("MixedCase", "1.0.0") + "\n").encode())
    assert (found.name, found.canonical) == ("MixedCase", "mixedcase")


def problems(path: str, *lines: str | bytes, end: bytes = b"\n") -> list[tuple[int, str, str]]:
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + end for x in lines)
    return [(p.line, p.reason, p.skips) for p in read_crate_file(path, data).problems]


def test_each_invalid_line_is_named_with_its_number_and_reason() -> None:
    found = problems(
        "3/a/abc",
        line("abc", "0.1.0"),
        "not json",
        line("abc", "01.0.0"),
        line("abd", "0.2.0"),
        line("ABC", "0.3.0"),
        line("abc", "0.1.0", cksum="0" * 64),
        line("abc", "0.1.0+build"),
        b'{"name":"abc","vers":"0.4.0","deps":[],"cksum":"\xff"}',
        "",
        line("abc", "0.5.0", deps=[{"name": "x"}]),
        line("abc", "0.6.0"),
    )
    assert [(n, skips) for n, _, skips in found] == [
        (n, "line") for n in (2, 3, 4, 5, 6, 7, 8, 9, 10)
    ]
    reasons = {n: reason for n, reason, _ in found}
    assert "not JSON" in reasons[2]
    assert "invalid leading zero" in reasons[3]
    assert "names the crate 'abd', whose file is 3/a/abd" in reasons[4]
    assert "names the crate 'ABC' but line 1 names it 'abc'" in reasons[5]
    assert "version 0.1.0 is already at line 1" in reasons[6]
    assert "0.1.0+build equals version 0.1.0 of line 1 once build metadata is ignored" in reasons[7]
    assert "not UTF-8" in reasons[8]
    assert "blank line" in reasons[9]
    assert "missing field 'req'" in reasons[10]


def test_a_file_that_does_not_end_with_a_newline_is_imported_but_named() -> None:
    data = (line("abc", "0.1.0") + "\n" + line("abc", "0.2.0")).encode()
    found = read_crate_file("3/a/abc", data)
    assert [v.num for v in found.versions] == ["0.1.0", "0.2.0"]
    assert [(p.line, p.skips) for p in found.problems] == [(2, "nothing")]
    assert "no newline at the end of the file" in found.problems[0].reason
    assert not found.skipped


def test_a_carriage_return_is_a_problem_of_its_line() -> None:
    found = problems("3/a/abc", line("abc", "0.1.0"), line("abc", "0.2.0"), end=b"\r\n")
    assert [(n, skips) for n, _, skips in found] == [(1, "line"), (2, "line"), (0, "file")]
    assert "line break" in found[0][1]


def test_a_line_over_the_limit_is_refused_without_quoting_it() -> None:
    huge = line("abc", "0.1.0", links="x" * MAX_LINE_BYTES)
    ((number, reason, skips), _) = problems("3/a/abc", huge)
    assert (number, skips) == (1, "line")
    assert reason == (
        f"invalid index line of {len(huge)} bytes: longer than the limit of {MAX_LINE_BYTES}"
    )


def test_a_line_that_would_pass_the_limit_once_yanked_is_refused() -> None:
    """A line without the flag grows when it is yanked: it must fit then too."""
    base = line("abc", "0.1.0").replace(',"yanked":false', "")
    padded = base[:-1] + ',"links":"' + "x" * (MAX_LINE_BYTES - len(base) - 12) + '"}'
    assert len(padded) == MAX_LINE_BYTES - 1
    ((_, reason, _), _) = problems("3/a/abc", padded)
    assert reason.endswith("once yanked")


def test_an_escaped_yanked_key_is_refused() -> None:
    escaped = line("abc", "0.1.0", yanked=True).replace('"yanked"', '"yank\\u0065d"')
    ((_, reason, _), _) = problems("3/a/abc", escaped)
    assert "the yanked flag's key is written with escapes" in reason


@pytest.mark.parametrize(
    ("path", "data", "reason"),
    [
        ("3/a/abc", b"", "the file is empty"),
        ("3/a/Abc", b"x\n", "not a path where the index layout puts a crate file"),
        ("3/b/abc", b"x\n", "not a path where the index layout puts a crate file"),
        ("3/a/abc", b"garbage\n", "no valid line"),
    ],
)
def test_file_problems_skip_the_whole_file(path: str, data: bytes, reason: str) -> None:
    found = read_crate_file(path, data)
    assert found.skipped
    assert found.versions == [] or found.name is None
    assert [p.skips for p in found.problems][-1] == "file"
    assert reason in found.problems[-1].reason


def test_a_file_over_the_size_limit_is_not_read() -> None:
    data = (line("abc", "0.1.0") + "\n").encode()
    (found,) = read_crate_files([("3/a/abc", data, len(data))], max_file_bytes=10)
    assert found.skipped and found.versions == []
    assert found.problems[0].reason == (
        f"the file is {len(data)} bytes, more than the limit of 10 (--max-file-bytes)"
    )
    (unread,) = read_crate_files([("3/a/abc", None, 10**12)], max_file_bytes=10)
    assert "the file is 1000000000000 bytes" in unread.problems[0].reason
