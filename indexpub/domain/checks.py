"""The type checks every reader of decoded JSON shares (index lines, the publish API's JSON).

A decoded value can be anything, so each field is checked for the type cargo's serde reader
expects before anything else looks at it; a wrong one is refused with :class:`InvalidEntry`
naming the field and quoting the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from indexpub.errors import InvalidEntry, shorten


def refuse(message: str) -> NoReturn:
    """Raise :class:`InvalidEntry` with ``message``."""
    raise InvalidEntry(message)


def expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        refuse(f"invalid {what} {shorten(value)}: expected a string")
    return value


def expect_optional_str(value: object, what: str) -> str | None:
    return None if value is None else expect_str(value, what)


def expect_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        refuse(f"invalid {what} {shorten(value)}: expected true or false")
    return value


def expect_optional_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        refuse(f"invalid {what} {shorten(value)}: expected an integer")
    return value


def expect_str_list(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        refuse(f"invalid {what} {shorten(value)}: expected a list of strings")
    for item in value:
        if not isinstance(item, str):
            refuse(f"invalid {what} {shorten(value)}: expected a list of strings")
    return tuple(value)


def expect_features(value: object, what: str) -> dict[str, tuple[str, ...]]:
    """A feature table's shape: an object whose values are lists of strings."""
    if not isinstance(value, Mapping):
        refuse(f"invalid {what} {shorten(value)}: expected an object of feature lists")
    features: dict[str, tuple[str, ...]] = {}
    for key, values in value.items():
        if not isinstance(key, str):
            refuse(f"invalid {what} key {shorten(key)}: expected a string")
        features[key] = expect_str_list(values, f"{what}[{key!r}]")
    return features


def check_unknown_fields(data: Mapping[str, object], known: frozenset[str], where: str) -> None:
    """Refuse the first key, in sorted order, that is not in ``known``."""
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        refuse(f"unknown field {unknown[0]!r} in {where}")
