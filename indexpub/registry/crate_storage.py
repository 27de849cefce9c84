"""Where published ``.crate`` files live on disk, shared by ``indexpub publish`` and the HTTP API.

One layout for both writers and for the download route: ``{data}/crates/{name}/{name}-{version}
.crate``, with the crate's published spelling (the name cargo asks for in its download URL). The
local default index's ``dl`` points here, and ``indexpub serve`` serves the same files, so a
crate published either way is downloadable either way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from indexpub import config
from indexpub.atomic_file import write_atomically
from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import validate_crate_name
from indexpub.domain.versions import parse_version


def crate_file_path(data_dir: Path, name: str, version: str) -> Path:
    """The stored ``.crate`` of ``name`` ``version``.

    Both parts are validated here, whatever the caller did, because they come from URLs and
    become a path: a name like ``../x`` or a version like ``1.0.0/../..`` never gets this far.
    """
    name = validate_crate_name(name)
    vers = str(parse_version(version))
    return config.crate_files_dir(data_dir) / name / f"{name}-{vers}.crate"


def store_crate_file(data_dir: Path, entry: IndexEntry, data: bytes) -> Path:
    """Write the ``.crate`` of ``entry`` where downloads read it, atomically and durably.

    Call it after ``store.publish`` (or ``accounts.publish``) has accepted the entry, in the same
    transaction and before COMMIT: the crate's row lock is held then, so a racing upload of the
    same version with other bytes is refused by the store instead of overwriting the file that
    the index's cksum describes. A crash after this write and before the commit leaves a file
    that no index line references; the next publish of that version overwrites it. Writing the
    file before ``store.publish`` would let a refused upload (a conflict, a non-owner) replace
    the bytes of a published version.

    The bytes are written to a temporary file, fsynced and renamed over the target, and the
    folder is fsynced, so a download sees the old bytes or the new ones, never a torn file, and
    the file survives a power loss that the database's commit survives.
    """
    if hashlib.sha256(data).hexdigest() != entry.cksum:
        raise ValueError(f"the bytes given for {entry.name} {entry.vers} do not match its cksum")
    target = crate_file_path(data_dir, entry.name, str(entry.vers))
    write_atomically(target, data, durable=True)
    return target
