"""``indexpub check``: one command for alerting, in the Nagios/Sensu plugin convention.

It prints one line, ``INDEXPUB STATE - what is wrong | perfdata``, and exits 0 OK, 1 WARNING,
2 CRITICAL or 3 UNKNOWN, which every Nagios-compatible monitor (Nagios, Icinga, Sensu, Zabbix
through its external checks, or a cron job) understands; ``--json`` says the same for scripts.
When checks disagree the worst state wins, ranked CRITICAL, WARNING, UNKNOWN, OK (as the
monitoring plugins' ``max_state_alt``): a check that cannot be made never hides one that fails.

It starts nothing: a stopped embedded server is UNKNOWN, like an unreachable database or remote.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from indexpub.cli.common import Settings, first_line, pass_settings

if TYPE_CHECKING:
    import psycopg

    from jobs.store import QueueHealth

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SKIPPED = "SKIPPED"
# Worst first when states combine (monitoring-plugins' max_state_alt).
_RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}

CHECKS = ("age", "dead", "attempts", "consumer", "verify", "remote")

# How long the check waits for the database (to connect, then for each statement); the remote
# is given the same by `indexpub status`, whose look at it this command shares.
TIMEOUT = 10


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Seconds, or a number with a unit: 90, 90s, 15m, 1.5h, 1d."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", value)
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a duration: seconds, or a number with s, m, h or d (90, 15m)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


DURATION: dict[str, Any] = {"metavar": "DURATION", "callback": _duration}


class UsageUnknown(click.UsageError):
    """A usage error of check's own options: exit 3 (UNKNOWN), not click's 2, which a monitor
    would read as CRITICAL."""

    exit_code = UNKNOWN


class _UnknownOnUsageError(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if isinstance(exc, UsageUnknown):
                raise
            raise UsageUnknown(exc.format_message(), exc.ctx) from None


@dataclass
class Finding:
    """The outcome of one check (of one queue, for the queue checks)."""

    check: str
    state: int | None  # None: skipped
    detail: str
    queue: str | None = None
    value: float | None = None
    warn: float | None = None
    crit: float | None = None
    unit: str = ""
    target: str | None = None  # the verify check's: the copy verified, "remote" or "sparse"

    def as_json(self) -> dict[str, Any]:
        state = SKIPPED if self.state is None else STATE_NAMES[self.state]
        found = {k: v for k, v in asdict(self).items() if k != "unit"}
        return {**found, "state": state}


@dataclass(frozen=True)
class Thresholds:
    warn_age: float
    crit_age: float
    warn_attempts: int
    crit_attempts: int
    crit_dead: int
    warn_behind: float
    crit_behind: float
    clock_skew: float
    warn_drift: int = 1
    crit_drift: int = 10
    verify_age: float = 3 * 3600.0


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    queues: dict[str, Any] = field(default_factory=dict)
    remote: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    sparse_verify: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> int:
        states = [f.state for f in self.findings if f.state is not None]
        return max(states, key=_RANK.__getitem__, default=OK)

    def summary(self) -> str:
        state = self.state
        if state == OK:
            shown = [f for f in self.findings if f.state == OK]
            details = [f.detail for f in shown]
            if self.queues:
                # All is well: the counts of each queue in a few words, then the remote and
                # the last verify.
                details = [_queue_line(queue, facts) for queue, facts in self.queues.items()]
                details += [f.detail for f in shown if f.check in ("remote", "verify")]
        else:
            # What is wrong, the worst first.
            wrong = [f for f in self.findings if f.state not in (None, OK)]
            wrong.sort(key=lambda f: _RANK[f.state or OK], reverse=True)
            details = list(dict.fromkeys(f.detail for f in wrong))
        line = f"INDEXPUB {STATE_NAMES[state]} - {'; '.join(details)}"
        perfdata = " ".join(_perfdata(f) for f in self.findings if f.value is not None)
        return f"{line} | {perfdata}" if perfdata else line


_HELP = """Check the queue and the index remote for alerting, as a Nagios/Sensu plugin: one
line, `INDEXPUB STATE - what is wrong | perfdata`, and the exit code 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN (unlike every other indexpub command). The worst state sets the
exit code; the line names every problem, the worst first.

\b
The checks (each can be left out with --skip NAME):
  age       each queue's oldest ready job, by when it was enqueued
            (--warn-age, --crit-age; crates.io pages at 15 minutes)
  dead      dead jobs, which never run again without `indexpub jobs retry`
            (--crit-dead)
  attempts  the live job tried most often without succeeding
            (--warn-attempts, --crit-attempts)
  consumer  CRITICAL when jobs of the index queue are ready and no worker
            holds its single-consumer lock
  verify    drift found by the last verify (hourly, by the worker; or
            indexpub verify), counted in crates (--warn-drift,
            --crit-drift); WARNING when it is older than --verify-age;
            SKIPPED when none was ever recorded. The same, on its own, for
            the last verify --sparse (the sparse directory), except its
            age: it is run by hand, after a crash
  remote    how long the index remote's tip has been older than a change
            in the database (publish, yank, unyank) that it should have
            (--warn-behind, --crit-behind, --clock-skew); deletions are
            not dated, and the tip's commit must be in this data dir's
            clone or a local remote: run check where the worker runs

UNKNOWN (3): the database or the remote cannot be reached, or the embedded server is not running
(check starts nothing). Durations are seconds or take a unit: 90, 15m, 1h. A --crit-X given
alone below the default --warn-X brings the warning threshold down with it."""


@click.command(
    cls=_UnknownOnUsageError, help=_HELP, short_help="Alerting checks (Nagios exit codes)."
)
@click.option(
    "--warn-age",
    **DURATION,
    default="5m",
    show_default=True,
    help="WARNING when a queue's oldest ready job was enqueued longer ago than this.",
)
@click.option(
    "--crit-age", **DURATION, default="15m", show_default=True, help="CRITICAL, the same."
)
@click.option(
    "--warn-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="WARNING when a live job has been tried this many times without succeeding.",
)
@click.option(
    "--crit-attempts",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="CRITICAL, the same.",
)
@click.option(
    "--crit-dead",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CRITICAL when a queue has this many dead jobs.",
)
@click.option(
    "--warn-behind",
    **DURATION,
    default="15m",
    show_default=True,
    help="WARNING when the remote's tip has been older than a database change for this long.",
)
@click.option(
    "--crit-behind", **DURATION, default="1h", show_default=True, help="CRITICAL, the same."
)
@click.option(
    "--clock-skew",
    **DURATION,
    default="5s",
    show_default=True,
    help="Changes this close after the tip's commit time count as in it (the tip is dated by "
    "the worker's clock, changes by the database server's).",
)
@click.option(
    "--warn-drift",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="WARNING when the last verify found this many crates drifted from the database.",
)
@click.option(
    "--crit-drift", type=click.IntRange(min=1), default=10, show_default=True, help="CRITICAL."
)
@click.option(
    "--verify-age",
    **DURATION,
    default="3h",
    show_default=True,
    help="WARNING when the last verify that could check is older than this (two hourly "
    "verifies missed).",
)
@click.option("--skip", multiple=True, type=click.Choice(CHECKS), help="Leave a check out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_settings
@click.pass_context
def check(
    ctx: click.Context,
    settings: Settings,
    warn_age: float,
    crit_age: float,
    warn_attempts: int,
    crit_attempts: int,
    crit_dead: int,
    warn_behind: float,
    crit_behind: float,
    clock_skew: float,
    warn_drift: int,
    crit_drift: int,
    verify_age: float,
    skip: tuple[str, ...],
    as_json: bool,
) -> None:
    # A critical threshold given alone below the default warning one lowers the warning one
    # with it; both given the wrong way round is a mistake worth stopping.
    for name in ("age", "attempts", "behind", "drift"):
        warn, crit = ctx.params[f"warn_{name}"], ctx.params[f"crit_{name}"]
        if warn <= crit:
            continue
        if ctx.get_parameter_source(f"warn_{name}") != ParameterSource.DEFAULT:
            raise UsageUnknown(f"--warn-{name} must not be above --crit-{name}", ctx)
        ctx.params[f"warn_{name}"] = crit
    warn_age, warn_attempts, warn_behind, warn_drift = (
        ctx.params["warn_age"],
        ctx.params["warn_attempts"],
        ctx.params["warn_behind"],
        ctx.params["warn_drift"],
    )
    limits = Thresholds(
        warn_age,
        crit_age,
        warn_attempts,
        crit_attempts,
        crit_dead,
        warn_behind,
        crit_behind,
        clock_skew,
        warn_drift,
        crit_drift,
        verify_age,
    )
    try:
        report = run_checks(settings, limits, set(skip))
    except Exception as exc:  # a bug or a surprise: still one line, and UNKNOWN
        from indexpub.gitindex.process import scrub_secrets

        report = Report([Finding("check", UNKNOWN, scrub_secrets(f"check failed: {exc!r}"))])
    if as_json:
        click.echo(
            json.dumps(
                {
                    "state": STATE_NAMES[report.state],
                    "exit_code": report.state,
                    "summary": report.summary(),
                    "checks": [f.as_json() for f in report.findings],
                    "queues": report.queues,
                    "remote": report.remote,
                    "verify": report.verify,
                    "sparse_verify": report.sparse_verify,
                }
            )
        )
    else:
        click.echo(report.summary())
    ctx.exit(report.state)


def run_checks(settings: Settings, limits: Thresholds, skip: set[str]) -> Report:
    """Every check, from one connection and one look at the remote."""
    import psycopg

    report = Report()
    url = settings.running_url()
    database_error = None
    if url is None:
        database_error = (
            f"the embedded database in {settings.pgdata} is not running (check starts nothing; "
            "any other command starts it)"
        )
    else:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=TIMEOUT) as conn:
                _queue_checks(conn, report, limits, skip)
                if "remote" not in skip:
                    _remote_check(conn, settings, report, limits)
                if "verify" not in skip:
                    _verify_check(conn, report, limits)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            database_error = (
                f"the database {settings.shown_database} lacks indexpub's tables or their latest "
                f"migration (run indexpub migrate): {first_line(str(exc))}"
            )
        except psycopg.Error as exc:
            database_error = (
                f"cannot reach the database {settings.shown_database}: {first_line(str(exc))}"
            )
    if database_error is not None:
        report.findings = [
            Finding(name, UNKNOWN, database_error) for name in CHECKS if name not in skip
        ]
        report.queues = {}
        report.verify = {}
        report.sparse_verify = {}
    return report


def _queue_checks(
    conn: psycopg.Connection[Any], report: Report, limits: Thresholds, skip: set[str]
) -> None:
    from indexpub.registry import sql
    from indexpub.registry.queue import app

    conn.execute(sql.SET_STATEMENT_TIMEOUT, (f"{TIMEOUT}s",))
    health = app.store.health(conn)
    for queue, one in health.items():
        config = app.registry.queue(queue)
        holder = app.store.consumer(conn, queue) if config.single_consumer else None
        report.queues[queue] = _queue_facts(one, holder)
        if "age" not in skip:
            report.findings.append(_age(one, limits))
        if "dead" not in skip:
            report.findings.append(_dead(one, limits))
        if "attempts" not in skip:
            report.findings.append(_attempts(one, limits))
        if "consumer" not in skip and config.single_consumer:
            name = None if holder is None else f"{holder.application_name} (pid {holder.pid})"
            report.findings.append(_consumer(one, name))


def _age(one: QueueHealth, limits: Thresholds) -> Finding:
    age = one.oldest_ready_age or 0.0
    state = _grade(age, limits.warn_age, limits.crit_age, above=True)
    if one.ready == 0:
        detail = f"{one.queue}: nothing ready"
    else:
        jobs = f"{one.ready} job{'s' if one.ready > 1 else ''}"
        detail = f"{one.queue}: {jobs} ready, the oldest enqueued {_span(age)} ago"
        if state != OK:
            limit = limits.crit_age if state == CRITICAL else limits.warn_age
            detail += f" (over {_span(limit)})"
    return Finding("age", state, detail, one.queue, age, limits.warn_age, limits.crit_age, "s")


def _dead(one: QueueHealth, limits: Thresholds) -> Finding:
    state = _grade(one.dead, None, limits.crit_dead)
    detail = (
        f"{one.queue}: no dead jobs"
        if one.dead == 0
        else f"{one.queue}: {one.dead} dead job{'s' if one.dead > 1 else ''}"
        f" (see indexpub jobs list --state dead; indexpub jobs retry --all-dead)"
    )
    return Finding("dead", state, detail, one.queue, one.dead, None, limits.crit_dead)


def _attempts(one: QueueHealth, limits: Thresholds) -> Finding:
    tried = one.most_tried
    attempts = 0 if tried is None else tried.attempts
    state = _grade(attempts, limits.warn_attempts, limits.crit_attempts)
    if tried is None:
        detail = f"{one.queue}: no failing jobs"
    else:
        from indexpub.gitindex.process import scrub_secrets

        error = _last_line(scrub_secrets(tried.last_error))
        detail = (
            f"{one.queue}: job {tried.id} ({tried.job_type}) tried {attempts} time"
            f"{'s' if attempts > 1 else ''} without success: {error}"
        )
    return Finding(
        "attempts", state, detail, one.queue, attempts, limits.warn_attempts, limits.crit_attempts
    )


def _consumer(one: QueueHealth, holder: str | None) -> Finding:
    if holder is not None:
        return Finding("consumer", OK, f"{one.queue}: held by {holder}", one.queue)
    if one.ready == 0:
        return Finding("consumer", OK, f"{one.queue}: no worker, nothing ready", one.queue)
    return Finding(
        "consumer",
        CRITICAL,
        f"{one.queue}: {one.ready} job{'s' if one.ready > 1 else ''} ready and no worker holds "
        "the queue (start one: indexpub worker)",
        one.queue,
    )


def _verify_check(conn: psycopg.Connection[Any], report: Report, limits: Thresholds) -> None:
    """The last verify of each copy, the remote and the sparse directory, graded on its own:
    a clean run of one never hides the other's drift."""
    from indexpub.registry import runs

    for target in runs.TARGETS:
        _verify_target(conn, report, limits, target)


def _verify_target(
    conn: psycopg.Connection[Any], report: Report, limits: Thresholds, target: str
) -> None:
    """A copy's last verify's drift (crates whose file is not what the database renders, with
    no job on the way to write it), graded by --warn-drift and --crit-drift. For the remote,
    WARNING too when its last verify that could check is older than --verify-age: the worker
    verifies it hourly. The sparse directory is verified by hand (after a crash), so its last
    run's age says nothing wrong."""
    from indexpub.registry import runs

    sparse = target == runs.SPARSE
    # The sparse directory's findings say which copy they are about; the remote's read as
    # they always have.
    named = "sparse directory: " if sparse else ""
    command = "verify --sparse" if sparse else "verify"
    latest = runs.latest_verifies(conn, target)
    last, checked = latest.last, latest.checked
    if last is None:
        never = (
            "never verified (indexpub verify --sparse runs one)"
            if sparse
            else "no verify was ever recorded (the worker runs one every hour unless "
            "--verify-every 0; indexpub verify runs one now)"
        )
        report.findings.append(Finding("verify", None, named + never, target=target))
        return
    failed = None
    if last.error is not None and last.finished_at is not None:
        ago = _span(_seconds_since(last.finished_at, latest.now))
        failed = f"the last {command}, {ago} ago, could not check: {_last_line(last.error)}"
    facts = {
        "last": _verify_facts(last),
        "last_checked": None if checked is None else _verify_facts(checked),
    }
    if sparse:
        report.sparse_verify = facts
    else:
        report.verify = facts
    if checked is None or checked.finished_at is None:
        detail = named + (failed or f"no {command} could check yet")
        report.findings.append(Finding("verify", UNKNOWN, detail, target=target))
        return
    age = _seconds_since(checked.finished_at, latest.now)
    drift = checked.drifted_count or 0
    state = _grade(drift, limits.warn_drift, limits.crit_drift)
    at = f"in {checked.remote}" if sparse else f"at {(checked.tip or '')[:12]}"
    if drift == 0:
        detail = f"{named}last {command} {_span(age)} ago: the crate files {at} equal the database"
    else:
        names = ", ".join(
            f"{d.get('name')} ({d.get('kind')})" for d in checked.sample[:5] if isinstance(d, dict)
        )
        more = f" and {drift - 5} more" if drift > 5 else ""
        drifted = f"{drift} crate{' file' * sparse}{'s' * (drift != 1)}"
        repair = (
            "indexpub repair --sparse enqueues their write_sparse"
            if sparse
            else "indexpub repair enqueues their sync"
        )
        detail = (
            f"{named}last {command} {_span(age)} ago found {drifted} drifted from the database "
            f"{at}: {names}{more} ({repair})"
        )
    if not sparse and age > limits.verify_age:
        state = max(state, WARNING, key=_RANK.__getitem__)
        detail += f"; older than {_span(limits.verify_age)}: is a worker running the verify queue?"
    if failed is not None and last.id != checked.id:
        detail += f"; {failed}"
    report.findings.append(
        Finding(
            "verify",
            state,
            detail,
            None,
            drift,
            limits.warn_drift,
            limits.crit_drift,
            target=target,
        )
    )


def _verify_facts(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "target": run.target,
        # The remote's URL, or the sparse directory.
        "where": run.remote,
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "ran_by": run.ran_by,
        "tip": run.tip,
        "crates": run.crates,
        "files": run.files,
        "drifted": run.drifted_count,
        "pending": run.pending_count,
        "error": run.error,
    }


def _seconds_since(then: datetime, now: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _remote_check(
    conn: psycopg.Connection[Any], settings: Settings, report: Report, limits: Thresholds
) -> None:
    """How long the remote's tip has been older than a change in the database: the age of the
    first change made more than --clock-skew after the tip's commit time (zero when none)."""
    from indexpub.cli.status import Status
    from indexpub.cli.status import _index as look_at_index
    from indexpub.registry import store

    found = Status()
    look_at_index(settings, found)
    index = found.index
    report.remote = {"url": index["url"]}
    if "error" in index:
        error = str(index["error"]).removeprefix("unreachable: ")
        report.findings.append(
            Finding("remote", UNKNOWN, f"cannot reach the index remote {index['url']}: {error}")
        )
        return
    if "tip" not in index:
        report.findings.append(
            Finding("remote", UNKNOWN, f"the index remote {index['url']} has no commits")
        )
        return
    report.remote["tip"] = index["tip"]
    commit = index.get("tip_commit")
    if commit is None:
        report.findings.append(
            Finding(
                "remote",
                UNKNOWN,
                f"the remote's tip {index['tip'][:12]} is not in this data dir's clone (run "
                "check where the worker runs, with its --data-dir)",
            )
        )
        return
    tip_time = datetime.fromtimestamp(commit["time"], UTC)
    changes = store.changes_after(conn, tip_time + timedelta(seconds=limits.clock_skew))
    behind = 0.0 if changes.first is None else (changes.now - changes.first).total_seconds()
    report.remote.update(
        tip_time=tip_time.isoformat(),
        first_change_after_tip=None if changes.first is None else changes.first.isoformat(),
        newest_change=None if changes.newest is None else changes.newest.isoformat(),
        behind=behind,
    )
    state = _grade(behind, limits.warn_behind, limits.crit_behind, above=True)
    tip_age = (changes.now - tip_time).total_seconds()
    tip = f"{index['tip'][:12]}, {_span(tip_age)} old"
    if changes.first is None:
        detail = f"remote tip {tip}, no change in the database after it"
    else:
        detail = f"remote tip {tip}, older than a change made {_span(behind)} ago"
        if state != OK:
            limit = limits.crit_behind if state == CRITICAL else limits.warn_behind
            detail += f" (over {_span(limit)})"
    report.findings.append(
        Finding("remote", state, detail, None, behind, limits.warn_behind, limits.crit_behind, "s")
    )


def _queue_facts(one: QueueHealth, holder: Any) -> dict[str, Any]:
    facts = asdict(one)
    if one.most_tried is not None:
        facts["most_tried"]["last_error"] = _last_line(one.most_tried.last_error)
    facts["consumer"] = (
        None
        if holder is None
        else {
            "pid": holder.pid,
            "name": holder.application_name,
            "since": str(holder.backend_start),
        }
    )
    del facts["queue"]
    return facts


def _queue_line(queue: str, facts: dict[str, Any]) -> str:
    line = f"{queue}: {facts['ready']} ready, {facts['failing']} failing, {facts['dead']} dead"
    if facts["consumer"] is not None:
        line += f", held by {facts['consumer']['name']}"
    return line


def _grade(value: float, warn: float | None, crit: float | None, *, above: bool = False) -> int:
    """CRITICAL or WARNING when ``value`` reaches the threshold (passes it, with ``above``)."""

    def past(limit: float | None) -> bool:
        return limit is not None and (value > limit if above else value >= limit)

    return CRITICAL if past(crit) else WARNING if past(warn) else OK


_PERF_LABELS = {
    "age": "oldest_ready_age",
    "dead": "dead",
    "attempts": "most_attempts",
    "remote": "remote_behind",
    "verify": "verify_drift",
}


def _perfdata(finding: Finding) -> str:
    label = _PERF_LABELS.get(finding.check, finding.check)
    if finding.queue is not None:
        label = f"{finding.queue}_{label}"
    elif finding.target == "sparse":  # the remote's keeps the label it always had
        label = f"sparse_{label}"
    limits = ";".join("" if x is None else f"{x:g}" for x in (finding.warn, finding.crit))
    return f"{label}={finding.value:g}{finding.unit};{limits}"


def _span(seconds: float) -> str:
    """A duration for a person: 0.4s, 45s, 12m 3s, 2h 5m, 3d 4h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, next_unit, next_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            rest = (whole % size) // next_size
            return f"{whole // size}{unit}" + (f" {rest}{next_unit}" if rest else "")
    return f"{whole}s"


def _last_line(error: str) -> str:
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else error.strip()
    return text if len(text) <= 200 else text[:199] + "…"
