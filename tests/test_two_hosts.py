"""Two hosts on one machine, as README "Running on several hosts" describes them.

One PostgreSQL and one bare index remote; two data directories, each with its own `indexpub
worker` (and so its own clone) and its own `indexpub serve`; one shared directory holding the
sparse index and the .crate files (INDEXPUB_SPARSE_DIR, INDEXPUB_CRATE_DIR). Publishes go to
both serves in turn; the active worker is killed with SIGKILL in the middle of the stream. The
standby must take the index queue over within a second. Then the killed host's worker comes back
with its stale clone and the other one is killed in turn. At the end every version must be in
the remote's tip once, in the sparse files that both serves hand out, and downloadable from the
serve that did not receive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.cargo_registry import free_port, stop_groups
from support.crates import publish_body, simple_meta, valid_crate
from support.git import git
from support.index_helpers import Registry, index_consumer_pid
from support.queue_helpers import children_of, scalar, wait_for

from indexpub.domain.names import index_path

CRATES = [f"twohosts{i}" for i in range(6)]
VERSIONS = [f"0.{minor}.0" for minor in range(1, 6)]
# Published in this order: every crate's 0.1.0, then every crate's 0.2.0, ...
STREAM = [(name, version) for version in VERSIONS for name in CRATES]
KILL_AFTER = 12  # publishes before the active worker is killed
# Published after the killed host came back and the other one was killed in turn.
SECOND = [(name, "0.6.0") for name in CRATES]
# Generous bounds for a loaded 2-core machine; the figures measured are printed (pytest -s).
TAKEOVER_BOUND_S = 3.0
LANDED_BOUND_S = 10.0


@dataclass
class Host:
    """One host's processes and data directory; ``shared`` is the directory both mount."""

    name: str
    data: Path
    env: dict[str, str]
    port: int
    worker: subprocess.Popen[bytes] | None = None
    serve: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
        log = open(tmp / f"{self.name}-{args[0]}.log", "wb")  # noqa: SIM115 - the child's
        return subprocess.Popen(
            [sys.executable, "-m", "indexpub", "-v", *args],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.fixture
def hosts(reg: Registry, tmp_path: Path) -> Iterator[list[Host]]:
    shared = tmp_path / "shared"
    made = []
    for name in ("host-a", "host-b"):
        data = tmp_path / name
        data.mkdir()
        env = {
            **os.environ,
            "INDEXPUB_DATABASE_URL": reg.url,
            "INDEXPUB_INDEX_URL": str(reg.remote),
            "INDEXPUB_DATA_DIR": str(data),
            "INDEXPUB_SPARSE_DIR": str(shared / "sparse"),
            "INDEXPUB_CRATE_DIR": str(shared / "crates"),
        }
        made.append(Host(name, data, env, free_port()))
    try:
        for host in made:
            host.serve = host.start(tmp_path, "serve", "--port", str(host.port))
            host.worker = host.start(
                tmp_path, "worker", "--poll-interval", "0.2", "--verify-every", "0"
            )
        for host in made:
            wait_for(lambda h=host: _answers(h), timeout=30, interval=0.1)  # type: ignore[misc]
        yield made
    finally:
        stop_groups([p for h in made for p in (h.worker, h.serve) if p is not None])


def _answers(host: Host) -> bool:
    try:
        return httpx.get(f"{host.base}/index/config.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _publish(host: Host, token: str, name: str, version: str) -> bytes:
    crate = valid_crate(name, version)
    response = httpx.put(
        f"{host.base}/api/v1/crates/new",
        content=publish_body(simple_meta(name, version), crate),
        headers={"Authorization": token},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return crate


def _landed(reg: Registry, name: str, version: str) -> bool:
    return f'"vers":"{version}"' in (reg.remote_file(name) or "")


def test_two_hosts_share_the_index_and_the_standby_takes_over(
    reg: Registry, hosts: list[Host], tmp_path: Path
) -> None:
    token = reg.token("alice")
    crates: dict[tuple[str, str], tuple[Host, bytes]] = {}
    for i, (name, version) in enumerate(STREAM[:KILL_AFTER]):
        host = hosts[i % 2]
        crates[name, version] = (host, _publish(host, token, name, version))
    wait_for(lambda: _landed(reg, *STREAM[KILL_AFTER - 1]), timeout=30, interval=0.05)

    dead, active, takeover, landed = _fail_over(reg, hosts, token, crates, STREAM[KILL_AFTER])
    print(f"two hosts: the standby locked {takeover:.3f} s after the kill; landed {landed:.3f} s")
    assert takeover < TAKEOVER_BOUND_S, takeover
    assert landed < LANDED_BOUND_S, landed
    for name, version in STREAM[KILL_AFTER + 1 :]:
        crates[name, version] = (active, _publish(active, token, name, version))
    wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)

    # The dead host comes back as the standby with the clone it had: stale by 18 versions. When
    # the other one dies in turn, its first push is refused (the branch moved) and it rebuilds.
    dead.worker = dead.start(tmp_path, "worker", "--poll-interval", "0.2", "--verify-every", "0")
    wait_for(lambda: _index_workers(reg.url) == 2, timeout=30, interval=0.05)
    _, back, takeover, landed = _fail_over(reg, hosts, token, crates, SECOND[0])
    print(f"two hosts, back: locked {takeover:.3f} s after the kill; landed {landed:.3f} s")
    assert back is dead and takeover < TAKEOVER_BOUND_S and landed < LANDED_BOUND_S
    for name, version in SECOND[1:]:
        crates[name, version] = (back, _publish(back, token, name, version))
    wait_for(lambda: reg.pending_jobs() == 0, timeout=60, interval=0.1)
    published = STREAM + SECOND
    assert "push rejected (the remote moved)" in (tmp_path / f"{back.name}-worker.log").read_text()

    # Nothing lost and nothing twice: each version's line once in the remote's tip, and every
    # line added by exactly one commit, none taken away.
    for name in CRATES:
        lines = (reg.remote_file(name) or "").splitlines()
        assert lines == (reg.expected_file(name) or "").splitlines()
        assert [v for n, v in published if n == name] == [_vers(line) for line in lines]
    added, removed, commits = _history(reg.remote)
    assert (added, removed) == (len(published), 0), (added, removed)
    assert len(published) // 2 <= commits <= len(published), commits
    print(f"two hosts: {len(published)} versions in {commits} commits")

    # The shared directory: both serves (they outlived their workers) answer every crate's sparse
    # file and every .crate, whichever host stored it.
    etags: dict[str, set[str]] = {}
    for host in hosts:
        for name in CRATES:
            sparse = httpx.get(f"{host.base}/index/{index_path(name)}", timeout=10)
            assert sparse.status_code == 200, (host.name, name)
            assert sparse.text == reg.expected_file(name)
            etags.setdefault(name, set()).add(sparse.headers["etag"])
        for (name, version), (_, crate) in crates.items():
            url = f"{host.base}/api/v1/crates/{name}/{version}/download"
            got = httpx.get(url, timeout=10, follow_redirects=True)
            assert got.content == crate, (host.name, name, version)
    # One file, one stat: a cache in front of both serves sees one ETag per file.
    assert all(len(tags) == 1 for tags in etags.values()), etags
    for host in hosts:
        assert not (host.data / "sparse").exists() and not (host.data / "crates").exists()


def _fail_over(
    reg: Registry,
    hosts: list[Host],
    token: str,
    crates: dict[tuple[str, str], tuple[Host, bytes]],
    publish: tuple[str, str],
) -> tuple[Host, Host, float, float]:
    """SIGKILL the process group of the worker that holds the index lock, publish ``publish``
    through the other host at once; (the killed host, the one that took over, seconds from the
    kill until it held the lock, and until ``publish`` was in the remote)."""
    dead_pid = wait_for(lambda: index_consumer_pid(reg.url), timeout=10)
    dead = next(h for h in hosts if h.worker and dead_pid in children_of(h.worker.pid))
    other = next(h for h in hosts if h is not dead)
    assert dead.worker is not None and other.worker is not None
    os.killpg(dead.worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    crates[publish] = (other, _publish(other, token, *publish))
    new_pid = wait_for(
        lambda: (pid := index_consumer_pid(reg.url)) not in (None, dead_pid) and pid,
        timeout=TAKEOVER_BOUND_S + 5,
        interval=0.01,
    )
    takeover = time.monotonic() - killed_at
    assert new_pid in children_of(other.worker.pid)
    wait_for(lambda: _landed(reg, *publish), timeout=LANDED_BOUND_S + 5, interval=0.01)
    return dead, other, takeover, time.monotonic() - killed_at


def _index_workers(url: str) -> int:
    """Worker processes of the index queue connected now, active or standing by."""
    return int(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
            " 'jobs worker index%%' AND application_name NOT LIKE '%% job'",
        )
    )


def _vers(line: str) -> str:
    return line.split('"vers":"', 1)[1].split('"', 1)[0]


def _history(remote: Path) -> tuple[int, int, int]:
    """Lines added and removed in crate files over the remote's history, and its commits, the
    first one (config.json) left out."""
    out = git(f"--git-dir={remote}", "log", "--numstat", "--format=#%H", "HEAD")
    added = removed = commits = 0
    for line in out.splitlines():
        if line.startswith("#"):
            commits += 1
        elif line.strip() and not line.endswith("config.json"):
            plus, minus, _ = line.split("\t")
            added, removed = added + int(plus), removed + int(minus)
    return added, removed, commits - 1
