"""Reading `.crate` archives: the entry they imply, and every way they are refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.crates import Member, file, folder, gzip_tar, link, special

from indexpub.domain import crate_file
from indexpub.domain.crate_file import (
    CRATES_IO_INDEX,
    read_bounded,
    read_crate_bytes,
    read_crate_file,
)
from indexpub.errors import InvalidCrateFile, InvalidInput

MANIFEST = """\
# normalized by cargo
[package]
edition = "2021"
name = "demo"
version = "0.1.0"
links = "demo"
rust-version = "1.70"
description = "dropped from the index"

[dependencies]
serde = { version = "1.0", features = ["derive"] }
my-log = { version = "0.4", package = "log", optional = true, default-features = false }
private = { version = "2", registry-index = "https://git.example.com/index.git" }
own = { version = "=3.1.0", registry-index = "file:///srv/index" }

[dev-dependencies]
tempfile = "3"

[build-dependencies.cc]
version = "1.0.83"

[target.'cfg(windows)'.dependencies]
winapi = { version = "0.3", features = ["winuser"] }

[target.x86_64-unknown-linux-gnu.build-dependencies]
pkg-config = "0.3"

[features]
default = ["std"]
std = []
logging = ["dep:my-log", "my-log?/std"]
"""

CRATES_IO = f'"registry":"{CRATES_IO_INDEX}"'


def expected_line(cksum: str) -> str:
    """Written by hand: what crates.io's index would hold for MANIFEST, deps sorted."""
    return (
        '{"name":"demo","vers":"0.1.0","deps":['
        '{"name":"cc","req":"^1.0.83","features":[],"optional":false,"default_features":true,'
        f'"target":null,"kind":"build",{CRATES_IO}}},'
        '{"name":"my-log","req":"^0.4","features":[],"optional":true,"default_features":false,'
        f'"target":null,"kind":"normal",{CRATES_IO},"package":"log"}},'
        '{"name":"own","req":"=3.1.0","features":[],"optional":false,"default_features":true,'
        '"target":null,"kind":"normal"},'
        '{"name":"pkg-config","req":"^0.3","features":[],"optional":false,'
        f'"default_features":true,"target":"x86_64-unknown-linux-gnu","kind":"build",{CRATES_IO}}},'
        '{"name":"private","req":"^2","features":[],"optional":false,"default_features":true,'
        '"target":null,"kind":"normal","registry":"https://git.example.com/index.git"},'
        '{"name":"serde","req":"^1.0","features":["derive"],"optional":false,'
        f'"default_features":true,"target":null,"kind":"normal",{CRATES_IO}}},'
        '{"name":"tempfile","req":"^3","features":[],"optional":false,"default_features":true,'
        f'"target":null,"kind":"dev",{CRATES_IO}}},'
        '{"name":"winapi","req":"^0.3","features":["winuser"],"optional":false,'
        f'"default_features":true,"target":"cfg(windows)","kind":"normal",{CRATES_IO}}}],'
        f'"cksum":"{cksum}",'
        '"features":{"default":["std"],"std":[]},'
        '"features2":{"logging":["dep:my-log","my-log?/std"]},'
        '"yanked":false,"links":"demo","rust_version":"1.70","v":2}'
    )


def good_members(prefix: str = "demo-0.1.0", manifest: str = MANIFEST) -> list[Member]:
    return [
        file(f"{prefix}/Cargo.toml", manifest),
        file(f"{prefix}/Cargo.toml.orig", "[package]\nname = 'demo'\n"),
        file(f"{prefix}/src/lib.rs", "pub fn demo() {}\n"),
    ]


def refusal(data: bytes, **options: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        read_crate_bytes(data, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- good archives


def test_a_good_crate_gives_the_crates_io_line(tmp_path: Path) -> None:
    data = gzip_tar(*good_members())
    path = tmp_path / "demo-0.1.0.crate"
    path.write_bytes(data)
    entry = read_crate_file(path, index_url="file:///srv/index/")
    assert entry.cksum == hashlib.sha256(data).hexdigest()
    assert entry.to_line() == expected_line(entry.cksum)


def test_without_our_index_url_the_own_registry_keeps_its_url() -> None:
    entry = read_crate_bytes(gzip_tar(*good_members()))
    own = next(dep for dep in entry.deps if dep.name == "own")
    assert own.registry == "file:///srv/index"


def test_expected_name_and_version_are_checked_when_given() -> None:
    data = gzip_tar(*good_members())
    assert read_crate_bytes(data, expected_name="demo", expected_version="0.1.0").name == "demo"
    assert "names the crate 'demo', not 'Demo'" in refusal(data, expected_name="Demo")
    assert "has version '0.1.0', not '0.1.1'" in refusal(data, expected_version="0.1.1")


def test_pubtime_is_passed_through() -> None:
    entry = read_crate_bytes(gzip_tar(*good_members()), pubtime="2025-01-02T03:04:05Z")
    assert entry.pubtime == "2025-01-02T03:04:05Z"


def test_directories_are_allowed() -> None:
    data = gzip_tar(folder("demo-0.1.0/src"), *good_members())
    assert read_crate_bytes(data).name == "demo"


def test_old_underscore_spellings_are_understood() -> None:
    manifest = (
        '[package]\nname = "demo"\nversion = "0.1.0"\n'
        '[dev_dependencies]\nx = { version = "1", default_features = false }\n'
        '[build_dependencies]\ny = "2"\n'
    )
    entry = read_crate_bytes(gzip_tar(*good_members(manifest=manifest)))
    assert [(d.name, d.kind, d.default_features) for d in entry.deps] == [
        ("x", "dev", False),
        ("y", "build", True),
    ]


# --------------------------------------------------------------------------- bad archives


def test_not_gzip() -> None:
    assert "not a gzip file" in refusal(b"PK\x03\x04 this is a zip")


def test_gzip_but_not_tar() -> None:
    assert "not a readable tar archive" in refusal(gzip.compress(b"hello, world\n" * 100))


def test_truncated_gzip() -> None:
    data = gzip_tar(*good_members(), file("demo-0.1.0/big", os.urandom(50_000)))
    assert "invalid .crate file" in refusal(data[: len(data) // 2])


def test_trailing_garbage_after_the_gzip_stream() -> None:
    data = gzip_tar(*good_members()) + b"garbage!"
    assert "data after the end of the gzip stream" in refusal(data)


def test_member_outside_the_prefix() -> None:
    data = gzip_tar(*good_members(), file("other/evil.rs", "x"))
    assert "'other/evil.rs': outside the 'demo-0.1.0/' folder" in refusal(data)


def test_absolute_member() -> None:
    data = gzip_tar(*good_members(), file("/etc/passwd", "x"))
    assert "'/etc/passwd': not a relative POSIX path" in refusal(data)


def test_member_with_dot_dot() -> None:
    data = gzip_tar(*good_members(), file("demo-0.1.0/../../evil", "x"))
    assert "'demo-0.1.0/../../evil': contains '..'" in refusal(data)


def test_member_with_backslash() -> None:
    data = gzip_tar(*good_members(), file("demo-0.1.0\\..\\evil", "x"))
    assert "not a relative POSIX path" in refusal(data)


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (link("demo-0.1.0/escape", "../../etc/passwd"), "a symbolic link"),
        (link("demo-0.1.0/src/alias.rs", "lib.rs"), "a symbolic link"),
        (link("demo-0.1.0/abs", "/etc/passwd"), "a symbolic link"),
        (link("demo-0.1.0/hard", "etc/passwd", hard=True), "a hard link"),
        (link("demo-0.1.0/README", "demo-0.1.0/src/lib.rs", hard=True), "a hard link"),
        (special("demo-0.1.0/pipe", tarfile.FIFOTYPE), "a FIFO"),
        (special("demo-0.1.0/dev", tarfile.CHRTYPE), "a character device"),
        (special("demo-0.1.0/blk", tarfile.BLKTYPE), "a block device"),
        (special("demo-0.1.0/big", tarfile.CONTTYPE), "a contiguous file"),
    ],
    ids=["up", "inside", "absolute", "hard", "hard-inside", "fifo", "chr", "blk", "contiguous"],
)
def test_only_files_and_folders(member: Member, kind: str) -> None:
    """Links of any target too: a chain of links that each stay inside can write outside."""
    message = refusal(gzip_tar(*good_members(), member))
    assert f"'{member[0].name}': {kind}; only files and folders are allowed" in message


def test_duplicate_members() -> None:
    data = gzip_tar(*good_members(), file("demo-0.1.0/Cargo.toml", "[package]\n"))
    assert "'demo-0.1.0/Cargo.toml': appears twice" in refusal(data)


def test_missing_cargo_toml() -> None:
    data = gzip_tar(file("demo-0.1.0/src/lib.rs", ""), file("demo-0.1.0/sub/Cargo.toml", ""))
    assert "no Cargo.toml in 'demo-0.1.0/'" in refusal(data)


def test_empty_archive() -> None:
    assert "no Cargo.toml" in refusal(gzip_tar())


def test_cargo_toml_must_be_a_regular_file() -> None:
    data = gzip_tar(
        file("demo-0.1.0/real.toml", MANIFEST), link("demo-0.1.0/Cargo.toml", "real.toml")
    )
    assert "'demo-0.1.0/Cargo.toml': a symbolic link" in refusal(data)


def test_folder_must_match_the_manifest() -> None:
    data = gzip_tar(*good_members(prefix="other-0.1.0"))
    assert "folder 'other-0.1.0' does not match Cargo.toml's name and version 'demo-0.1.0'" in (
        refusal(data)
    )
    data = gzip_tar(*good_members(prefix="demo-0.2.0"))
    assert "folder 'demo-0.2.0' does not match" in refusal(data)


# --------------------------------------------------------------------------- limits


def test_oversized_bytes() -> None:
    data = gzip_tar(*good_members())
    assert f"of {len(data)} bytes: larger than the limit of 100" in refusal(data, max_bytes=100)


def test_oversized_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.crate"
    with open(path, "wb") as stream:
        stream.truncate(11 * 1024 * 1024)  # sparse: costs no disk

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(crate_file, "open", no_open, raising=False)
    with pytest.raises(InvalidCrateFile, match="of 11534336 bytes: larger than the limit"):
        read_crate_file(path)


def test_read_bounded_stops_at_the_limit() -> None:
    assert read_bounded(io.BytesIO(b"x" * 10), 10) == b"x" * 10
    with pytest.raises(InvalidCrateFile, match="larger than the limit of 9 bytes"):
        read_bounded(io.BytesIO(b"x" * 10), 9)


def test_too_many_members() -> None:
    data = gzip_tar(*good_members(), *(file(f"demo-0.1.0/f{i}", "") for i in range(5)))
    assert "more than 4 members" in refusal(data, max_members=4)


def test_declared_sizes_beyond_the_unpack_limit() -> None:
    data = gzip_tar(*good_members(), file("demo-0.1.0/zeros", bytes(2 * 1024 * 1024)))
    assert len(data) < 20_000  # a few kilobytes that unpack to megabytes
    assert "unpacks to more than the limit of 1048576 bytes" in refusal(
        data, max_unpacked_bytes=1024 * 1024
    )


def test_decompressed_stream_is_bounded_even_when_members_are_empty() -> None:
    # 400 empty members: nothing declared, but 200 KiB of headers to decompress.
    data = gzip_tar(*good_members(), *(file(f"demo-0.1.0/e{i}", "") for i in range(400)))
    assert "unpacks to more than the limit of 65536 bytes" in refusal(
        data, max_unpacked_bytes=64 * 1024
    )


# --------------------------------------------------------------------------- bad manifests


def crate_with(manifest: str) -> bytes:
    return gzip_tar(*good_members(manifest=manifest))


HEADER = '[package]\nname = "demo"\nversion = "0.1.0"\n'


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("[package\n", "not TOML"),
        ("", "no [package] table"),
        ('[package]\nname = "demo"\nversion = { workspace = true }\n', "not normalized"),
        ('[package]\nname = "std"\nversion = "0.1.0"\n', "Cargo.toml: invalid crate name 'std'"),
        ('[package]\nname = "demo"\nversion = "0.1"\n', "Cargo.toml: invalid vers '0.1'"),
        (HEADER + '[dependencies]\nx = { path = "../x" }\n', "'x' has no version requirement"),
        (HEADER + '[dependencies]\nx = { version = "1", registry = "r" }\n', "uses 'registry'"),
        (HEADER + '[dependencies]\nx = { version = "1", artifact = "bin" }\n', "'artifact'"),
        (HEADER + "[dependencies]\nx = { workspace = true }\n", "uses 'workspace'"),
        (HEADER + '[dependencies]\nx = ">>1"\n', "dependency 'x': invalid req '>>1'"),
        (HEADER + '[dependencies]\nx = { version = "1", optional = "yes" }\n', "optional"),
        (HEADER + '[dependencies]\nx = { version = "1", features = "a" }\n', "not a list"),
        (HEADER + '[target."cfg(unix".dependencies]\nx = "1"\n', "invalid target 'cfg(unix'"),
        (HEADER + '[features]\na = ["nope"]\n', "feature 'a' includes 'nope', which is neither"),
        (HEADER + '[features]\na = "b"\n', "feature 'a' is not a list of strings"),
        (HEADER + 'links = ""\n', "Cargo.toml: invalid links ''"),
        (HEADER + 'rust-version = "1.70.0-nightly"\n', "invalid rust_version '1.70.0-nightly'"),
    ],
)
def test_bad_manifests(manifest: str, fragment: str) -> None:
    assert fragment in refusal(crate_with(manifest))


def test_manifest_must_be_utf8() -> None:
    data = gzip_tar(file("demo-0.1.0/Cargo.toml", b"[package]\nname = '\xff'\n"))
    assert "not UTF-8" in refusal(data)


# --------------------------------------------------------------------------- real cargo

needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")


def cargo_package(root: Path, *args: str) -> None:
    env = dict(os.environ, CARGO_HOME=str(root / "cargo-home"), CARGO_TERM_COLOR="never")
    subprocess.run(
        ["cargo", "package", "--no-verify", "--allow-dirty", "--offline", *args],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )


@needs_cargo
def test_reads_what_cargo_package_writes(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.rs").write_text("pub fn f() {}\n")
    (tmp_path / "build.rs").write_text("fn main() {}\n")
    (tmp_path / "Cargo.toml").write_text(
        '[package]\nname = "Tiny-Crate"\nversion = "0.1.0-rc.1+meta.7"\nedition = "2021"\n'
        'rust-version = "1.70"\nlinks = "tiny"\nlicense = "MIT"\ndescription = "tiny"\n'
        '\n[features]\ndefault = ["std"]\nstd = []\n'
    )
    cargo_package(tmp_path)
    path = tmp_path / "target" / "package" / "Tiny-Crate-0.1.0-rc.1+meta.7.crate"
    entry = read_crate_file(path, expected_name="Tiny-Crate", expected_version="0.1.0-rc.1+meta.7")
    cksum = hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry.to_line() == (
        '{"name":"Tiny-Crate","vers":"0.1.0-rc.1+meta.7","deps":[],'
        f'"cksum":"{cksum}","features":{{"default":["std"],"std":[]}},"yanked":false,'
        '"links":"tiny","rust_version":"1.70"}'
    )


@needs_cargo
def test_reads_a_workspace_crate_with_renamed_and_target_dependencies(tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_text('[workspace]\nmembers = ["a", "b"]\nresolver = "2"\n')
    for member in ("a", "b"):
        (tmp_path / member / "src").mkdir(parents=True)
        (tmp_path / member / "src" / "lib.rs").write_text("")
    (tmp_path / "b" / "Cargo.toml").write_text(
        '[package]\nname = "b-helper"\nversion = "0.1.0"\nedition = "2021"\n'
        'license = "MIT"\ndescription = "b"\n[features]\nx = []\n'
    )
    (tmp_path / "a" / "Cargo.toml").write_text(
        '[package]\nname = "a-main"\nversion = "1.2.3"\nedition = "2021"\n'
        'license = "MIT"\ndescription = "a"\n'
        "[dependencies]\n"
        'bee = { path = "../b", version = "0.1.0", package = "b-helper", optional = true,'
        ' default-features = false, features = ["x"] }\n'
        "[target.'cfg(all(unix,   target_arch=\"x86_64\"))'.dev-dependencies]\n"
        'b-helper = { path = "../b", version = "0.1" }\n'
        "[build-dependencies]\n"
        'b-helper = { path = "../b", version = "=0.1.0" }\n'
        '[features]\ndefault = ["dep:bee", "bee?/x", "extra"]\nextra = []\n'
    )
    cargo_package(tmp_path, "--workspace")
    path = tmp_path / "target" / "package" / "a-main-1.2.3.crate"
    entry = read_crate_file(path)
    cksum = hashlib.sha256(path.read_bytes()).hexdigest()
    # Deps without registry-index come from crates.io; the target is in cargo's display form,
    # as `cargo publish` would send it (checked against a captured publish request).
    assert entry.to_line() == (
        '{"name":"a-main","vers":"1.2.3","deps":['
        '{"name":"b-helper","req":"=0.1.0","features":[],"optional":false,'
        f'"default_features":true,"target":null,"kind":"build",{CRATES_IO}}},'
        '{"name":"b-helper","req":"^0.1","features":[],"optional":false,"default_features":true,'
        '"target":"cfg(all(unix, target_arch = \\"x86_64\\"))","kind":"dev",'
        f"{CRATES_IO}}},"
        '{"name":"bee","req":"^0.1.0","features":["x"],"optional":true,'
        f'"default_features":false,"target":null,"kind":"normal",{CRATES_IO},'
        '"package":"b-helper"}],'
        f'"cksum":"{cksum}","features":{{"extra":[]}},'
        '"features2":{"default":["dep:bee","bee?/x","extra"]},"yanked":false,"v":2}'
    )
