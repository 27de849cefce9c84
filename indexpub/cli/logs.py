"""How indexpub logs: a line for people, or one JSON object per line; never a credential.

``--log-format human`` (the default) is ``TIME LEVEL LOGGER: MESSAGE``. ``--log-format json``
writes one object per line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
``pid``, the running job's fields when the record was logged inside a job (``job_id``,
``job_type``, ``queue``, ``attempt`` and ``crate``; ``job_ids``, ``attempts`` and ``crates`` for a
batch: see :mod:`jobs.logcontext`), the record's own extra fields (``duration_s``: durations are
numbers, in seconds), and ``exception`` with the traceback when there is one.

Both formats pass the whole text through :func:`indexpub.gitindex.process.scrub_secrets` with the
configured remote (a user:password in any URL, the remote URL's password or token, and
``INDEXPUB_GIT_TOKEN``), and take out the database URL's password and ``PGPASSWORD``: whatever a
message or a traceback quotes, the secret never reaches the log.

The standard library's logging does all of this in a small Formatter: python-json-logger would
add a dependency for the JSON encoding alone, while the scrubbing and the job's fields are ours
either way. Nothing heavy is imported here (the CLI's start-up stays fast); the scrubber and the
job fields are looked up when the first record is formatted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("human", "json")
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_CONNINFO_PASSWORD = re.compile(r"""password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)""")


class Scrubber:
    """Takes the configured credentials out of a text (see the module's docstring)."""

    def __init__(self, index_url: str | None, database_url: str | None) -> None:
        self.index_url = index_url
        self.database_url = database_url
        self._scrub: Callable[[str], str] | None = None

    def __call__(self, text: str) -> str:
        if self._scrub is None:
            self._scrub = self._build()
        return self._scrub(text)

    def _build(self) -> Callable[[str], str]:
        from indexpub.gitindex.process import GitRemote, scrub_secrets

        remote = GitRemote.parse(self.index_url) if self.index_url else None
        extra = sorted(
            {s for s in _database_secrets(self.database_url) if len(s) >= 4},
            key=len,
            reverse=True,
        )

        def scrub(text: str) -> str:
            text = scrub_secrets(text, remote)
            for secret in extra:
                text = text.replace(secret, "***")
            return text

        return scrub


def _database_secrets(url: str | None) -> list[str]:
    """The database password, from the URL (a URL or a conninfo string) and PGPASSWORD."""
    found = [os.environ.get("PGPASSWORD", "")]
    if url:
        if url.startswith(("postgres://", "postgresql://")):
            password = urllib.parse.urlsplit(url).password
            if password:
                found += [password, urllib.parse.unquote(password)]
        else:
            for match in _CONNINFO_PASSWORD.finditer(url):
                value = match.group(1)
                if value.startswith("'"):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                found.append(value)
    return found


def job_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of the job the record was logged in: from jobs.logcontext.JobFieldsFilter if a
    handler has it, else from the running job's context (no job runs before jobs is imported)."""
    fields = getattr(record, "job_fields", None)
    if isinstance(fields, dict):
        return fields
    context = sys.modules.get("jobs.logcontext")
    return {} if context is None else dict(context.current_fields())


class HumanFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, traceback included, scrubbed."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__(HUMAN_FORMAT)
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, every string in it scrubbed."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in job_fields(record).items():
            data.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key != "job_fields" and not key.startswith("_"):
                data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._clean(data), ensure_ascii=False, allow_nan=False)

    def _clean(self, value: Any) -> Any:
        """JSON values only, strings scrubbed: numbers stay numbers (a non-finite float, which
        JSON cannot hold, becomes its name)."""
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        return self.scrub(str(value))


def configure(
    log_format: str, *, verbose: bool, index_url: str | None, database_url: str | None
) -> None:
    """Log to stderr in ``log_format`` at WARNING (INFO with ``verbose``), scrubbed.

    Like logging.basicConfig, this leaves a root logger that already has handlers alone (an
    application that embeds the CLI, or a test runner, has set up its own).
    """
    scrub = Scrubber(index_url, database_url)
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(scrub) if log_format == "json" else HumanFormatter(scrub)
    )
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
