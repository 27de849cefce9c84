"""Features: their names, what a feature may list, and how a feature table hangs together.

cargo calls an entry invalid when a feature name has a character it refuses, when a value names
something that is neither a feature nor a dependency, or when an optional dependency is enabled
by no feature; and crates.io splits the table in two so that old cargo versions can read it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from indexpub.domain.checks import expect_features, expect_str, refuse
from indexpub.domain.names import validate_dependency_name
from indexpub.errors import InvalidInput, InvalidName, shorten

Features = Mapping[str, tuple[str, ...]]

_ASCII_DIGITS = frozenset(string.digits)


def _is_xid_start(char: str) -> bool:
    return char.isidentifier() and char != "_"


def _is_xid_continue(char: str) -> bool:
    return ("a" + char).isidentifier()


def validate_feature_name(value: object, *, what: str = "feature name") -> str:
    """A feature's own name, with the character rules cargo and crates.io share."""
    if not isinstance(value, str):
        raise InvalidName(f"invalid {what} {shorten(value)}: expected a string")
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
    text = expect_str(value, what)
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
    return frozen_features(plain), frozen_features(extended)


def frozen_features(features: Mapping[str, Iterable[str]]) -> Features:
    """A read-only, key-sorted copy; sorted because crates.io writes a BTreeMap."""
    return MappingProxyType({key: tuple(features[key]) for key in sorted(features)})


def validate_feature_table(value: object, what: str) -> Features:
    """A feature table with every name and value checked, as a read-only, key-sorted copy."""
    table = expect_features(value, what)
    for key, values in table.items():
        validate_feature_name(key)
        for item in values:
            try:
                validate_feature_value(item)
            except InvalidInput as problem:
                raise type(problem)(f"feature {key!r}: {problem}") from None
    return frozen_features(table)


def check_feature_map(features: Features, deps: Iterable[tuple[str, bool]]) -> None:
    """Apply the checks cargo runs when it loads an entry (``build_feature_map``).

    ``deps`` holds each dependency's name and whether it is optional.
    """
    optional_by_dep: dict[str, bool] = {}
    for name, optional in deps:
        optional_by_dep[name] = optional_by_dep.get(name, False) or optional
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
            refuse(
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
            refuse(f"{where}, which has more than one '/'")
        if dep.startswith("dep:"):
            refuse(f"{where}, which combines 'dep:' and '/'")
        if dep not in optional_by_dep:
            refuse(f"{where}, but {dep!r} is not a dependency")
        if weak and not optional_by_dep[dep]:
            refuse(f"{where} with a '?', but {dep!r} is not an optional dependency")
    elif value.startswith("dep:"):
        dep = value[4:]
        if dep not in optional_by_dep:
            refuse(f"{where}, but {dep!r} is not listed as a dependency")
        if not optional_by_dep[dep]:
            refuse(f"{where}, but {dep!r} is not an optional dependency")
    elif value not in features:
        if value not in optional_by_dep:
            refuse(f"{where}, which is neither a dependency nor another feature")
        if not optional_by_dep[value]:
            refuse(f"{where}, but {value!r} is a non-optional dependency, not a feature")
        if value not in implicit:
            refuse(f"{where}, but {value!r} is an optional dependency enabled only by 'dep:'")
