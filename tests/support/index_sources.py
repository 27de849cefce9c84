"""Indexes written by somebody else, for the import tests: bare repositories with any tree
(crate files, symlinks, submodules, stray files) built with one ``git fast-import``, and lines
of every valid kind, in crates.io's form and in others. Indexes at scale are
support/synthetic_index.py's (``index_files``), the generator the benchmarks share.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from indexpub.domain.names import index_path
from support.git import git

CONFIG = b'{\n  "dl": "https://dl.example/{crate}/{crate}-{version}.crate"\n}\n'
REGULAR = "100644"
EXECUTABLE = "100755"
SYMLINK = "120000"
SUBMODULE = "160000"


def cksum(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def build_index(
    remote: Path,
    files: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    *,
    branch: str = "master",
    config: bytes | None = CONFIG,
    special: Iterable[tuple[str, str, str | bytes]] = (),
    bare: bool = True,
) -> str:
    """A repository at ``remote`` whose HEAD names ``branch``, holding one commit with
    ``files`` (path -> bytes), ``config.json`` and ``special`` entries (path, mode, content:
    bytes for a file or symlink target, a commit sha for a submodule). Returns the commit."""
    args = ["init", "--quiet", f"--initial-branch={branch}"]
    git(*args, *(["--bare"] if bare else []), str(remote))
    git_dir = remote if bare else remote / ".git"
    items = files.items() if isinstance(files, Mapping) else files
    chunks = _commit_header(branch)
    if config is not None:
        chunks += _inline(REGULAR, "config.json", config)
    for path, data in items:
        chunks += _inline(REGULAR, path, data)
    for path, mode, content in special:
        if mode == SUBMODULE:
            chunks.append(f"M {mode} {content} {path}\n".encode())
        else:
            chunks += _inline(
                mode, path, content if isinstance(content, bytes) else content.encode()
            )
    chunks.append(b"\n")
    git(f"--git-dir={git_dir}", "fast-import", "--quiet", input=b"".join(chunks), timeout=600)
    return git(f"--git-dir={git_dir}", "rev-parse", f"refs/heads/{branch}").strip()


def _commit_header(branch: str) -> list[bytes]:
    return [
        f"commit refs/heads/{branch}\n".encode(),
        b"committer someone <someone@example.org> 1700000000 +0000\n",
        b"data 14\nAnother index\n",
    ]


def _inline(mode: str, path: str, data: bytes) -> list[bytes]:
    return [f"M {mode} inline {path}\ndata {len(data)}\n".encode(), data, b"\n"]


def crate_files(lines: Mapping[str, list[str]]) -> dict[str, bytes]:
    """Crate name -> lines, as the files of an index (each line ends with a newline)."""
    return {
        index_path(name): "".join(f"{line}\n" for line in ls).encode() for name, ls in lines.items()
    }


def line(name: str, vers: str, **fields: object) -> str:
    """A line in crates.io's form (compact, its key order)."""
    data: dict[str, object] = {
        "name": name,
        "vers": vers,
        "deps": fields.pop("deps", []),
        "cksum": fields.pop("cksum", cksum(name, vers)),
        "features": fields.pop("features", {}),
    }
    if "features2" in fields:
        data["features2"] = fields.pop("features2")
    data["yanked"] = fields.pop("yanked", False)
    data.update(fields)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def dep(name: str, req: str = "^1", **fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": name,
        "req": req,
        "features": [],
        "optional": False,
        "default_features": True,
        "target": None,
        "kind": "normal",
    }
    data.update(fields)
    return data


def varied_lines() -> dict[str, list[str]]:
    """Crates whose lines cover every kind of valid line the import must keep byte for byte."""
    crates_io = "https://github.com/rust-lang/crates.io-index"
    return {
        # Names of 1, 2, 3 and 4+ characters, and mixed case (the file name is lowercase).
        "a": [line("a", "0.1.0"), line("a", "0.2.0", yanked=True)],
        "Xy": [line("Xy", "1.0.0")],
        "abc": [line("abc", "0.0.1"), line("abc", "0.0.2")],
        "MixedCase_Name-2": [line("MixedCase_Name-2", "3.1.4")],
        # Pre-release and build metadata, yanked between them, publish order not version order.
        "pre-build": [
            line("pre-build", "1.0.0-alpha.1"),
            line("pre-build", "0.9.0+build.5", yanked=True),
            line("pre-build", "1.0.0-rc.1+sha.0a1b2c"),
            line("pre-build", "1.0.0"),
        ],
        # features2 with v: 2, rust_version, links, pubtime, a renamed dependency, a target.
        "full": [
            line(
                "full",
                "2.0.0",
                deps=[
                    dep("libc", "^0.2", target="cfg(unix)"),
                    dep("my-serde", ">=1.0.100, <2", optional=True, package="serde"),
                    dep("other", "=1.2.3", kind="dev", registry=crates_io),
                    dep("cc", "^1", kind="build"),
                ],
                features={"default": ["std"], "std": []},
                features2={"serde": ["dep:my-serde", "my-serde?/std"]},
                links="full",
                rust_version="1.70",
                pubtime="2025-11-12T19:30:12Z",
                v=2,
            ),
            line("full", "2.0.1", rust_version="1.56.1", yanked=True, links="full"),
        ],
        # Written otherwise than crates.io writes: another key order, whitespace (Python's
        # json.dumps), a null or missing flag, old-style "kind": null, escapes of < > & as Go
        # writes them, non-ASCII text, and the yanked flag first.
        "others": [
            json.dumps(
                {
                    "vers": "0.1.0",
                    "name": "others",
                    "cksum": cksum("o1"),
                    "deps": [],
                    "yanked": True,
                }
            ),
            '{"name":"others","vers":"0.2.0","deps":[{"name":"x","req":"\\u003e=1","features":[],'
            '"optional":false,"default_features":true,"target":null,"kind":null}],'
            f'"cksum":"{cksum("o2")}","features":{{}},"yanked":null}}',
            f'{{"name":"others","vers":"0.3.0","deps":[],"cksum":"{cksum("o3")}","features":{{}}}}',
            f'{{"yanked" : false, "name": "others", "vers": "0.4.0", "deps": [], '
            f'"cksum": "{cksum("o4")}", "features": {{"std": []}}}}',
            f'{{"name":"others","vers":"0.5.0","deps":[],"cksum":"{cksum("o5")}",'
            '"features":{"yanked":[]},"links":"caf\u00e9-lib","yanked":false}  ',
            f'{{"name":"others","vers":"0.6.0","deps":[],"cksum":"{cksum("o6")}",'
            '"features":{},"yanked":\ttrue}',
        ],
        # A crate whose file shares a directory with the ones above, and a long name.
        "fullness": [line("fullness", "0.1.0")],
        "a" + "b" * 63: [line("a" + "b" * 63, "1.0.0")],
    }


def tree_files(git_dir: Path, rev: str = "HEAD") -> dict[str, bytes]:
    """Every file of ``rev`` by path, read with plain git (ls-tree, then cat-file by sha), to
    compare with what indexpub read or rendered."""
    listing = git(f"--git-dir={git_dir}", "ls-tree", "-r", "-z", rev, text=False)
    shas: dict[str, str] = {}
    for record in listing.split(b"\0"):
        if record:
            meta, path = record.split(b"\t", 1)
            mode, kind, sha = meta.decode().split()
            if kind == "blob" and mode != SYMLINK:
                shas[path.decode()] = sha
    request = "".join(f"{sha}\n" for sha in shas.values())
    out = (
        git(f"--git-dir={git_dir}", "cat-file", "--batch", input=request, text=False)
        if shas
        else b""
    )
    found: dict[str, bytes] = {}
    pos = 0
    for path in shas:
        eol = out.index(b"\n", pos)
        size = int(out[pos:eol].split(b" ")[2])
        found[path] = out[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size + 1
    return found
