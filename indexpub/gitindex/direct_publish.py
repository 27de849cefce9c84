"""The direct publish: a push into a bare repository on the local filesystem without git push.

The packs that hold the new commits are linked into the remote's object store, then ``git
update-ref <branch> <new> <old>`` moves the branch, the old tip being the compare-and-swap. This
module decides whether a remote qualifies (its URL, its effective config, its hooks) and does
the publish; GitIndex.push chooses between it and git push.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from indexpub.atomic_file import fsync_dir, write_atomically
from indexpub.gitindex.process import (
    GitError,
    GitRemote,
    PushRejected,
    failure_message,
    run_git,
    scrub_secrets,
)
from indexpub.gitindex.repo import FileSignature, file_signature

__all__ = [
    "LOCAL_PUSH_ENV",
    "DirectProbe",
    "DirectTarget",
    "local_push_mode",
    "place_packs",
    "probe_push_url",
    "publish_directly",
]

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
class DirectTarget:
    """A local bare remote whose settings allow a direct publish; hooks are checked per push."""

    git_dir: Path
    hooks_dir: Path
    autogc: bool

    def receive_hooks(self) -> list[str]:
        """The receive-side hooks git would run now (``access(X_OK)``, as git checks them)."""
        return [name for name in RECEIVE_HOOKS if os.access(self.hooks_dir / name, os.X_OK)]


class DirectProbe(NamedTuple):
    """What GitIndex.open learned about a direct publish: a target, or why not.

    ``watch`` is the remote's config file and its stat signature when it was read: a changed
    file is read again at the next push. ``final`` is False when the remote could not be read
    at all (absent, unreadable), which is asked again at every push until it answers.
    """

    target: DirectTarget | None
    reason: str
    final: bool
    watch: tuple[Path, FileSignature | None] | None = None

    def outdated(self) -> bool:
        """Whether to look at the remote again: it could not be read, or its config changed."""
        changed = self.watch is not None and _config_signature(self.watch[0]) != self.watch[1]
        return not self.final or changed


def _config_signature(path: Path) -> FileSignature | None:
    """The file_signature of the remote's config file; None also when it cannot be looked at
    (a path that is no directory, no permission), which git push would then report."""
    try:
        return file_signature(path)
    except OSError:
        return None


def probe_push_url(url: str, remote: GitRemote, timeout: float) -> DirectProbe:
    """Whether a push to ``url``, the one URL git push would use, may publish directly: it must
    name a local bare repository whose effective config (system, global and its own) leaves
    receive-pack nothing to do but store the objects and move the branch. Hooks are looked at
    per push (DirectTarget.receive_hooks).
    """
    path = _local_path(url)
    if path is None:
        return DirectProbe(None, "the remote is not a local path", final=True)
    if (path / ".git").exists():
        # git would push into path/.git, a repository with a work tree.
        return DirectProbe(None, f"{path} is not a bare repository", final=True)
    config_file = path / "config"
    watch = (config_file, _config_signature(config_file))
    if not (path / "objects" / "pack").is_dir():
        return DirectProbe(None, f"{path} is not a git repository (now)", final=False)
    result = run_git(
        [f"--git-dir={path}", "config", "--list", "-z"],
        timeout=timeout,
        what="git config",
        remote=remote,
        check=False,
    )
    if result.returncode != 0:
        return DirectProbe(None, failure_message("git config", result, remote), final=False)
    config: list[tuple[str, str | None]] = []
    for item in result.stdout.decode(errors="replace").split("\0"):
        if item:
            key, newline, value = item.partition("\n")
            config.append((key.lower(), value if newline else None))
    target = _direct_target(path, config)
    if isinstance(target, str):
        return DirectProbe(None, scrub_secrets(f"{path}: {target}", remote), True, watch)
    return DirectProbe(target, f"{path} is a local bare repository", True, watch)


def _direct_target(git_dir: Path, config: list[tuple[str, str | None]]) -> DirectTarget | str:
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
    return DirectTarget(git_dir, hooks_dir, autogc is not False)


def publish_directly(
    commit: str,
    target: DirectTarget,
    old: str,
    packs: list[Path],
    *,
    branch: str,
    timeout: float,
    remote: GitRemote,
) -> str | None:
    """Ship ``packs`` into the remote and move its ``branch`` from ``old`` to ``commit``;
    None when done, or why git push has to do it after all.

    A publish that loses the compare-and-swap leaves its packs in the remote, unreferenced (see
    docs/architecture.md, 'The direct publish').
    """
    ref = f"refs/heads/{branch}"
    if commit == old:
        # Nothing to publish; git push would only check that the branch is still there.
        result = run_git(
            [f"--git-dir={target.git_dir}", "rev-parse", "--verify", "--quiet", ref],
            timeout=timeout,
            what="git rev-parse",
            remote=remote,
            check=False,
        )
        if result.returncode != 0:
            return f"the remote has no branch {branch}"
        if result.stdout.decode().strip() != old:
            raise PushRejected(f"the remote branch {branch} moved from {old}")
        return None
    try:
        place_packs(packs, target.git_dir / "objects" / "pack")
    except FileNotFoundError as e:
        return f"a pack or the remote's object directory is gone ({e.filename})"
    except OSError as e:
        raise GitError(
            scrub_secrets(f"cannot put our packs into the remote {remote.url}: {e}", remote)
        ) from None
    result = run_git(
        [f"--git-dir={target.git_dir}", "update-ref", "-m", "push", ref, commit, old],
        timeout=timeout,
        what="git update-ref",
        remote=remote,
        check=False,
    )
    if result.returncode == 0:
        return None
    # git's first line says what happened; the rest is advice (a stale lock file's).
    lines = result.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
    detail = lines[0].removeprefix("fatal: ")
    if " but expected " in detail:
        raise PushRejected(scrub_secrets(f"the remote branch {branch} moved: {detail}", remote))
    if "unable to resolve reference" in detail or "missing but expected" in detail:
        return f"the remote has no branch {branch}"  # git push would create it
    raise GitError(
        scrub_secrets(
            f"moving {branch} in the remote {remote.url} failed with exit code "
            f"{result.returncode}: {detail}",
            remote,
        )
    )


def place_packs(packs: Sequence[Path], folder: Path, *, copy: bool = False) -> int:
    """Make ``packs`` (.pack paths, each with its .idx beside it) part of the object store at
    ``folder`` (an objects/pack directory), durably; return how many files were copied.

    Every .pack goes in before any .idx (the .idx is what makes git see a pack), and the
    directory is fsynced after each of the two steps. Each file is hard-linked to its final
    name; where linking fails (another filesystem, a filesystem without links, a protected
    link) it is copied under git's temporary prefix, fsynced and renamed into place (see
    docs/architecture.md, 'The direct publish'). A pack already present under its name is the
    same pack: packs are named by the checksum of their contents.

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
