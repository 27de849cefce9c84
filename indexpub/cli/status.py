"""``indexpub status``: one screen on the database, the index remote, the jobs and the worker."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import click

from indexpub import config
from indexpub.cli.common import Settings, first_line, pass_settings, redact_url
from indexpub.cli.queue import JOB_STATES

# How long status waits for the database and for the remote, so that it answers even when they
# do not.
TIMEOUT = 10.0


@dataclass
class Commit:
    sha: str
    time: int  # seconds since the epoch
    subject: str


@dataclass
class Status:
    database: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, Any] | None = None
    consumer: dict[str, Any] | None = None
    last_push: dict[str, Any] | None = None
    # The newest recorded verify (registry/runs.py), and the squash commit at the root of the
    # branch, if the branch was squashed: the two whole-index operations an operator schedules.
    last_verify: dict[str, Any] | None = None
    last_squash: dict[str, Any] | None = None
    # The newest `verify --sparse`: the sparse directory is another copy, verified on its own.
    last_sparse_verify: dict[str, Any] | None = None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
def status(settings: Settings, as_json: bool) -> None:
    """The database in use, the index remote and its tip, jobs by state, the worker that holds
    the index queue, the last push, the last verify (and verify --sparse) and the last squash.
    Starts nothing: a stopped embedded server is shown as such."""
    found = Status()
    _database(settings, found)
    _index(settings, found)
    if as_json:
        click.echo(json.dumps(asdict(found), default=str))
        return
    for line in _screen(found):
        click.echo(line)


def _database(settings: Settings, found: Status) -> None:
    import psycopg

    from indexpub.registry import runs
    from indexpub.registry.queue import INDEX_QUEUE, app

    if settings.embedded:
        running = (settings.pgdata / "postmaster.pid").exists()
        found.database = {"embedded": True, "where": str(settings.pgdata), "running": running}
        if not running:
            return
        url = config.database_url(settings.database_url, settings.data_dir)
    else:
        url = config.configured_database_url(settings.database_url) or ""
        found.database = {"embedded": False, "url": redact_url(url)}
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=int(TIMEOUT)) as conn:
            stats = app.store.stats(conn)
            holder = app.store.consumer(conn, INDEX_QUEUE)
            found.last_verify = _last_verify(conn, runs.REMOTE)
            found.last_sparse_verify = _last_verify(conn, runs.SPARSE)
    except psycopg.Error as exc:
        found.database["error"] = f"unreachable: {first_line(str(exc))}"
        return
    by_state = dict.fromkeys(JOB_STATES, 0)
    by_queue: dict[str, dict[str, int]] = {}
    for row in stats:
        by_state[row.state] = by_state.get(row.state, 0) + row.count
        queue = by_queue.setdefault(row.queue, {})
        queue[row.state] = queue.get(row.state, 0) + row.count
    found.jobs = {"by_state": by_state, "by_queue": by_queue}
    if holder is not None:
        found.consumer = {
            "queue": holder.queue,
            "pid": holder.pid,
            "name": holder.application_name,
            "client_addr": holder.client_addr,
            "since": holder.backend_start.isoformat(),
        }


def _last_verify(conn: Any, target: str) -> dict[str, Any] | None:
    """The newest verify run of ``target``; None before the first (or before the table or its
    target column exists: status migrates nothing)."""
    import psycopg

    from indexpub.registry import runs

    try:
        latest = runs.latest_verifies(conn, target)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return None
    run = latest.last
    if run is None or run.finished_at is None:
        return None
    return {
        "finished_at": run.finished_at.astimezone(UTC).isoformat(),
        "seconds_ago": max(0, int((latest.now - run.finished_at).total_seconds())),
        "ran_by": run.ran_by,
        "files": run.files,
        "drifted_count": run.drifted_count,
        "error": run.error,
    }


def _index(settings: Settings, found: Status) -> None:
    from indexpub.gitindex.index import remote_head_by_url
    from indexpub.gitindex.process import GitError, scrub_secrets

    remote_url = settings.index_location
    found.index = {"url": scrub_secrets(remote_url)}
    if config.configured_index_url(settings.index_url) is None and not Path(remote_url).exists():
        found.index["error"] = "not created yet (the first command that needs it creates it)"
        return
    clone = config.clone_path(settings.data_dir, remote_url)
    try:
        branch, tip = remote_head_by_url(remote_url, TIMEOUT)
    except GitError as exc:
        # failure_message joins git's lines with " | ": its first says what went wrong.
        error = first_line(scrub_secrets(str(exc))).split(" | ")[0]
        found.index["error"] = f"unreachable: {error}"
        return
    if branch is not None:
        found.index["branch"] = branch
    if tip is not None:
        found.index["tip"] = tip
        for where in (clone, Path(remote_url)):
            commit = _commit(where, tip)
            if commit is not None:
                found.index["tip_commit"] = asdict(commit)
                squashed = _squash_root(where, tip)
                found.last_squash = None if squashed is None else asdict(squashed)
                break
    if branch is not None:
        # The newest commit of ours that the clone knows on the branch: the last push.
        pushed = _commit(clone, f"refs/remotes/origin/{branch}", author="<indexpub@localhost>")
        found.last_push = None if pushed is None else asdict(pushed)


def _commit(git_dir: Path, rev: str, *, author: str | None = None) -> Commit | None:
    """The commit ``rev`` names in ``git_dir`` (the newest one by ``author``); None when the
    repository or the commit is not there."""
    if not (git_dir / "HEAD").exists():
        return None
    args = ["git", f"--git-dir={git_dir}", "log", "-1", "--format=%H%x00%ct%x00%s"]
    if author is not None:
        # The commit that created the index is ours too, but no push of a crate's file.
        args += ["--fixed-strings", f"--author={author}", "--min-parents=1"]
    result = subprocess.run(
        [*args, rev, "--"], capture_output=True, timeout=TIMEOUT, check=False, text=True
    )
    parts = result.stdout.strip().split("\0")
    if result.returncode != 0 or len(parts) != 3:
        return None
    return Commit(parts[0], int(parts[1]), parts[2])


def _squash_root(git_dir: Path, tip: str) -> Commit | None:
    """The squash commit the branch starts from; None when its root is no squash (never
    squashed) or git cannot tell within TIMEOUT (the walk is the history since the last
    squash)."""
    from indexpub.pipeline.squash import SUBJECT

    try:
        roots = subprocess.run(
            ["git", f"--git-dir={git_dir}", "rev-list", "--max-parents=0", tip, "--"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
            text=True,
        )
    except subprocess.TimeoutExpired:
        return None
    shas = roots.stdout.split()
    if roots.returncode != 0 or len(shas) != 1:
        return None
    root = _commit(git_dir, shas[0])
    return root if root is not None and root.subject == SUBJECT else None


def _ago(seconds_since_epoch: int) -> str:
    return _age(max(0, int(time.time()) - seconds_since_epoch))


def _age(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{seconds} seconds ago"


def _describe(commit: dict[str, Any]) -> str:
    return f"{commit['sha'][:12]}, {_ago(commit['time'])}: {commit['subject']}"


def _screen(found: Status) -> list[str]:
    db = found.database
    if db.get("embedded"):
        state = "running" if db["running"] else "not running (any command starts it)"
        lines = [f"database:   embedded PostgreSQL in {db['where']}, {state}"]
    else:
        lines = [f"database:   {db['url']}"]
    if "error" in db:
        lines.append(f"            {db['error']}")
    index = found.index
    lines.append(f"index:      {index['url']}")
    if "error" in index:
        lines.append(f"            {index['error']}")
    elif "tip" in index:
        branch = index.get("branch", "?")
        commit = index.get("tip_commit")
        described = _describe(commit) if commit else index["tip"][:12]
        lines.append(f"  tip:      {branch} at {described}")
    else:
        lines.append("  tip:      none (the remote's HEAD names no commit)")
    if found.jobs is None:
        lines.append("jobs:       unknown (no database)")
    else:
        by_state = found.jobs["by_state"]
        counts = ", ".join(f"{state} {by_state.get(state, 0)}" for state in JOB_STATES)
        lines.append(f"jobs:       {counts}")
        for queue, states in sorted(found.jobs["by_queue"].items()):
            counts = ", ".join(
                f"{state} {states[state]}" for state in JOB_STATES if state in states
            )
            lines.append(f"  {queue + ':':<9} {counts}")
    consumer = found.consumer
    if found.jobs is not None:
        if consumer is None:
            lines.append("worker:     none holds the index queue (start one: indexpub worker)")
        else:
            lines.append(
                f"worker:     {consumer['name']} (backend pid {consumer['pid']},"
                f" connected since {consumer['since'][:19]})"
            )
    push = found.last_push
    lines.append(f"last push:  {_describe(push) if push else 'none seen by this data dir'}")
    if found.jobs is not None:
        lines.append(f"last verify: {_verify_line(found.last_verify)}")
        sparse = _verify_line(found.last_sparse_verify, "indexpub verify --sparse")
        lines.append(f"last verify --sparse: {sparse}")
    if "tip" in index:
        squash = found.last_squash
        described = _describe(squash) if squash else "none (the branch was never squashed)"
        lines.append(f"last squash: {described}")
    return lines


def _verify_line(
    run: dict[str, Any] | None, runs_one: str = "indexpub verify, or the worker's hourly job"
) -> str:
    if run is None:
        return f"none recorded ({runs_one})"
    when = f"{run['finished_at'][:19].replace('T', ' ')} UTC, {_age(run['seconds_ago'])}"
    if run["error"] is not None:
        return f"{when}, by {run['ran_by']}: could not check: {first_line(run['error'])}"
    drifted = run["drifted_count"] or 0
    found = "clean" if not drifted else f"{drifted} crate(s) drifted"
    return f"{when}, by {run['ran_by']}: {found} ({run['files']} files)"
