"""Index entries: the one JSON line per version that cargo reads from the index.

A line cargo cannot use is not a local problem: a bad ``vers`` makes cargo skip the line
silently, and anything else wrong makes the version "invalid", which breaks every lockfile that
pins it. So every line is validated here, against the rules cargo applies when it loads the
index (``cargo-util-schemas``' ``IndexPackage`` and ``Summary``'s feature checks), before the
registry stores it. The JSON we write is byte-for-byte what crates.io writes for the same data,
so an index served by indexpub diffs cleanly against one served by crates.io's code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, NoReturn

from indexpub.domain.names import validate_crate_name, validate_dependency_name
from indexpub.domain.versions import Version, validate_rust_version, validate_version_req
from indexpub.errors import InvalidEntry, InvalidInput, InvalidName, shorten

# Its old name here, which other modules import (it lives in errors.py for names and versions).
_shorten = shorten

DepKind = Literal["normal", "build", "dev"]
Features = Mapping[str, tuple[str, ...]]

# The longest index line the registry stores, serves or reads back (docs/architecture.md, "How
# long an index line may be"): cargo sets no limit of its own and crates.io bounds only what a
# line is made of, so this is generous for crates with thousands of features and small enough
# that no single line can make a crate file, a batch or a reader's buffer unbounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
SUPPORTED_SCHEMA_VERSIONS = (1, 2)

_KINDS: dict[str, DepKind] = {"normal": "normal", "build": "build", "dev": "dev"}
# crates.io sorts dependencies with this kind order, so that `normal` comes first when the
# same dependency appears twice (old cargo versions got confused otherwise).
_KIND_RANK: dict[str, int] = {"normal": 0, "build": 1, "dev": 2}

_CKSUM_RE = re.compile(r"[0-9a-f]{64}")
_PUBTIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+")
_TRIPLE_RE = re.compile(r"[A-Za-z0-9_.-]+")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_DIGITS = frozenset("0123456789")

_ENTRY_FIELDS = frozenset(
    {
        "name",
        "vers",
        "deps",
        "cksum",
        "features",
        "features2",
        "yanked",
        "links",
        "rust_version",
        "pubtime",
        "v",
    }
)
_DEP_FIELDS = frozenset(
    {
        "name",
        "req",
        "features",
        "optional",
        "default_features",
        "target",
        "kind",
        "registry",
        "package",
    }
)
_PUBLISH_DEP_FIELDS = frozenset(
    {
        "name",
        "version_req",
        "features",
        "optional",
        "default_features",
        "target",
        "kind",
        "registry",
        "explicit_name_in_toml",
        "artifact",
        "bindep_target",
        "lib",
    }
)


# =========================================================================== small checks


def _fail(message: str) -> NoReturn:
    raise InvalidEntry(message)


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"invalid {what} {_shorten(value)}: expected a string")
    return value


def _expect_optional_str(value: object, what: str) -> str | None:
    return None if value is None else _expect_str(value, what)


def _expect_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        _fail(f"invalid {what} {_shorten(value)}: expected true or false")
    return value


def _expect_str_list(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        _fail(f"invalid {what} {_shorten(value)}: expected a list of strings")
    for item in value:
        if not isinstance(item, str):
            _fail(f"invalid {what} {_shorten(value)}: expected a list of strings")
    return tuple(value)


def _expect_features(value: object, what: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        _fail(f"invalid {what} {_shorten(value)}: expected an object of feature lists")
    features: dict[str, tuple[str, ...]] = {}
    for key, values in value.items():
        if not isinstance(key, str):
            _fail(f"invalid {what} key {_shorten(key)}: expected a string")
        features[key] = _expect_str_list(values, f"{what}[{key!r}]")
    return features


def _check_unknown_fields(data: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        _fail(f"unknown field {unknown[0]!r} in {where}")


def validate_cksum(value: object) -> str:
    """A lowercase hex sha256, the only form cargo compares against the downloaded file."""
    text = _expect_str(value, "cksum")
    if not _CKSUM_RE.fullmatch(text):
        _fail(f"invalid cksum {_shorten(text)}: expected 64 lowercase hex digits (sha256)")
    return text


def validate_pubtime(value: object) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` and a real UTC time; cargo refuses fractions and offsets."""
    text = _expect_str(value, "pubtime")
    if not _PUBTIME_RE.fullmatch(text):
        _fail(f"invalid pubtime {_shorten(text)}: expected exactly YYYY-MM-DDTHH:MM:SSZ")
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        _fail(f"invalid pubtime {text!r}: not a real date and time")
    return text


def format_pubtime(moment: datetime) -> str:
    """Format an aware datetime the way the index wants it (UTC, whole seconds)."""
    if moment.tzinfo is None:
        raise ValueError("pubtime needs an aware datetime, got a naive one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_links(value: object) -> str:
    """The native library name; cargo takes any string, we refuse blank or multi-word ones."""
    text = _expect_str(value, "links")
    if not text or not text.isprintable() or any(char.isspace() for char in text):
        _fail(f"invalid links {_shorten(text)}: expected a native library name")
    return text


def validate_registry_url(value: object, *, what: str = "registry") -> str:
    """The index URL of another registry; cargo parses it as an absolute URL."""
    text = _expect_str(value, what)
    if not _URL_RE.fullmatch(text):
        _fail(f"invalid {what} {_shorten(text)}: expected the URL of a registry index")
    if not text.isprintable():
        _fail(f"invalid {what} {_shorten(text)}: contains unprintable characters")
    return text


# =========================================================================== cfg(...) targets


class _CfgParser:
    """Parses cargo's ``cfg()`` expressions and prints them the way cargo displays them.

    cargo refuses an entry whose dependency target does not parse, so a balanced-parentheses
    check is not enough; and on publish cargo sends the *displayed* form, which is what a
    ``.crate`` file's manifest must be turned into.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _cfg_tokens(text)
        self.pos = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, expected: str) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise _CfgError(f"expected {expected}, found the end of the expression")
        self.pos += 1
        return token

    def _eat(self, kind: str) -> None:
        token = self._next(repr(kind))
        if token[0] != kind:
            raise _CfgError(f"expected {kind!r}, found {token[1]!r}")

    def _try(self, kind: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == kind:
            self.pos += 1
            return True
        return False

    def parse(self) -> str:
        expr = self.expr()
        token = self._peek()
        if token is not None:
            raise _CfgError(f"unexpected {token[1]!r} after the expression")
        return expr

    def expr(self) -> str:
        token = self._peek()
        if token is not None and token[0] == "ident" and token[1] in ("all", "any"):
            self.pos += 1
            self._eat("(")
            items: list[str] = []
            while not self._try(")"):
                items.append(self.expr())
                if not self._try(","):
                    self._eat(")")
                    break
            return f"{token[1]}({', '.join(items)})"
        if token is not None and token[0] == "ident" and token[1] == "not":
            self.pos += 1
            self._eat("(")
            inner = self.expr()
            self._eat(")")
            return f"not({inner})"
        return self.cfg()

    def cfg(self) -> str:
        kind, name = self._next("an identifier")
        if kind != "ident":
            raise _CfgError(f"expected an identifier, found {name!r}")
        if not self._try("="):
            return name
        kind, value = self._next("a string")
        if kind != "str":
            raise _CfgError(f"expected a string after '{name} =', found {value!r}")
        if not value.isprintable():
            raise _CfgError(f"unprintable characters in the string {value!r}")
        return f'{name} = "{value}"'


class _CfgError(Exception):
    """A cfg expression problem; turned into InvalidEntry with the whole target quoted."""


def _is_ident_start(char: str) -> bool:
    return char == "_" or char in _ASCII_LETTERS


def _is_ident_rest(char: str) -> bool:
    return _is_ident_start(char) or char in _ASCII_DIGITS


def _cfg_tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == " ":
            i += 1
        elif char in "(),=":
            tokens.append((char, char))
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _CfgError("unterminated string")
            tokens.append(("str", text[i + 1 : end]))
            i = end + 1
        elif _is_ident_start(char):
            start = i
            if text.startswith("r#", i) and i + 2 < len(text) and _is_ident_start(text[i + 2]):
                i += 2
            i += 1
            while i < len(text) and _is_ident_rest(text[i]):
                i += 1
            tokens.append(("ident", text[start:i]))
        else:
            raise _CfgError(f"unexpected character {char!r}")
    return tokens


def normalize_target(value: object, *, what: str = "target") -> str:
    """A dependency's platform (``cfg(...)`` or a target triple) in cargo's display form."""
    text = _expect_str(value, what)
    if text.startswith("cfg(") and text.endswith(")"):
        try:
            return f"cfg({_CfgParser(text[4:-1]).parse()})"
        except _CfgError as problem:
            _fail(f"invalid {what} {_shorten(text)}: {problem}")
    if "(" in text:
        _fail(f"invalid {what} {_shorten(text)}: a cfg expression must look like cfg(...)")
    if not _TRIPLE_RE.fullmatch(text):
        _fail(f"invalid {what} {_shorten(text)}: expected cfg(...) or a target triple")
    return text


def validate_target(value: object, *, what: str = "target") -> str:
    """Return ``value`` unchanged when cargo can parse it as a dependency platform."""
    normalize_target(value, what=what)
    assert isinstance(value, str)
    return value


# =========================================================================== features


def _is_xid_start(char: str) -> bool:
    return char.isidentifier() and char != "_"


def _is_xid_continue(char: str) -> bool:
    return ("a" + char).isidentifier()


def validate_feature_name(value: object, *, what: str = "feature name") -> str:
    """A feature's own name, with the character rules cargo and crates.io share."""
    if not isinstance(value, str):
        raise InvalidName(f"invalid {what} {_shorten(value)}: expected a string")
    if not value:
        raise InvalidName(f"invalid {what} '': the name is empty")
    first = value[0]
    if not (_is_xid_start(first) or first == "_" or first in _ASCII_DIGITS):
        raise InvalidName(
            f"invalid {what} {value!r}: the first character must be a letter, a digit or '_'"
        )
    for char in value[1:]:
        if not (_is_xid_continue(char) or char in "+-."):
            raise InvalidName(
                f"invalid {what} {value!r}: character {char!r} is not allowed"
                " (letters, digits, '_', '-', '+' and '.' are)"
            )
    return value


def validate_feature_value(value: object, *, what: str = "feature value") -> str:
    """One item of a feature list: ``feat``, ``dep:name``, ``name/feat`` or ``name?/feat``."""
    text = _expect_str(value, what)
    try:
        if "/" in text:
            dep, dep_feature = text.split("/", 1)
            validate_dependency_name(dep.removesuffix("?"), what="dependency name")
            validate_feature_name(dep_feature)
        elif text.startswith("dep:"):
            validate_dependency_name(text[4:], what="dependency name")
        else:
            validate_feature_name(text)
    except InvalidInput as problem:
        raise InvalidName(f"invalid {what} {text!r} ({problem})") from None
    return text


def split_features(features: Mapping[str, Sequence[str]]) -> tuple[Features, Features]:
    """Split a feature table into ``features`` and ``features2`` exactly as crates.io does.

    Features using ``dep:`` or ``?/`` go to ``features2`` so that cargo older than 1.60 (which
    cannot parse them) ignores them instead of failing; so does any feature that names one of
    those, repeatedly, since an old cargo would otherwise meet an unknown feature.
    """
    plain = {
        key: tuple(values)
        for key, values in features.items()
        if not any(item.startswith("dep:") or "?/" in item for item in values)
    }
    extended = {key: tuple(values) for key, values in features.items() if key not in plain}
    for _ in range(100):  # crates.io's iteration limit
        moving = [key for key, values in plain.items() if any(v in extended for v in values)]
        if not moving:
            break
        for key in moving:
            extended[key] = plain.pop(key)
    return _frozen_features(plain), _frozen_features(extended)


def _frozen_features(features: Mapping[str, Iterable[str]]) -> Features:
    """A read-only, key-sorted copy; sorted because crates.io writes a BTreeMap."""
    return MappingProxyType({key: tuple(features[key]) for key in sorted(features)})


# =========================================================================== Dependency


def _dependency_object(data: object, position: int) -> tuple[Mapping[str, object], str]:
    """A ``deps`` element as a mapping, with its validated ``name``: what both readers check
    first, so their messages for a malformed element are the same."""
    if not isinstance(data, Mapping):
        _fail(f"invalid deps[{position}] {_shorten(data)}: expected an object")
    if "name" not in data:
        _fail(f"missing field 'name' in deps[{position}]")
    return data, validate_dependency_name(data["name"])


@dataclass(frozen=True)
class Dependency:
    """One dependency of an index entry, as cargo reads it.

    ``name`` is the name the dependent uses (the alias when renamed) and ``package`` the real
    crate name when renamed; ``registry`` is None for this registry, else another index's URL.
    """

    name: str
    req: str
    features: tuple[str, ...] = ()
    optional: bool = False
    default_features: bool = True
    target: str | None = None
    kind: DepKind = "normal"
    registry: str | None = None
    package: str | None = None

    def __post_init__(self) -> None:
        validate_dependency_name(self.name)
        try:
            self._validate_fields()
        except InvalidInput as problem:
            raise type(problem)(f"dependency {self.name!r}: {problem}") from None

    def _validate_fields(self) -> None:
        validate_version_req(self.req, what="req")
        features = _expect_str_list(self.features, "features")
        object.__setattr__(self, "features", features)
        for feature in features:
            validate_feature_value(feature)
        _expect_bool(self.optional, "optional")
        _expect_bool(self.default_features, "default_features")
        if self.target is not None:
            validate_target(self.target)
        if self.kind not in _KINDS:
            _fail(f"invalid kind {_shorten(self.kind)}: expected normal, dev or build")
        if self.registry is not None:
            validate_registry_url(self.registry)
        if self.package is not None:
            validate_dependency_name(self.package, what="package")

    def to_json(self) -> dict[str, object]:
        """The dependency object in crates.io's key order."""
        data: dict[str, object] = {
            "name": self.name,
            "req": self.req,
            "features": list(self.features),
            "optional": self.optional,
            "default_features": self.default_features,
            "target": self.target,
            "kind": self.kind,
        }
        # crates.io leaves these out when empty; cargo reads a missing key as null.
        if self.registry is not None:
            data["registry"] = self.registry
        if self.package is not None:
            data["package"] = self.package
        return data

    @classmethod
    def from_json(cls, data: object, position: int = 0) -> Dependency:
        """Parse one element of an index line's ``deps``; defaults follow cargo's reader."""
        data, name = _dependency_object(data, position)
        try:
            _check_unknown_fields(data, _DEP_FIELDS, "the dependency")
            if "req" not in data:
                _fail("missing field 'req'")
            req = _expect_str(data["req"], "req")
            features = _expect_str_list(data.get("features", []), "features")
            optional = _expect_bool(data.get("optional", False), "optional")
            default_features = _expect_bool(data.get("default_features", True), "default_features")
            target = _expect_optional_str(data.get("target"), "target")
            kind = data.get("kind")
            # Old crates.io lines carry "kind": null, which cargo reads as a normal dependency.
            checked_kind = "normal" if kind is None else _kind(kind)
            registry = _expect_optional_str(data.get("registry"), "registry")
            package = _expect_optional_str(data.get("package"), "package")
        except InvalidInput as problem:
            raise type(problem)(f"dependency {name!r}: {problem}") from None
        return cls(
            name, req, features, optional, default_features, target, checked_kind, registry, package
        )

    def sort_key(
        self,
    ) -> tuple[str, int, str, bool, bool, tuple[int, str], tuple[int, str], tuple[str, ...]]:
        """crates.io's dependency order (its ``Ord`` for ``Dependency``)."""
        return (
            self.name,
            _KIND_RANK[self.kind],
            self.req,
            self.optional,
            self.default_features,
            (0, "") if self.target is None else (1, self.target),
            (0, "") if self.package is None else (1, self.package),
            self.features,
        )


def _kind(value: object) -> DepKind:
    kind = _KINDS.get(value) if isinstance(value, str) else None
    if kind is None:
        _fail(f"invalid kind {_shorten(value)}: expected normal, dev or build")
    return kind


def sort_dependencies(deps: Iterable[Dependency]) -> tuple[Dependency, ...]:
    """Dependencies in the order crates.io writes them."""
    return tuple(sorted(deps, key=Dependency.sort_key))


# =========================================================================== feature checks


def _check_feature_table(features: Features, deps: Sequence[Dependency]) -> None:
    """Apply the checks cargo runs when it loads an entry (``build_feature_map``)."""
    optional_by_dep: dict[str, bool] = {}
    for dep in deps:
        optional_by_dep[dep.name] = optional_by_dep.get(dep.name, False) or dep.optional
    explicitly_listed = {
        value[4:] for values in features.values() for value in values if value.startswith("dep:")
    }
    implicit = {
        name
        for name, optional in optional_by_dep.items()
        if optional and name not in features and name not in explicitly_listed
    }
    for feature, values in features.items():
        for value in values:
            _check_feature_value(feature, value, features, optional_by_dep, implicit)
    used = {_dep_of(value) for values in features.values() for value in values}
    used |= implicit
    for name, optional in sorted(optional_by_dep.items()):
        if optional and name not in used:
            _fail(
                f"invalid features: optional dependency {name!r} is not included in any"
                f" feature (add 'dep:{name}' to one)"
            )


def _dep_of(value: str) -> str | None:
    if "/" in value:
        return value.split("/", 1)[0].removesuffix("?")
    if value.startswith("dep:"):
        return value[4:]
    return None


def _check_feature_value(
    feature: str,
    value: str,
    features: Features,
    optional_by_dep: Mapping[str, bool],
    implicit: set[str],
) -> None:
    where = f"feature {feature!r} includes {value!r}"
    if "/" in value:
        dep, dep_feature = value.split("/", 1)
        weak = dep.endswith("?")
        dep = dep.removesuffix("?")
        if "/" in dep_feature:
            _fail(f"{where}, which has more than one '/'")
        if dep.startswith("dep:"):
            _fail(f"{where}, which combines 'dep:' and '/'")
        if dep not in optional_by_dep:
            _fail(f"{where}, but {dep!r} is not a dependency")
        if weak and not optional_by_dep[dep]:
            _fail(f"{where} with a '?', but {dep!r} is not an optional dependency")
    elif value.startswith("dep:"):
        dep = value[4:]
        if dep not in optional_by_dep:
            _fail(f"{where}, but {dep!r} is not listed as a dependency")
        if not optional_by_dep[dep]:
            _fail(f"{where}, but {dep!r} is not an optional dependency")
    elif value not in features:
        if value not in optional_by_dep:
            _fail(f"{where}, which is neither a dependency nor another feature")
        if not optional_by_dep[value]:
            _fail(f"{where}, but {value!r} is a non-optional dependency, not a feature")
        if value not in implicit:
            _fail(f"{where}, but {value!r} is an optional dependency enabled only by 'dep:'")


# =========================================================================== IndexEntry


@dataclass(frozen=True)
class IndexEntry:
    """One version of a crate, as one line of the crate's index file.

    Construction validates everything cargo checks when it reads the line, so an instance is
    always safe to write. ``features2`` holds the features using ``dep:``/``?/`` syntax and
    requires ``v`` = 2, as on crates.io.
    """

    name: str
    vers: Version
    deps: tuple[Dependency, ...]
    cksum: str
    features: Features = field(default_factory=dict, hash=False)
    yanked: bool = False
    links: str | None = None
    features2: Features | None = field(default=None, hash=False)
    v: int | None = None
    rust_version: str | None = None
    pubtime: str | None = None

    def __post_init__(self) -> None:
        validate_crate_name(self.name)
        if not isinstance(self.vers, Version):
            _fail(f"invalid vers {_shorten(self.vers)}: expected a parsed Version")
        if not isinstance(self.deps, tuple) or not all(
            isinstance(dep, Dependency) for dep in self.deps
        ):
            _fail(f"invalid deps {_shorten(self.deps)}: expected a tuple of Dependency")
        validate_cksum(self.cksum)
        object.__setattr__(self, "features", self._checked_features(self.features, "features"))
        if self.features2 is not None:
            features2 = self._checked_features(self.features2, "features2")
            object.__setattr__(self, "features2", features2)
        _expect_bool(self.yanked, "yanked")
        if self.links is not None:
            validate_links(self.links)
        self._check_schema_version()
        if self.rust_version is not None:
            validate_rust_version(self.rust_version)
        if self.pubtime is not None:
            validate_pubtime(self.pubtime)
        _check_feature_table(self.all_features(), self.deps)

    @staticmethod
    def _checked_features(features: object, what: str) -> Features:
        table = _expect_features(features, what)
        for key, values in table.items():
            validate_feature_name(key)
            for value in values:
                try:
                    validate_feature_value(value)
                except InvalidInput as problem:
                    raise type(problem)(f"feature {key!r}: {problem}") from None
        return _frozen_features(table)

    def _check_schema_version(self) -> None:
        if self.v is not None and (
            isinstance(self.v, bool)
            or not isinstance(self.v, int)
            or self.v not in SUPPORTED_SCHEMA_VERSIONS
        ):
            _fail(
                f"invalid v {_shorten(self.v)}: unsupported index schema version"
                " (cargo reads 1 and 2)"
            )
        if self.features2 is not None and self.v != 2:
            _fail(f"invalid v {self.v!r}: an entry with features2 must have v = 2")

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_line(cls, line: str | bytes, *, max_bytes: int = MAX_LINE_BYTES) -> IndexEntry:
        """Parse and validate one line of an index file (a trailing newline is allowed)."""
        if isinstance(line, str) and len(line) <= max_bytes:
            check_line_size(line, max_bytes)
        elif len(line) > max_bytes:
            _fail(f"invalid index line of {len(line)} bytes: longer than the limit of {max_bytes}")
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                _fail(f"invalid index line {_shorten(line)}: not UTF-8")
        text = line.removesuffix("\n")
        if "\n" in text or "\r" in text:
            _fail(f"invalid index line {_shorten(text)}: contains a line break")
        try:
            data = json.loads(
                text,
                object_pairs_hook=_no_duplicate_keys,
                parse_constant=_no_constants,
                parse_int=_json_int,
                parse_float=_json_float,
            )
        except json.JSONDecodeError as problem:
            _fail(f"invalid index line {_shorten(text)}: not JSON ({problem.msg})")
        except RecursionError:
            _fail(f"invalid index line {_shorten(text)}: nested too deeply")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> IndexEntry:
        """Build an entry from an already-decoded index line, validating every field."""
        if not isinstance(data, Mapping):
            _fail(f"invalid index entry {_shorten(data)}: expected a JSON object")
        _check_unknown_fields(data, _ENTRY_FIELDS, "index entry")
        for required in ("name", "vers", "deps", "cksum"):
            if required not in data:
                _fail(f"missing field {required!r} in index entry")
        deps = data["deps"]
        if not isinstance(deps, list):
            _fail(f"invalid deps {_shorten(deps)}: expected a list")
        features2 = data.get("features2")
        yanked = data.get("yanked")
        return cls(
            name=validate_crate_name(data["name"]),
            vers=Version.parse(data["vers"], what="vers"),
            deps=tuple(Dependency.from_json(dep, i) for i, dep in enumerate(deps)),
            cksum=validate_cksum(data["cksum"]),
            features=_expect_features(data.get("features", {}), "features"),
            yanked=False if yanked is None else _expect_bool(yanked, "yanked"),
            links=_expect_optional_str(data.get("links"), "links"),
            features2=None if features2 is None else _expect_features(features2, "features2"),
            v=_expect_optional_int(data.get("v"), "v"),
            rust_version=_expect_optional_str(data.get("rust_version"), "rust_version"),
            pubtime=_expect_optional_str(data.get("pubtime"), "pubtime"),
        )

    @classmethod
    def from_publish_json(
        cls, meta: object, cksum: str, *, pubtime: str | None = None
    ) -> IndexEntry:
        """Turn the JSON that ``cargo publish`` sends into the entry crates.io would write.

        Renamed dependencies swap names (the API sends the real crate as ``name`` and the
        alias as ``explicit_name_in_toml``; the index wants the alias as ``name``), features
        are split into ``features``/``features2``, and descriptive metadata is dropped.
        """
        if not isinstance(meta, Mapping):
            _fail(f"invalid publish metadata {_shorten(meta)}: expected a JSON object")
        for required in ("name", "vers", "deps"):
            if required not in meta:
                _fail(f"missing field {required!r} in publish metadata")
        deps = meta["deps"]
        if not isinstance(deps, list):
            _fail(f"invalid deps {_shorten(deps)}: expected a list")
        table = meta.get("features")
        features, features2 = split_features(
            _expect_features({} if table is None else table, "features")
        )
        links = meta.get("links")
        rust_version = meta.get("rust_version")
        return cls(
            name=validate_crate_name(meta["name"]),
            vers=Version.parse(meta["vers"], what="vers"),
            deps=sort_dependencies(_publish_dependency(dep, i) for i, dep in enumerate(deps)),
            cksum=validate_cksum(cksum),
            features=features,
            yanked=False,
            links=None if links is None else validate_links(links),
            features2=features2 or None,
            v=2 if features2 else None,
            rust_version=None if rust_version is None else validate_rust_version(rust_version),
            pubtime=pubtime,
        )

    # ------------------------------------------------------------------ writing

    def all_features(self) -> Features:
        """``features`` with ``features2`` merged on top, which is what cargo resolves with."""
        merged = dict(self.features)
        merged.update(self.features2 or {})
        return _frozen_features(merged)

    def to_json(self) -> dict[str, object]:
        """The entry as crates.io serializes it: fixed key order, optional keys when set."""
        data: dict[str, object] = {
            "name": self.name,
            "vers": str(self.vers),
            "deps": [dep.to_json() for dep in self.deps],
            "cksum": self.cksum,
            "features": {key: list(values) for key, values in self.features.items()},
        }
        if self.features2 is not None:
            data["features2"] = {key: list(values) for key, values in self.features2.items()}
        data["yanked"] = self.yanked
        if self.links is not None:
            data["links"] = self.links
        if self.rust_version is not None:
            data["rust_version"] = self.rust_version
        if self.pubtime is not None:
            data["pubtime"] = self.pubtime
        if self.v is not None:
            data["v"] = self.v
        return data

    def to_line(self) -> str:
        """The exact compact JSON line, without the trailing newline."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    def with_yanked(self, yanked: bool) -> IndexEntry:
        """The same entry with only the yanked flag changed: the one edit a line may get."""
        return replace(self, yanked=_expect_bool(yanked, "yanked"))


def check_line_size(line: str, max_bytes: int = MAX_LINE_BYTES) -> str:
    """Refuse a line longer than ``max_bytes`` once encoded, the size every reader sees."""
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        _fail(f"invalid index line of {size} bytes: longer than the limit of {max_bytes}")
    return line


_YANKED_KEY = {False: '"yanked":false', True: '"yanked":true'}


def set_yanked_flag(line: str, yanked: bool) -> str:
    """A stored line with its ``yanked`` flag set, without parsing it: this cannot fail.

    A stored line was validated when it was published, and rendering it again must not be able to
    refuse it (one crate's old line would otherwise stop its file, and its batch, for ever). In a
    line that validates, the text ``"yanked":false`` (or ``true``) can only be the entry's own
    flag: inside a JSON string every quote is escaped, and no other object of an entry has a
    boolean under a key of free choice (dependencies have fixed keys, feature values are lists).
    A line without the flag gets it appended before its closing brace.
    """
    want, other = _YANKED_KEY[yanked], _YANKED_KEY[not yanked]
    if want in line:
        return line
    if other in line:
        return line.replace(other, want, 1)
    return f"{line[:-1]},{want}{line[-1:]}"


def _expect_optional_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"invalid {what} {_shorten(value)}: expected an integer")
    return value


def load_json(data: str | bytes, what: str) -> object:
    """JSON from a client, or InvalidEntry with one short line whatever the bytes hold.

    ``json.loads`` raises more than JSONDecodeError: RecursionError for deep nesting and a
    plain ValueError for an integer of thousands of digits. Integers are kept to 64 bits and
    floats finite, as serde_json reads them for cargo and crates.io.
    """
    try:
        return json.loads(
            data, parse_int=_json_int, parse_float=_json_float, parse_constant=_no_constants
        )
    except json.JSONDecodeError as problem:
        _fail(f"{what} is not valid JSON: {problem.msg} (line {problem.lineno})")
    except UnicodeDecodeError:
        _fail(f"{what} is not valid JSON: not UTF-8")
    except RecursionError:
        _fail(f"{what} is not valid JSON: nested too deeply")


def _json_int(text: str) -> int:
    value = int(text) if len(text) <= 20 else None
    if value is None or not -(2**63) <= value < 2**64:
        _fail(f"invalid JSON: the integer {_shorten(text, 30)} is out of range")
    return value


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        _fail(f"invalid JSON: the number {_shorten(text, 30)} is out of range")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Python keeps the last duplicate where cargo's serde refuses the line: refuse too.
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            _fail(f"invalid index line: duplicate key {key!r}")
        data[key] = value
    return data


def _no_constants(name: str) -> NoReturn:
    _fail(f"invalid JSON: {name} is not valid JSON")


def _publish_dependency(data: object, position: int) -> Dependency:
    """One dependency of the publish API's JSON, converted to the index's form.

    The API names the real crate ``name`` and the alias ``explicit_name_in_toml``; the index
    wants the alias as ``name`` and the real crate as ``package``.
    """
    data, real_name = _dependency_object(data, position)
    try:
        _check_unknown_fields(data, _PUBLISH_DEP_FIELDS, "the dependency")
        artifact = data.get("artifact"), data.get("bindep_target"), data.get("lib", False)
        if artifact != (None, None, False):
            _fail("artifact dependencies are not supported (they need index schema v3)")
        if "version_req" not in data:
            _fail("missing field 'version_req'")
        alias = _expect_optional_str(data.get("explicit_name_in_toml"), "explicit_name_in_toml")
        req = _expect_str(data["version_req"], "version_req")
        features = _expect_str_list(data.get("features", []), "features")
        optional = _expect_bool(data.get("optional", False), "optional")
        default_features = _expect_bool(data.get("default_features", True), "default_features")
        target = _expect_optional_str(data.get("target"), "target")
        kind = _kind(data.get("kind", "normal"))
        registry = _expect_optional_str(data.get("registry"), "registry")
    except InvalidInput as problem:
        raise type(problem)(f"dependency {real_name!r}: {problem}") from None
    return Dependency(
        name=real_name if alias is None else alias,
        req=req,
        features=features,
        optional=optional,
        default_features=default_features,
        target=target,
        kind=kind,
        registry=registry,
        package=None if alias is None else real_name,
    )
