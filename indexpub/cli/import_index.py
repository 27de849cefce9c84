"""``indexpub import``: read an existing index into the database (see pipeline/importing.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from indexpub.cli.common import CommandError, Settings, pass_settings
from indexpub.cli.progress import Progress
from indexpub.domain.limits import IMPORT_MAX_FILE_BYTES, IMPORT_MAX_FILES

if TYPE_CHECKING:
    from indexpub.pipeline.importing import ImportProgress, ImportReport

EXIT_INTERRUPTED = 130  # the shell's own code for a command ended by Ctrl-C

# The problems and conflicts printed on stderr before the rest are only counted.
SHOWN = 100


class Interrupted(CommandError):
    exit_code = EXIT_INTERRUPTED


@click.command("import")
@click.argument("source", required=False)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the valid lines and files and report what was skipped, instead of importing "
    "nothing when any line is invalid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--sparse/--no-sparse",
    default=True,
    show_default=True,
    help="Enqueue write_sparse for each imported crate, so the worker writes the sparse index's "
    "files (the git index has them already: no sync_crate is enqueued).",
)
@click.option(
    "--max-file-bytes",
    type=click.IntRange(min=1),
    default=IMPORT_MAX_FILE_BYTES,
    show_default=True,
    help="The largest crate file read; a larger one is a problem.",
)
@click.option(
    "--max-files",
    type=click.IntRange(min=1),
    default=IMPORT_MAX_FILES,
    show_default=True,
    help="The most crate files and directories an index may have.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Processes that validate lines. Default: one per CPU for a big index; 0: none.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds any git process may wait (the fetch of a network index included).",
)
@pass_settings
def import_index(
    settings: Settings,
    source: str | None,
    skip_invalid: bool,
    as_json: bool,
    sparse: bool,
    max_file_bytes: int,
    max_files: int,
    workers: int | None,
    timeout: float,
) -> None:
    """Read an existing index into the database: every crate file at the tip of the branch
    that SOURCE's HEAD names (a git URL or a local path; default: the configured index).

    Every line is validated as a publish would validate it and stored byte for byte, so the
    files rendered from the database are the index's files. Any invalid line, and anything
    else out of place, is printed with its file and line, and nothing is imported (unless
    --skip-invalid). Crates the database holds already must be identical, byte for byte, or
    the import is refused naming them. One transaction: an interrupted import leaves nothing.
    """
    from indexpub.gitindex.snapshot import open_snapshot
    from indexpub.pipeline.faults import crash_point
    from indexpub.pipeline.importing import import_index as run_import

    location = source or settings.index_location
    settings.check_writable()
    progress = Progress("import", unit="crate files")
    committed = False

    def show(step: ImportProgress) -> None:
        if progress.total is None:
            progress.start(step.files_total)
        progress.update(step.files_done)

    try:
        with open_snapshot(location, settings.data_dir, timeout) as snapshot:
            click.echo(
                f"importing {snapshot.location} (branch {snapshot.branch}, commit "
                f"{snapshot.commit})",
                err=True,
            )
            with settings.migrated() as conn:
                report = run_import(
                    conn,
                    snapshot,
                    skip_invalid=skip_invalid,
                    sparse_jobs=sparse,
                    max_file_bytes=max_file_bytes,
                    max_files=max_files,
                    workers=workers,
                    progress=show,
                )
                progress.finish()
                crash_point("import-before-commit")
                if report.refused:
                    conn.rollback()
                else:
                    conn.commit()
                    committed = True
    except KeyboardInterrupt:
        progress.finish(completed=False)
        if committed:
            raise Interrupted("interrupted after the import was committed") from None
        raise Interrupted("interrupted: nothing was imported") from None
    finally:
        progress.finish(completed=False)  # a refusal or an error: the bar's line ends here
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _show_problems(report)
    if report.refused:
        raise CommandError(_refusal(report))
    if not as_json:
        click.echo(_summary(report))


def _show_problems(report: ImportReport) -> None:
    lines = [str(p) for p in report.problems[:SHOWN]]
    lines += [f"{c.path}: {c.reason}" for c in report.conflicts[:SHOWN]]
    more = (report.problem_count - min(len(report.problems), SHOWN)) + (
        report.conflict_count - min(len(report.conflicts), SHOWN)
    )
    if more:
        lines.append(f"... and {more} more (--json lists up to 1000)")
    for line in lines:
        click.echo(line, err=True)


def _refusal(report: ImportReport) -> str:
    if report.conflict_count:
        return (
            f"{report.conflict_count} crate(s) of the index conflict with the database, which "
            "holds them otherwise; nothing was imported"
        )
    return (
        f"the index has {report.problem_count} problem(s); nothing was imported "
        "(--skip-invalid imports the rest)"
    )


def _summary(report: ImportReport) -> str:
    lines = [
        f"imported {report.crates} crate(s) with {report.versions} version(s) "
        f"({report.yanked} yanked) from {report.location} at {report.commit[:12]} in "
        f"{report.seconds:.1f} s"
    ]
    if report.identical:
        lines.append(f"{report.identical} crate(s) were in the database already, identical")
    if report.registry_only:
        lines.append(
            f"{report.registry_only} crate(s) of the database are not in this index (left as "
            "they are)"
        )
    if report.problem_count:
        lines.append(
            f"skipped {report.skipped_lines} line(s) and {report.skipped_files} file(s) "
            f"(--skip-invalid); {report.rewritten_count} imported file(s) will be rewritten "
            "without what was skipped at their crate's next change"
        )
    if report.sparse_jobs:
        lines.append(f"enqueued write_sparse for {report.sparse_jobs} crate(s)")
    return "\n".join(lines)
