"""The command line as a person meets it: defaults that need no flags, ``status``, and one line
with a documented exit code for every failure a person can cause."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result
from support.git import git
from support.index_helpers import fixture_files

from indexpub import config
from indexpub.cli import main
from indexpub.cli.common import EXIT_DATA_DIR, EXIT_DATABASE, EXIT_REMOTE

T = TypeVar("T")


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """``indexpub ARGS`` in this process, in ``env`` alone as far as indexpub's settings go."""
    overlay: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INDEXPUB_")}
    overlay["DATABASE_URL"] = None
    overlay.update(env or {})
    return CliRunner().invoke(main, list(args), env=overlay)


def one_line_failure(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said so in one line naming the thing and the fix."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------------- defaults


def test_init_index_without_path_initialises_the_configured_local_index(tmp_path: Path) -> None:
    target = tmp_path / "mine.git"
    result = cli("init-index", "--dl", "https://dl.example/{crate}", env=_env(index=target))
    assert result.exit_code == 0, result.output
    assert f"initialising the configured index {target}" in result.output
    assert git(f"--git-dir={target}", "show", "HEAD:config.json").startswith("{")


def test_init_index_without_anything_initialises_the_data_dirs_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cli("--data-dir", str(data), "init-index", env=_env())
    assert result.exit_code == 0, result.output
    shown = json.loads(git(f"--git-dir={data / 'index.git'}", "show", "HEAD:config.json"))
    assert shown == {"dl": config.local_index_dl(data)}


def test_init_index_refuses_a_network_index_without_path(tmp_path: Path) -> None:
    result = cli("init-index", "--dl", "x", env=_env(index="https://git.example/index.git"))
    assert result.exit_code == 2
    assert "is not a local path" in result.output


def test_a_command_says_what_it_creates_in_the_data_dir(registry_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cli(
        "--data-dir", str(data), "--database-url", registry_url, "worker", "--drain", env=_env()
    )
    assert result.exit_code == 0, result.output
    assert f"created a local index remote in {data / 'index.git'}" in result.output


def test_the_embedded_server_is_announced_found_and_stopped_by_its_data_dir() -> None:
    if os.environ.get("INDEXPUB_TEST_DATABASE_URL"):
        pytest.skip("the embedded server's own test")
    # Not under tmp_path: the server runs as a user of its own, which must reach its folder, and
    # a pytest session starting beside this one resets /tmp/pytest-of-<user> to mode 0700.
    root = Path(tempfile.mkdtemp(prefix="indexpub-db-test-"))
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    env.pop("DATABASE_URL", None)
    run = [sys.executable, "-m", "indexpub", "--data-dir", str(data)]
    try:
        started = subprocess.run(
            [*run, "db", "url"], env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr
        assert started.stderr.strip() == f"created an embedded PostgreSQL server in {data}/postgres"
        assert "dbname=indexpub" in started.stdout or "/indexpub" in started.stdout
    finally:
        stopped = subprocess.run(
            [*run, "db", "stop"], env=env, capture_output=True, text=True, timeout=120
        )
    assert stopped.stdout.strip() == f"stopped the embedded server in {data}/postgres"
    again = subprocess.run([*run, "db", "stop"], env=env, capture_output=True, text=True)
    assert again.stdout.startswith(f"no embedded server runs in {data}/postgres")
    shutil.rmtree(root, ignore_errors=True)


def test_demo_ends_saying_where_things_live_and_how_to_look(
    registry_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    result = cli("--data-dir", str(data), "--database-url", registry_url, "demo", env=_env())
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-3:]
    assert (
        last[0] == f"the index: {data}/index.git (look: git --git-dir {data}/index.git log --stat)"
    )
    assert last[1].startswith("the database: ") and "status" in last[1]
    assert last[2] == "it is yours: indexpub neither started it nor stops it"


def test_crate_dir_and_sparse_dir_options_place_the_files_outside_the_data_dir(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What several hosts share (README "Running on several hosts"): the .crate files and the
    sparse index, each where its option says, and nothing of them in the data directory."""
    # Present before the command, so CliRunner restores what the options set in this process.
    for var in ("INDEXPUB_CRATE_DIR", "INDEXPUB_SPARSE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "unused"))
    data, shared = tmp_path / "data", tmp_path / "shared"
    common = ["--data-dir", str(data), "--database-url", registry_url]
    common += ["--crate-dir", str(shared / "crates"), "--sparse-dir", str(shared / "sparse")]
    crate = fixture_files()[("plain", "0.1.0")]
    assert cli(*common, "publish", str(crate), env=_env()).exit_code == 0
    result = cli(*common, "worker", "--drain", "--verify-every", "0", env=_env())
    assert result.exit_code == 0, result.output
    stored = shared / "crates" / "plain" / "plain-0.1.0.crate"
    assert stored.read_bytes() == crate.read_bytes()
    assert (shared / "sparse" / "pl" / "ai" / "plain").read_text().count("\n") == 1
    assert not (data / "crates").exists() and not (data / "sparse").exists()
    dl = json.loads(git(f"--git-dir={data / 'index.git'}", "show", "HEAD:config.json"))["dl"]
    assert dl.startswith((shared / "crates").as_uri())


# --------------------------------------------------------------------------- status


def test_status_shows_database_index_jobs_worker_and_last_push(
    registry_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--database-url", registry_url]
    crate = fixture_files()[("plain", "0.1.0")]
    assert cli(*common, "publish", str(crate), env=_env()).exit_code == 0
    before = json.loads(cli(*common, "status", "--json", env=_env()).output)
    assert before["database"] == {"embedded": False, "url": _shown(registry_url)}
    assert before["index"]["error"].startswith("not created yet")
    assert before["jobs"]["by_state"]["ready"] == 2  # the git and the sparse job
    assert before["consumer"] is None and before["last_push"] is None

    worker = subprocess.Popen(
        [sys.executable, "-m", "indexpub", *common, "worker", "--queue", "index"],
        env=_env(),
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        after = _wait_for(
            lambda: _status(common),
            # The job row goes with the commit after the push: wait for that too.
            lambda s: (
                s["consumer"]
                and (s["last_push"] or {}).get("subject") == "Create crate `plain`"
                and "index" not in s["jobs"]["by_queue"]
            ),
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert after["index"]["branch"] == "master"
    assert after["index"]["tip_commit"]["subject"] == "Create crate `plain`"
    assert after["last_push"]["sha"] == after["index"]["tip"]
    assert after["consumer"]["queue"] == "index"
    assert after["consumer"]["name"].startswith("jobs worker index#0 pid ")
    assert after["jobs"]["by_queue"] == {"sparse": {"ready": 1}}
    screen = cli(*common, "status", env=_env())
    assert screen.exit_code == 0
    lines = screen.output.splitlines()
    assert lines[0] == f"database:   {_shown(registry_url)}"
    assert lines[1] == f"index:      {data}/index.git"
    assert lines[2].startswith("  tip:      master at ") and "Create crate `plain`" in lines[2]
    assert lines[3] == "jobs:       ready 1, scheduled 0, running 0, failing 0, dead 0"
    assert lines[4] == "  sparse:   ready 1"
    assert lines[5] == "worker:     none holds the index queue (start one: indexpub worker)"
    assert lines[6].startswith("last push:  ") and "Create crate `plain`" in lines[6]


def test_status_with_nothing_reachable_still_answers(tmp_path: Path) -> None:
    bad = "postgresql://someone:hunter2secret@127.0.0.1:1/none"
    result = cli("--data-dir", str(tmp_path), "--database-url", bad, "status", env=_env())
    assert result.exit_code == 0, result.output
    assert "hunter2secret" not in result.output
    assert result.output.splitlines()[:2] == [
        "database:   postgresql://someone:***@127.0.0.1:1/none",
        result.output.splitlines()[1],
    ]
    assert "unreachable: connection failed" in result.output.splitlines()[1]
    assert "jobs:       unknown (no database)" in result.output


# --------------------------------------------------------------------------- failures


def test_no_database_reachable(tmp_path: Path) -> None:
    bad = "postgresql://someone:hunter2secret@127.0.0.1:1/none"
    line = one_line_failure(
        cli("--database-url", bad, "jobs", "stats", env=_env()),
        EXIT_DATABASE,
        "cannot reach the database postgresql://someone:***@127.0.0.1:1/none",
        "check --database-url or INDEXPUB_DATABASE_URL",
    )
    assert "hunter2secret" not in line


def test_index_remote_not_found(registry_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.git"
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", registry_url]
    one_line_failure(
        cli(*common, "worker", "--drain", env=_env(index=missing)),
        EXIT_REMOTE,
        "the index remote cannot be used: git ls-remote failed",
        f"fatal: '{missing}' does not appear to be a git repository",
        "INDEXPUB_INDEX_URL",
    )


def test_index_remote_whose_head_names_a_missing_branch(registry_url: str, tmp_path: Path) -> None:
    remote = tmp_path / "index.git"
    assert cli("init-index", "--dl", "x", str(remote), env=_env()).exit_code == 0
    git(f"--git-dir={remote}", "symbolic-ref", "HEAD", "refs/heads/main")
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", registry_url]
    one_line_failure(
        cli(*common, "worker", "--drain", env=_env(index=remote)),
        EXIT_REMOTE,
        f"the index remote {remote} has a HEAD that names no branch with commits",
        "git symbolic-ref HEAD refs/heads/BRANCH",
    )


def test_index_remote_without_config_json(registry_url: str, tmp_path: Path) -> None:
    remote = tmp_path / "index.git"
    work = tmp_path / "work"
    git("init", "-q", "-b", "master", str(work))
    (work / "README").write_text("not an index\n")
    git("add", "README", cwd=work)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "x", cwd=work)
    git("clone", "-q", "--bare", str(work), str(remote))
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", registry_url]
    one_line_failure(
        cli(*common, "worker", "--drain", env=_env(index=remote)),
        EXIT_REMOTE,
        f"the index remote {remote} has no config.json on its branch 'master'",
        "indexpub init-index",
    )


@pytest.mark.parametrize("command", [["db", "url"], ["init-index"]], ids=" ".join)
def test_data_dir_without_permission(tmp_path: Path, command: list[str]) -> None:
    """Run as a process that cannot write the data dir: as root, with the capabilities that
    bypass file permissions dropped (root ignores mode bits otherwise)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    data = locked / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, this test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
        os.chown(locked, 65534, 65534)
    locked.chmod(0o500)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "indexpub", "--data-dir", str(data), *command],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o700)
    assert done.returncode == EXIT_DATA_DIR, (done.returncode, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write the data directory {data}: permission denied on")
    assert line.endswith("(choose one you can write with --data-dir or INDEXPUB_DATA_DIR)")


def test_exit_codes_are_documented_in_help() -> None:
    shown = " ".join(cli("--help").output.split())
    for text in (
        "1 refused or failed",
        "2 usage error",
        "3 the database cannot be reached",
        "4 the index remote cannot be used",
        "5 the data directory cannot be written",
    ):
        assert text in shown


# --------------------------------------------------------------------------- helpers


def _env(*, index: Path | str | None = None) -> dict[str, str]:
    """The environment of a command: none of the developer's INDEXPUB_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXPUB_")}
    env.pop("DATABASE_URL", None)
    if index is not None:
        env["INDEXPUB_INDEX_URL"] = str(index)
    return env


def _shown(url: str) -> str:
    from indexpub.cli.common import redact_url

    return redact_url(url)


def _status(common: list[str]) -> dict[str, Any]:
    result = cli(*common, "status", "--json", env=_env())
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.output)
    return found


def _wait_for(probe: Callable[[], T], done: Callable[[T], object], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)
