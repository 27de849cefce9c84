"""Versions and version requirements, against the `semver` crate's behaviour."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexpub.domain.versions import (
    U64_MAX,
    Version,
    parse_version,
    parse_version_req,
    validate_rust_version,
    validate_version_req,
)
from indexpub.errors import InvalidInput, InvalidVersion


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0+001",  # build metadata may have leading zeros
        "1.0.0-0",
        f"{U64_MAX}.{U64_MAX}.{U64_MAX}",
    ],
)
def test_valid_versions_round_trip_to_the_same_text(text: str) -> None:
    assert str(parse_version(text)) == text


def test_components_are_parsed() -> None:
    version = parse_version("1.2.3-rc.1+linux.x86")
    assert (version.major, version.minor, version.patch) == (1, 2, 3)
    assert version.pre == ("rc", "1")
    assert version.build == ("linux", "x86")
    assert version.is_prerelease


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("01.0.0", "invalid version '01.0.0': invalid leading zero in major version number"),
        ("1.0", "invalid version '1.0': unexpected end of input while parsing minor version"),
        ("v1.0.0", "invalid version 'v1.0.0': unexpected character 'v' while parsing major"),
        ("1.0.0-01", "invalid version '1.0.0-01': invalid leading zero in pre-release"),
        ("1.0.0+", "invalid version '1.0.0+': empty identifier segment in build metadata"),
        ("1.0.0-a..b", "invalid version '1.0.0-a..b': empty identifier segment in pre-release"),
        ("1.00.0", "invalid leading zero in minor version number"),
        ("1.0.00", "invalid leading zero in patch version number"),
        ("1.0.0-", "empty identifier segment in pre-release identifier"),
        ("1.0.0 ", "unexpected character ' ' after patch version number"),
        (" 1.0.0", "unexpected character ' ' while parsing major version number"),
        ("1.0.0.0", "unexpected character '.' after patch version number"),
        ("1.0.0-beta_1", "unexpected character '_' after pre-release identifier"),
        ("1.0.0+build+more", "unexpected character '+' after build metadata"),
        ("1", "unexpected end of input while parsing major version number"),
        ("", "invalid version '': empty string, expected a semver version"),
        (f"{U64_MAX + 1}.0.0", "value of major version number exceeds u64::MAX"),
        ("1." + "9" * 5000 + ".0", "value of minor version number exceeds u64::MAX"),
        ("\u0661.\u0662.\u0663", "unexpected character '\u0661' while parsing major"),
    ],
)
def test_invalid_versions_are_refused_with_semver_wording(text: str, message: str) -> None:
    with pytest.raises(InvalidVersion) as caught:
        parse_version(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, InvalidInput)


def test_the_field_name_appears_in_the_message() -> None:
    with pytest.raises(InvalidVersion, match=r"^invalid vers '1\.0': "):
        Version.parse("1.0", what="vers")
    with pytest.raises(InvalidVersion, match="invalid version 100: expected a string"):
        Version.parse(100)


def test_precedence_follows_the_semver_specification() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0-0",
        "2.0.0",
        "10.0.0",
    ]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert [str(v) for v in sorted(parse_version(t) for t in shuffled)] == ordered


def test_numeric_identifiers_compare_as_numbers_and_sort_before_words() -> None:
    assert parse_version("1.0.0-2") < parse_version("1.0.0-10")
    assert parse_version("1.0.0-99") < parse_version("1.0.0-a")
    assert parse_version("1.0.0-a.b") > parse_version("1.0.0-a")


def test_build_metadata_is_ignored_by_ordering_but_not_by_equality() -> None:
    plain, built, other = (parse_version(t) for t in ("0.1.0", "0.1.0+b", "0.1.0+c"))
    assert plain != built  # two distinct versions to cargo
    assert not plain < built and not built < plain
    assert plain <= built and plain >= built
    assert built.without_build() == plain == other.without_build()
    assert str(built.without_build()) == "0.1.0"
    assert len({plain, built, other}) == 3
    assert len({v.without_build() for v in (plain, built, other)}) == 1


def test_comparison_with_other_types_is_not_supported() -> None:
    with pytest.raises(TypeError):
        assert parse_version("1.0.0") < "2.0.0"


def test_direct_construction_is_validated() -> None:
    assert str(Version(1, 2, 3, ("rc", "1"), ("b",))) == "1.2.3-rc.1+b"
    with pytest.raises(InvalidVersion):
        Version(1, 2, -3)
    with pytest.raises(InvalidVersion):
        Version(1, 2, 3, ("01",))
    with pytest.raises(InvalidVersion):
        Version(1, 2, 3, ("a.b",))


_identifier = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(
    lambda s: not (s.isdigit() and len(s) > 1 and s[0] == "0")
)


@given(
    st.integers(0, U64_MAX),
    st.integers(0, U64_MAX),
    st.integers(0, U64_MAX),
    st.lists(_identifier, max_size=3),
    st.lists(st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True), max_size=3),
)
def test_any_valid_version_round_trips(
    major: int, minor: int, patch: int, pre: list[str], build: list[str]
) -> None:
    version = Version(major, minor, patch, tuple(pre), tuple(build))
    assert parse_version(str(version)) == version


# --------------------------------------------------------------------------- requirements


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("1.0", "^1.0"),
        ("^1.2.3", "^1.2.3"),
        ("=1.2.3", "=1.2.3"),
        (">1", ">1"),
        (">=1.2", ">=1.2"),
        ("<2", "<2"),
        ("<=2.0.0", "<=2.0.0"),
        ("~1.2", "~1.2"),
        (">=1.0, <2.0", ">=1.0, <2.0"),
        (">= 1.0 , < 2.0", ">=1.0, <2.0"),
        ("  1.0  ", "^1.0"),
        ("*", "*"),
        ("x", "*"),
        ("X", "*"),
        (" * ", "*"),
        ("1.*", "1.*"),
        ("1.x", "1.*"),
        ("1.X", "1.*"),
        ("1.2.*", "1.2.*"),
        ("1.*.*", "1.*"),
        (">=1.*", ">=1"),
        ("=1.0.0-beta.1", "=1.0.0-beta.1"),
        ("^1.0.0+build", "^1.0.0"),
        ("0.0.0", "^0.0.0"),
    ],
)
def test_cargo_requirements_are_accepted_and_normalized(text: str, normalized: str) -> None:
    assert validate_version_req(text) == text
    assert str(parse_version_req(text)) == normalized


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unexpected end of input while parsing major version number"),
        ("latest", "unexpected character 'l' while parsing major version number"),
        (">=1.0 <2.0", "expected comma after minor version number, found '<'"),
        ("1.0 || 2.0", "expected comma after minor version number, found '|'"),
        ("*, >=1", "wildcard req (*) must be the only comparator in the version req"),
        (">=1, *", "wildcard req (*) must be the only comparator in the version req"),
        ("*1", "unexpected character after wildcard in version req"),
        ("1.*.3", "unexpected character after wildcard in version req"),
        ("01.0", "invalid leading zero in major version number"),
        ("1.0.0-01", "invalid leading zero in pre-release identifier"),
        ("1.0.0-", "empty identifier segment in pre-release identifier"),
        ("=>1.0", "unexpected character '>' while parsing major version number"),
        ("~>1.0", "unexpected character '>' while parsing major version number"),
        ("1.0,", "unexpected end of input while parsing major version number"),
        ("v1.0", "unexpected character 'v' while parsing major version number"),
        ("1.0-beta", "expected comma after minor version number, found '-'"),
        ("\t1.0", "unexpected character '\\t' while parsing major version number"),
    ],
)
def test_garbage_requirements_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidVersion) as caught:
        validate_version_req(text)
    assert f"invalid version requirement {text!r}: {message}" == str(caught.value)


def test_at_most_32_comparators() -> None:
    assert len(parse_version_req(", ".join([">=1"] * 32)).comparators) == 32
    with pytest.raises(InvalidVersion, match="excessive number of version comparators"):
        parse_version_req(", ".join([">=1"] * 33))


def test_requirement_must_be_a_string() -> None:
    with pytest.raises(InvalidVersion, match="invalid req 1: expected a string"):
        validate_version_req(1, what="req")


# --------------------------------------------------------------------------- rust-version


@pytest.mark.parametrize("text", ["1", "1.70", "1.70.0", "1.0.10"])
def test_rust_versions_cargo_accepts(text: str) -> None:
    assert validate_rust_version(text) == text


@pytest.mark.parametrize(
    "text", ["", "^1.70", "1.70.0-beta", "1.70+b", "1.x", "01.70", "1.70.0.0", "v1.70", " 1.70"]
)
def test_rust_versions_cargo_refuses(text: str) -> None:
    with pytest.raises(InvalidVersion, match="invalid rust_version"):
        validate_rust_version(text)
