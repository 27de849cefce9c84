"""``indexpub import``: an index written by somebody else, read into a real database from a real
git repository (local, or served by ``git daemon``), checked against plain git's view of it, then
worked on by the real worker (and the real cargo)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from support import pg
from support.cargo_registry import free_port
from support.git import git
from support.index_helpers import Registry
from support.index_sources import (
    EXECUTABLE,
    SUBMODULE,
    SYMLINK,
    build_index,
    crate_files,
    line,
    tree_files,
    varied_lines,
)
from support.synthetic_index import Shape, index_files

from indexpub.cli import main
from indexpub.domain.entries import MAX_LINE_BYTES, IndexEntry
from indexpub.domain.names import index_path, is_index_path
from indexpub.domain.versions import parse_version
from indexpub.registry import render, store
from indexpub.registry.queue import enqueue_crate_syncs

EXTRAS = [
    ("README.md", "100644", "# An index\n"),
    (".github/workflows/ci.yml", "100644", "on: push\n"),
]


@dataclass
class Site:
    """A migrated database, a data directory and an index written by somebody else."""

    url: str
    data: Path
    remote: Path
    files: dict[str, bytes]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        overlay: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INDEXPUB_")}
        overlay["DATABASE_URL"] = None
        overlay["INDEXPUB_INDEX_URL"] = str(self.remote)
        overlay.update(env or {})
        common = ["--data-dir", str(self.data), "--database-url", self.url]
        return CliRunner().invoke(main, [*common, *args], env=overlay)

    def import_(self, *args: str) -> Result:
        return self.cli("import", *args)

    def import_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.import_("--json", *args)
        assert result.stdout, result.output
        return result.exit_code, json.loads(result.stdout)

    def registry(self) -> Registry:
        return Registry(self.url, self.data, self.remote)

    def rendered(self) -> dict[str, bytes]:
        """Every crate file the database renders, by path: what verify compares with the index."""
        with psycopg.connect(self.url) as conn:
            names = render.all_crate_names(conn)
            files = render.render_crate_files(conn, names)
        return {index_path(name): data for name, data in files.items() if data is not None}

    def crate_count(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM indexpub.crates").fetchone()
            assert row is not None
            return int(row[0])

    def jobs(self) -> dict[str, int]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT job_type, count(*) FROM indexpub_jobs.jobs GROUP BY 1"
            ).fetchall()
        return {str(kind): int(count) for kind, count in rows}


def crate_paths(files: dict[str, bytes]) -> dict[str, bytes]:
    return {path: data for path, data in files.items() if is_index_path(path)}


def make_site(
    url: str, tmp: Path, files: dict[str, bytes], special: list[tuple[str, str, Any]] = EXTRAS
) -> Site:
    with psycopg.connect(url) as conn:
        store.migrate(conn)
    remote = tmp / "index.git"
    build_index(remote, files, special=special)
    return Site(url, tmp / "data", remote, files)


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Site:
    return make_site(database_url, tmp_path, crate_files(varied_lines()))


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("import")]


# --------------------------------------------------------------------------- byte for byte


def test_every_kind_of_line_is_imported_and_rendered_back_byte_for_byte(site: Site) -> None:
    result = site.import_()
    assert result.exit_code == 0, result.output
    index = tree_files(site.remote)
    assert site.rendered() == crate_paths(index)  # what verify checks: no drift at all
    assert site.rendered() == site.files
    lines = varied_lines()
    versions = sum(len(ls) for ls in lines.values())
    yanked = sum(IndexEntry.from_line(x).yanked for ls in lines.values() for x in ls)
    assert f"imported {len(lines)} crate(s) with {versions} version(s) ({yanked} yanked)" in (
        result.stdout
    )
    # The git index has every file already: no sync_crate; the sparse index gets its files.
    assert site.jobs() == {"write_sparse": len(lines)}
    with psycopg.connect(site.url) as conn:
        published = conn.execute("SELECT DISTINCT published_at FROM indexpub.versions").fetchall()
        spellings = {row[0] for row in conn.execute("SELECT name FROM indexpub.crates")}
    assert published == [(datetime.fromtimestamp(1700000000, UTC),)]  # the tip's commit time
    assert spellings == set(lines)


def test_the_json_summary_counts_crates_versions_and_what_was_left_out(site: Site) -> None:
    code, report = site.import_json("--no-sparse")
    assert code == 0
    tip = git(f"--git-dir={site.remote}", "rev-parse", "HEAD").strip()
    lines = varied_lines()
    assert report["imported"] is True
    assert (report["commit"], report["branch"], report["source"]) == (
        tip,
        "master",
        str(site.remote),
    )
    assert report["crates"] == report["crate_files"] == len(lines)
    assert report["versions"] == sum(len(ls) for ls in lines.values())
    assert report["problem_count"] == report["conflict_count"] == report["identical"] == 0
    assert report["ignored"] == [".github/", "README.md", "config.json"]
    assert report["sparse_jobs"] == 0
    assert site.jobs() == {}


def test_an_executable_crate_file_is_imported_and_named(database_url: str, tmp_path: Path) -> None:
    """git keeps a file's mode beside its bytes; the worker writes 100644, so the next update
    of such a crate changes its mode: imported, and listed."""
    data = (line("exec", "1.0.0") + "\n").encode()
    site = make_site(database_url, tmp_path, {}, [("ex/ec/exec", EXECUTABLE, data)])
    code, report = site.import_json("--no-sparse")
    assert code == 0
    assert report["executable"] == ["ex/ec/exec"]
    assert site.rendered() == {"ex/ec/exec": data}


def test_after_an_import_the_worker_commits_nothing_until_a_crate_changes(site: Site) -> None:
    assert site.import_().exit_code == 0
    reg = site.registry()
    reg.drain()
    assert reg.messages() == []  # the write_sparse jobs ran; nothing was pushed
    sparse = {
        str(path.relative_to(reg.sparse)): path.read_bytes()
        for path in reg.sparse.rglob("*")
        if path.is_file()
    }
    assert sparse == site.files

    # An untouched crate's sync (a retried job, a repair) finds its file as it is.
    with reg.connect() as conn:
        for name in ("others", "full", "a"):
            enqueue_crate_syncs(conn, name)
    reg.drain()
    assert reg.messages() == []

    # A publish on top appends to the file as it was found.
    new = IndexEntry(name="full", vers=parse_version("2.1.0"), deps=(), cksum="c" * 64)
    reg.publish(new)
    # A yank and an unyank of lines written otherwise than crates.io writes them.
    with reg.connect() as conn:
        store.yank(conn, "others", "0.4.0")  # '"yanked" : false' with spaces around
        store.unyank(conn, "others", "0.1.0")  # Python's json.dumps: '"yanked": true'
        store.yank(conn, "others", "0.3.0")  # no flag at all
        store.yank(conn, "others", "0.2.0")  # "yanked":null
    reg.drain()
    assert reg.messages() == ["Update crate `full`", "Update crate `others`"]
    index = tree_files(site.remote)
    assert index["fu/ll/full"] == site.files["fu/ll/full"] + new.to_line().encode() + b"\n"
    others = [IndexEntry.from_line(x) for x in index["ot/he/others"].decode().splitlines()]
    assert [(str(e.vers), e.yanked) for e in others] == [
        ("0.1.0", False),
        ("0.2.0", True),
        ("0.3.0", True),
        ("0.4.0", True),
        ("0.5.0", False),
        ("0.6.0", True),
    ]
    found = site.files["ot/he/others"].decode().splitlines()
    assert index["ot/he/others"].decode().splitlines()[4:] == found[4:]  # untouched lines
    assert site.rendered() == crate_paths(index)
    assert {k: v for k, v in index.items() if k not in ("fu/ll/full", "ot/he/others")} == {
        k: v
        for k, v in tree_files(site.remote, "HEAD~2").items()
        if k not in ("fu/ll/full", "ot/he/others")
    }


def test_after_an_import_check_finds_the_remote_up_to_date(site: Site) -> None:
    """Imported versions are dated by the tip's commit, not by the import: the remote is not
    behind the database."""
    assert site.import_("--no-sparse").exit_code == 0
    result = site.cli(
        "check",
        "--json",
        "--skip",
        "consumer",
        "--skip",
        "verify",
        "--warn-behind",
        "1",
        "--crit-behind",
        "1",
        "--clock-skew",
        "0",
    )
    report = json.loads(result.stdout)
    remote = next(c for c in report["checks"] if c["check"] == "remote")
    assert remote["state"] == "OK", remote
    assert result.exit_code == 0, report["summary"]


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not on PATH")
def test_cargo_reads_imported_lines_the_registry_yanked_in_their_own_form(
    site: Site, tmp_path: Path
) -> None:
    assert site.import_("--no-sparse").exit_code == 0
    with psycopg.connect(site.url) as conn:
        store.yank(conn, "others", "0.4.0")
        store.unyank(conn, "others", "0.1.0")
    site.registry().drain()
    home = tmp_path / "cargo-home"

    def resolve(requirement: str) -> subprocess.CompletedProcess[str]:
        project = tmp_path / f"consumer-{requirement.strip('=').replace('.', '-')}"
        (project / "src").mkdir(parents=True)
        (project / ".cargo").mkdir()
        (project / ".cargo" / "config.toml").write_text(
            f'[registries.local]\nindex = "{site.remote.as_uri()}"\n'
        )
        (project / "Cargo.toml").write_text(
            '[package]\nname = "consumer"\nversion = "0.1.0"\nedition = "2021"\n\n'
            f'[dependencies]\nothers = {{ version = "{requirement}", registry = "local" }}\n'
        )
        (project / "src" / "main.rs").write_text("fn main() {}\n")
        env = {**os.environ, "CARGO_HOME": str(home), "CARGO_TERM_COLOR": "never"}
        return subprocess.run(
            ["cargo", "generate-lockfile"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert resolve("=0.1.0").returncode == 0  # unyanked: '"yanked": true' became false
    refused = resolve("=0.4.0")  # yanked: '"yanked" : false' became true
    assert refused.returncode != 0
    assert "yanked" in refused.stderr
    assert resolve("=0.5.0").returncode == 0  # trailing whitespace, a feature named "yanked"


# --------------------------------------------------------------------------- invalid lines


def invalid_files() -> dict[str, bytes]:
    files = crate_files(varied_lines())
    files["3/a/abc"] += b"not json\n" + (line("abc", "01.0.0") + "\n").encode()
    files["2/xy"] = (line("Xy", "1.0.0") + "\n" + line("Xy", "1.0.0") + "\n").encode()
    files["1/b"] = b"\xff\xfe\n"
    return files


def test_an_index_with_invalid_lines_imports_nothing_and_names_each(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(database_url, tmp_path, invalid_files())
    result = site.import_()
    assert result.exit_code == 1
    problems = error_lines(result)
    assert problems[:-1] == [
        "1/b:1: invalid index line b'\\xff\\xfe': not UTF-8",
        "1/b: no valid line: nothing to import",
        "2/xy:2: version 1.0.0 is already at line 1 (cargo silently uses the last)",
        "3/a/abc:3: invalid index line 'not json': not JSON (Expecting value)",
        "3/a/abc:4: invalid vers '01.0.0': invalid leading zero in major version number",
    ]
    assert problems[-1] == (
        "Error: the index has 5 problem(s); nothing was imported (--skip-invalid imports the rest)"
    )
    assert site.crate_count() == 0
    assert site.jobs() == {}

    code, report = site.import_json()
    assert code == 1
    assert report["imported"] is False
    assert [(p["file"], p["line"], p["skips"]) for p in report["problems"]] == [
        ("1/b", 1, "line"),
        ("1/b", 0, "file"),
        ("2/xy", 2, "line"),
        ("3/a/abc", 3, "line"),
        ("3/a/abc", 4, "line"),
    ]
    assert site.crate_count() == 0


def test_skip_invalid_imports_the_rest_and_reports_what_it_skipped(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(database_url, tmp_path, invalid_files())
    code, report = site.import_json("--skip-invalid")
    assert code == 0
    assert report["imported"] is True
    assert (report["skipped_lines"], report["skipped_files"], report["problem_count"]) == (4, 1, 5)
    assert report["rewritten"] == ["2/xy", "3/a/abc"]
    assert report["crates"] == len(varied_lines())  # 1/b had nothing valid
    rendered = site.rendered()
    assert "1/b" not in rendered
    assert rendered["3/a/abc"] == crate_files(varied_lines())["3/a/abc"]
    assert rendered["2/xy"] == (line("Xy", "1.0.0") + "\n").encode()
    assert {k: v for k, v in rendered.items() if k not in ("2/xy", "3/a/abc")} == {
        k: v for k, v in crate_paths(site.files).items() if k not in ("2/xy", "3/a/abc", "1/b")
    }
    text = site.import_("--skip-invalid")  # the second time: all identical
    assert text.exit_code == 0, text.output
    assert "2/xy:2: version 1.0.0 is already at line 1" in text.stderr
    assert f"{len(varied_lines())} crate(s) were in the database already, identical" in text.stdout


# --------------------------------------------------------------------------- merging


def test_importing_into_a_database_holding_the_same_crates_merges(site: Site) -> None:
    with psycopg.connect(site.url) as conn:
        store.publish(conn, IndexEntry.from_line(line("elsewhere", "1.0.0")))
    assert site.import_().exit_code == 0
    code, report = site.import_json()
    assert code == 0
    assert (report["crates"], report["identical"], report["registry_only"]) == (
        0,
        len(varied_lines()),
        1,
    )
    assert site.crate_count() == len(varied_lines()) + 1
    assert site.rendered() == {
        **site.files,
        "el/se/elsewhere": (line("elsewhere", "1.0.0") + "\n").encode(),
    }


def test_crates_the_database_holds_otherwise_refuse_the_import_naming_them(site: Site) -> None:
    with psycopg.connect(site.url) as conn:
        for text in (line("abc", "0.0.1"), line("abc", "0.0.3"), line("mixedcase-name-2", "1.0.0")):
            store.publish(conn, IndexEntry.from_line(text))
    before = site.rendered()
    result = site.import_()
    assert result.exit_code == 1
    assert error_lines(result) == [
        "3/a/abc: the registry holds other versions of this crate (2 there, 2 here; they differ "
        "from line 2 of this file)",
        "mi/xe/mixedcase_name-2: the registry holds this crate as 'mixedcase-name-2' (names "
        "that differ only in case or in '-' versus '_' are one crate)",
        "Error: 2 crate(s) of the index conflict with the database, which holds them otherwise; "
        "nothing was imported",
    ]
    assert site.rendered() == before
    # A yank is a difference too.
    with psycopg.connect(database_url := site.url) as conn:
        conn.execute("DELETE FROM indexpub.crates")
        conn.commit()
    assert site.import_("--no-sparse").exit_code == 0
    with psycopg.connect(database_url) as conn:
        store.yank(conn, "xy", "1.0.0")
    code, report = site.import_json()
    assert code == 1
    assert [(c["file"], c["crate"]) for c in report["conflicts"]] == [("2/xy", "Xy")]


# --------------------------------------------------------------------------- hostile sources


HUGE = line("abc", "0.1.0", links="x" * MAX_LINE_BYTES)

HOSTILE = [
    (
        "a line over the limit",
        {"3/a/abc": (HUGE + "\n").encode()},
        [],
        f"3/a/abc:1: invalid index line of {len(HUGE)} bytes: longer than the limit of "
        f"{MAX_LINE_BYTES}",
    ),
    (
        "a crate file under another crate's path",
        {"se/rd/serde": (line("tokio", "1.0.0") + "\n").encode()},
        [],
        "se/rd/serde:1: names the crate 'tokio', whose file is to/ki/tokio, not this one",
    ),
    (
        "a file where no crate file goes",
        {"se/rd/Serde": (line("Serde", "1.0.0") + "\n").encode()},
        [],
        "se/rd/Serde: a file at a path where the index layout puts no crate file",
    ),
    (
        "a file at the wrong depth",
        {"se/serde": (line("serde", "1.0.0") + "\n").encode()},
        [],
        "se/serde: a file where the index layout has no entry",
    ),
    (
        "a symlink in the layout",
        {},
        [("se/rd/serde", SYMLINK, "../../3/a/abc")],
        "se/rd/serde: a symlink where the index layout has a crate file",
    ),
    (
        "a symlink at the top level",
        {},
        [("README", SYMLINK, "/etc/passwd")],
        "README: a symlink where the index layout has no entry",
    ),
    (
        "a submodule",
        {},
        [("ab/cd/abcd", SUBMODULE, "1" * 40)],
        "ab/cd/abcd: a submodule where the index layout has a crate file",
    ),
    (
        "a file where a directory goes",
        {"3/b": b"x\n"},
        [],
        "3/b: a file where the index layout has a directory",
    ),
    (
        "a directory where a file goes",
        {"1/q/x": b"x\n"},
        [],
        "1/q: a directory where the index layout has a crate file",
    ),
    (
        "names that collide",
        {
            "fo/o-/foo-bar": (line("foo-bar", "1.0.0") + "\n").encode(),
            "fo/o_/foo_bar": (line("foo_bar", "1.0.0") + "\n").encode(),
        },
        [],
        "fo/o_/foo_bar: the crate 'foo_bar' collides with fo/o-/foo-bar: crate names that "
        "differ only in case or in '-' versus '_' are one crate",
    ),
    (
        "a long name out of place",
        {"ab/cd/" + "x" * 300: b"x\n"},
        [],
        "ab/cd/'" + "x" * 76 + "...: a file at a path where the index layout puts no crate file",
    ),
]


@pytest.mark.parametrize(
    ("files", "special", "problem"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_a_hostile_index_is_refused_with_one_short_line_per_problem(
    database_url: str,
    tmp_path: Path,
    files: dict[str, bytes],
    special: list[tuple[str, str, Any]],
    problem: str,
) -> None:
    site = make_site(database_url, tmp_path, {**crate_files(varied_lines()), **files}, special)
    result = site.import_()
    assert result.exit_code == 1, result.output
    found = error_lines(result)
    assert found[0] == problem
    assert found[-1].startswith("Error: the index has ")
    assert len(result.output) < 2000  # whatever the input held (4 MiB of it, for one)
    assert site.crate_count() == 0
    # Skipped, the rest goes in; a symlink or submodule is never followed.
    code, report = site.import_json("--skip-invalid", "--no-sparse")
    assert code == 0
    expected = {k: v for k, v in crate_files(varied_lines()).items() if k not in files}
    if "fo/o-/foo-bar" in files:
        expected["fo/o-/foo-bar"] = files["fo/o-/foo-bar"]
    assert report["crates"] == len(expected)
    assert site.rendered() == expected


def test_a_file_over_the_size_limit_is_never_read(database_url: str, tmp_path: Path) -> None:
    site = make_site(database_url, tmp_path, crate_files(varied_lines()))
    size = len(site.files["fu/ll/full"])
    result = site.import_("--max-file-bytes", str(size - 1))
    assert result.exit_code == 1
    assert error_lines(result)[0] == (
        f"fu/ll/full: the file is {size} bytes, more than the limit of {size - 1} "
        "(--max-file-bytes)"
    )


def test_an_index_with_too_many_files_is_refused_before_anything_is_read(site: Site) -> None:
    result = site.import_("--max-files", "5")
    assert result.exit_code == 1
    assert error_lines(result) == [
        "Error: the index holds more than 5 crate files and directories; an import reads at "
        "most that many (--max-files)"
    ]


def test_a_source_that_is_not_an_index_is_one_line(site: Site, tmp_path: Path) -> None:
    result = site.import_(str(tmp_path / "nothing-here"))
    assert result.exit_code == 4
    assert "is not a git repository" in result.stderr
    empty = tmp_path / "empty.git"
    git("init", "--bare", "-q", str(empty))
    result = site.import_(str(empty))
    assert result.exit_code == 4
    assert "names no branch with commits" in result.stderr


# --------------------------------------------------------------------------- all or nothing


def _import_command(site: Site, *args: str) -> list[str]:
    """``indexpub import`` of the site's remote into its database, as a user runs it."""
    return [
        sys.executable,
        "-m",
        "indexpub",
        "--data-dir",
        str(site.data),
        "--database-url",
        site.url,
        "import",
        str(site.remote),
        *args,
    ]


def _import_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its INDEXPUB_ settings, plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    environment.update(env or {})
    return environment


def _subprocess_import(
    site: Site, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _import_command(site, *args),
        env=_import_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_crash_after_every_crate_was_written_leaves_nothing(site: Site) -> None:
    process = _subprocess_import(site, env={"INDEXPUB_CRASH_AT": "import-before-commit"})
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert site.crate_count() == 0
    assert site.jobs() == {}


def test_ctrl_c_leaves_nothing_and_says_so(database_url: str, tmp_path: Path) -> None:
    site = make_site(database_url, tmp_path, dict(index_files(Shape(20_000, 40_000))))
    process = _subprocess_import(site, "--workers", "2")
    assert process.stderr is not None
    seen = []
    for text in process.stderr:  # the first progress line: reading has started
        seen.append(text)
        if text.startswith("import: "):
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen) + rest
    assert rest.strip().splitlines()[-1] == "Error: interrupted: nothing was imported"
    assert site.crate_count() == 0


# --------------------------------------------------------------------------- sources and speed


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """``git daemon`` serving tmp_path: a network remote (git://) on this machine."""
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            f"--base-path={tmp_path}",
            f"--port={port}",
            "--listen=127.0.0.1",
            "--reuseaddr",
            str(tmp_path),
        ],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"git://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while subprocess.run(["git", "ls-remote", f"{url}/index.git"], capture_output=True).returncode:
        assert time.monotonic() < deadline, "git daemon did not start"
        time.sleep(0.1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait()


def test_a_network_index_is_fetched_one_commit_deep_and_imported(site: Site, daemon: str) -> None:
    code, report = site.import_json(f"{daemon}/index.git", "--no-sparse")
    assert code == 0, report
    assert report["source"] == f"{daemon}/index.git"
    assert report["commit"] == git(f"--git-dir={site.remote}", "rev-parse", "HEAD").strip()
    assert site.rendered() == site.files
    assert [p.name for p in site.data.iterdir() if p.name.startswith("import-")] == []


def test_worker_processes_import_the_same_rows_as_one_process(
    pg_server: tuple[str, Path | None], tmp_path: Path
) -> None:
    files = dict(index_files(Shape(700, 3000)))
    rows = []
    for workers in ("0", "2"):
        with pg.fresh_database(pg_server[0]) as url:
            site = make_site(url, tmp_path / workers, files)
            assert site.import_("--workers", workers, "--no-sparse").exit_code == 0
            with psycopg.connect(url) as conn:
                rows.append(
                    conn.execute(
                        "SELECT c.name, v.num, v.line, v.yanked FROM indexpub.versions v "
                        "JOIN indexpub.crates c ON c.id = v.crate_id ORDER BY v.id"
                    ).fetchall()
                )
            assert site.rendered() == files
    assert rows[0] == rows[1]
    assert len(rows[0]) == 3000


def test_progress_without_a_terminal_is_plain_lines(site: Site) -> None:
    result = site.import_("--no-sparse")
    count = len(varied_lines())
    tip = git(f"--git-dir={site.remote}", "rev-parse", "HEAD").strip()
    shown = result.stderr.splitlines()
    # The shared progress of the whole-index commands (cli/progress.py): the total first, a
    # line every few seconds (none in a run this short), then done of total, rate and time.
    assert shown[:2] == [
        f"importing {site.remote} (branch master, commit {tip})",
        f"import: {count:,} crate files",
    ]
    assert len(shown) == 3
    assert shown[2].startswith(f"import: {count:,} of {count:,} crate files (100%), ")
    assert re.search(r", [\d,]+ crate files/s, [\d.]+ s$", shown[2]), shown[2]


def test_progress_on_a_terminal_is_one_line_redrawn(site: Site) -> None:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        _import_command(site, "--no-sparse"),
        stdout=subprocess.PIPE,
        stderr=follower,
        env=_import_environment(),
    )
    os.close(follower)
    process.wait(timeout=120)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.returncode == 0
    text = shown.decode()
    count = len(varied_lines())
    # click's bar, redrawn in place: label, done/total, percent, rate and time left.
    assert "\r\x1b[?25limport  [" in text and f"{count}/{count}" in text and "100%" in text, text
    assert "crate files/s" in text, text
