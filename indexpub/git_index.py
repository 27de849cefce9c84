"""The git side of the index: a bare clone, commits built in the object database, non-force pushes.

The sync worker is the only writer, so this module keeps no locks; the remote's fast-forward check
is the compare-and-swap that catches anybody else (`PushRejected`). A commit never touches a work
tree or an index file: it reads the trees along one path with a single `git cat-file --batch`,
writes the new blob, those trees and the commit as loose objects from Python, and so costs the same
whether the index holds a thousand crate files or a quarter of a million.

Every git process runs with a timeout in its own process group, because a hung push would hold the
single-consumer lock forever. Credentials reach git only through the environment (an askpass helper
or `GIT_SSH_COMMAND`), never through argv, and every message we raise is scrubbed of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import git

from indexpub.atomic_file import write_atomically

__all__ = [
    "DEFAULT_IDENTITY",
    "GitError",
    "GitIndex",
    "GitTimeout",
    "PushRejected",
    "check_crate_path",
    "init_index",
]

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


def _parse_tree(data: bytes) -> list[_Entry]:
    entries = []
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        entries.append(_Entry(data[pos:space], data[space + 1 : nul], data[nul + 1 : nul + 21]))
        pos = nul + 21
    return entries


def _format_tree(entries: list[_Entry]) -> bytes:
    # git orders a directory as if its name ended in "/".
    ordered = sorted(entries, key=lambda e: e.name + b"/" if e.is_tree else e.name)
    return b"".join(e.mode + b" " + e.name + b"\0" + e.sha for e in ordered)


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


# --- the index ----------------------------------------------------------------------------------


# How many pushes between two ``git gc --auto`` checks.
GC_EVERY_PUSHES = 100


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
        # Commits and trees by sha (objects never change): those that read_files fetched and
        # those that commit_file wrote, so that a batch of commits reads git once.
        self._cache: dict[str, _Object] = {}

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
    ) -> GitIndex:
        """Open the bare clone at `path`, cloning first if it is missing or an empty directory.

        Without `branch`, the remote's HEAD decides, because that is the branch cargo reads.
        """
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
        index = cls(path, remote, branch, timeout=timeout, author=author, committer=committer)
        if created:
            index.fetch()
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
        self._git("fetch", "--quiet", "--no-tags", REMOTE, refspec, what="git fetch")
        tip = self.tip()
        if tip is None:
            raise GitError(f"git fetch left no commit at {self.tracking_ref}")
        return tip

    def tip(self) -> str | None:
        """The remote tip as of the last fetch or push; None before the first fetch."""
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
        return result.stdout.decode().strip()

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
        self._cache.clear()  # one batch's worth: trees of the current tip only
        for obj in found[: len(specs) - len(paths)]:
            if obj is not None and obj.kind in ("commit", "tree"):
                self._cache[obj.sha] = obj
        files: list[bytes | None] = []
        for path, obj in zip(paths, found[len(specs) - len(paths) :], strict=True):
            if obj is not None and obj.kind != "blob":
                raise GitError(f"{path} is a {obj.kind} in {commit}, not a file")
            files.append(None if obj is None else obj.data)
        return files

    def _cached_path(self, parent: str, dirs: list[str]) -> list[_Object | None] | None:
        """What commit_file reads (the commit, its root tree, the trees along ``dirs``) from
        memory; None when anything is not cached (then git is asked)."""
        commit = self._cache.get(parent)
        if commit is None or not commit.data.startswith(b"tree "):
            return None
        tree = self._cache.get(commit.data[5:45].decode())
        found: list[_Object | None] = [commit, tree]
        for name in dirs:
            if tree is None:  # under a directory the path creates
                found.append(None)
                continue
            entry = next((e for e in _parse_tree(tree.data) if e.name == name.encode()), None)
            if entry is None:
                tree = None  # a directory the path creates: absent, which is an answer
            else:
                tree = self._cache.get(entry.sha.hex())
                if tree is None:
                    return None
            found.append(tree)
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
        *dirs, filename = path.split("/")
        cached = self._cached_path(parent, dirs)
        if cached is None:
            specs = [parent, f"{parent}^{{tree}}"]
            specs += [f"{parent}:{'/'.join(dirs[:i])}" for i in range(1, len(dirs) + 1)]
            cached = self._cat_file(specs)
        commit, *trees = cached
        if commit is None or commit.kind != "commit" or trees[0] is None:
            raise GitError(f"parent {parent} is not a commit in {self.path}")
        root_tree = trees[0].sha
        levels: list[list[_Entry]] = []
        for level, tree in enumerate(trees):
            if tree is None:
                levels.append([])
            elif tree.kind == "tree":
                levels.append(_parse_tree(tree.data))
            else:
                where = "/".join(dirs[:level])
                raise GitError(f"{where} is a {tree.kind} in {parent}, expected a directory")
        name = filename.encode()
        if any(e.name == name and e.is_tree for e in levels[-1]):
            raise GitError(f"{path} is a directory in {parent}, expected a file")

        # Hash bottom-up (the file's directory first, the root last) and write only when the
        # root changed, so a no-op update leaves nothing behind.
        pending: list[tuple[str, bytes]] = []
        new_sha: bytes | None = None
        if content is not None:
            pending.append(("blob", content))
            new_sha = bytes.fromhex(_hash_object("blob", content)[0])
        child_name, child_mode = name, _BLOB_MODE
        for level in range(len(levels) - 1, -1, -1):
            entries = [e for e in levels[level] if e.name != child_name]
            if new_sha is not None:
                entries.append(_Entry(child_mode, child_name, new_sha))
            if not entries and level > 0:
                new_sha = None  # an empty directory disappears from its parent
            else:
                data = _format_tree(entries)
                pending.append(("tree", data))
                new_sha = bytes.fromhex(_hash_object("tree", data)[0])
            if level > 0:
                child_name, child_mode = dirs[level - 1].encode(), _TREE_MODE
        assert new_sha is not None
        if new_sha.hex() == root_tree:
            return parent
        for kind, data in pending:
            self._store(kind, data)
        body = _commit_body(new_sha.hex(), [parent], self._author, self._committer, message)
        return self._store("commit", body)

    def commit_files(self, parent: str, changes: Sequence[tuple[str, bytes | None, str]]) -> str:
        """One commit per change, so every crate's history reads as its own commit message."""
        for path, content, message in changes:
            parent = self.commit_file(parent, path, content, message)
        return parent

    def _store(self, kind: str, data: bytes) -> str:
        self.objects_written += 1
        sha = _write_loose(self._objects, kind, data)
        if kind in ("commit", "tree"):
            self._cache[sha] = _Object(sha, kind, data)
        return sha

    def push(self, commit: str) -> None:
        """Push without force: the remote's fast-forward check is our compare-and-swap."""
        _check_sha(commit)
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
        self._git("update-ref", self.tracking_ref, commit, what="git update-ref")
        self._pushes_since_gc += 1
        if self._pushes_since_gc >= GC_EVERY_PUSHES:
            self.collect_garbage()

    def collect_garbage(self) -> None:
        """Pack the loose objects that commit_file writes (about five per update).

        Only fetch runs git's automatic gc, and the sync fetches only when a push is rejected,
        so without this a busy index would pile up loose files. ``repack -d`` packs just the
        loose objects (a small, fast pack); ``gc --auto`` then merges packs once there are many.
        """
        self._pushes_since_gc = 0
        self._git("repack", "-d", "-q", what="git repack")
        self._git("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet", what="git gc")


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
