"""Property: whatever the interleaving of publish, yank, unyank and delete, and however late,
often or out of order the sync jobs run, the index ends equal to the database's projection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.index_helpers import Registry, make_registry

from indexpub.domain.entries import IndexEntry
from indexpub.domain.names import index_path
from indexpub.errors import InvalidInput
from indexpub.pipeline.git_sync import sync_crates
from indexpub.pipeline.sparse_sync import sync_sparse
from indexpub.registry import store

NAMES = ["a", "bb", "c-d", "Eee", "ffff_g"]
VERSIONS = ["0.1.0", "0.1.1", "1.0.0-beta.1", "1.0.0", "2.0.0+build.5"]


def entry(name: str, vers: str) -> IndexEntry:
    cksum = hashlib.sha256(f"{name}@{vers}".encode()).hexdigest()
    return IndexEntry.from_json(
        {"name": name, "vers": vers, "deps": [], "cksum": cksum, "features": {}, "yanked": False}
    )


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(NAMES), st.sampled_from(VERSIONS)),
        st.tuples(st.just("yank"), st.sampled_from(NAMES), st.sampled_from(VERSIONS)),
        st.tuples(st.just("unyank"), st.sampled_from(NAMES), st.sampled_from(VERSIONS)),
        st.tuples(st.just("delete_version"), st.sampled_from(NAMES), st.sampled_from(VERSIONS)),
        st.tuples(st.just("delete_crate"), st.sampled_from(NAMES), st.just("")),
        # A sync job for some crates, run now: possibly late, twice, or before its publish.
        st.tuples(st.just("sync"), st.lists(st.sampled_from(NAMES), max_size=4), st.just("")),
        st.tuples(st.just("drain"), st.just(""), st.just("")),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def shared(pg_server: tuple[str, Path | None], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from support import pg

    with pg.fresh_database(pg_server[0]) as url:
        yield make_registry(url, tmp_path_factory.mktemp("props"))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=ops)
def test_index_equals_the_database_projection(shared: Registry, operations: list) -> None:  # type: ignore[type-arg]
    reg = shared
    with psycopg.connect(reg.url) as conn:
        conn.execute("TRUNCATE indexpub.crates, indexpub.versions, indexpub_jobs.jobs CASCADE")
    # The model: name -> {version: yanked}, in publish order.
    model: dict[str, dict[str, bool]] = {}
    index = reg.index()
    for op, arg, vers in operations:
        with psycopg.connect(reg.url) as conn:
            try:
                if op == "publish":
                    store.publish(conn, entry(arg, vers))
                    crate = model.setdefault(arg, {})
                    if all(v.split("+")[0] != vers.split("+")[0] for v in crate):
                        crate[vers] = False
                elif op in ("yank", "unyank"):
                    getattr(store, op)(conn, arg, vers)
                    model[arg][vers] = op == "yank"
                elif op == "delete_version":
                    store.delete_version(conn, arg, vers)
                    del model[arg][vers]  # a crate left with no version has no file
                elif op == "delete_crate":
                    store.delete_crate(conn, arg)
                    del model[arg]
                elif op == "sync":
                    sync_crates(conn, index, arg)
                elif op == "drain":
                    conn.commit()
                    reg.drain()
            except InvalidInput:
                conn.rollback()
    reg.drain()
    with psycopg.connect(reg.url) as conn:
        sync_crates(conn, reg.index(), NAMES)  # a late sync of every crate
        # The examples share one sparse directory and remote; crates of earlier examples are
        # gone from the truncated database and must go from the files too.
        sync_sparse(conn, reg.sparse, NAMES)
    assert reg.pending_jobs() == 0
    for name in NAMES:
        text = reg.remote_file(name)
        sparse = reg.sparse / index_path(name)
        # The sparse index holds the same bytes as git.
        assert (sparse.read_text() if sparse.exists() else None) == text, name
        expected = model.get(name) or {}
        if not expected:
            assert text is None, (name, text)
            continue
        assert text is not None and text.endswith("\n")
        lines = [json.loads(line) for line in text.splitlines()]
        assert [(d["vers"], d["yanked"]) for d in lines] == list(expected.items()), name
        assert all(d["name"] == name for d in lines)
