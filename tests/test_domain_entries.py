"""Index entries: the exact line format, validation, and the publish-API conversion."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from support.bad_inputs import BAD_LINES, BAD_PUBLISH_JSON, GOOD_CKSUM, line
from support.git import git

from indexpub.domain import entries
from indexpub.domain.cfg import normalize_target, validate_target
from indexpub.domain.entries import (
    Dependency,
    IndexEntry,
    can_set_yanked_flag,
    format_pubtime,
    set_yanked_flag,
    sort_dependencies,
)
from indexpub.domain.features import split_features, validate_feature_name
from indexpub.domain.names import index_path
from indexpub.domain.versions import Version
from indexpub.errors import InvalidEntry, InvalidInput, InvalidName

CKSUM = "b5d0e6a1c1fe2f71f65e3a8e43e4e9b7c1d8c4f1e3a0c2d9b6e8f7a1c3d5e7f9"

# Written by hand from crates.io's serializer (crates_io_index::Crate): key order name, vers,
# deps, cksum, features, features2, yanked, links, rust_version, pubtime, v; dependency keys
# name, req, features, optional, default_features, target, kind, (registry), (package).
FULL_LINE = (
    '{"name":"Demo-Crate","vers":"0.3.1-rc.1+build.7","deps":['
    '{"name":"libc","req":"^0.2","features":[],"optional":false,"default_features":true,'
    '"target":"cfg(unix)","kind":"normal"},'
    '{"name":"my-serde","req":">=1.0.100, <2","features":["derive","std"],"optional":true,'
    '"default_features":false,"target":null,"kind":"normal","package":"serde"},'
    '{"name":"other","req":"=1.2.3","features":[],"optional":false,"default_features":true,'
    '"target":null,"kind":"dev","registry":"https://github.com/rust-lang/crates.io-index"}],'
    f'"cksum":"{CKSUM}",'
    '"features":{"default":["std"],"std":[]},'
    '"features2":{"serde":["dep:my-serde","my-serde?/std"]},'
    '"yanked":false,"links":"demo","rust_version":"1.70","pubtime":"2025-11-12T19:30:12Z","v":2}'
)


def full_entry() -> IndexEntry:
    return IndexEntry(
        name="Demo-Crate",
        vers=Version.parse("0.3.1-rc.1+build.7"),
        deps=(
            Dependency("libc", "^0.2", target="cfg(unix)"),
            Dependency(
                "my-serde",
                ">=1.0.100, <2",
                features=("derive", "std"),
                optional=True,
                default_features=False,
                package="serde",
            ),
            Dependency(
                "other",
                "=1.2.3",
                kind="dev",
                registry="https://github.com/rust-lang/crates.io-index",
            ),
        ),
        cksum=CKSUM,
        features={"std": (), "default": ("std",)},
        links="demo",
        features2={"serde": ("dep:my-serde", "my-serde?/std")},
        v=2,
        rust_version="1.70",
        pubtime="2025-11-12T19:30:12Z",
    )


# --------------------------------------------------------------------------- exact lines


def test_to_line_writes_crates_io_format_exactly() -> None:
    assert full_entry().to_line() == FULL_LINE


def test_from_line_round_trips_a_canonical_line() -> None:
    entry = IndexEntry.from_line(FULL_LINE)
    assert entry == full_entry()
    assert entry.to_line() == FULL_LINE
    assert IndexEntry.from_line(FULL_LINE + "\n").to_line() == FULL_LINE
    assert IndexEntry.from_line(FULL_LINE.encode()).to_line() == FULL_LINE


def test_minimal_entry_matches_crates_io_serializer_test() -> None:
    # crates.io's own test_write_crate expectation, with a real checksum and yanked set.
    entry = IndexEntry(
        name="foo",
        vers=Version.parse("1.2.3"),
        deps=(),
        cksum=CKSUM,
        pubtime="2025-11-18T08:58:23Z",
    )
    assert entry.to_line() == (
        f'{{"name":"foo","vers":"1.2.3","deps":[],"cksum":"{CKSUM}","features":{{}},'
        '"yanked":false,"pubtime":"2025-11-18T08:58:23Z"}'
    )


def test_optional_keys_are_left_out_when_unset_and_links_only_when_set() -> None:
    data = json.loads(line())
    assert list(data) == ["name", "vers", "deps", "cksum", "features", "yanked"]
    assert list(IndexEntry.from_line(line()).to_json()) == list(data)
    with_links = IndexEntry.from_line(line(links="z")).to_json()
    assert list(with_links) == ["name", "vers", "deps", "cksum", "features", "yanked", "links"]


def test_cargo_defaults_fill_missing_optional_fields() -> None:
    minimal = json.dumps(
        {"name": "foo", "vers": "1.0.0", "deps": [{"name": "bar", "req": "1"}], "cksum": CKSUM}
    )
    entry = IndexEntry.from_line(minimal)
    assert entry.features == {}
    assert entry.yanked is False
    assert entry.deps[0] == Dependency("bar", "1")
    assert entry.to_line() == (
        '{"name":"foo","vers":"1.0.0","deps":[{"name":"bar","req":"1","features":[],'
        '"optional":false,"default_features":true,"target":null,"kind":"normal"}],'
        f'"cksum":"{CKSUM}","features":{{}},"yanked":false}}'
    )


def test_old_crates_io_lines_with_null_kind_and_yanked_are_read() -> None:
    old = line(yanked=None, deps=[{"name": "serde", "req": "^1.0", "kind": None}])
    entry = IndexEntry.from_line(old)
    assert entry.deps[0].kind == "normal"
    assert entry.yanked is False


def test_non_ascii_is_written_unescaped_like_serde_json() -> None:
    entry = IndexEntry.from_line(line(features={"größe": [], "default": ["std"], "std": []}))
    assert '"größe":[]' in entry.to_line()


def test_features_are_written_sorted_by_name() -> None:
    entry = IndexEntry.from_line(line(features={"z": [], "a": ["z"], "std": [], "default": []}))
    assert list(json.loads(entry.to_line())["features"]) == ["a", "default", "std", "z"]


# --------------------------------------------------------------------------- yank


def test_with_yanked_changes_only_the_yanked_flag() -> None:
    entry = IndexEntry.from_line(FULL_LINE)
    yanked = entry.with_yanked(True)
    assert yanked.yanked is True
    assert entry.yanked is False
    assert yanked.to_line() == FULL_LINE.replace('"yanked":false', '"yanked":true')
    assert yanked.with_yanked(False) == entry


@given(
    st.dictionaries(
        st.sampled_from(["yanked", "default", "std"]),
        st.lists(st.sampled_from(["std", "yanked", "dep:serde"]), max_size=3),
        max_size=4,
    ),
    st.sampled_from(["yanked", '"yanked":false', "x"]),
    st.booleans(),
    st.booleans(),
)
def test_set_yanked_flag_flips_only_the_entrys_own_flag(
    features: dict[str, list[str]], links: str, stored: bool, yanked: bool
) -> None:
    """Whatever features, names or strings hold the word, the flag flipped in the text is the
    one a full parse and re-serialization would change."""
    data = json.loads(FULL_LINE)
    data["features"] = features
    data.pop("features2", None)
    data.pop("v", None)
    data["deps"] = [dict(dep, optional=True, name="serde") for dep in data["deps"][:1]]
    data["links"] = links
    data["yanked"] = stored
    try:
        entry = IndexEntry.from_json(data)
    except InvalidInput:
        assume(False)
        return
    assert set_yanked_flag(entry.to_line(), yanked) == entry.with_yanked(yanked).to_line()


def test_set_yanked_flag_adds_a_missing_flag_only_to_yank() -> None:
    """A line without the flag (imported as it was found) reads as not yanked: it stays as it
    is until it is yanked, when the flag goes before the last closing brace."""
    assert set_yanked_flag('{"name":"a"}', True) == '{"name":"a","yanked":true}'
    assert set_yanked_flag('{"name":"a"} ', True) == '{"name":"a","yanked":true} '
    assert set_yanked_flag('{"name":"a"}', False) == '{"name":"a"}'


@given(
    st.sampled_from([True, False, None, "missing"]),
    st.sampled_from([(",", ":"), (", ", ": "), (",", " : "), ("\t,", ":\t")]),
    st.permutations(["name", "vers", "deps", "cksum", "features", "links", "yanked"]),
    st.booleans(),
)
def test_set_yanked_flag_round_trips_a_line_as_another_index_wrote_it(
    flag: bool | str | None,
    separators: tuple[str, str],
    order: list[str],
    yank: bool,
) -> None:
    """Stored as set_yanked_flag(found, False), a line with its flag in any form JSON allows
    (whitespace, another key order, null, missing) renders back to itself, and a yank or unyank
    of it is the same entry with only the flag changed."""
    data = json.loads(FULL_LINE)
    data.pop("features2", None)
    data.pop("v", None)
    data["features"] = {"yanked": [], "std": []}
    data["links"] = '"yanked":false'
    if flag == "missing":
        order.remove("yanked")
    else:
        data["yanked"] = flag
    found = json.dumps({key: data[key] for key in order}, separators=separators)
    entry = IndexEntry.from_line(found)
    assert can_set_yanked_flag(found)
    stored = set_yanked_flag(found, False)
    assert set_yanked_flag(stored, entry.yanked) == found
    flipped = set_yanked_flag(stored, yank)
    assert IndexEntry.from_line(flipped) == entry.with_yanked(yank)
    again = set_yanked_flag(set_yanked_flag(flipped, not yank), yank)
    assert IndexEntry.from_line(again) == entry.with_yanked(yank)


def test_can_set_yanked_flag_is_false_only_for_an_escaped_key() -> None:
    escaped = FULL_LINE.replace('"yanked":false', '"yank\\u0065d":true')
    assert IndexEntry.from_line(escaped).yanked is True
    assert not can_set_yanked_flag(escaped)
    assert can_set_yanked_flag(FULL_LINE)
    assert can_set_yanked_flag(FULL_LINE.replace('"yanked":false,', ""))
    # Escapes elsewhere change nothing.
    assert can_set_yanked_flag(FULL_LINE.replace('"^0.2"', '"\\u005e0.2"'))


def test_with_yanked_needs_a_bool() -> None:
    with pytest.raises(InvalidEntry, match="invalid yanked 1: expected true or false"):
        full_entry().with_yanked(1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- immutability


def test_entries_are_immutable_and_hashable() -> None:
    entry = full_entry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.yanked = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.features["new"] = ()  # type: ignore[index]
    assert hash(entry) == hash(IndexEntry.from_line(FULL_LINE))


def test_construction_validates_like_parsing() -> None:
    with pytest.raises(InvalidName, match="the name is reserved"):
        dataclasses.replace(full_entry(), name="core")
    with pytest.raises(InvalidEntry, match="invalid cksum"):
        dataclasses.replace(full_entry(), cksum="0" * 63)
    with pytest.raises(InvalidEntry, match="features2 must have v = 2"):
        dataclasses.replace(full_entry(), v=None)
    with pytest.raises(InvalidInput, match="dependency 'x': invalid req"):
        Dependency("x", "one")


# --------------------------------------------------------------------------- features


def test_feature_rules_cargo_accepts() -> None:
    opt = {"name": "serde", "req": "^1", "optional": True}
    req = {"name": "serde", "req": "^1"}
    accepted = [
        # A feature may share its name with a required dependency.
        line(deps=[req], features={"serde": []}),
        # An optional dependency gets an implicit feature unless `dep:` names it.
        line(deps=[opt], features={"a": ["serde"]}),
        line(deps=[opt], features={"a": ["serde/derive", "serde?/std"]}),
        line(deps=[opt], features={"serde": ["dep:serde"]}),
        line(deps=[opt], features={}),
        line(deps=[req], features={"a": ["serde/derive"]}),
        line(features={"c++17": [], "128bit": [], "_x": [], "a.b": [], "default": []}),
    ]
    for text in accepted:
        IndexEntry.from_line(text)


def test_the_same_dependency_twice_counts_as_optional_if_either_is() -> None:
    deps = [
        {"name": "serde", "req": "^1", "optional": True},
        {"name": "serde", "req": "^1", "kind": "dev"},
    ]
    IndexEntry.from_line(line(deps=deps, features={"a": ["dep:serde"]}))


@pytest.mark.parametrize("name", ["", "-x", "+x", ".x", "a/b", "a:b", "ⒶⒷ", "a b"])
def test_bad_feature_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_feature_name(name)


def test_split_features_like_crates_io() -> None:
    no_deps = {"feature1": ["val1", "val2"], "feature2": ["val3"]}
    assert split_features(no_deps) == (
        {"feature1": ("val1", "val2"), "feature2": ("val3",)},
        {},
    )
    mixed = {"feature1": ["val1"], "feature2": ["dep:val3"], "feature3": ["val5?/val6"]}
    assert split_features(mixed) == (
        {"feature1": ("val1",)},
        {"feature2": ("dep:val3",), "feature3": ("val5?/val6",)},
    )
    nested = {"feature1": ["feature2"], "feature2": ["feature3"], "feature3": ["dep:foo"]}
    plain, extended = split_features(nested)
    assert plain == {}
    assert list(extended) == ["feature1", "feature2", "feature3"]


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"),
        ("wasm32-wasip1", "wasm32-wasip1"),
        ("cfg(unix)", "cfg(unix)"),
        ("cfg( unix )", "cfg(unix)"),
        ('cfg(target_os="linux")', 'cfg(target_os = "linux")'),
        ('cfg(all(unix,target_arch = "x86_64",))', 'cfg(all(unix, target_arch = "x86_64"))'),
        ("cfg(any())", "cfg(any())"),
        ("cfg(not(windows))", "cfg(not(windows))"),
        ('cfg(any(windows, all(unix, not(target_os = "macos"))))', None),
        ("cfg(r#true)", "cfg(r#true)"),
    ],
)
def test_targets_cargo_accepts(text: str, normalized: str | None) -> None:
    assert validate_target(text) == text
    assert normalize_target(text) == (normalized or text)


@pytest.mark.parametrize(
    "text",
    [
        "cfg()",
        "cfg(unix",
        "cfg(unix))",
        "cfg(not(unix, windows))",
        "cfg(all(unix windows))",
        'cfg(target_os = "linux)',
        "cfg(target_os = linux)",
        "cfg(1abc)",
        "cfg(unix)(x)",
        'cfg(target_os = "li\x01nux")',
        'cfg(target_os = "\ud800")',
        "unix)",
        "x86 64",
        "",
    ],
)
def test_targets_cargo_refuses(text: str) -> None:
    with pytest.raises(InvalidEntry, match="invalid target"):
        validate_target(text)


# --------------------------------------------------------------------------- pubtime


def test_registry_urls_must_be_printable_urls() -> None:
    for bad in ["not a url", "https://exa mple.com", "https://example.com/\x7f", "://x"]:
        with pytest.raises(InvalidEntry, match="invalid registry"):
            Dependency("x", "1", registry=bad)
    for good in ["https://example.com/index", "sparse+https://example.com/", "file:///srv/i"]:
        assert Dependency("x", "1", registry=good).registry == good


def test_format_pubtime_drops_fractions_and_converts_to_utc() -> None:
    moment = datetime(2025, 11, 12, 21, 30, 12, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert format_pubtime(moment) == "2025-11-12T19:30:12Z"
    assert format_pubtime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05Z"
    with pytest.raises(ValueError):
        format_pubtime(datetime(2025, 1, 1))


# --------------------------------------------------------------------------- publish API


def publish_meta() -> dict[str, Any]:
    """What cargo 1.95 sent for a real publish (captured), trimmed to interesting parts."""
    return {
        "name": "a-main",
        "vers": "1.2.3",
        "deps": [
            {
                "optional": True,
                "default_features": False,
                "name": "b-helper",
                "features": ["x"],
                "version_req": "^0.1.0",
                "target": None,
                "kind": "normal",
                "explicit_name_in_toml": "bee",
            },
            {
                "optional": False,
                "default_features": True,
                "name": "b-helper",
                "features": [],
                "version_req": "=0.1.0",
                "target": None,
                "kind": "build",
            },
            {
                "optional": False,
                "default_features": True,
                "name": "serde",
                "features": [],
                "version_req": "^1",
                "target": 'cfg(all(unix, target_arch = "x86_64"))',
                "kind": "dev",
                "registry": "https://github.com/rust-lang/crates.io-index",
            },
        ],
        "features": {"default": ["dep:bee", "bee?/x", "extra"], "extra": [], "plain": []},
        "authors": ["someone"],
        "description": "x",
        "documentation": None,
        "homepage": None,
        "readme": "# long readme",
        "readme_file": "README.md",
        "keywords": [],
        "categories": [],
        "license": "MIT",
        "license_file": None,
        "repository": None,
        "badges": {},
        "links": "amain",
        "rust_version": "1.70",
    }


def test_from_publish_json_builds_the_crates_io_line() -> None:
    entry = IndexEntry.from_publish_json(publish_meta(), CKSUM, pubtime="2025-11-12T19:30:12Z")
    assert entry.to_line() == (
        '{"name":"a-main","vers":"1.2.3","deps":['
        '{"name":"b-helper","req":"=0.1.0","features":[],"optional":false,'
        '"default_features":true,"target":null,"kind":"build"},'
        '{"name":"bee","req":"^0.1.0","features":["x"],"optional":true,'
        '"default_features":false,"target":null,"kind":"normal","package":"b-helper"},'
        '{"name":"serde","req":"^1","features":[],"optional":false,"default_features":true,'
        '"target":"cfg(all(unix, target_arch = \\"x86_64\\"))","kind":"dev",'
        '"registry":"https://github.com/rust-lang/crates.io-index"}],'
        f'"cksum":"{CKSUM}","features":{{"extra":[],"plain":[]}},'
        '"features2":{"default":["dep:bee","bee?/x","extra"]},"yanked":false,'
        '"links":"amain","rust_version":"1.70","pubtime":"2025-11-12T19:30:12Z","v":2}'
    )


def test_from_publish_json_without_new_syntax_has_no_features2() -> None:
    meta = publish_meta()
    meta["deps"] = meta["deps"][1:]
    meta["features"] = {"default": ["extra"], "extra": []}
    meta["links"] = None
    del meta["rust_version"]
    entry = IndexEntry.from_publish_json(meta, CKSUM)
    assert entry.features2 is None and entry.v is None
    assert '"features2"' not in entry.to_line() and '"v"' not in entry.to_line()
    assert '"links"' not in entry.to_line()


def test_publish_dependencies_are_sorted_like_crates_io() -> None:
    deps = [
        Dependency("b", "1", kind="dev"),
        Dependency("b", "1", kind="build"),
        Dependency("b", "1"),
        Dependency("a", "2"),
        Dependency("b", "1", target="cfg(unix)"),
    ]
    assert [(d.name, d.kind, d.target) for d in sort_dependencies(deps)] == [
        ("a", "normal", None),
        ("b", "normal", None),
        ("b", "normal", "cfg(unix)"),
        ("b", "build", None),
        ("b", "dev", None),
    ]


def test_from_publish_json_checks_the_cksum() -> None:
    with pytest.raises(InvalidEntry, match="invalid cksum 'nope'"):
        IndexEntry.from_publish_json(publish_meta(), "nope")


# --------------------------------------------------------------------------- the bad corpus


def test_corpus_is_big_and_ids_are_unique() -> None:
    assert len(BAD_LINES) >= 45
    ids = [case[0] for case in BAD_LINES + BAD_PUBLISH_JSON]
    assert len(ids) == len(set(ids))


def test_the_good_line_of_the_corpus_is_accepted() -> None:
    entry = IndexEntry.from_line(line())
    assert entry.cksum == GOOD_CKSUM


@pytest.mark.parametrize(("case", "text", "fragment"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_each_bad_line_is_refused_with_its_own_message(case: str, text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        IndexEntry.from_line(text)
    message = str(caught.value)
    assert fragment in message, f"{case}: {message}"
    assert "\n" not in message
    assert len(message) < 400


@pytest.mark.parametrize(
    ("case", "meta", "fragment"), BAD_PUBLISH_JSON, ids=[c[0] for c in BAD_PUBLISH_JSON]
)
def test_each_bad_publish_is_refused_with_its_own_message(
    case: str, meta: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        IndexEntry.from_publish_json(meta, GOOD_CKSUM)
    assert fragment in str(caught.value), f"{case}: {caught.value}"


def test_no_two_bad_cases_share_a_message() -> None:
    messages: list[str] = []
    for _, text, _ in BAD_LINES:
        with pytest.raises(InvalidInput) as caught:
            IndexEntry.from_line(text)
        messages.append(str(caught.value))
    for _, meta, _ in BAD_PUBLISH_JSON:
        with pytest.raises(InvalidInput) as caught:
            IndexEntry.from_publish_json(meta, GOOD_CKSUM)
        messages.append(str(caught.value))
    duplicates = {m for m in messages if messages.count(m) > 1}
    assert not duplicates


# --------------------------------------------------------------------------- real cargo


def _cargo_lock(tmp_path: Path, lines: dict[str, list[str]]) -> tuple[bool, str]:
    """Serve ``lines`` from a file:// git index and ask cargo to lock ``agree = "1"``."""
    index = tmp_path / "index"
    index.mkdir()
    (index / "config.json").write_text('{"dl":"file:///nonexistent/{crate}-{version}.crate"}')
    for name, crate_lines in lines.items():
        path = index / index_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(text + "\n" for text in crate_lines))
    git("init", "-q", "-b", "master", cwd=index)
    git("add", "-A", cwd=index)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "index", cwd=index)
    consumer = tmp_path / "consumer"
    (consumer / "src").mkdir(parents=True)
    (consumer / "src" / "lib.rs").write_text("")
    (consumer / ".cargo").mkdir()
    (consumer / ".cargo" / "config.toml").write_text(
        f'[registries.local]\nindex = "{index.as_uri()}"\n'
    )
    (consumer / "Cargo.toml").write_text(
        '[package]\nname = "consumer"\nversion = "0.0.0"\nedition = "2021"\n'
        '[dependencies]\nagree = { version = "1", registry = "local" }\n'
    )
    env = dict(os.environ, CARGO_HOME=str(tmp_path / "cargo-home"), CARGO_TERM_COLOR="never")
    result = subprocess.run(
        ["cargo", "generate-lockfile"],
        cwd=consumer,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode == 0, result.stderr


def _agree_line(**changes: Any) -> str:
    data: dict[str, Any] = {
        "name": "agree",
        "vers": "1.0.0",
        "deps": [
            {"name": "h", "req": "^0.1", "optional": True, "package": "helper"},
            {"name": "helper", "req": "=0.1.0", "kind": "build", "target": "cfg(unix)"},
        ],
        "cksum": GOOD_CKSUM,
        "features": {"default": ["fast"], "fast": []},
        "features2": {"extra": ["dep:h", "h?/x"]},
        "yanked": False,
        "rust_version": "1.70",
        "pubtime": "2025-11-12T19:30:12Z",
        "v": 2,
    }
    data.update(changes)
    return json.dumps(data, separators=(",", ":"))


NO_V2: dict[str, Any] = {"features2": None, "v": None}

HELPER_LINE = (
    '{"name":"helper","vers":"0.1.0","deps":[],"cksum":"' + GOOD_CKSUM + '",'
    '"features":{"x":[]},"yanked":false}'
)

INVALID = "index entry is invalid"
_H_OPTIONAL = {"name": "h", "req": "^0.1", "optional": True, "package": "helper"}
_HELPER = {"name": "helper", "req": "^0.1"}

# (id, line, what cargo says: None when it locks, else a piece of its error)
CARGO_CASES: list[tuple[str, str, str | None]] = [
    ("good", _agree_line(), None),
    ("unknown-feature", _agree_line(features={"default": ["nope"]}), INVALID),
    ("bad-req", _agree_line(deps=[{"name": "helper", "req": "latest"}]), INVALID),
    (
        "bad-target",
        _agree_line(deps=[{"name": "helper", "req": "1", "target": "cfg(unix"}]),
        INVALID,
    ),
    ("fraction-pubtime", _agree_line(pubtime="2025-11-12T19:30:12.5Z"), INVALID),
    ("schema-v3", _agree_line(v=3), "requires cargo"),
    ("short-vers", _agree_line(vers="1.0"), "no matching package named `agree`"),
    ("no-cksum", _agree_line().replace(f'"cksum":"{GOOD_CKSUM}",', ""), INVALID),
    ("shadow-required", _agree_line(deps=[_HELPER], features={"helper": []}, **NO_V2), None),
    ("implicit-used", _agree_line(deps=[_H_OPTIONAL], features={"a": ["h"]}, **NO_V2), None),
    (
        "implicit-hidden",
        _agree_line(deps=[_H_OPTIONAL], features={"a": ["dep:h"], "b": ["h"]}, **NO_V2),
        INVALID,
    ),
    ("optional-unused", _agree_line(deps=[_H_OPTIONAL], features={"h": []}, **NO_V2), INVALID),
    ("weak-required", _agree_line(deps=[_HELPER], features={"a": ["helper?/x"]}, **NO_V2), INVALID),
]


@pytest.mark.skipif(
    shutil.which("cargo") is None or shutil.which("git") is None, reason="needs cargo and git"
)
@pytest.mark.parametrize(
    ("case", "text", "cargo_says"), CARGO_CASES, ids=[c[0] for c in CARGO_CASES]
)
def test_validation_agrees_with_real_cargo(
    tmp_path: Path, case: str, text: str, cargo_says: str | None
) -> None:
    try:
        IndexEntry.from_line(text)
        ours_ok = True
    except InvalidInput:
        ours_ok = False
    assert ours_ok == (cargo_says is None), f"{case}: our validator says {ours_ok}"
    if ours_ok:
        # What cargo reads must be what we write: feed it our own rendering.
        text = IndexEntry.from_line(text).to_line()
    cargo_ok, stderr = _cargo_lock(tmp_path, {"agree": [text], "helper": [HELPER_LINE]})
    assert cargo_ok == (cargo_says is None), stderr
    if cargo_says is not None:
        assert cargo_says in stderr


# ------------------------------------------------------------------------ dependencies read twice

_DEP = {
    "name": "x",
    "req": "^1",
    "features": [],
    "optional": True,
    "default_features": True,
    "target": None,
    "kind": "normal",
}


def test_a_dependency_read_before_is_found_only_for_an_equal_object() -> None:
    first = Dependency.from_json(dict(_DEP))
    assert Dependency.from_json(dict(_DEP)) is first  # found, not read again
    for field, bad in [
        ("optional", 1),
        ("optional", "true"),
        ("default_features", 1.0),
        ("features", [1]),
        ("features", ["std", None]),
        ("target", 0),
        ("kind", "Normal"),
    ]:
        with pytest.raises(InvalidInput):
            Dependency.from_json({**_DEP, field: bad})
    with pytest.raises(InvalidInput, match="unknown field 'extra'"):
        Dependency.from_json({**_DEP, "extra": True})


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, 1.0])
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2),
    max_leaves=3,
)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["x", "y"]), "req": st.sampled_from(["^1", "1", 1, True])},
            optional={
                "features": _json_values,
                "optional": _json_values,
                "default_features": _json_values,
                "target": st.sampled_from([None, "cfg(unix)", 1, False]),
                "kind": st.sampled_from([None, "normal", "dev", 0, True]),
            },
        ),
        min_size=1,
        max_size=6,
    )
)
def test_reading_dependencies_gives_the_same_with_or_without_those_read_before(
    objects: list[dict[str, object]],
) -> None:
    """Whatever was read before, a dependency object reads as it would the first time:
    JSON values equal in Python but not to cargo (1 and true, 1 and 1.0) never share."""

    def read_all() -> list[object]:
        found: list[object] = []
        for data in objects:
            try:
                found.append(Dependency.from_json(json.loads(json.dumps(data))))
            except InvalidInput as problem:
                found.append(str(problem))
        return found

    remembered = read_all()
    for data in objects:
        entries._READ_DEPENDENCIES.pop(
            entries._dependency_key(json.loads(json.dumps(data))) or "", None
        )
    assert read_all() == remembered
    fresh: list[object] = []
    for data in objects:
        entries._READ_DEPENDENCIES.clear()
        try:
            fresh.append(Dependency.from_json(json.loads(json.dumps(data))))
        except InvalidInput as problem:
            fresh.append(str(problem))
    assert fresh == remembered
