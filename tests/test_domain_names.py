"""Crate names: what may be published, collisions, and the index path."""

from __future__ import annotations

import pytest

from indexpub.domain.names import (
    RESERVED_NAMES,
    WINDOWS_DEVICE_NAMES,
    canonical_name,
    index_path,
    is_index_path,
    is_valid_crate_name,
    validate_crate_name,
    validate_dependency_name,
)
from indexpub.errors import InvalidInput, InvalidName


@pytest.mark.parametrize("name", ["a", "serde", "Foo_Bar-9", "a" * 64, "x-", "con1", "com10"])
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_crate_name(name) == name
    assert is_valid_crate_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("foo bar", "invalid crate name 'foo bar': only ASCII letters, digits, '-' and '_' are"),
        ("", "invalid crate name '': the name is empty"),
        ("9lives", "invalid crate name '9lives': the first character must be an ASCII letter"),
        ("-dash", "invalid crate name '-dash': the first character must be an ASCII letter"),
        ("_under", "invalid crate name '_under': the first character must be an ASCII letter"),
        ("a" * 65, "longer than 64 characters (65)"),
        ("naïve", "(found 'ï')"),
        ("a.b", "(found '.')"),
        ("a/b", "(found '/')"),
    ],
)
def test_invalid_names_are_refused_with_a_clear_message(name: str, message: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_crate_name(name)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not is_valid_crate_name(name)


def test_invalid_name_is_an_invalid_input_and_a_value_error() -> None:
    with pytest.raises(InvalidInput):
        validate_crate_name("bad name")
    with pytest.raises(ValueError):
        validate_crate_name("bad name")


@pytest.mark.parametrize("name", ["con", "CON", "Con", "prn", "aux", "NUL", "com1", "LPT9"])
def test_windows_device_names_are_refused_in_any_case(name: str) -> None:
    with pytest.raises(InvalidName, match="Windows device name"):
        validate_crate_name(name)


def test_windows_device_list_is_complete() -> None:
    expected = {"con", "prn", "aux", "nul"}
    expected |= {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
    assert expected == WINDOWS_DEVICE_NAMES


@pytest.mark.parametrize(
    "name", ["std", "core", "alloc", "proc_macro", "proc-macro", "Proc-Macro", "test", "TEST"]
)
def test_reserved_names_are_refused_after_canonicalization(name: str) -> None:
    with pytest.raises(InvalidName, match="the name is reserved"):
        validate_crate_name(name)


def test_reserved_list_follows_crates_io() -> None:
    assert {"std", "core", "alloc", "proc_macro", "test", "compiler_builtins"} <= RESERVED_NAMES
    assert all(name == canonical_name(name) for name in RESERVED_NAMES)


def test_dependency_names_allow_a_leading_underscore_and_skip_reservations() -> None:
    assert validate_dependency_name("_private") == "_private"
    # A dependency may live in another registry, whose names are not ours to police.
    assert validate_dependency_name("std") == "std"
    assert validate_dependency_name("nul") == "nul"
    with pytest.raises(InvalidName, match="the first character must be an ASCII letter or '_'"):
        validate_dependency_name("1x")
    with pytest.raises(InvalidName, match="invalid dependency name 'a b'"):
        validate_dependency_name("a b")


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidName, match="invalid crate name None: expected a string"):
        validate_crate_name(None)


@pytest.mark.parametrize(
    ("a", "b"), [("Foo-Bar", "foo_bar"), ("serde_json", "serde-json"), ("ABC", "abc")]
)
def test_canonical_names_collide(a: str, b: str) -> None:
    assert canonical_name(a) == canonical_name(b)


def test_canonical_name_is_lowercase_with_underscores() -> None:
    assert canonical_name("My-Crate_X") == "my_crate_x"
    assert canonical_name("foo") != canonical_name("foo2")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("a", "1/a"),
        ("A", "1/a"),
        ("ab", "2/ab"),
        ("abc", "3/a/abc"),
        ("Abc", "3/a/abc"),
        ("abcd", "ab/cd/abcd"),
        ("Serde", "se/rd/serde"),
        ("a-b_c", "a-/b_/a-b_c"),
        ("cargo-indexpub", "ca/rg/cargo-indexpub"),
    ],
)
def test_index_path_matches_cargo_layout(name: str, path: str) -> None:
    assert index_path(name) == path


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x" * 65, "é"])
def test_index_path_refuses_names_that_are_not_crate_names(name: str) -> None:
    with pytest.raises(InvalidName):
        index_path(name)


@pytest.mark.parametrize("name", ["a", "ab", "abc", "abcd", "Serde", "a-b_c", "a" * 64])
def test_every_computed_index_path_is_one(name: str) -> None:
    assert is_index_path(index_path(name))


@pytest.mark.parametrize("path", ["-_/9a/-_9a", "3/9/9-_", "1/_"])
def test_index_paths_of_files_no_new_crate_may_take(path: str) -> None:
    assert is_index_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "1/",
        "1/A",
        "2/a",
        "3/b/abc",
        "ab/ce/abcd",
        "ab/cd/abcd/",
        "ab/cd/abcd\n",
        "ab/cd/abcd" + "x" * 61,
        "config.json",
        "se/rd/serdé",
    ],
)
def test_paths_outside_the_layout_are_not_index_paths(path: str) -> None:
    assert not is_index_path(path)
