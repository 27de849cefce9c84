"""Replace a file's bytes so that a reader sees the old bytes or the new ones, never a mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomically(
    target: Path,
    data: bytes | Iterable[bytes],
    *,
    mode: int = 0o644,
    durable: bool = False,
    temp_prefix: str = ".tmp-",
) -> None:
    """Write ``data`` (bytes, or chunks of them) to a temporary file beside ``target`` and
    rename it over ``target``.

    ``durable`` also fsyncs the file and its folder, for files that must survive a power loss
    as surely as the database commit that refers to them. A crash leaves at most a temporary
    file whose name starts with ``temp_prefix``, which readers skip.
    """
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            else:
                out.writelines(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable; some filesystems do not support fsync on a
    directory, and there it is skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
