"""Semantic versions and version requirements, parsed exactly as cargo's `semver` crate does.

cargo silently skips an index line whose ``vers`` it cannot parse, and calls the whole entry
invalid when a dependency's ``req`` does not parse, so the registry has to apply the same
grammar before it writes anything. The parsers below follow the `semver` crate (1.0) step by
step, including its error wording, so that a refusal here reads like the error cargo itself
would have given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexpub.errors import InvalidVersion, shorten

U64_MAX = 2**64 - 1
MAX_COMPARATORS = 32

_DIGITS = frozenset("0123456789")
_IDENT_CHARS = _DIGITS | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_IDENTIFIER_RE = re.compile(r"[0-9A-Za-z-]+")

MAJOR = "major version number"
MINOR = "minor version number"
PATCH = "patch version number"
PRE = "pre-release identifier"
BUILD = "build metadata"


class _Problem(Exception):
    """A parse failure without the text around it; the public functions add that."""


# --------------------------------------------------------------------------- lexing helpers


def _numeric(text: str, i: int, pos: str) -> tuple[int, int]:
    """Read a number at ``i`` the way semver does: no leading zero, at most u64::MAX."""
    start = i
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    digits = text[start:i]
    if not digits:
        if i < len(text):
            raise _Problem(f"unexpected character {text[i]!r} while parsing {pos}")
        raise _Problem(f"unexpected end of input while parsing {pos}")
    if len(digits) > 1 and digits[0] == "0":
        raise _Problem(f"invalid leading zero in {pos}")
    # Check the length before int(): Python refuses very long digit strings on its own.
    if len(digits) > len(str(U64_MAX)) or int(digits) > U64_MAX:
        raise _Problem(f"value of {pos} exceeds u64::MAX")
    return int(digits), i


def _dot(text: str, i: int, pos: str) -> int:
    if i < len(text) and text[i] == ".":
        return i + 1
    if i < len(text):
        raise _Problem(f"unexpected character {text[i]!r} after {pos}")
    raise _Problem(f"unexpected end of input while parsing {pos}")


def _identifiers(text: str, i: int, pos: str) -> tuple[tuple[str, ...], int]:
    """Read dot-separated identifiers; an empty result means none started at ``i``."""
    found: list[str] = []
    while True:
        start = i
        while i < len(text) and text[i] in _IDENT_CHARS:
            i += 1
        segment = text[start:i]
        boundary = text[i] if i < len(text) else ""
        if not segment:
            if not found and boundary != ".":
                return (), i
            raise _Problem(f"empty identifier segment in {pos}")
        if pos == PRE and len(segment) > 1 and segment.isdigit() and segment[0] == "0":
            raise _Problem(f"invalid leading zero in {pos}")
        found.append(segment)
        if boundary != ".":
            return tuple(found), i
        i += 1


# --------------------------------------------------------------------------- Version


@dataclass(frozen=True)
class Version:
    """A semver version; ``str()`` gives back the exact text it was parsed from.

    That round trip holds because the grammar admits a single spelling per version (no
    leading zeros, no spaces, no ``v``). ``==`` compares build metadata too, since cargo
    treats ``0.1.0`` and ``0.1.0+b`` as two versions; ``<``/``>`` follow semver precedence,
    which ignores build metadata, so ``0.1.0 <= 0.1.0+b`` and ``0.1.0 >= 0.1.0+b`` both hold.
    """

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Direct construction must not break the str() round trip that the index relies on.
        for number in (self.major, self.minor, self.patch):
            if isinstance(number, bool) or not isinstance(number, int):
                raise InvalidVersion(f"invalid version number {number!r}: expected an integer")
            if not 0 <= number <= U64_MAX:
                raise InvalidVersion(f"invalid version number {number!r}: not in 0..u64::MAX")
        for part, what in ((self.pre, PRE), (self.build, BUILD)):
            for identifier in part:
                if not isinstance(identifier, str) or not _IDENTIFIER_RE.fullmatch(identifier):
                    raise InvalidVersion(f"invalid {what} {shorten(identifier)}")
                numeric = identifier.isdigit()
                if what == PRE and numeric and len(identifier) > 1 and identifier[0] == "0":
                    raise InvalidVersion(f"invalid {what} {shorten(identifier)}: leading zero")

    @classmethod
    def parse(cls, text: object, *, what: str = "version") -> Version:
        """Parse ``text`` with cargo's rules; ``what`` names the field in the error message."""
        if not isinstance(text, str):
            raise InvalidVersion(f"invalid {what} {shorten(text)}: expected a string")
        if not text:
            raise InvalidVersion(f"invalid {what} '': empty string, expected a semver version")
        try:
            return _parse_version(text)
        except _Problem as problem:
            raise InvalidVersion(f"invalid {what} {shorten(text)}: {problem}") from None

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    @property
    def is_prerelease(self) -> bool:
        return bool(self.pre)

    def without_build(self) -> Version:
        """The version once build metadata is dropped.

        Two versions that are equal this way must not both be published: cargo would see two
        different versions and silently prefer the one with build metadata.
        """
        return Version(self.major, self.minor, self.patch, self.pre)

    def precedence_key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """A sort key giving semver precedence (a release sorts after its pre-releases)."""
        pre_key = tuple(
            (0, int(ident), "") if ident.isdigit() else (1, 0, ident) for ident in self.pre
        )
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre_key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() < other.precedence_key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() <= other.precedence_key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() > other.precedence_key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() >= other.precedence_key()


def _parse_version(text: str) -> Version:
    major, i = _numeric(text, 0, MAJOR)
    i = _dot(text, i, MAJOR)
    minor, i = _numeric(text, i, MINOR)
    i = _dot(text, i, MINOR)
    patch, i = _numeric(text, i, PATCH)
    pos = PATCH
    pre: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    if text.startswith("-", i):
        pos = PRE
        pre, i = _identifiers(text, i + 1, PRE)
        if not pre:
            raise _Problem(f"empty identifier segment in {PRE}")
    if text.startswith("+", i):
        pos = BUILD
        build, i = _identifiers(text, i + 1, BUILD)
        if not build:
            raise _Problem(f"empty identifier segment in {BUILD}")
    if i < len(text):
        raise _Problem(f"unexpected character {text[i]!r} after {pos}")
    return Version(major, minor, patch, pre, build)


def parse_version(text: object, *, what: str = "version") -> Version:
    """Parse a version with cargo's rules (see :meth:`Version.parse`)."""
    return Version.parse(text, what=what)


# --------------------------------------------------------------------------- VersionReq

_OPS = ("=", ">=", ">", "<=", "<", "~", "^")


@dataclass(frozen=True)
class Comparator:
    """One comparator of a requirement; ``op`` is ``*`` for a wildcard like ``1.*``."""

    op: str
    major: int
    minor: int | None
    patch: int | None
    pre: tuple[str, ...] = ()

    def __str__(self) -> str:
        # Mirrors semver's Display, which is what cargo sends as `version_req` on publish.
        text = ("" if self.op == "*" else self.op) + str(self.major)
        if self.minor is None:
            return text + (".*" if self.op == "*" else "")
        text += f".{self.minor}"
        if self.patch is None:
            return text + (".*" if self.op == "*" else "")
        text += f".{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        return text


@dataclass(frozen=True)
class VersionReq:
    """A parsed requirement; no comparators means ``*`` (any version)."""

    comparators: tuple[Comparator, ...]

    def __str__(self) -> str:
        if not self.comparators:
            return "*"
        return ", ".join(str(comparator) for comparator in self.comparators)


def _wildcard(text: str) -> tuple[str, str] | None:
    if text[:1] in ("*", "x", "X"):
        return text[0], text[1:]
    return None


def _op(text: str) -> tuple[str | None, str]:
    for op in _OPS:
        if text.startswith(op):
            return op, text[len(op) :]
    return None, text


def _comparator(text: str) -> tuple[Comparator, str, str]:
    """Parse one comparator; return it, the last position parsed, and the rest of the text."""
    op, rest = _op(text)
    default_op = op is None
    effective_op = "^" if op is None else op
    rest = rest.lstrip(" ")
    pos = MAJOR
    major, i = _numeric(rest, 0, MAJOR)
    minor: int | None = None
    patch: int | None = None
    has_wildcard = False
    if rest.startswith(".", i):
        pos = MINOR
        wild = _wildcard(rest[i + 1 :])
        if wild is not None:
            has_wildcard = True
            if default_op:
                effective_op = "*"
            i += 2
        else:
            minor, i = _numeric(rest, i + 1, MINOR)
    if rest.startswith(".", i):
        pos = PATCH
        wild = _wildcard(rest[i + 1 :])
        if wild is not None:
            if default_op:
                effective_op = "*"
            i += 2
        elif has_wildcard:
            raise _Problem("unexpected character after wildcard in version req")
        else:
            patch, i = _numeric(rest, i + 1, PATCH)
    pre: tuple[str, ...] = ()
    if patch is not None and rest.startswith("-", i):
        pos = PRE
        pre, i = _identifiers(rest, i + 1, PRE)
        if not pre:
            raise _Problem(f"empty identifier segment in {PRE}")
    if patch is not None and rest.startswith("+", i):
        # semver accepts build metadata in a requirement and then ignores it.
        pos = BUILD
        build, i = _identifiers(rest, i + 1, BUILD)
        if not build:
            raise _Problem(f"empty identifier segment in {BUILD}")
    comparator = Comparator(effective_op, major, minor, patch, pre)
    return comparator, pos, rest[i:].lstrip(" ")


def _wildcard_alone_problem(text: str) -> _Problem | None:
    """The clearer error semver gives for ``*, >=1`` style input."""
    wild = _wildcard(text)
    if wild is None:
        return None
    after = wild[1].lstrip(" ")
    if not after or after.startswith(","):
        return _Problem(f"wildcard req ({wild[0]}) must be the only comparator in the version req")
    return None


def _parse_req(text: str) -> VersionReq:
    rest = text.lstrip(" ")
    wild = _wildcard(rest)
    if wild is not None:
        after = wild[1].lstrip(" ")
        if not after:
            return VersionReq(())
        if after.startswith(","):
            raise _Problem(
                f"wildcard req ({wild[0]}) must be the only comparator in the version req"
            )
        raise _Problem("unexpected character after wildcard in version req")
    comparators: list[Comparator] = []
    while True:
        try:
            comparator, pos, rest_after = _comparator(rest)
        except _Problem as problem:
            raise (_wildcard_alone_problem(rest) or problem) from None
        comparators.append(comparator)
        if not rest_after:
            return VersionReq(tuple(comparators))
        if not rest_after.startswith(","):
            raise _Problem(f"expected comma after {pos}, found {rest_after[0]!r}")
        if len(comparators) == MAX_COMPARATORS:
            raise _Problem("excessive number of version comparators")
        rest = rest_after[1:].lstrip(" ")


def parse_version_req(text: object, *, what: str = "version requirement") -> VersionReq:
    """Parse a dependency requirement (``^1.2``, ``>=1, <2``, ``1.*``, ``*``) like cargo."""
    if not isinstance(text, str):
        raise InvalidVersion(f"invalid {what} {shorten(text)}: expected a string")
    try:
        return _parse_req(text)
    except _Problem as problem:
        raise InvalidVersion(f"invalid {what} {shorten(text)}: {problem}") from None


def validate_version_req(text: object, *, what: str = "version requirement") -> str:
    """Return ``text`` unchanged if cargo accepts it as a requirement, else raise."""
    parse_version_req(text, what=what)
    assert isinstance(text, str)
    return text


def normalize_version_req(text: object, *, what: str = "version requirement") -> str:
    """The requirement as cargo sends it on publish (``1.0`` becomes ``^1.0``)."""
    return str(parse_version_req(text, what=what))


# --------------------------------------------------------------------------- rust-version

_RUST_VERSION_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,2}")


def validate_rust_version(text: object, *, what: str = "rust_version") -> str:
    """Return ``text`` if it is a minimum Rust version cargo accepts (``1.70``, ``1.70.0``).

    cargo takes one to three numbers and refuses operators, pre-releases and build metadata.
    """
    if not isinstance(text, str):
        raise InvalidVersion(f"invalid {what} {shorten(text)}: expected a string")
    if not _RUST_VERSION_RE.fullmatch(text):
        raise InvalidVersion(
            f'invalid {what} {shorten(text)}: expected a version like "1.70" or "1.70.0"'
        )
    if any(len(part) > 20 or int(part) > U64_MAX for part in text.split(".")):
        raise InvalidVersion(f"invalid {what} {shorten(text)}: a number exceeds u64::MAX")
    return text
