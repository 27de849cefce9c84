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
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from indexpub.domain.cfg import validate_target
from indexpub.domain.checks import (
    check_unknown_fields,
    expect_bool,
    expect_features,
    expect_optional_int,
    expect_optional_str,
    expect_str,
    expect_str_list,
    refuse,
)
from indexpub.domain.features import (
    Features,
    check_feature_map,
    frozen_features,
    split_features,
    validate_feature_table,
    validate_feature_value,
)
from indexpub.domain.json_input import decode_json
from indexpub.domain.limits import MiB
from indexpub.domain.names import validate_crate_name, validate_dependency_name
from indexpub.domain.versions import Version, validate_rust_version, validate_version_req
from indexpub.errors import InvalidInput, shorten

DepKind = Literal["normal", "build", "dev"]

# The longest index line the registry stores, serves or reads back (docs/architecture.md, "How
# long an index line may be"): cargo sets no limit of its own and crates.io bounds only what a
# line is made of, so this is generous for crates with thousands of features and small enough
# that no single line can make a crate file, a batch or a reader's buffer unbounded.
MAX_LINE_BYTES = 4 * MiB
SUPPORTED_SCHEMA_VERSIONS = (1, 2)

_KINDS: dict[str, DepKind] = {"normal": "normal", "build": "build", "dev": "dev"}
# crates.io sorts dependencies with this kind order, so that `normal` comes first when the
# same dependency appears twice (old cargo versions got confused otherwise).
_KIND_RANK: dict[str, int] = {"normal": 0, "build": 1, "dev": 2}

_CKSUM_RE = re.compile(r"[0-9a-f]{64}")
_PUBTIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+")

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


def validate_cksum(value: object) -> str:
    """A lowercase hex sha256, the only form cargo compares against the downloaded file."""
    text = expect_str(value, "cksum")
    if not _CKSUM_RE.fullmatch(text):
        refuse(f"invalid cksum {shorten(text)}: expected 64 lowercase hex digits (sha256)")
    return text


def validate_pubtime(value: object) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` and a real UTC time; cargo refuses fractions and offsets."""
    text = expect_str(value, "pubtime")
    if not _PUBTIME_RE.fullmatch(text):
        refuse(f"invalid pubtime {shorten(text)}: expected exactly YYYY-MM-DDTHH:MM:SSZ")
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        refuse(f"invalid pubtime {text!r}: not a real date and time")
    return text


def format_pubtime(moment: datetime) -> str:
    """Format an aware datetime the way the index wants it (UTC, whole seconds)."""
    if moment.tzinfo is None:
        raise ValueError("pubtime needs an aware datetime, got a naive one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_links(value: object) -> str:
    """The native library name; cargo takes any string, we refuse blank or multi-word ones."""
    text = expect_str(value, "links")
    if not text or not text.isprintable() or any(char.isspace() for char in text):
        refuse(f"invalid links {shorten(text)}: expected a native library name")
    return text


def validate_registry_url(value: object, *, what: str = "registry") -> str:
    """The index URL of another registry; cargo parses it as an absolute URL."""
    text = expect_str(value, what)
    if not _URL_RE.fullmatch(text):
        refuse(f"invalid {what} {shorten(text)}: expected the URL of a registry index")
    if not text.isprintable():
        refuse(f"invalid {what} {shorten(text)}: contains unprintable characters")
    return text


# =========================================================================== Dependency


def _dependency_object(data: object, position: int) -> tuple[Mapping[str, object], str]:
    """A ``deps`` element as a mapping, with its validated ``name``: what both readers check
    first, so their messages for a malformed element are the same."""
    if not isinstance(data, Mapping):
        refuse(f"invalid deps[{position}] {shorten(data)}: expected an object")
    if "name" not in data:
        refuse(f"missing field 'name' in deps[{position}]")
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
        features = expect_str_list(self.features, "features")
        object.__setattr__(self, "features", features)
        for feature in features:
            validate_feature_value(feature)
        expect_bool(self.optional, "optional")
        expect_bool(self.default_features, "default_features")
        if self.target is not None:
            validate_target(self.target)
        if self.kind not in _KINDS:
            refuse(f"invalid kind {shorten(self.kind)}: expected normal, dev or build")
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
        """Parse one element of an index line's ``deps``; defaults follow cargo's reader.

        A dependency read before (equal keys in the same order, values of the same types) is
        not read again (see _READ_DEPENDENCIES).
        """
        key = _dependency_key(data)
        if key is not None:
            known = _READ_DEPENDENCIES.get(key)
            if known is not None:
                return known
        dependency = cls._from_json(data, position)
        if key is not None:
            if len(_READ_DEPENDENCIES) >= _READ_DEPENDENCIES_MAX:
                del _READ_DEPENDENCIES[next(iter(_READ_DEPENDENCIES))]  # the oldest
            _READ_DEPENDENCIES[key] = dependency
        return dependency

    @classmethod
    def _from_json(cls, data: object, position: int) -> Dependency:
        data, name = _dependency_object(data, position)
        try:
            check_unknown_fields(data, _DEP_FIELDS, "the dependency")
            if "req" not in data:
                refuse("missing field 'req'")
            req = expect_str(data["req"], "req")
            features = expect_str_list(data.get("features", []), "features")
            optional = expect_bool(data.get("optional", False), "optional")
            default_features = expect_bool(data.get("default_features", True), "default_features")
            target = expect_optional_str(data.get("target"), "target")
            kind = data.get("kind")
            # Old crates.io lines carry "kind": null, which cargo reads as a normal dependency.
            checked_kind = "normal" if kind is None else _kind(kind)
            registry = expect_optional_str(data.get("registry"), "registry")
            package = expect_optional_str(data.get("package"), "package")
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


# The dependencies read already, by their decoded JSON: the versions of a crate mostly repeat
# their dependencies, and reading one (its name, requirement, target and features checked) is
# most of what reading an index line costs, which an import does millions of times. Bounded in
# count and in the size of each key; the oldest goes first.
_READ_DEPENDENCIES: dict[str, Dependency] = {}
_READ_DEPENDENCIES_MAX = 4096
_READ_DEPENDENCY_MAX_CHARS = 1024


def _dependency_key(data: object) -> str | None:
    """A key equal to another only for an equal JSON object: the same keys in the same order
    and values of the same types and values. None when it is not worth keeping.

    The ``repr`` of what the JSON decoder made (dicts, lists, strings, integers, floats,
    booleans, None) is such a key: every type shows differently (``True``, ``1``, ``1.0``,
    ``'1'``) and strings are quoted with escapes, so ``1`` never finds what ``true`` left.
    """
    if type(data) is not dict:
        return None
    key = repr(data)
    return key if len(key) <= _READ_DEPENDENCY_MAX_CHARS else None


def _kind(value: object) -> DepKind:
    kind = _KINDS.get(value) if isinstance(value, str) else None
    if kind is None:
        refuse(f"invalid kind {shorten(value)}: expected normal, dev or build")
    return kind


def sort_dependencies(deps: Iterable[Dependency]) -> tuple[Dependency, ...]:
    """Dependencies in the order crates.io writes them."""
    return tuple(sorted(deps, key=Dependency.sort_key))


def is_own_registry(url: str, own_urls: Collection[str]) -> bool:
    """Whether a dependency's registry URL is one of ``own_urls``, up to trailing slashes.

    ``own_urls`` are this registry's index URLs: a crate packaged for it names it in
    ``registry-index`` by whichever one its author configured (the git index or the sparse
    one), and all of them mean "this registry", which the index writes as ``registry: null``.
    """
    return url.rstrip("/") in {own.rstrip("/") for own in own_urls}


def own_registry_as_null(entry: IndexEntry, own_urls: Collection[str]) -> IndexEntry:
    """``entry`` with ``registry: null`` for each dependency on this registry (see
    :func:`is_own_registry`), re-sorted; the entry itself when there is none."""

    def ours(dep: Dependency) -> bool:
        return dep.registry is not None and is_own_registry(dep.registry, own_urls)

    if not any(ours(dep) for dep in entry.deps):
        return entry
    deps = (replace(dep, registry=None) if ours(dep) else dep for dep in entry.deps)
    return replace(entry, deps=sort_dependencies(deps))


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
            refuse(f"invalid vers {shorten(self.vers)}: expected a parsed Version")
        if not isinstance(self.deps, tuple) or not all(
            isinstance(dep, Dependency) for dep in self.deps
        ):
            refuse(f"invalid deps {shorten(self.deps)}: expected a tuple of Dependency")
        validate_cksum(self.cksum)
        object.__setattr__(self, "features", validate_feature_table(self.features, "features"))
        if self.features2 is not None:
            features2 = validate_feature_table(self.features2, "features2")
            object.__setattr__(self, "features2", features2)
        expect_bool(self.yanked, "yanked")
        if self.links is not None:
            validate_links(self.links)
        self._check_schema_version()
        if self.rust_version is not None:
            validate_rust_version(self.rust_version)
        if self.pubtime is not None:
            validate_pubtime(self.pubtime)
        check_feature_map(self.all_features(), [(dep.name, dep.optional) for dep in self.deps])

    def _check_schema_version(self) -> None:
        if self.v is not None and (
            isinstance(self.v, bool)
            or not isinstance(self.v, int)
            or self.v not in SUPPORTED_SCHEMA_VERSIONS
        ):
            refuse(
                f"invalid v {shorten(self.v)}: unsupported index schema version"
                " (cargo reads 1 and 2)"
            )
        if self.features2 is not None and self.v != 2:
            refuse(f"invalid v {self.v!r}: an entry with features2 must have v = 2")

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_line(cls, line: str | bytes, *, max_bytes: int = MAX_LINE_BYTES) -> IndexEntry:
        """Parse and validate one line of an index file (a trailing newline is allowed)."""
        if isinstance(line, str) and len(line) <= max_bytes:
            check_line_size(line, max_bytes)
        elif len(line) > max_bytes:
            refuse(f"invalid index line of {len(line)} bytes: longer than the limit of {max_bytes}")
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                refuse(f"invalid index line {shorten(line)}: not UTF-8")
        text = line.removesuffix("\n")
        if "\n" in text or "\r" in text:
            refuse(f"invalid index line {shorten(text)}: contains a line break")
        try:
            data = decode_json(text, refuse_duplicate_keys=True)
        except json.JSONDecodeError as problem:
            refuse(f"invalid index line {shorten(text)}: not JSON ({problem.msg})")
        except RecursionError:
            refuse(f"invalid index line {shorten(text)}: nested too deeply")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> IndexEntry:
        """Build an entry from an already-decoded index line, validating every field."""
        if not isinstance(data, Mapping):
            refuse(f"invalid index entry {shorten(data)}: expected a JSON object")
        check_unknown_fields(data, _ENTRY_FIELDS, "index entry")
        for required in ("name", "vers", "deps", "cksum"):
            if required not in data:
                refuse(f"missing field {required!r} in index entry")
        deps = data["deps"]
        if not isinstance(deps, list):
            refuse(f"invalid deps {shorten(deps)}: expected a list")
        features2 = data.get("features2")
        yanked = data.get("yanked")
        return cls(
            name=validate_crate_name(data["name"]),
            vers=Version.parse(data["vers"], what="vers"),
            deps=tuple(Dependency.from_json(dep, i) for i, dep in enumerate(deps)),
            cksum=validate_cksum(data["cksum"]),
            features=expect_features(data.get("features", {}), "features"),
            yanked=False if yanked is None else expect_bool(yanked, "yanked"),
            links=expect_optional_str(data.get("links"), "links"),
            features2=None if features2 is None else expect_features(features2, "features2"),
            v=expect_optional_int(data.get("v"), "v"),
            rust_version=expect_optional_str(data.get("rust_version"), "rust_version"),
            pubtime=expect_optional_str(data.get("pubtime"), "pubtime"),
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
            refuse(f"invalid publish metadata {shorten(meta)}: expected a JSON object")
        for required in ("name", "vers", "deps"):
            if required not in meta:
                refuse(f"missing field {required!r} in publish metadata")
        deps = meta["deps"]
        if not isinstance(deps, list):
            refuse(f"invalid deps {shorten(deps)}: expected a list")
        table = meta.get("features")
        features, features2 = split_features(
            expect_features({} if table is None else table, "features")
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
        return frozen_features(merged)

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
        return replace(self, yanked=expect_bool(yanked, "yanked"))


def check_line_size(line: str, max_bytes: int = MAX_LINE_BYTES) -> str:
    """Refuse a line longer than ``max_bytes`` once encoded, the size every reader sees."""
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        refuse(f"invalid index line of {size} bytes: longer than the limit of {max_bytes}")
    return line


_YANKED_KEY = {False: '"yanked":false', True: '"yanked":true'}
# The flag as JSON also lets a line write it (an index imported as it was found, see
# index_files): whitespace around the colon, or null, which cargo reads as false.
_YANKED_FLAG_RE = re.compile(r'"yanked"[ \t\n\r]*:[ \t\n\r]*(true|false|null)')


def set_yanked_flag(line: str, yanked: bool) -> str:
    """A stored line with its ``yanked`` flag set, without parsing it: this cannot fail.

    A stored line was validated when it was published, and rendering it again must not be able to
    refuse it (one crate's old line would otherwise stop its file, and its batch, for ever). In a
    line that validates, the text ``"yanked":false`` (or ``true``) can only be the entry's own
    flag: inside a JSON string every quote is escaped, and no other object of an entry has a
    boolean under a key of free choice (dependencies have fixed keys, feature values are lists).

    Lines published here always hold the flag in that form. A line imported from another index
    is stored as it was found (docs/architecture.md, "Importing an index"), so the flag may have
    whitespace around its colon, be null, or be missing; null and missing read as false and are
    kept while the flag stays false. A missing flag that becomes true is added before the line's
    last closing brace. Only a key written with escapes (``"yank\\u0065d"``) is not found, which
    :func:`can_set_yanked_flag` tells the importer.
    """
    want, other = _YANKED_KEY[yanked], _YANKED_KEY[not yanked]
    if want in line:
        return line
    if other in line:
        return line.replace(other, want, 1)
    found = _YANKED_FLAG_RE.search(line)
    if found is not None:
        if (found[1] == "true") == yanked:
            return line
        return f"{line[: found.start(1)]}{'true' if yanked else 'false'}{line[found.end(1) :]}"
    if not yanked:
        return line
    end = line.rfind("}")
    end = len(line) - 1 if end < 0 else end
    return f"{line[:end]},{want}{line[end:]}"


def can_set_yanked_flag(line: str) -> bool:
    """Whether :func:`set_yanked_flag` finds the flag of this valid line wherever it is: false
    only for a line whose ``yanked`` key is written with escapes, which a flip would duplicate
    (and serde, so cargo, refuses a duplicate key)."""
    if _YANKED_FLAG_RE.search(line) is not None or "\\u" not in line:
        return True
    data = decode_json(line)
    return not (isinstance(data, Mapping) and "yanked" in data)


def _publish_dependency(data: object, position: int) -> Dependency:
    """One dependency of the publish API's JSON, converted to the index's form.

    The API names the real crate ``name`` and the alias ``explicit_name_in_toml``; the index
    wants the alias as ``name`` and the real crate as ``package``.
    """
    data, real_name = _dependency_object(data, position)
    try:
        check_unknown_fields(data, _PUBLISH_DEP_FIELDS, "the dependency")
        artifact = data.get("artifact"), data.get("bindep_target"), data.get("lib", False)
        if artifact != (None, None, False):
            refuse("artifact dependencies are not supported (they need index schema v3)")
        if "version_req" not in data:
            refuse("missing field 'version_req'")
        alias = expect_optional_str(data.get("explicit_name_in_toml"), "explicit_name_in_toml")
        req = expect_str(data["version_req"], "version_req")
        features = expect_str_list(data.get("features", []), "features")
        optional = expect_bool(data.get("optional", False), "optional")
        default_features = expect_bool(data.get("default_features", True), "default_features")
        target = expect_optional_str(data.get("target"), "target")
        kind = _kind(data.get("kind", "normal"))
        registry = expect_optional_str(data.get("registry"), "registry")
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
