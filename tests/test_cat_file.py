"""The long-lived git cat-file process: reuse, new objects, big requests, deaths and hangs."""

from __future__ import annotations

import os
import signal
import time
import zlib
from pathlib import Path

import pytest
from support.git import git

from indexpub.gitindex.cat_file import CatFile
from indexpub.gitindex.process import GitError, GitTimeout


def blob(repo: Path, data: bytes) -> str:
    return git(f"--git-dir={repo}", "hash-object", "-w", "--stdin", input=data).strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo.git"
    git("init", "-q", "--bare", str(path))
    return path


@pytest.fixture
def reader(repo: Path) -> CatFile:
    found = CatFile(repo, timeout=10)
    yield found  # type: ignore[misc]
    found.close()


def test_one_process_answers_every_read_and_sees_objects_written_after_it_started(
    repo: Path, reader: CatFile
) -> None:
    first = blob(repo, b"first\n")
    assert [(o.sha, o.kind, o.data) for o in reader.read([first]) if o] == [
        (first, "blob", b"first\n")
    ]
    # Written (loose, then packed) while the process runs: git looks again for a missing object.
    second = blob(repo, b"second\n")
    git(f"--git-dir={repo}", "repack", "-adq")
    third = blob(repo, b"third\n")
    found = reader.read([third, second, "0" * 40, first])
    assert [o.data if o else None for o in found] == [b"third\n", b"second\n", None, b"first\n"]
    assert reader.started == 1


def test_a_request_bigger_than_the_pipes_both_ways_does_not_deadlock(
    repo: Path, reader: CatFile
) -> None:
    """5,000 names (~205 kB in) answered with 5 MB: writing all before reading would hang."""
    shas = [blob(repo, bytes([65 + i]) * 1024) for i in range(5)]
    specs = [shas[i % 5] for i in range(5000)]
    found = reader.read(specs)
    assert [o.data[:1] if o else None for o in found] == [bytes([65 + i % 5]) for i in range(5000)]


def test_a_process_killed_between_reads_is_replaced(repo: Path, reader: CatFile) -> None:
    sha = blob(repo, b"x\n")
    reader.read([sha])
    assert reader._proc is not None
    os.kill(reader._proc.pid, signal.SIGKILL)
    reader._proc.wait()
    assert [o.data if o else None for o in reader.read([sha])] == [b"x\n"]
    assert reader.started == 2


def test_a_process_that_dies_mid_read_raises_what_git_said_and_the_next_read_works(
    repo: Path, reader: CatFile
) -> None:
    good = blob(repo, b"good\n")
    # A loose object cut in half: git prints its header, then dies streaming it.
    bad = "ab" + "c" * 38
    whole = zlib.compress(b"blob 1000\0" + bytes(range(250)) * 4)
    (repo / "objects" / "ab").mkdir(exist_ok=True)
    (repo / "objects" / "ab" / bad[2:]).write_bytes(whole[: len(whole) // 2])
    for specs in ([good, bad], [bad]):
        with pytest.raises(GitError, match=r"cat-file .* ended unexpectedly: .*unable to stream"):
            reader.read(specs)
        assert [o.data if o else None for o in reader.read([good])] == [b"good\n"]


def test_a_hung_read_is_killed_at_the_timeout(repo: Path) -> None:
    """git opens objects/info/alternates on its first lookup; a FIFO there never answers."""
    sha = blob(repo, b"x\n")
    (repo / "objects" / "info").mkdir(exist_ok=True)
    os.mkfifo(repo / "objects" / "info" / "alternates")
    reader = CatFile(repo, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GitTimeout, match=r"git cat-file timed out after 0\.5 s"):
        reader.read([sha])
    assert time.monotonic() - started < 5
    assert reader._proc is None  # killed, and not reused
    (repo / "objects" / "info" / "alternates").unlink()
    assert [o.data if o else None for o in reader.read([sha])] == [b"x\n"]
    reader.close()


def test_a_name_that_spans_lines_is_refused_before_git_sees_it(reader: CatFile) -> None:
    for specs in (["HEAD\nHEAD"], [""], ["HEAD", ""], ["HEAD\r"], ["HEAD", "a\0b"], ["a", "b\n"]):
        with pytest.raises(ValueError, match="not a single-line object name"):
            reader.read(specs)
    assert reader.started == 0
