"""The git side of the index: a bare clone, commits built in the object database, non-force pushes.

The sync worker is the only writer, so this module keeps no locks; the remote's fast-forward check
is the compare-and-swap that catches anybody else (`PushRejected`). A commit never touches a work
tree or an index file: it reads the trees along one path with a single `git cat-file --batch` (or
from the parsed trees a batch keeps in memory), builds the new blob, those trees and the commit in
Python, and so costs the same whether the index holds a thousand crate files or a quarter of a
million. A batch of commits is written as one pack (.pack and .idx built here), not loose files.

A remote that is a bare repository on the local filesystem is published to without git push when
that is equivalent (see GitIndex.push): the batch's packs are linked into it and `git update-ref`
with the old value is the compare-and-swap. That skips receive-pack's connectivity check, which
walks every tree of the remote, and is most of a push's cost once the index is large.

Every git process runs with a timeout in its own process group, because a hung push would hold the
single-consumer lock forever. Credentials reach git only through the environment (an askpass helper
or `GIT_SSH_COMMAND`), never through argv, and every message we raise is scrubbed of them.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import git

from indexpub.atomic_file import fsync_dir, write_atomically

__all__ = [
    "DEFAULT_IDENTITY",
    "LOCAL_PUSH_ENV",
    "GitError",
    "GitIndex",
    "GitTimeout",
    "PushRejected",
    "check_crate_path",
    "init_index",
    "local_push_mode",
]

log = logging.getLogger("indexpub.git_index")

DEFAULT_IDENTITY = "indexpub <indexpub@localhost>"
REMOTE = "origin"

_SHA_RE = re.compile(r"[0-9a-f]{40}")
_C = "[a-z0-9_-]"
_CRATE_PATH_RE = re.compile(
    rf"1/{_C}|2/{_C}{{2}}|3/(?P<c>{_C})/(?P=c){_C}{{2}}"
    rf"|(?P<a>{_C}{{2}})/(?P<b>{_C}{{2}})/(?P=a)(?P=b){_C}{{0,60}}"
)
_IDENTITY_RE = re.compile(r"([^<>\n]+) <([^<>\n]*)>")
_URL_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Variables that would point git at another repository, object store or work tree.
_ENV_DROP = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
_ASKPASS_SCRIPT = """#!/bin/sh
# Written by indexpub: hands git the credentials from the environment, so they never sit in argv.
case "$1" in
  Username*) printf '%s\\n' "${INDEXPUB_GIT_USERNAME:-x-access-token}" ;;
  *) printf '%s\\n' "$INDEXPUB_GIT_TOKEN" ;;
esac
"""
_TREE_MODE = b"40000"
_BLOB_MODE = b"100644"


class GitError(Exception):
    """A git operation failed; the message is safe to log (no credentials)."""


class GitTimeout(GitError):
    """A git process outlived its timeout and was killed with its whole process group."""


class PushRejected(GitError):
    """The remote branch moved since our parent commit: fetch, rebuild on the new tip, retry."""


def check_crate_path(path: str) -> None:
    """Refuse anything but a crate file, so a bug upstream can never rewrite config.json."""
    if not _CRATE_PATH_RE.fullmatch(path):
        raise ValueError(f"not a crate file path of the index layout: {path!r}")


def _check_read_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or "\n" in path
        or "\0" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(f"not a relative path inside the index: {path!r}")


def _check_sha(sha: str) -> None:
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a full lowercase commit sha: {sha!r}")


def _parse_identity(identity: str) -> bytes:
    if not _IDENTITY_RE.fullmatch(identity):
        raise ValueError(f"identity must look like 'Name <email>': {identity!r}")
    return identity.encode()


# --- process running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Remote:
    """The remote with any user:password taken out of its URL.

    git hands the URL to its remote helpers in argv (`git-remote-https origin URL`), so a
    password left in it would be readable by every local user; instead it reaches git through
    the askpass helper, and the URL we store, pass and print is the clean one.
    """

    url: str
    username: str | None = None
    password: str | None = None
    askpass: Path | None = None

    @classmethod
    def parse(cls, url: str, askpass: Path | None = None) -> _Remote:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
            return cls(url, askpass=askpass)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
        return cls(
            clean,
            urllib.parse.unquote(user) or None,
            urllib.parse.unquote(password) if colon else None,
            askpass,
        )

    def credentials(self) -> dict[str, str]:
        """The askpass variables: the URL's own credentials win over the environment's."""
        found = {}
        for var, value in (
            ("INDEXPUB_GIT_USERNAME", self.username),
            ("INDEXPUB_GIT_TOKEN", self.password),
        ):
            value = value or os.environ.get(var)
            if value:
                found[var] = value
        return found

    def secrets(self) -> list[str]:
        """The literal strings that must never appear in a message we raise."""
        found = [os.environ.get("INDEXPUB_GIT_TOKEN", ""), self.password or ""]
        if self.password is None:
            found.append(self.username or "")  # https://TOKEN@host/ puts the token there
        return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _scrub(text: str, remote: _Remote | None = None) -> str:
    text = _URL_USERINFO_RE.sub(r"\1***@", text)
    secrets = remote.secrets() if remote else _Remote("").secrets()
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _git_env(remote: _Remote | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if remote is not None and remote.askpass is not None:
        credentials = remote.credentials()
        if credentials:
            env.update(credentials)
            env["GIT_ASKPASS"] = str(remote.askpass)
    key = os.environ.get("INDEXPUB_GIT_SSH_KEY")
    if key:
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {shlex.quote(key)} -o IdentitiesOnly=yes"
            " -o StrictHostKeyChecking=accept-new -o BatchMode=yes"
        )
    return env


def _run(
    args: Sequence[str],
    *,
    timeout: float,
    what: str,
    remote: _Remote | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run git in its own session so that a timeout kills ssh and helpers along with it."""
    env = _git_env(remote)
    argv = ["git"]
    if "INDEXPUB_GIT_TOKEN" in env and "GIT_ASKPASS" in env:
        # A configured credential helper would otherwise store our token on disk.
        argv += ["-c", "credential.helper="]
    argv += args
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise GitError(f"cannot run git for {what}: {e}") from None
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        where = f" (remote {remote.url})" if remote else ""
        raise GitTimeout(_scrub(f"{what} timed out after {timeout:g} s{where}", remote)) from None
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and result.returncode != 0:
        raise GitError(_failure(what, result, remote))
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something left the group but holds our pipes; do not hang on it.
        proc.kill()
        proc.wait()


def _failure(what: str, result: subprocess.CompletedProcess[bytes], remote: _Remote | None) -> str:
    detail = (result.stderr or result.stdout).decode(errors="replace").strip()
    lines = [line for line in detail.splitlines() if line.strip() and not line.startswith("hint:")]
    lines = lines[-5:]
    where = f" (remote {remote.url})" if remote else ""
    message = f"{what} failed with exit code {result.returncode}{where}"
    if lines:
        message += ": " + " | ".join(lines)
    return _scrub(message, remote)


# --- objects ------------------------------------------------------------------------------------


class _Entry(NamedTuple):
    mode: bytes
    name: bytes
    sha: bytes  # 20 raw bytes

    @property
    def is_tree(self) -> bool:
        return self.mode == _TREE_MODE


@dataclass(frozen=True)
class _Object:
    sha: str
    kind: str
    data: bytes


def _format_tree(entries: list[_Entry]) -> bytes:
    # git orders a directory as if its name ended in "/".
    ordered = sorted(entries, key=lambda e: e.name + b"/" if e.is_tree else e.name)
    return b"".join(e.mode + b" " + e.name + b"\0" + e.sha for e in ordered)


class _Tree:
    """A parsed directory kept in git's order, so that an edit costs a bisect and not a sort.

    ``keys`` are the entries' sort keys in order (a directory's name ends in "/", as git sorts
    it); ``chunks`` maps each key to the entry's serialized bytes, so serializing is one join.
    Instances are never changed once built: ``replaced`` returns a new one.
    """

    __slots__ = ("chunks", "keys")

    def __init__(self, keys: list[bytes], chunks: dict[bytes, bytes]) -> None:
        self.keys = keys
        self.chunks = chunks

    @classmethod
    def parse(cls, data: bytes) -> _Tree:
        keys: list[bytes] = []
        chunks: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(data):
            space = data.index(b" ", pos)
            nul = data.index(b"\0", space)
            end = nul + 21
            if end > len(data):
                raise GitError("truncated tree object")
            name = data[space + 1 : nul]
            key = name + b"/" if data[pos:space] == _TREE_MODE else name
            keys.append(key)
            chunks[key] = data[pos:end]
            pos = end
        if any(a >= b for a, b in itertools.pairwise(keys)):
            keys = sorted(set(keys))  # not git's order: keep ours canonical
        return cls(keys, chunks)

    def subtree(self, name: bytes) -> bytes | None:
        """The raw sha of the directory ``name``, or None."""
        chunk = self.chunks.get(name + b"/")
        return None if chunk is None else chunk[-20:]

    def has_file(self, name: bytes) -> bool:
        return name in self.chunks

    def replaced(self, name: bytes, mode: bytes, sha: bytes | None) -> _Tree:
        """A copy with ``name`` removed and, unless ``sha`` is None, added as (mode, sha)."""
        keys = self.keys.copy()
        chunks = self.chunks.copy()
        for old in (name, name + b"/"):
            if chunks.pop(old, None) is not None:
                del keys[bisect.bisect_left(keys, old)]
        if sha is not None:
            key = name + b"/" if mode == _TREE_MODE else name
            bisect.insort(keys, key)
            chunks[key] = mode + b" " + name + b"\0" + sha
        return _Tree(keys, chunks)

    def serialize(self) -> bytes:
        return b"".join([self.chunks[k] for k in self.keys])


def _object_sha(kind: str, data: bytes) -> str:
    digest = hashlib.sha1(f"{kind} {len(data)}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def _hash_object(kind: str, data: bytes) -> tuple[str, bytes]:
    raw = f"{kind} {len(data)}\0".encode() + data
    return hashlib.sha1(raw).hexdigest(), raw


def _write_loose(objects_dir: Path, kind: str, data: bytes) -> str:
    """Write one loose object the way git does: temp file, then an atomic rename into place."""
    sha, raw = _hash_object(kind, data)
    target = objects_dir / sha[:2] / sha[2:]
    if target.exists():
        return sha
    # git's own temporary prefix: git gc removes leftovers of a crash.
    write_atomically(target, zlib.compress(raw), mode=0o444, temp_prefix="tmp_obj_")
    return sha


_PACK_TYPES = {"commit": 1, "tree": 2, "blob": 3}


def _pack_record(kind: str, data: bytes) -> bytes:
    """One undeltified object as a pack stores it: type-and-size header, zlib data."""
    size = len(data)
    header = bytearray()
    byte = (_PACK_TYPES[kind] << 4) | (size & 0x0F)
    size >>= 4
    while size:
        header.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    header.append(byte)
    # A tree is mostly raw SHA-1s, which do not compress: storing it costs a tenth of
    # compressing it (the ~30 kB root tree of a big index: 0.1 ms instead of 1 ms).
    level = 0 if kind == "tree" else -1
    return bytes(header) + zlib.compress(data, level)


def _record_data(record: bytes) -> bytes:
    """The object data of a record made by _pack_record."""
    start = 0
    while record[start] & 0x80:
        start += 1
    return zlib.decompress(record[start + 1 :])


def _pack_index(entries: list[tuple[bytes, int, int]], checksum: bytes) -> bytes:
    """A version-2 .idx for (raw sha, crc32 of the record, offset) entries of a pack < 2 GiB."""
    entries = sorted(entries)
    counts = [0] * 256
    for raw, _, _ in entries:
        counts[raw[0]] += 1
    idx = b"".join(
        [
            b"\377tOc",
            struct.pack(">I", 2),
            struct.pack(">256I", *itertools.accumulate(counts)),
            *(raw for raw, _, _ in entries),
            *(struct.pack(">I", crc) for _, crc, _ in entries),
            *(struct.pack(">I", off) for _, _, off in entries),
            checksum,
        ]
    )
    return idx + hashlib.sha1(idx).digest()


def _write_pack(objects_dir: Path, records: dict[str, bytes]) -> Path:
    """Write a version-2 pack of ``records`` (sha -> _pack_record) and its .idx, durably: the
    .pack first, then the .idx that makes git see it; return the .pack's path. The pack is
    named by its trailing checksum, as git names packs.

    Temporary files carry git's own prefixes (tmp_pack_, tmp_idx_), which git gc removes after a
    crash. Each file is fsynced before its rename and the folder after it, so the .idx never
    survives a power loss without its .pack.
    """
    header = b"PACK" + struct.pack(">II", 2, len(records))
    digest = hashlib.sha1(header)
    entries: list[tuple[bytes, int, int]] = []
    offset = len(header)
    for sha, record in records.items():
        digest.update(record)
        entries.append((bytes.fromhex(sha), zlib.crc32(record), offset))
        offset += len(record)
    if offset >= 1 << 31:
        raise GitError("a pack would need 64-bit offsets; commit fewer files at once")
    checksum = digest.digest()
    name = checksum.hex()
    folder = objects_dir / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[bytes]] = {
        "pack": [header, *records.values(), checksum],
        "idx": [_pack_index(entries, checksum)],
    }
    for suffix, chunks in parts.items():
        write_atomically(
            folder / f"pack-{name}.{suffix}",
            chunks,
            mode=0o444,
            durable=True,
            temp_prefix=f"tmp_{suffix}_",
        )
    return folder / f"pack-{name}.pack"


def _commit_body(tree: str, parents: list[str], author: bytes, committer: bytes, msg: str) -> bytes:
    if "\0" in msg:
        raise ValueError("commit message contains a NUL byte")
    if not msg.endswith("\n"):
        msg += "\n"
    stamp = f" {int(time.time())} +0000".encode()
    lines = [b"tree " + tree.encode()]
    lines += [b"parent " + p.encode() for p in parents]
    lines += [b"author " + author + stamp, b"committer " + committer + stamp, b"", msg.encode()]
    return b"\n".join(lines)


_EMPTY_TREE = _Tree([], {})


# --- direct publish to a local bare remote ------------------------------------------------------

# INDEXPUB_GIT_LOCAL_PUSH: "auto" publishes to a local bare remote directly when that is
# equivalent to git push (see GitIndex.push); "git" always runs git push.
LOCAL_PUSH_ENV = "INDEXPUB_GIT_LOCAL_PUSH"
LOCAL_PUSH_MODES = ("auto", "git")
# The hooks receive-pack runs. Any of them, executable in the remote's hooks directory, means a
# publish has to go through git push so that it runs. reference-transaction is not one of
# them: update-ref runs it as receive-pack does.
RECEIVE_HOOKS = (
    "pre-receive",
    "update",
    "post-receive",
    "post-update",
    "push-to-checkout",
    "proc-receive",
)
# Repository extensions that do not change what a direct publish writes; any other one (a
# partial clone, precious objects, a format git 2.39 does not know) leaves the work to git push.
_HARMLESS_EXTENSIONS = {
    "extensions.objectformat": "sha1",
    "extensions.refstorage": "files",
    "extensions.worktreeconfig": None,
}
_HELPER_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")


def local_push_mode(value: str | None = None) -> str:
    """The INDEXPUB_GIT_LOCAL_PUSH setting (or ``value``), checked: "auto" when unset.

    A misspelt value is an error rather than a silent choice of either mode.
    """
    raw = os.environ.get(LOCAL_PUSH_ENV, "") if value is None else value
    mode = raw.strip().lower() or "auto"
    if mode not in LOCAL_PUSH_MODES:
        raise ValueError(
            f"{LOCAL_PUSH_ENV} must be one of {', '.join(LOCAL_PUSH_MODES)}, not {raw!r}"
        )
    return mode


def _local_path(url: str) -> Path | None:
    """The directory that git push would reach through ``url`` as a local path, else None.

    git takes a URL without a scheme as a local path unless a colon comes before its first
    slash (then it is ssh's host:path), and file:// URLs as local paths. A file URL with a
    host or a percent sign is left to git push rather than guessing how git reads it.
    """
    if _HELPER_URL_RE.match(url):
        return None  # <transport>::<address> goes to a remote helper
    if "://" in url:
        rest = url.removeprefix("file://")
        if rest == url or not rest.startswith("/") or "%" in rest:
            return None
        return Path(rest)
    colon, slash = url.find(":"), url.find("/")
    if colon >= 0 and not 0 <= slash < colon:
        return None
    return Path(url).absolute()


def _config_bool(value: str | None) -> bool | None:
    """git's reading of a boolean setting (a bare ``key`` is true); None when it is no bool."""
    if value is None:
        return True
    word = value.strip().lower()
    if word in ("true", "yes", "on"):
        return True
    if word in ("false", "no", "off", ""):
        return False
    try:
        return int(word, 0) != 0
    except ValueError:
        return None


@dataclass(frozen=True)
class _DirectTarget:
    """A local bare remote whose settings allow a direct publish; hooks are checked per push."""

    git_dir: Path
    hooks_dir: Path
    autogc: bool

    def receive_hooks(self) -> list[str]:
        """The receive-side hooks git would run now (``access(X_OK)``, as git checks them)."""
        return [name for name in RECEIVE_HOOKS if os.access(self.hooks_dir / name, os.X_OK)]


class _Probe(NamedTuple):
    """What GitIndex.open learned about a direct publish: a target, or why not.

    ``watch`` is the remote's config file and its stat signature when it was read: a changed
    file is read again at the next push. ``final`` is False when the remote could not be read
    at all (absent, unreadable), which is asked again at every push until it answers.
    """

    target: _DirectTarget | None
    reason: str
    final: bool
    watch: tuple[Path, tuple[object, ...] | None] | None = None


def _stat_signature(path: Path) -> tuple[object, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _direct_target(git_dir: Path, config: list[tuple[str, str | None]]) -> _DirectTarget | str:
    """The target when the remote's effective config makes a direct publish what receive-pack
    would do, else the reason it does not."""
    settings: dict[str, str | None] = {}
    hide_refs = False
    for key, value in config:
        settings[key] = value  # the last value wins, as for git's single-valued settings
        hide_refs = hide_refs or key in ("receive.hiderefs", "transfer.hiderefs")
    if _config_bool(settings.get("core.bare", "false")) is not True:
        return "it is not a bare repository (core.bare)"
    for key, value in settings.items():
        if not key.startswith("extensions."):
            continue
        if key not in _HARMLESS_EXTENSIONS:
            return f"it sets {key}"
        allowed = _HARMLESS_EXTENSIONS[key]
        if allowed is not None and (value or "").strip().lower() != allowed:
            return f"it sets {key} = {value}"
    shared = settings.get("core.sharedrepository", "umask")
    if shared is None or shared.strip().lower() not in ("umask", "false", "no", "off", "", "0"):
        return "it is a shared repository (core.sharedRepository)"
    fsck = settings.get("receive.fsckobjects", settings.get("transfer.fsckobjects", "false"))
    if _config_bool(fsck) is not False:
        return "it checks received objects (receive.fsckObjects or transfer.fsckObjects)"
    if hide_refs:
        return "it hides refs from pushes (receive.hideRefs or transfer.hideRefs)"
    if (settings.get("receive.maxinputsize") or "0").strip() != "0":
        return "it limits the size of a push (receive.maxInputSize)"
    hooks = settings.get("core.hookspath")
    hooks_dir = git_dir / "hooks"
    if hooks is not None:
        # git expands ~ and takes a relative path from where the hooks run: a bare repository.
        hooks_dir = git_dir / os.path.expanduser(hooks)
    autogc = _config_bool(settings.get("receive.autogc", "true"))
    return _DirectTarget(git_dir, hooks_dir, autogc is not False)


def _place_packs(packs: Sequence[Path], folder: Path, *, copy: bool = False) -> int:
    """Make ``packs`` (.pack paths, each with its .idx beside it) part of the object store at
    ``folder`` (an objects/pack directory), durably; return how many files were copied.

    Every .pack goes in before any .idx, because the .idx is what makes git see a pack, and
    the directory is fsynced after each of the two steps, so an .idx never survives a power
    loss without its .pack. Each file is hard-linked: a link appears atomically with the file
    already complete (the clone wrote and fsynced it), so unlike a copy it needs no temporary
    name, and no crash can leave a partial file. Where linking fails (another filesystem, a
    filesystem without links, a protected link) the file is copied under git's temporary
    prefix, fsynced and renamed into place. A pack already present under its name is the same
    pack: packs are named by the checksum of their contents.

    A missing source or folder raises FileNotFoundError: the caller leaves that to git push.
    """
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no object directory", str(folder))
    copied = 0
    for suffix in ("pack", "idx"):
        for pack in packs:
            source = pack.with_suffix(f".{suffix}")
            target = folder / source.name
            if not copy:
                try:
                    os.link(source, target)
                    continue
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    raise
                except OSError:
                    pass  # EXDEV, EPERM, EMLINK, ...: copy instead
            if target.exists():
                continue
            write_atomically(
                target,
                _file_chunks(source),
                mode=0o444,
                durable=True,
                temp_prefix=f"tmp_{suffix}_",
            )
            copied += 1
        fsync_dir(folder)
    return copied


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def _maintain(git_dir: Path, timeout: float, remote: _Remote | None) -> None:
    """Merge the small packs that publishes leave in ``git_dir``, then let ``gc --auto`` decide.

    A geometric repack merges the small packs (and any loose objects) without rewriting the
    big one each time and is safe with concurrent readers; ``gc --auto`` stays the backstop
    (many packs or loose objects, prune). It waits for gc rather than leaving it detached.
    """
    _run(
        [f"--git-dir={git_dir}", "repack", "-d", "-q", "--geometric=2"],
        timeout=timeout,
        what="git repack",
        remote=remote,
    )
    _run(
        [f"--git-dir={git_dir}", "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
        timeout=timeout,
        what="git gc",
        remote=remote,
    )


# --- the index ----------------------------------------------------------------------------------


# How many pushes between two ``git gc --auto`` checks.
GC_EVERY_PUSHES = 100
# A batch writes a pack early once its pending objects reach this size (a burst at a quarter of
# a million crates builds about 30 kB of root tree per commit).
FLUSH_BYTES = 16 << 20


class GitIndex:
    """A bare clone of the index remote, used by exactly one writer at a time."""

    def __init__(
        self,
        path: Path,
        remote: _Remote,
        branch: str,
        *,
        timeout: float,
        author: str = DEFAULT_IDENTITY,
        committer: str | None = None,
        local_push: str = "auto",
    ) -> None:
        self.path = path
        self.remote_url = remote.url  # without credentials, safe to log
        self._remote = remote
        self.branch = branch
        self.timeout = timeout
        self.tracking_ref = f"refs/remotes/{REMOTE}/{branch}"
        self._author = _parse_identity(author)
        self._committer = _parse_identity(committer or author)
        self._objects = path / "objects"
        # Counters that let tests and metrics check an update's cost does not grow with the index.
        self.objects_read = 0
        self.objects_written = 0
        self._pushes_since_gc = 0
        # Commits (as their root tree's sha) and parsed trees by sha (objects never change):
        # those that read_files fetched and those that commit_file wrote, so that a batch of
        # commits reads git once and parses each directory at most once.
        self._commit_trees: dict[str, str] = {}
        self._trees: dict[str, _Tree] = {}
        # Objects built but not yet written, as pack records by sha: a batch writes them as one
        # pack (see batch()), or more than one when they outgrow FLUSH_BYTES.
        self._pending: dict[str, bytes] = {}
        self._pending_bytes = 0
        self._batch_depth = 0
        # The tracking ref's value with the stat signature of the files that can hold it, so
        # that tip() starts no git process unless the ref files changed since we looked.
        self._known_tip: tuple[tuple[object, ...], str] | None = None
        # Whether a push may publish directly into a local bare remote (see push): decided by
        # open, asked again when the remote's config file changes or could not be read.
        self._local_push = local_push_mode(local_push)
        self._probe = _Probe(None, "the remote was not looked at yet", final=False)
        # "direct" or "git": how the last push (successful or not) went about it; None before
        # the first push and when a push failed before it chose.
        self.last_push_mode: str | None = None
        self._direct_pushes_since_gc = 0
        # The commits built since the last push attempt, each with its parent and the pack that
        # holds every object built for it: what a direct publish ships, and its proof that the
        # pushed commit descends from the tip it compares against.
        self._unpushed: dict[str, str] = {}
        self._commit_packs: dict[str, Path] = {}
        self._pending_commits: list[str] = []

    @classmethod
    def open(
        cls,
        remote_url: str,
        path: Path | str,
        *,
        branch: str | None = None,
        timeout: float = 60.0,
        author: str = DEFAULT_IDENTITY,
        committer: str | None = None,
        local_push: str | None = None,
    ) -> GitIndex:
        """Open the bare clone at `path`, cloning first if it is missing or an empty directory.

        Without `branch`, the remote's HEAD decides, because that is the branch cargo reads.
        ``local_push`` ("auto" or "git", default INDEXPUB_GIT_LOCAL_PUSH) says whether pushes
        to a local bare remote may publish directly (see push).
        """
        mode = local_push_mode(local_push)  # a bad setting fails before anything is made
        path = Path(path).absolute()
        remote = _Remote.parse(remote_url, askpass=path / "indexpub-askpass")
        if not remote.url.strip() or any(c in remote.url for c in "\n\r\0"):
            raise ValueError("remote URL is empty or spans lines")
        created = not path.exists() or (path.is_dir() and not any(path.iterdir()))
        if created:
            _create_clone(path, remote.url, timeout)
        else:
            _check_clone(path, remote.url)
        _write_askpass(path / "indexpub-askpass")
        if branch is None:
            branch = _remote_head_branch(path, remote, timeout)
        _check_branch(branch, timeout)
        index = cls(
            path,
            remote,
            branch,
            timeout=timeout,
            author=author,
            committer=committer,
            local_push=mode,
        )
        if created:
            index.fetch()
        index._probe = index._read_direct_target()
        log.debug(
            "pushes to %s: %s (%s)",
            index.remote_url,
            "direct" if index._probe.target else "git push",
            index._probe.reason,
        )
        return index

    def _git(
        self, *args: str, what: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return _run(
            [f"--git-dir={self.path}", *args],
            timeout=self.timeout,
            what=what,
            remote=self._remote,
            input=input,
            check=check,
        )

    def fetch(self) -> str:
        """Move the tracking ref to the remote tip, even backwards (a squash rewrites history)."""
        refspec = f"+refs/heads/{self.branch}:{self.tracking_ref}"
        self._known_tip = None
        self._git("fetch", "--quiet", "--no-tags", REMOTE, refspec, what="git fetch")
        tip = self.tip()
        if tip is None:
            raise GitError(f"git fetch left no commit at {self.tracking_ref}")
        return tip

    def tip(self) -> str | None:
        """The remote tip as of the last fetch or push; None before the first fetch.

        Kept in memory after our own push and fetch; it is read again from git whenever the
        files that can hold the tracking ref (its loose file, packed-refs) changed since.
        """
        signature = self._ref_signature()
        # With neither file present (another ref storage), the signature proves nothing.
        trusted = any(part is not None for part in signature)
        if trusted and self._known_tip is not None and self._known_tip[0] == signature:
            return self._known_tip[1]
        self._known_tip = None
        result = self._git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"{self.tracking_ref}^{{commit}}",
            what="git rev-parse",
            check=False,
        )
        if result.returncode != 0:
            return None
        tip = result.stdout.decode().strip()
        # The signature was taken before reading: a change in between shows up next time.
        self._known_tip = (signature, tip)
        return tip

    def _ref_signature(self) -> tuple[object, ...]:
        found: list[object] = []
        for file in (self.path / self.tracking_ref, self.path / "packed-refs"):
            try:
                st = os.stat(file)
            except FileNotFoundError:
                found.append(None)
            else:
                # git replaces a ref file by renaming a lock file: a new inode every time.
                found.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(found)

    def read_file(self, path: str, commit: str | None = None) -> bytes | None:
        """The bytes at the tip (or `commit`); None when absent, which the sync treats as new."""
        _check_read_path(path)
        if commit is None:
            commit = self.tip()
            if commit is None:
                return None
        _check_sha(commit)
        (found,) = self._cat_file([f"{commit}:{path}"])
        if found is None:
            return None
        if found.kind != "blob":
            raise GitError(f"{path} is a {found.kind} in {commit}, not a file")
        return found.data

    def read_files(self, paths: Sequence[str], commit: str) -> list[bytes | None]:
        """The files at ``commit`` with one git process; None for an absent file.

        It also keeps the commit and every directory tree along the paths in memory, so that
        the commit_file calls of the batch that follows (on ``commit``, then on each other's
        commits) start no git process at all.
        """
        for path in paths:
            _check_read_path(path)
        _check_sha(commit)
        dirs = sorted(
            {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
        )
        specs = [commit, f"{commit}^{{tree}}", *(f"{commit}:{d}" for d in dirs)]
        specs += [f"{commit}:{p}" for p in paths]
        found = self._cat_file(specs)
        # One batch's worth: trees of the current tip only.
        self._commit_trees.clear()
        self._trees.clear()
        self._remember(found[: len(specs) - len(paths)])
        files: list[bytes | None] = []
        for path, obj in zip(paths, found[len(specs) - len(paths) :], strict=True):
            if obj is not None and obj.kind != "blob":
                raise GitError(f"{path} is a {obj.kind} in {commit}, not a file")
            files.append(None if obj is None else obj.data)
        return files

    def _remember(self, objects: Sequence[_Object | None]) -> None:
        for obj in objects:
            if obj is None:
                continue
            if obj.kind == "commit" and obj.data.startswith(b"tree "):
                self._commit_trees[obj.sha] = obj.data[5:45].decode()
            elif obj.kind == "tree" and obj.sha not in self._trees:
                self._trees[obj.sha] = _Tree.parse(obj.data)

    def _tree(self, sha: str) -> _Tree | None:
        """A parsed tree from memory: parsed already, or built by this batch and not written."""
        tree = self._trees.get(sha)
        if tree is None:
            record = self._pending.get(sha)
            if record is not None:
                tree = self._trees[sha] = _Tree.parse(_record_data(record))
        return tree

    def _cached_path(self, parent: str, dirs: list[str]) -> list[tuple[str, _Tree] | None] | None:
        """The root tree of ``parent`` and the trees along ``dirs`` (None where the path creates
        a directory), each with its sha, from memory; None when anything is not cached (then
        git is asked)."""
        root = self._commit_trees.get(parent)
        tree = None if root is None else self._tree(root)
        if root is None or tree is None:
            return None
        found: list[tuple[str, _Tree] | None] = [(root, tree)]
        for name in dirs:
            if tree is not None:
                sub = tree.subtree(name.encode())
                if sub is None:
                    if tree.has_file(name.encode()):
                        return None  # a file in the way: let git report it
                    tree = None  # a directory the path creates: absent, which is an answer
                else:
                    tree = self._tree(sub.hex())
                    if tree is None:
                        return None
                    found.append((sub.hex(), tree))
                    continue
            found.append(None)
        return found

    def _cat_file(self, specs: list[str]) -> list[_Object | None]:
        """Read several objects with one process: the fixed cost of an update is one fork."""
        request = "".join(s + "\n" for s in specs).encode()
        out = self._git("cat-file", "--batch", what="git cat-file", input=request).stdout
        results: list[_Object | None] = []
        pos = 0
        for spec in specs:
            eol = out.find(b"\n", pos)
            header = out[pos:eol].decode(errors="replace")
            pos = eol + 1
            fields = header.split(" ")
            if eol < 0 or len(fields) != 3 or not _SHA_RE.fullmatch(fields[0]):
                if header.endswith((" missing", " ambiguous")):
                    results.append(None)
                    continue
                raise GitError(f"unexpected git cat-file output for {spec}: {header!r}")
            size = int(fields[2])
            results.append(_Object(fields[0], fields[1], out[pos : pos + size]))
            pos += size + 1
            self.objects_read += 1
        return results

    def commit_file(self, parent: str, path: str, content: bytes | None, message: str) -> str:
        """Commit one crate file (None deletes it) on top of `parent` and return the new commit.

        Only the trees on the path are read and rewritten. When the result equals `parent`'s
        tree, no commit is made and `parent` is returned, so callers never push empty commits.
        """
        check_crate_path(path)
        _check_sha(parent)
        with self.batch():
            return self._build_commit(parent, path, content, message)

    def _build_commit(self, parent: str, path: str, content: bytes | None, message: str) -> str:
        *dirs, filename = path.split("/")
        levels = self._cached_path(parent, dirs)
        if levels is None:
            specs = [parent, f"{parent}^{{tree}}"]
            specs += [f"{parent}:{'/'.join(dirs[:i])}" for i in range(1, len(dirs) + 1)]
            found = self._cat_file(specs)
            commit, *trees = found
            if commit is None or commit.kind != "commit" or trees[0] is None:
                raise GitError(f"parent {parent} is not a commit in {self.path}")
            for level, obj in enumerate(trees):
                if obj is not None and obj.kind != "tree":
                    where = "/".join(dirs[:level])
                    raise GitError(f"{where} is a {obj.kind} in {parent}, expected a directory")
            self._remember(found)
            levels = self._cached_path(parent, dirs)
            if levels is None:
                raise GitError(f"cannot read the trees of {path} in {parent}")
        root_tree = self._commit_trees[parent]
        name = filename.encode()
        last = levels[-1]
        if last is not None and last[1].subtree(name) is not None:
            raise GitError(f"{path} is a directory in {parent}, expected a file")

        # Hash bottom-up (the file's directory first, the root last) and write only when the
        # root changed, so a no-op update leaves nothing behind.
        pending: list[tuple[str, str, bytes, _Tree | None]] = []  # sha, kind, data, parsed
        new_sha: bytes | None = None
        if content is not None:
            sha = _object_sha("blob", content)
            pending.append((sha, "blob", content, None))
            new_sha = bytes.fromhex(sha)
        child_name, child_mode = name, _BLOB_MODE
        for level in range(len(levels) - 1, -1, -1):
            at_level = levels[level]
            tree = _EMPTY_TREE if at_level is None else at_level[1]
            new_tree = tree.replaced(child_name, child_mode, new_sha)
            if not new_tree.keys and level > 0:
                new_sha = None  # an empty directory disappears from its parent
            else:
                data = new_tree.serialize()
                sha = _object_sha("tree", data)
                pending.append((sha, "tree", data, new_tree))
                new_sha = bytes.fromhex(sha)
            if level > 0:
                child_name, child_mode = dirs[level - 1].encode(), _TREE_MODE
        assert new_sha is not None
        if new_sha.hex() == root_tree:
            return parent
        # The old trees along the path that this batch built are unlikely to be edited again:
        # drop their parsed form (_tree can parse them again), which bounds a batch's memory.
        for old in levels:
            if old is not None and old[0] in self._pending:
                self._trees.pop(old[0], None)
        for sha, kind, data, parsed in pending:
            self._store(sha, kind, data)
            if parsed is not None:
                self._trees[sha] = parsed
        root = new_sha.hex()
        body = _commit_body(root, [parent], self._author, self._committer, message)
        commit_sha = _object_sha("commit", body)
        self._store(commit_sha, "commit", body)
        self._commit_trees[commit_sha] = root
        self._unpushed[commit_sha] = parent
        self._pending_commits.append(commit_sha)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()  # bounds memory; the batch simply ends up in more than one pack
        return commit_sha

    def commit_files(self, parent: str, changes: Sequence[tuple[str, bytes | None, str]]) -> str:
        """One commit per change, so every crate's history reads as its own commit message.

        All the commits' objects are written together, as one pack.
        """
        with self.batch():
            for path, content, message in changes:
                parent = self.commit_file(parent, path, content, message)
        return parent

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Keep the objects that commit_file builds in memory and write them as one pack when
        the outermost batch ends (or earlier, once they reach FLUSH_BYTES). A batch ended by an
        exception writes them too: the commits built so far are valid objects, and unreferenced
        ones are git gc's business.

        Inside a batch the new commits exist only in this process: nothing outside it (git,
        another GitIndex) can read them until the batch ends or ``flush`` runs. ``push`` flushes.
        """
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self.flush()

    def flush(self) -> None:
        """Write the pending objects as one durable pack (a no-op when there are none)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        commits, self._pending_commits = self._pending_commits, []
        self._pending_bytes = 0
        try:
            pack = _write_pack(self._objects, pending)
        except BaseException:
            # The caches must not name objects that are not in the repository.
            for sha in pending:
                self._trees.pop(sha, None)
                self._commit_trees.pop(sha, None)
                self._unpushed.pop(sha, None)
            raise
        # A commit's objects are all built by one _build_commit, stored in one pending set
        # and so written in one pack; what they refer to besides is in its parent's trees.
        for sha in commits:
            self._commit_packs[sha] = pack
        self.objects_written += len(pending)

    def _store(self, sha: str, kind: str, data: bytes) -> None:
        if sha not in self._pending:
            record = self._pending[sha] = _pack_record(kind, data)
            self._pending_bytes += len(record)

    def push(self, commit: str) -> None:
        """Publish ``commit`` on the remote's branch without force; ``PushRejected`` when the
        branch is no longer at ``tip()``.

        To a remote on another host this is ``git push``, whose fast-forward check is our
        compare-and-swap. To a local bare repository it is, when that does what receive-pack
        would do (see ``_read_direct_target`` and ``_direct_plan``), a direct publish: the
        packs this GitIndex wrote for the new commits are linked into the remote's object
        store, then ``git update-ref <branch> <commit> <tip>`` moves the branch only if it is
        still at the tip. That skips receive-pack's connectivity check, which walks every
        tree of the remote (137 ms of a 173 ms push at 100,000 crates) to prove what holds by
        construction here: every object of the new commits is in those packs or reachable
        from the tip, and update-ref's compare-and-swap proves the tip is the remote's.
        ``last_push_mode`` says which way the last push went.
        """
        _check_sha(commit)
        self.flush()  # the objects must be in the clone before git push or the direct publish
        previous, self.last_push_mode = self.last_push_mode, None
        why: str | None = None
        try:
            plan = self._direct_plan(commit)
            why = plan if isinstance(plan, str) else self._publish_directly(commit, *plan)
            if why is not None:
                self.last_push_mode = "git"
                self._git_push(commit)
        finally:
            # Built on a tip that is now the remote's or stale: either way, done with them.
            self._unpushed.clear()
            self._commit_packs.clear()
            mode = self.last_push_mode
            if mode is not None:
                how = "direct publish" if why is None else f"git push, {why}"
                # A change of mode changes a push's cost several times over: worth a line.
                changed = previous is not None and mode != previous
                log.log(
                    logging.INFO if changed else logging.DEBUG,
                    "push of %s to %s: %s",
                    commit,
                    self.remote_url,
                    how,
                )
        self._known_tip = None
        self._git("update-ref", self.tracking_ref, commit, what="git update-ref")
        self._known_tip = (self._ref_signature(), commit)
        self._pushes_since_gc += 1
        if self._pushes_since_gc >= GC_EVERY_PUSHES:
            self.collect_garbage()
        target = self._probe.target
        if self.last_push_mode == "direct" and target is not None:
            self._direct_pushes_since_gc += 1
            if self._direct_pushes_since_gc >= GC_EVERY_PUSHES:
                self._maintain_remote(target)

    def _git_push(self, commit: str) -> None:
        refspec = f"{commit}:refs/heads/{self.branch}"
        result = self._git("push", "--porcelain", REMOTE, refspec, what="git push", check=False)
        # Porcelain status lines: "<flag>\t<src>:<dst>\t<summary>"; "!" marks a refused ref.
        refused = [
            line.split("\t")[2]
            for line in result.stdout.decode(errors="replace").splitlines()
            if line.startswith("!\t") and line.count("\t") >= 2
        ]
        if any(summary.startswith("[rejected]") for summary in refused):
            raise PushRejected(
                _scrub(f"git push rejected, the remote branch {self.branch} moved: {refused[0]}")
            )
        if result.returncode != 0:
            message = _failure("git push", result, self._remote)
            if refused:
                message += _scrub(" | " + " | ".join(refused), self._remote)
            raise GitError(message)

    def _read_direct_target(self) -> _Probe:
        """Whether pushes may publish directly: the remote that git push would use is a local
        bare repository whose effective config (system, global and its own) leaves receive-pack
        nothing to do but store the objects and move the branch. Hooks are looked at per push.
        """
        if self._local_push == "git":
            return _Probe(None, f"{LOCAL_PUSH_ENV}=git", final=True)
        # The URL git push would use: pushurl and pushInsteadOf apply.
        result = self._git(
            "remote", "get-url", "--push", "--all", REMOTE, what="git remote get-url", check=False
        )
        if result.returncode != 0:
            return _Probe(None, _failure("git remote get-url", result, self._remote), final=False)
        urls = result.stdout.decode(errors="replace").splitlines()
        if len(urls) != 1:
            return _Probe(None, "the remote has more than one push URL", final=True)
        path = _local_path(urls[0])
        if path is None:
            return _Probe(None, "the remote is not a local path", final=True)
        if (path / ".git").exists():
            # git would push into path/.git, a repository with a work tree.
            return _Probe(None, f"{path} is not a bare repository", final=True)
        config_file = path / "config"
        watch = (config_file, _stat_signature(config_file))
        if not (path / "objects" / "pack").is_dir():
            return _Probe(None, f"{path} is not a git repository (now)", final=False)
        result = _run(
            [f"--git-dir={path}", "config", "--list", "-z"],
            timeout=self.timeout,
            what="git config",
            remote=self._remote,
            check=False,
        )
        if result.returncode != 0:
            return _Probe(None, _failure("git config", result, self._remote), final=False)
        config: list[tuple[str, str | None]] = []
        for item in result.stdout.decode(errors="replace").split("\0"):
            if item:
                key, newline, value = item.partition("\n")
                config.append((key.lower(), value if newline else None))
        target = _direct_target(path, config)
        if isinstance(target, str):
            return _Probe(None, _scrub(f"{path}: {target}", self._remote), True, watch)
        return _Probe(target, f"{path} is a local bare repository", True, watch)

    def _direct_plan(self, commit: str) -> tuple[_DirectTarget, str, list[Path]] | str:
        """The remote, the tip to compare-and-swap and the packs to ship for publishing
        ``commit`` directly; or why git push has to do it.

        Only commits this GitIndex built since the last push, on the tip, qualify: the walk
        from ``commit`` through their parents must end at the tip, which proves the branch
        moves forward and names the packs that hold every object the tip does not reach.
        """
        probe = self._probe
        changed = probe.watch is not None and _stat_signature(probe.watch[0]) != probe.watch[1]
        if not probe.final or changed:
            probe = self._probe = self._read_direct_target()
        target = probe.target
        if target is None:
            return probe.reason
        hooks = target.receive_hooks()
        if hooks:
            return f"the remote has receive hooks ({', '.join(hooks)})"
        old = self.tip()
        if old is None:
            return "no remote tip is known yet"
        packs: dict[Path, None] = {}  # ordered, without repeats
        sha = commit
        while sha != old:  # parents never cycle: a commit's sha covers its parent's
            parent, pack = self._unpushed.get(sha), self._commit_packs.get(sha)
            if parent is None or pack is None:
                return f"{commit} is not built on the tip {old} since the last push"
            packs[pack] = None
            sha = parent
        return target, old, list(packs)

    def _publish_directly(
        self, commit: str, target: _DirectTarget, old: str, packs: list[Path]
    ) -> str | None:
        """Ship ``packs`` into the remote and move its branch from ``old`` to ``commit``;
        None when done, or why git push has to do it after all.

        A publish that loses the compare-and-swap leaves its packs in the remote (receive-pack
        would have dropped its quarantine): objects that nothing refers to, which the remote's
        gc prunes once they are older than gc.pruneExpire.
        """
        self.last_push_mode = "direct"
        ref = f"refs/heads/{self.branch}"
        if commit == old:
            # Nothing to publish; git push would only check that the branch is still there.
            result = _run(
                [f"--git-dir={target.git_dir}", "rev-parse", "--verify", "--quiet", ref],
                timeout=self.timeout,
                what="git rev-parse",
                remote=self._remote,
                check=False,
            )
            if result.returncode != 0:
                return f"the remote has no branch {self.branch}"
            if result.stdout.decode().strip() != old:
                raise PushRejected(f"the remote branch {self.branch} moved from {old}")
            return None
        try:
            _place_packs(packs, target.git_dir / "objects" / "pack")
        except FileNotFoundError as e:
            return f"a pack or the remote's object directory is gone ({e.filename})"
        except OSError as e:
            raise GitError(
                _scrub(f"cannot put our packs into the remote {self.remote_url}: {e}", self._remote)
            ) from None
        result = _run(
            [f"--git-dir={target.git_dir}", "update-ref", "-m", "push", ref, commit, old],
            timeout=self.timeout,
            what="git update-ref",
            remote=self._remote,
            check=False,
        )
        if result.returncode == 0:
            return None
        # git's first line says what happened; the rest is advice (a stale lock file's).
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
        detail = lines[0].removeprefix("fatal: ")
        if " but expected " in detail:
            raise PushRejected(
                _scrub(f"the remote branch {self.branch} moved: {detail}", self._remote)
            )
        if "unable to resolve reference" in detail or "missing but expected" in detail:
            return f"the remote has no branch {self.branch}"  # git push would create it
        raise GitError(
            _scrub(
                f"moving {self.branch} in the remote {self.remote_url} failed with exit code "
                f"{result.returncode}: {detail}",
                self._remote,
            )
        )

    def _maintain_remote(self, target: _DirectTarget) -> None:
        """Do for the remote what receive-pack's ``gc --auto`` (receive.autogc) would have done:
        without it, every direct publish leaves one more small pack. The publish has landed by
        now, so a failure here is logged, not raised, as receive-pack ignores its gc's."""
        self._direct_pushes_since_gc = 0
        if not target.autogc:
            return
        try:
            _maintain(target.git_dir, self.timeout, self._remote)
        except GitError as e:
            log.warning("maintenance of the remote %s failed: %s", self.remote_url, e)

    def collect_garbage(self) -> None:
        """Merge the small packs that batches write (one per batch) before they slow reads down.

        Only fetch runs git's automatic gc, and the sync fetches only when a push is rejected,
        so without this a busy index would pile up packs (see _maintain).
        """
        self._pushes_since_gc = 0
        _maintain(self.path, self.timeout, self._remote)


def _create_clone(path: Path, remote_url: str, timeout: float) -> None:
    """Init next to `path` and rename into place, so a crash never leaves a half-made clone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _run(["init", "--bare", "--quiet", str(tmp)], timeout=timeout, what="git init")
        repo = git.Repo(tmp)
        with repo.config_writer() as config:
            config.set_value(f'remote "{REMOTE}"', "url", remote_url)
        repo.close()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_clone(path: Path, remote_url: str) -> None:
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(f"{path} exists but is not a git repository") from None
    try:
        if not repo.bare:
            raise GitError(f"{path} is not a bare repository")
        reader = repo.config_reader("repository")
        url = reader.get_value(f'remote "{REMOTE}"', "url", default="")
        fmt = reader.get_value("extensions", "objectformat", default="sha1")
    finally:
        repo.close()
    if str(url) != remote_url:
        raise GitError(
            _scrub(f"{path} is a clone of {url!s}, not of {remote_url} (remove it to clone again)")
        )
    if str(fmt).lower() != "sha1":
        raise GitError(f"{path} uses object format {fmt}; only sha1 is supported")


def _write_askpass(script: Path) -> None:
    if script.exists() and script.read_text() == _ASKPASS_SCRIPT:
        return
    tmp = script.with_suffix(".tmp")
    tmp.write_text(_ASKPASS_SCRIPT)
    os.chmod(tmp, 0o700)
    os.replace(tmp, script)


def _remote_head_branch(path: Path, remote: _Remote, timeout: float) -> str:
    result = _run(
        [f"--git-dir={path}", "ls-remote", "--symref", REMOTE, "HEAD"],
        timeout=timeout,
        what="git ls-remote",
        remote=remote,
    )
    for line in result.stdout.decode(errors="replace").splitlines():
        target, _, name = line.partition("\t")
        if name == "HEAD" and target.startswith("ref: refs/heads/"):
            return target.removeprefix("ref: refs/heads/")
    raise GitError(_scrub(f"the remote {remote.url} has no HEAD naming a branch; pass branch="))


def _check_branch(branch: str, timeout: float) -> None:
    result = _run(
        ["check-ref-format", f"refs/heads/{branch}"],
        timeout=timeout,
        what="git check-ref-format",
        check=False,
    )
    if result.returncode != 0 or branch.startswith("-"):
        raise ValueError(f"not a valid branch name: {branch!r}")


def init_index(
    remote_path: Path,
    dl: str,
    api: str | None,
    branch: str = "master",
    *,
    timeout: float = 60.0,
    author: str = DEFAULT_IDENTITY,
) -> None:
    """Create a bare index remote whose HEAD names `branch`, with config.json as its only file.

    HEAD must name the branch we push to: cargo fetches HEAD, and a HEAD naming a missing branch
    shows up only as "no matching package named ... found".
    """
    remote_path = Path(remote_path)
    if remote_path.exists() and (not remote_path.is_dir() or any(remote_path.iterdir())):
        raise FileExistsError(f"{remote_path} already exists and is not empty")
    _check_branch(branch, timeout)
    config: dict[str, str] = {"dl": dl}
    if api is not None:
        config["api"] = api
    _run(
        ["init", "--bare", "--quiet", f"--initial-branch={branch}", str(remote_path)],
        timeout=timeout,
        what="git init",
    )
    objects = remote_path / "objects"
    blob = _write_loose(objects, "blob", (json.dumps(config, indent=2) + "\n").encode())
    tree = _write_loose(
        objects, "tree", _format_tree([_Entry(_BLOB_MODE, b"config.json", bytes.fromhex(blob))])
    )
    identity = _parse_identity(author)
    commit = _write_loose(
        objects, "commit", _commit_body(tree, [], identity, identity, "Initialize index")
    )
    _run(
        [f"--git-dir={remote_path}", "update-ref", f"refs/heads/{branch}", commit, "0" * 40],
        timeout=timeout,
        what="git update-ref",
    )
