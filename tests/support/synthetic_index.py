"""A synthetic registry at any size, the one generator of the benchmarks and the tests: the
database's rows and the matching git index, generated once per shape and cached.

    python bench/ops.py --generate --crates 200000 --versions 1500000   # build (or find) it
    python bench/ops.py --generate --crates 2000 --check                # and check every line

From Python (bench/ops.py, and the import tests through :func:`index_files`)::

    from support.synthetic_index import Shape, synthetic
    index = synthetic(Shape(crates=20_000))       # built on first use, then read from the cache
    index.remote                                  # a bare git index: config.json + every file
    index.load(database_url)                      # migrate, then COPY the crates and versions
    index.copy_remote(tmp / "index.git")          # a remote to write to (hard-linked objects)
    dict(index_files(Shape(700, 3000)))           # path -> file, generated, nothing cached

What it holds. ``Shape(crates, versions, seed)``: that many crates and versions (default 7.5
versions a crate, crates.io's ratio: 200,000 crates and 1,500,000 versions is the issue's
target), the same rows and files for the same shape on every machine (only the first commit,
``init_index``'s, carries the time of the build). Names are random, valid and distinct
once canonical (``foo-bar`` and ``foo_bar`` collide), 1 to 40 characters, a few with capitals,
``-`` or ``_``; every one- to three-character layout directory is used. Versions per crate follow
a long tail (most crates have a few, some hundreds). A version's line is what
``IndexEntry.to_line`` writes (checked with ``--check``): 0 to 10 dependencies on other crates
of the set (normal, dev and build; a few optional, renamed or with a target), features, a cksum,
a ``rust_version`` and ``pubtime`` on some; about 2.5% are yanked. Lines average about 600
bytes: 20,000 crates make 90 MB of files, 200,000 crates about 900 MB. The lines that no
generator at scale makes (features2, links, other key orders, escapes) are
``support.index_sources.varied_lines``'s.

The cache (``$INDEXPUB_BENCH_CACHE``, else ``~/.cache/indexpub-bench``) has one directory per
shape: ``remote.git`` (the index as one commit on top of ``Initialize index``, written by
``git fast-import``), ``crates.copy.gz`` and ``versions.copy.gz`` (PostgreSQL COPY text, in the
registry's column order, crates in publish order so that crate N gets id N) and ``shape.json``.
A directory is built under a temporary name and renamed into place, under a lock, so two
benchmarks that ask for the same shape at once build it once.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from indexpub.domain.entries import set_yanked_flag
from indexpub.domain.names import canonical_name, index_path, is_valid_crate_name
from indexpub.gitindex.index import init_index
from indexpub.registry import store

# Bump when what is generated changes: the cache keys on it.
FORMAT = 1
BRANCH = "master"
DL = "https://dl.example/{crate}/{crate}-{version}.crate"
# The commit's time, fixed so that a shape is the same repository everywhere.
COMMIT_TIME = 1_700_000_000

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_TAIL = _LOWER * 3 + "0123456789" + "-_"


@dataclass(frozen=True)
class Shape:
    """How big: ``crates`` crates with ``versions`` versions in all (default 7.5 a crate)."""

    crates: int = 20_000
    versions: int | None = None
    seed: int = 13

    @property
    def total_versions(self) -> int:
        return self.versions if self.versions is not None else self.crates * 15 // 2

    def __post_init__(self) -> None:
        if self.crates < 1:
            raise ValueError("a synthetic index has at least one crate")
        if self.total_versions < self.crates:
            raise ValueError("every crate has at least one version: versions >= crates")

    @property
    def key(self) -> str:
        return f"v{FORMAT}-c{self.crates}-v{self.total_versions}-s{self.seed}"


@dataclass(frozen=True)
class Version:
    num: str
    line: str  # as stored: "yanked":false
    yanked: bool


@dataclass(frozen=True)
class Crate:
    name: str
    versions: list[Version]

    @property
    def path(self) -> str:
        return index_path(self.name)

    def file(self) -> bytes:
        """The crate's index file, as ``registry.render`` renders it from these rows."""
        lines = [set_yanked_flag(v.line, v.yanked) for v in self.versions]
        return ("\n".join(lines) + "\n").encode()


# --- generation ---------------------------------------------------------------------------------


def crate_names(shape: Shape) -> list[str]:
    """``shape.crates`` valid names, distinct once canonical, in publish order."""
    rng = random.Random(f"names-{shape.seed}")
    seen: set[str] = set()
    names: list[str] = []

    def add(name: str) -> None:
        canonical = canonical_name(name)
        if canonical not in seen and is_valid_crate_name(name):
            seen.add(canonical)
            names.append(name)

    # The short layouts ("1/", "2/", "3/x/") get a few crates each, as on crates.io.
    for length, count in ((1, 6), (2, 40), (3, 200)):
        for _ in range(min(count, max(1, shape.crates // 500))):
            add(rng.choice(_LOWER) + "".join(rng.choices(_LOWER + "0123456789", k=length - 1)))
    while len(names) < shape.crates:
        length = min(40, max(4, int(rng.lognormvariate(2.3, 0.45))))
        name = rng.choice(_LOWER) + "".join(rng.choices(_TAIL, k=length - 1))
        if rng.random() < 0.01:
            name = name[0].upper() + name[1:]
        add(name)
    names = names[: shape.crates]
    rng.shuffle(names)  # publish order is not name order
    return names


def version_counts(shape: Shape) -> list[int]:
    """Versions per crate: at least one each, a long tail, ``shape.total_versions`` in all."""
    rng = random.Random(f"counts-{shape.seed}")
    extra = shape.total_versions - shape.crates
    weights = [min(rng.paretovariate(1.2), 400.0) - 1.0 for _ in range(shape.crates)]
    total = sum(weights) or 1.0
    shares = [w * extra / total for w in weights]
    counts = [1 + int(s) for s in shares]
    # Largest remainders first, so the sum is exact.
    short = shape.total_versions - sum(counts)
    by_remainder = sorted(range(shape.crates), key=lambda i: int(shares[i]) - shares[i])
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def crates(shape: Shape) -> Iterator[Crate]:
    """The crates in publish order, each with its versions in publish order."""
    names = crate_names(shape)
    counts = version_counts(shape)
    rng = random.Random(f"lines-{shape.seed}")
    for position, (name, count) in enumerate(zip(names, counts, strict=True)):
        # Dependencies on crates published before this one (the first crate has none).
        yield Crate(name, list(_versions(rng, name, count, names, position)))


def index_files(shape: Shape) -> Iterator[tuple[str, bytes]]:
    """Every crate file of the shape as (path, bytes), without the cache: what a test builds an
    index of somebody else's from (support.index_sources.build_index)."""
    for crate in crates(shape):
        yield crate.path, crate.file()


def _versions(
    rng: random.Random, name: str, count: int, names: list[str], earlier: int
) -> Iterator[Version]:
    major, minor, patch = (0, 1, 0) if rng.random() < 0.8 else (1, 0, 0)
    features = _features(rng)
    deps = _deps(rng, names, earlier)
    rust_version = rng.choice((None, None, "1.56", "1.60", "1.70"))
    for n in range(count):
        if n:
            step = rng.random()
            if step < 0.03:
                major, minor, patch = major + 1, 0, 0
            elif step < 0.25:
                minor, patch = minor + 1, 0
            else:
                patch += 1
            if rng.random() < 0.15:
                deps = _deps(rng, names, earlier)
        num = f"{major}.{minor}.{patch}"
        if rng.random() < 0.03:
            num += rng.choice(("-alpha.1", "-beta.2", "-rc.1"))
        data: dict[str, Any] = {
            "name": name,
            "vers": num,
            "deps": deps,
            "cksum": hashlib.sha256(f"{name}-{num}".encode()).hexdigest(),
            "features": features,
            "yanked": False,
        }
        if rust_version is not None:
            data["rust_version"] = rust_version
        if n >= count - 2 and rng.random() < 0.5:
            day = 1 + rng.randrange(28)
            data["pubtime"] = f"2025-{1 + rng.randrange(12):02d}-{day:02d}T12:{n % 60:02d}:00Z"
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        yield Version(num, line, rng.random() < 0.025)


def _features(rng: random.Random) -> dict[str, list[str]]:
    pick = rng.random()
    if pick < 0.5:
        return {}
    if pick < 0.85:
        return {"default": ["std"], "std": []}
    return {"alloc": [], "default": ["std"], "std": ["alloc"], "unstable": []}


_KIND_RANK = {"normal": 0, "build": 1, "dev": 2}


def _deps(rng: random.Random, names: list[str], earlier: int) -> list[dict[str, Any]]:
    """Dependencies on some of the first ``earlier`` crates of ``names``."""
    if not earlier:
        return []
    wanted = min(earlier, rng.choice((0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 10)))
    chosen: dict[str, dict[str, Any]] = {}
    for other in dict.fromkeys(names[rng.randrange(earlier)] for _ in range(wanted)):
        kind = rng.choices(("normal", "dev", "build"), (8, 3, 1))[0]
        renamed = rng.random() < 0.02
        dep: dict[str, Any] = {
            "name": f"{other.lower().replace('-', '_')}_renamed" if renamed else other,
            "req": f"^{rng.randrange(3)}.{rng.randrange(20)}",
            "features": ["std"] if rng.random() < 0.1 else [],
            "optional": kind == "normal" and rng.random() < 0.1,
            "default_features": rng.random() < 0.9,
            "target": "cfg(windows)" if rng.random() < 0.05 else None,
            "kind": kind,
        }
        if renamed:
            dep["package"] = other
        chosen[dep["name"]] = dep
    # crates.io's order (IndexEntry's): by name, then kind, then the rest.
    return sorted(chosen.values(), key=lambda d: (d["name"], _KIND_RANK[d["kind"]], d["req"]))


# --- the cache ----------------------------------------------------------------------------------


def cache_root() -> Path:
    env = os.environ.get("INDEXPUB_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "indexpub-bench"


@dataclass(frozen=True)
class SyntheticIndex:
    """A built shape in the cache (see the module's docstring)."""

    shape: Shape
    path: Path
    crates: int
    versions: int
    file_bytes: int
    tip: str

    @property
    def remote(self) -> Path:
        """The index as a bare repository. Read it; write to a copy (copy_remote)."""
        return self.path / "remote.git"

    def copy_remote(self, destination: Path) -> Path:
        """A bare copy of the remote to write to: its objects hard-linked (``git clone
        --local``), so it costs nothing whatever the size, and the cache stays as it is."""
        _git("clone", "--bare", "--local", "--quiet", str(self.remote), str(destination))
        # A plain bare repository again, as init_index makes one: no remote of its own.
        _git(f"--git-dir={destination}", "remote", "remove", "origin")
        return destination

    def load(self, url: str) -> None:
        """Migrate the database at ``url`` and COPY the rows in; its crates table must be empty.

        Crate N of the generation gets id N (the identity restarts at 1), which the versions'
        rows name.
        """
        with psycopg.connect(url) as conn:
            store.migrate(conn)
            row = conn.execute(sql.SQL("SELECT count(*) FROM indexpub.crates")).fetchone()
            if row is None or row[0]:
                raise RuntimeError("load needs an empty indexpub.crates table")
            conn.execute("ALTER TABLE indexpub.crates ALTER COLUMN id RESTART WITH 1")
            with conn.cursor() as cur:
                _copy_in(
                    cur, "indexpub.crates (name, canonical_name)", self.path / "crates.copy.gz"
                )
                _copy_in(
                    cur,
                    "indexpub.versions (crate_id, num, num_no_build, line, yanked)",
                    self.path / "versions.copy.gz",
                )
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE indexpub.crates")
            conn.execute("VACUUM ANALYZE indexpub.versions")


def synthetic(
    shape: Shape, *, root: Path | None = None, log: IO[str] = sys.stderr
) -> SyntheticIndex:
    """The shape's synthetic index, built now unless the cache holds it."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / shape.key
    with open(root / f".{shape.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "shape.json").exists():
            started = time.monotonic()
            print(f"building the synthetic index {shape.key} in {final} ...", file=log, flush=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{shape.key}.tmp-", dir=root))
            try:
                _build(shape, tmp)
                if final.exists():
                    shutil.rmtree(final)  # an incomplete one: shape.json is written last
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            print(f"built in {time.monotonic() - started:.1f} s", file=log, flush=True)
    meta = json.loads((final / "shape.json").read_text())
    return SyntheticIndex(
        shape, final, meta["crates"], meta["versions"], meta["file_bytes"], meta["tip"]
    )


def _build(shape: Shape, into: Path) -> None:
    remote = into / "remote.git"
    init_index(remote, dl=DL, api=None, branch=BRANCH)
    parent = _git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{BRANCH}").strip()
    importer = subprocess.Popen(
        ["git", f"--git-dir={remote}", "fast-import", "--quiet", "--done"],
        stdin=subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert importer.stdin is not None
    out = importer.stdin
    message = f"Synthetic index: {shape.crates} crates, {shape.total_versions} versions\n".encode()
    out.write(
        f"commit refs/heads/{BRANCH}\n"
        f"author bench <bench@localhost> {COMMIT_TIME} +0000\n"
        f"committer bench <bench@localhost> {COMMIT_TIME} +0000\n".encode()
        + f"data {len(message)}\n".encode()
        + message
        + f"from {parent}\n".encode()
    )
    file_bytes = versions = 0
    with (
        gzip.open(into / "crates.copy.gz", "wb", compresslevel=1) as crates_out,
        gzip.open(into / "versions.copy.gz", "wb", compresslevel=1) as versions_out,
    ):
        for crate_id, crate in enumerate(crates(shape), start=1):
            crates_out.write(f"{crate.name}\t{canonical_name(crate.name)}\n".encode())
            rows = [
                f"{crate_id}\t{v.num}\t{v.num}\t{_copy_text(v.line)}\t{'t' if v.yanked else 'f'}\n"
                for v in crate.versions
            ]
            versions_out.write("".join(rows).encode())
            data = crate.file()
            out.write(f"M 100644 inline {crate.path}\ndata {len(data)}\n".encode())
            out.write(data)
            out.write(b"\n")
            file_bytes += len(data)
            versions += len(crate.versions)
    out.write(b"\ndone\n")
    out.close()
    if importer.wait() != 0:
        raise RuntimeError(f"git fast-import failed with exit code {importer.returncode}")
    tip = _git(f"--git-dir={remote}", "rev-parse", f"refs/heads/{BRANCH}").strip()
    meta = {
        **asdict(shape),
        "crates": shape.crates,
        "versions": versions,
        "file_bytes": file_bytes,
        "tip": tip,
        "format": FORMAT,
    }
    (into / "shape.json").write_text(json.dumps(meta, indent=2) + "\n")


def _copy_text(value: str) -> str:
    """A value in COPY's text format (lines are compact JSON: no tab or newline of their own)."""
    return value.replace("\\", "\\\\")


def _copy_in(cur: psycopg.Cursor[Any], table: str, source: Path) -> None:
    with cur.copy(f"COPY {table} FROM STDIN") as copy, gzip.open(source, "rb") as data:
        while chunk := data.read(1 << 20):
            copy.write(chunk)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], capture_output=True, check=False, env={**os.environ, "LC_ALL": "C"}
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return done.stdout.decode()


def check_lines(shape: Shape) -> int:
    """Parse every line with IndexEntry and write it back: it must come out byte-identical."""
    from indexpub.domain.entries import IndexEntry

    checked = 0
    for crate in crates(shape):
        for version in crate.versions:
            again = IndexEntry.from_line(version.line).to_line()
            if again != version.line:
                raise AssertionError(f"{crate.name} {version.num}: {version.line} != {again}")
            checked += 1
    return checked
