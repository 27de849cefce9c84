"""The bare clone and the remote's refs: making and checking a clone, its tracking ref and tip,
fetch and git push, a new index remote, the remote's HEAD, and packing a repository's objects.

The sync worker is the only writer, so nothing here takes a lock; the remote's fast-forward
check is the compare-and-swap that catches anybody else (`PushRejected`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import git

from indexpub.gitindex.objects import (
    BLOB_MODE,
    TreeEntry,
    format_commit,
    format_tree,
    parse_identity,
    write_loose_object,
)
from indexpub.gitindex.process import (
    GitError,
    GitRemote,
    PushRejected,
    git_failure,
    run_git,
    scrub_secrets,
    write_askpass,
)

__all__ = [
    "DEFAULT_IDENTITY",
    "REMOTE",
    "Clone",
    "FileSignature",
    "file_signature",
    "gc_auto",
    "init_index",
    "maintain",
    "remote_head",
    "remote_head_by_url",
    "repack_command",
]

DEFAULT_IDENTITY = "indexpub <indexpub@localhost>"
REMOTE = "origin"

FileSignature = tuple[int, int, int]


def file_signature(path: Path) -> FileSignature | None:
    """What tells the file at ``path`` from an earlier version of it: git replaces a file it
    updates (a ref, a config file) by renaming a lock file over it, a new inode every time.
    None when there is no file there; any other failure to look raises OSError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Clone:
    """A bare clone of the index remote: the git processes run in it, the tracking ref of the
    branch and the tip it holds, fetch and git push."""

    def __init__(self, path: Path, remote: GitRemote, branch: str, timeout: float) -> None:
        self.path = path
        self.remote = remote
        self.branch = branch
        self.timeout = timeout
        self.tracking_ref = f"refs/remotes/{REMOTE}/{branch}"
        # The tracking ref's value with the stat signature of the files that can hold it, so
        # that tip() starts no git process unless the ref files changed since we looked.
        self._known_tip: tuple[tuple[FileSignature | None, ...], str] | None = None

    @classmethod
    def open(
        cls, remote_url: str, path: Path | str, branch: str | None, timeout: float
    ) -> tuple[Clone, bool]:
        """The bare clone at `path`, cloned first (without fetching) if it is missing or an
        empty directory, and whether it was; see GitIndex.open."""
        path = Path(path).absolute()
        remote = GitRemote.parse(remote_url, askpass=path / "indexpub-askpass")
        if not remote.url.strip() or any(c in remote.url for c in "\n\r\0"):
            raise ValueError("remote URL is empty or spans lines")
        created = not path.exists() or (path.is_dir() and not any(path.iterdir()))
        if created:
            _create_clone(path, remote.url, timeout)
        else:
            _check_clone(path, remote.url)
        write_askpass(path / "indexpub-askpass")
        if branch is None:
            branch = _remote_head_branch(path, remote, timeout)
        _check_branch(branch, timeout)
        return cls(path, remote, branch, timeout), created

    def git(
        self, *args: str, what: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return run_git(
            [f"--git-dir={self.path}", *args],
            timeout=self.timeout,
            what=what,
            remote=self.remote,
            input=input,
            check=check,
        )

    def fetch(self) -> str:
        """Move the tracking ref to the remote tip, even backwards (a squash rewrites history)."""
        refspec = f"+refs/heads/{self.branch}:{self.tracking_ref}"
        self._known_tip = None
        self.git("fetch", "--quiet", "--no-tags", REMOTE, refspec, what="git fetch")
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
        result = self.git(
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

    def _ref_signature(self) -> tuple[FileSignature | None, ...]:
        files = (self.path / self.tracking_ref, self.path / "packed-refs")
        return tuple(file_signature(file) for file in files)

    def pushed(self, commit: str) -> None:
        """Move the tracking ref to ``commit``, which the remote's branch now holds."""
        self._known_tip = None
        self.git("update-ref", self.tracking_ref, commit, what="git update-ref")
        self._known_tip = (self._ref_signature(), commit)

    def push(self, commit: str) -> None:
        """git push ``commit`` to the remote's branch, without force; ``PushRejected`` when
        that is not a fast-forward."""
        refspec = f"{commit}:refs/heads/{self.branch}"
        result = self.git("push", "--porcelain", REMOTE, refspec, what="git push", check=False)
        # Porcelain status lines: "<flag>\t<src>:<dst>\t<summary>"; "!" marks a refused ref.
        refused = [
            line.split("\t")[2]
            for line in result.stdout.decode(errors="replace").splitlines()
            if line.startswith("!\t") and line.count("\t") >= 2
        ]
        if any(summary.startswith("[rejected]") for summary in refused):
            raise PushRejected(
                scrub_secrets(
                    f"git push rejected, the remote branch {self.branch} moved: {refused[0]}"
                )
            )
        if result.returncode != 0:
            error = git_failure("git push", result, self.remote)
            if refused:
                error.args = (str(error) + scrub_secrets(" | " + " | ".join(refused), self.remote),)
            raise error


def repack_command(git_dir: Path) -> list[str]:
    """The geometric repack (arguments after ``git``) that merges the small packs publishes
    leave in ``git_dir``: safe beside concurrent publishes, so it may run in the background
    (see gitindex.maintenance), unlike ``gc --auto``'s full repack.

    Without a delta search (``--window=0``; existing deltas are kept): its job is the number of
    packs, not their size. Once a squash has written its multi-pack bitmap, git 2.39 searches
    deltas for every whole object of the packs it rolls up, and after a full rebuild that is
    the whole index: at 200,000 crates 99 s and 708 MB, against 2.1 s and 278 MB without, for
    a pack 7% larger. Publishes' packs rolled up alone gain nothing from the search either:
    the versions their blobs could be deltas of are in the packs left as they are.
    """
    return [f"--git-dir={git_dir}", "repack", "-d", "-q", "--geometric=2", "--window=0"]


def gc_auto(git_dir: Path, timeout: float, remote: GitRemote | None) -> None:
    """``git gc --auto``, waited for: usually it finds nothing to do in a few milliseconds.

    When it does act (more than gc.autoPackLimit packs, gc.auto loose objects) it repacks by
    reachability and deletes every pack it listed, which loses the objects of a pack written
    meanwhile and referenced only after its walk (seen with the clone's tracking ref): it must
    never run beside a publish, so it runs in the writer's own path.
    """
    run_git(
        [f"--git-dir={git_dir}", "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
        timeout=timeout,
        what="git gc",
        remote=remote,
    )


def maintain(git_dir: Path, timeout: float, remote: GitRemote | None) -> None:
    """Merge the small packs that publishes leave in ``git_dir``, then let ``gc --auto`` decide.

    A geometric repack merges the small packs (and any loose objects) without rewriting the
    big one each time and is safe with concurrent readers and writers; ``gc --auto`` stays the
    backstop (many packs or loose objects, prune). GitIndex.push runs the repack in the
    background and gc_auto itself (see gitindex.maintenance).
    """
    run_git(repack_command(git_dir), timeout=timeout, what="git repack", remote=remote)
    gc_auto(git_dir, timeout, remote)


def _create_clone(path: Path, remote_url: str, timeout: float) -> None:
    """Init next to `path` and rename into place, so a crash never leaves a half-made clone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        run_git(["init", "--bare", "--quiet", str(tmp)], timeout=timeout, what="git init")
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
            scrub_secrets(
                f"{path} is a clone of {url!s}, not of {remote_url} (remove it to clone again)"
            )
        )
    if str(fmt).lower() != "sha1":
        raise GitError(f"{path} uses object format {fmt}; only sha1 is supported")


def _remote_head_branch(path: Path, remote: GitRemote, timeout: float) -> str:
    branch, _ = remote_head(remote, timeout, git_dir=path)
    if branch is None:
        raise GitError(
            scrub_secrets(
                f"the HEAD of {remote.url} names no branch with commits, and cargo reads the"
                " branch HEAD names (point it at the index's branch: git symbolic-ref HEAD"
                " refs/heads/BRANCH in the remote)"
            )
        )
    return branch


def remote_head_by_url(url: str, timeout: float) -> tuple[str | None, str | None]:
    """:func:`remote_head` without a clone, with the credentials the worker would use (the
    URL's own, else the environment's), for checks that must not touch the worker's clone."""
    with tempfile.TemporaryDirectory(prefix="indexpub-ls-remote-") as tmp:
        askpass = Path(tmp) / "indexpub-askpass"
        write_askpass(askpass)
        return remote_head(GitRemote.parse(url, askpass=askpass), timeout)


def remote_head(
    remote: GitRemote, timeout: float, *, git_dir: Path | None = None
) -> tuple[str | None, str | None]:
    """The branch the remote's HEAD names and the commit it points at, read with ``git
    ls-remote`` (through the clone at ``git_dir``, else by URL); Nones when HEAD names no
    branch with commits."""
    args = ["ls-remote", "--symref", REMOTE if git_dir else remote.url, "HEAD"]
    if git_dir is not None:
        args.insert(0, f"--git-dir={git_dir}")
    result = run_git(args, timeout=timeout, what="git ls-remote", remote=remote)
    branch = sha = None
    for line in result.stdout.decode(errors="replace").splitlines():
        target, _, name = line.partition("\t")
        if name == "HEAD" and target.startswith("ref: refs/heads/"):
            branch = target.removeprefix("ref: refs/heads/")
        elif name == "HEAD":
            sha = target
    return branch, sha


def _check_branch(branch: str, timeout: float) -> None:
    result = run_git(
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
    run_git(
        ["init", "--bare", "--quiet", f"--initial-branch={branch}", str(remote_path)],
        timeout=timeout,
        what="git init",
    )
    objects = remote_path / "objects"
    blob = write_loose_object(objects, "blob", (json.dumps(config, indent=2) + "\n").encode())
    tree = write_loose_object(
        objects, "tree", format_tree([TreeEntry(BLOB_MODE, b"config.json", bytes.fromhex(blob))])
    )
    identity = parse_identity(author)
    commit = write_loose_object(
        objects, "commit", format_commit(tree, [], identity, identity, "Initialize index")
    )
    run_git(
        [f"--git-dir={remote_path}", "update-ref", f"refs/heads/{branch}", commit, "0" * 40],
        timeout=timeout,
        what="git update-ref",
    )
