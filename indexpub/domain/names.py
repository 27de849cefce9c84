"""Crate names: what may be published, when two names collide, where a crate lives in the index.

The rules follow crates.io, because a name that crates.io refuses tends to break some tool
somewhere: index paths are computed from byte lengths (so names must be ASCII), Windows cannot
create files named like devices (so a checkout of the index would fail there), and a crate named
like a sysroot crate (``std``, ``core``) shadows it in confusing ways.
"""

from __future__ import annotations

from indexpub.errors import InvalidName, shorten

MAX_NAME_LENGTH = 64

# crates.io's `reserved_crate_names` table, in canonical form (see `canonical_name`).
RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "alloc",
        "arena",
        "ast",
        "builtins",
        "collections",
        "compiler_builtins",
        "compiler_rt",
        "compiletest",
        "core",
        "coretest",
        "debug",
        "driver",
        "flate",
        "fmt_macros",
        "grammar",
        "graphviz",
        "macro",
        "macros",
        "proc_macro",
        "rbml",
        "rust_installer",
        "rustbook",
        "rustc",
        "rustc_back",
        "rustc_borrowck",
        "rustc_driver",
        "rustc_llvm",
        "rustc_resolve",
        "rustc_trans",
        "rustc_typeck",
        "rustdoc",
        "rustllvm",
        "rustuv",
        "serialize",
        "std",
        "syntax",
        "test",
        "unicode",
    }
)

# Names Windows refuses as file names whatever the case; the index stores one file per crate.
WINDOWS_DEVICE_NAMES: frozenset[str] = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{digit}" for digit in range(1, 10)}
    | {f"lpt{digit}" for digit in range(1, 10)}
)

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHARS = _LETTERS | frozenset("0123456789-_")


def _check_syntax(name: object, what: str, *, leading_underscore: bool) -> str:
    """Check the character rules shared by crate and dependency names."""
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {shorten(name)}: expected a string")
    if not name:
        raise InvalidName(f"invalid {what} '': the name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"invalid {what} {shorten(name)}: longer than {MAX_NAME_LENGTH} characters"
            f" ({len(name)})"
        )
    bad = sorted({char for char in name if char not in _NAME_CHARS})
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        raise InvalidName(
            f"invalid {what} {shorten(name)}: only ASCII letters, digits, '-' and '_' are allowed"
            f" (found {shown})"
        )
    first = name[0]
    if first in _LETTERS or (leading_underscore and first == "_"):
        return name
    allowed = "an ASCII letter or '_'" if leading_underscore else "an ASCII letter"
    raise InvalidName(f"invalid {what} {shorten(name)}: the first character must be {allowed}")


def validate_crate_name(name: object, *, what: str = "crate name") -> str:
    """Return ``name`` if a new crate may be published under it, else raise InvalidName."""
    checked = _check_syntax(name, what, leading_underscore=False)
    lowered = checked.lower()
    if lowered in WINDOWS_DEVICE_NAMES:
        raise InvalidName(f"invalid {what} {shorten(checked)}: it is a Windows device name")
    if canonical_name(checked) in RESERVED_NAMES:
        raise InvalidName(f"invalid {what} {shorten(checked)}: the name is reserved")
    return checked


def validate_dependency_name(name: object, *, what: str = "dependency name") -> str:
    """Return ``name`` if it is acceptable as the name of something depended upon.

    Looser than :func:`validate_crate_name` on purpose: a dependency may be an alias that
    starts with ``_``, or a crate of another registry whose names we do not police, so only
    the character rules apply, not the reserved or device names.
    """
    return _check_syntax(name, what, leading_underscore=True)


def is_valid_crate_name(name: object) -> bool:
    """Say whether :func:`validate_crate_name` would accept ``name``."""
    try:
        validate_crate_name(name)
    except InvalidName:
        return False
    return True


def canonical_name(name: str) -> str:
    """The form under which two names collide: ``Foo-Bar`` and ``foo_bar`` are one crate."""
    return name.lower().replace("-", "_")


def index_path(name: str) -> str:
    """The path of the crate's file inside the index, computed the way cargo looks it up.

    The name is checked first because it becomes a path: a name like ``../x`` must never get
    this far, whatever the caller validated before.
    """
    lowered = _check_syntax(name, "crate name", leading_underscore=False).lower()
    return _layout(lowered)


def is_index_path(path: str) -> bool:
    """Say whether ``path`` is where the index layout puts a crate file.

    It must be the path :func:`index_path` computes for its own last component, which must be
    lowercase and of the characters and length a crate name may have. The first character is
    not checked: a file that an older rule or another registry put there is still a crate file.
    """
    file_name = path.rpartition("/")[2]
    return (
        1 <= len(file_name) <= MAX_NAME_LENGTH
        and file_name == file_name.lower()
        and all(char in _NAME_CHARS for char in file_name)
        and _layout(file_name) == path
    )


def _layout(file_name: str) -> str:
    """The path of the crate file ``file_name`` (a lowercased name): cargo's index layout."""
    if len(file_name) == 1:
        return f"1/{file_name}"
    if len(file_name) == 2:
        return f"2/{file_name}"
    if len(file_name) == 3:
        return f"3/{file_name[0]}/{file_name}"
    return f"{file_name[0:2]}/{file_name[2:4]}/{file_name}"
