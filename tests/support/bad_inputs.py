"""A corpus of bad publishes, each refused with InvalidInput naming its own problem.

Every case is ``(id, input, fragment)``: ``input`` is one index line exactly as a client or an
import could hand it over, and ``fragment`` is a piece of the one-line error message that only
this problem produces, so a case cannot pass by tripping over some other, earlier check.

The domain tests feed each line to ``IndexEntry.from_line``; a store-level test can feed the
same lines to the database-backed publish and check that nothing was stored. Import it as
``from support.bad_inputs import BAD_LINES`` (``tests/conftest.py`` puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import json
from typing import Any

from indexpub.domain.entries import MAX_LINE_BYTES

GOOD_CKSUM = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

_SERDE = {
    "name": "serde",
    "req": "^1.0",
    "features": ["derive"],
    "optional": False,
    "default_features": True,
    "target": None,
    "kind": "normal",
}

GOOD_ENTRY: dict[str, Any] = {
    "name": "good-crate",
    "vers": "1.0.0",
    "deps": [_SERDE],
    "cksum": GOOD_CKSUM,
    "features": {"default": ["std"], "std": []},
    "yanked": False,
}

_DROP = object()


def line(**changes: Any) -> str:
    """The good entry with top-level fields replaced (or dropped with ``_DROP``), as a line."""
    data = dict(GOOD_ENTRY)
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data, separators=(",", ":"))


def dep_line(**changes: Any) -> str:
    """The good entry whose single dependency has fields replaced (or dropped)."""
    dep = dict(_SERDE)
    for key, value in changes.items():
        if value is _DROP:
            del dep[key]
        else:
            dep[key] = value
    return line(deps=[dep])


def optional_serde_line(features: dict[str, list[str]], **changes: Any) -> str:
    """The good entry with serde optional and the given feature table."""
    return line(deps=[dict(_SERDE, optional=True)], features=features, **changes)


_OVERSIZED = line(features={"default": ["x" * MAX_LINE_BYTES]})

BAD_LINES: list[tuple[str, str, str]] = [
    # ---- crate names
    ("name-space", line(name="foo bar"), "invalid crate name 'foo bar': only ASCII letters"),
    ("name-empty", line(name=""), "invalid crate name '': the name is empty"),
    ("name-digit-first", line(name="1foo"), "'1foo': the first character must be an ASCII"),
    ("name-underscore-first", line(name="_foo"), "'_foo': the first character must be"),
    ("name-too-long", line(name="a" * 65), "longer than 64 characters (65)"),
    ("name-non-ascii", line(name="café"), "'café': only ASCII letters, digits"),
    ("name-device", line(name="nul"), "invalid crate name 'nul': it is a Windows device name"),
    ("name-device-upper", line(name="COM1"), "'COM1': it is a Windows device name"),
    ("name-reserved", line(name="std"), "invalid crate name 'std': the name is reserved"),
    ("name-reserved-canon", line(name="Proc-Macro"), "'Proc-Macro': the name is reserved"),
    ("name-not-string", line(name=42), "invalid crate name 42: expected a string"),
    # ---- versions
    ("vers-leading-zero", line(vers="01.0.0"), "'01.0.0': invalid leading zero in major"),
    ("vers-two-parts", line(vers="1.0"), "'1.0': unexpected end of input while parsing minor"),
    ("vers-v-prefix", line(vers="v1.0.0"), "'v1.0.0': unexpected character 'v' while parsing"),
    ("vers-pre-zero", line(vers="1.0.0-01"), "'1.0.0-01': invalid leading zero in pre-release"),
    ("vers-empty-build", line(vers="1.0.0+"), "'1.0.0+': empty identifier segment in build"),
    ("vers-empty-pre-seg", line(vers="1.0.0-a..b"), "'1.0.0-a..b': empty identifier segment"),
    ("vers-overflow", line(vers="18446744073709551616.0.0"), "exceeds u64::MAX"),
    ("vers-not-string", line(vers=1), "invalid vers 1: expected a string"),
    # ---- the line itself
    ("not-json", '{"name":"good-crate",', 'invalid index line \'{"name":"good-crate",\': not JSON'),
    ("not-object", "[1,2]", "invalid index entry [1, 2]: expected a JSON object"),
    ("missing-deps", line(deps=_DROP), "missing field 'deps' in index entry"),
    ("missing-cksum", line(cksum=_DROP), "missing field 'cksum' in index entry"),
    ("missing-vers", line(vers=_DROP), "missing field 'vers' in index entry"),
    ("unknown-field", line(homepage="https://x"), "unknown field 'homepage' in index entry"),
    (
        "duplicate-key",
        line().replace('"yanked":false', '"yanked":false,"yanked":true'),
        "duplicate key 'yanked'",
    ),
    ("nan", line().replace('"yanked":false', '"yanked":NaN'), "NaN is not valid JSON"),
    ("huge-int", line().replace('"yanked":false', '"v":' + "9" * 5000), "'99999999999999"),
    ("huge-float", line().replace('"yanked":false', '"v":1e999'), "the number '1e999' is out"),
    ("deep", line().replace('"yanked":false', '"x":' + "[" * 50_000), "nested too deeply"),
    ("line-break", line().replace(",", ",\n", 1), "contains a line break"),
    ("oversized", _OVERSIZED, f"longer than the limit of {MAX_LINE_BYTES}"),
    # ---- cksum
    ("cksum-upper", line(cksum=GOOD_CKSUM.upper()), "expected 64 lowercase hex digits"),
    ("cksum-short", line(cksum="abc123"), "invalid cksum 'abc123': expected 64 lowercase"),
    ("cksum-prefixed", line(cksum="sha256:" + GOOD_CKSUM[7:]), "invalid cksum 'sha256:"),
    ("cksum-null", line(cksum=None), "invalid cksum None: expected a string"),
    # ---- deps
    ("deps-not-list", line(deps={}), "invalid deps {}: expected a list"),
    ("dep-not-object", line(deps=["serde"]), "invalid deps[0] 'serde': expected an object"),
    ("dep-name", dep_line(name="ser de"), "invalid dependency name 'ser de'"),
    ("dep-no-req", dep_line(req=_DROP), "dependency 'serde': missing field 'req'"),
    ("dep-req-space", dep_line(req=">=1.0 <2"), "expected comma after minor version number"),
    ("dep-req-word", dep_line(req="latest"), "invalid req 'latest': unexpected character 'l'"),
    ("dep-req-star-list", dep_line(req="*, >=1"), "wildcard req (*) must be the only"),
    ("dep-features", dep_line(features="derive"), "invalid features 'derive': expected a list"),
    ("dep-feature-value", dep_line(features=["de rive"]), "invalid feature value 'de rive'"),
    ("dep-optional", dep_line(optional="yes"), "invalid optional 'yes': expected true or false"),
    ("dep-default-features", dep_line(default_features=None), "invalid default_features None"),
    ("dep-target-open", dep_line(target="cfg(unix"), "invalid target 'cfg(unix': a cfg"),
    ("dep-target-value", dep_line(target="cfg(target_os = linux)"), "found 'linux'"),
    ("dep-target-extra", dep_line(target="cfg(unix, windows)"), "unexpected ',' after"),
    ("dep-target-empty", dep_line(target=""), "invalid target '': expected cfg(...)"),
    ("dep-kind", dep_line(kind="runtime"), "invalid kind 'runtime': expected normal, dev"),
    ("dep-registry", dep_line(registry="crates-io"), "invalid registry 'crates-io': expected"),
    ("dep-package", dep_line(package="foo bar"), "invalid package 'foo bar'"),
    ("dep-unknown-field", dep_line(public=True), "unknown field 'public' in the dependency"),
    # ---- features
    ("feat-unknown", line(features={"default": ["nope"]}), "includes 'nope', which is neither"),
    ("feat-dep-unknown", line(features={"a": ["dep:nope"]}), "'nope' is not listed as a dep"),
    ("feat-dep-required", line(features={"a": ["dep:serde"]}), "'serde' is not an optional"),
    ("feat-slash-unknown", line(features={"a": ["nope/x"]}), "but 'nope' is not a dependency"),
    ("feat-weak-required", line(features={"a": ["serde?/std"]}), "with a '?', but 'serde'"),
    ("feat-two-slashes", line(features={"a": ["serde/x/y"]}), "invalid feature value 'serde/x/y'"),
    ("feat-name", line(features={"a b": []}), "invalid feature name 'a b'"),
    ("feat-name-dep", line(features={"dep:x": []}), "invalid feature name 'dep:x'"),
    ("feat-values", line(features={"a": "b"}), "invalid features['a'] 'b': expected a list"),
    ("feat-not-object", line(features=[]), "invalid features []: expected an object"),
    (
        "feat-optional-unused",
        optional_serde_line({"serde": []}),
        "optional dependency 'serde' is not included in any feature",
    ),
    (
        "feat-implicit-hidden",
        optional_serde_line({"a": ["dep:serde"], "b": ["serde"]}),
        "'serde' is an optional dependency enabled only by 'dep:'",
    ),
    # ---- features2 / v
    ("features2-no-v", line(features2={"x": []}), "an entry with features2 must have v = 2"),
    ("v-3", line(v=3), "invalid v 3: unsupported index schema version"),
    ("v-string", line(v="2"), "invalid v '2': expected an integer"),
    ("v-bool", line(v=True), "invalid v True: expected an integer"),
    # ---- other scalars
    ("yanked", line(yanked="no"), "invalid yanked 'no': expected true or false"),
    ("links-empty", line(links=""), "invalid links '': expected a native library name"),
    ("rust-version-caret", line(rust_version="^1.70"), "invalid rust_version '^1.70'"),
    ("rust-version-pre", line(rust_version="1.70.0-beta"), "'1.70.0-beta': expected a version"),
    ("rust-version-int", line(rust_version=170), "invalid rust_version 170: expected a string"),
    # ---- pubtime
    ("pubtime-fraction", line(pubtime="2025-11-12T19:30:12.5Z"), "'2025-11-12T19:30:12.5Z'"),
    ("pubtime-offset", line(pubtime="2025-11-12T19:30:12+00:00"), "expected exactly YYYY-MM"),
    ("pubtime-space", line(pubtime="2025-11-12 19:30:12Z"), "'2025-11-12 19:30:12Z': expected"),
    ("pubtime-no-date", line(pubtime="2025-02-30T00:00:00Z"), "not a real date and time"),
    ("pubtime-hour", line(pubtime="2025-01-01T24:00:00Z"), "'2025-01-01T24:00:00Z': not a real"),
]

_PUBLISH_DEP = {
    "optional": False,
    "default_features": True,
    "name": "serde",
    "features": [],
    "version_req": "^1.0",
    "target": None,
    "kind": "normal",
}


def publish(**changes: Any) -> dict[str, Any]:
    """Publish-API metadata for a good crate, with top-level fields replaced."""
    meta: dict[str, Any] = {
        "name": "good-crate",
        "vers": "1.0.0",
        "deps": [_PUBLISH_DEP],
        "features": {},
        "authors": [],
        "description": "fine",
        "links": None,
    }
    meta.update(changes)
    return meta


def publish_dep(**changes: Any) -> dict[str, Any]:
    """Publish-API metadata whose single dependency has fields replaced."""
    return publish(deps=[dict(_PUBLISH_DEP, **changes)])


BAD_PUBLISH_JSON: list[tuple[str, dict[str, Any], str]] = [
    ("pub-name", publish(name="con"), "invalid crate name 'con': it is a Windows device name"),
    ("pub-vers", publish(vers="1.0.0.0"), "invalid vers '1.0.0.0': unexpected character '.'"),
    ("pub-no-deps", {"name": "good-crate", "vers": "1.0.0"}, "missing field 'deps' in publish"),
    ("pub-req", publish_dep(version_req="1.0 || 2.0"), "invalid req '1.0 || 2.0': expected comma"),
    ("pub-req-bad", publish_dep(version_req="~>1.0"), "invalid req '~>1.0'"),
    ("pub-alias", publish_dep(explicit_name_in_toml="my serde"), "invalid dependency name 'my"),
    ("pub-artifact", publish_dep(artifact=["bin"]), "artifact dependencies are not supported"),
    ("pub-kind", publish_dep(kind="optional"), "invalid kind 'optional': expected normal"),
    ("pub-feature", publish(features={"x": ["nope"]}), "includes 'nope', which is neither"),
    ("pub-rust-version", publish(rust_version="1.x"), "invalid rust_version '1.x'"),
]
