"""indexpub's metrics: the sync jobs' instruments in this process, then `indexpub worker
--metrics-port` and `indexpub serve`'s /metrics scraped over HTTP after a real publish, and the
Grafana dashboard's every metric name found in what they expose."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support.cargo_registry import CargoRegistry, free_port
from support.crates import publish_body, simple_meta, valid_crate
from support.index_helpers import Registry, fixture_entry, foreign_push

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_sync_counts_its_pushes_rejections_lag_and_tip(reg: Registry, tmp_path: Path) -> None:
    reg.publish(fixture_entry("q", "0.1.0"))
    reg.drain()
    before = {
        "pushed": value("indexpub_index_pushes_total", result="pushed"),
        "rejected": value("indexpub_index_pushes_total", result="rejected"),
        "rebuilds": value("indexpub_index_rebuilds_total"),
        "lags": value("indexpub_index_lag_seconds_count"),
        "lag_sum": value("indexpub_index_lag_seconds_sum"),
        "fetches": value("indexpub_index_git_duration_seconds_count", operation="fetch"),
        "batches": value("indexpub_index_batch_crates_count"),
    }
    # Another writer moves the remote: the worker's next push is rejected, and it rebuilds.
    foreign_push(reg, tmp_path, lambda work: (work / "README").write_text("hi\n"), "Readme")
    reg.publish(fixture_entry("xy", "0.1.0"), fixture_entry("abc", "0.1.0"))
    published = time.time()
    reg.drain()
    assert reg.remote_file("xy") is not None
    assert value("indexpub_index_pushes_total", result="rejected") == before["rejected"] + 1
    assert value("indexpub_index_rebuilds_total") == before["rebuilds"] + 1
    assert value("indexpub_index_pushes_total", result="pushed") == before["pushed"] + 1
    assert (
        value("indexpub_index_git_duration_seconds_count", operation="fetch") > (before["fetches"])
    )
    # One lag per crate file pushed, each from its publish to the push's end.
    assert value("indexpub_index_lag_seconds_count") == before["lags"] + 2
    lags = value("indexpub_index_lag_seconds_sum") - before["lag_sum"]
    assert 0 < lags < 2 * (time.time() - published + 5)
    assert value("indexpub_index_batch_crates_count") > before["batches"]
    tip = value("indexpub_index_tip_timestamp_seconds")
    assert abs(tip - time.time()) < 120


# --- the processes, scraped -------------------------------------------------------------------


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def matching(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    """The label sets of ``name``'s samples that have ``labels``."""
    found = [dict(pairs) for sample_name, pairs in samples if sample_name == name]
    return [one for one in found if labels.items() <= one.items()]


def children(pid: int) -> set[int]:
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in listed}


def wait_for(check: object, timeout: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Iterator[tuple[CargoRegistry, str]]:
    """serve and worker running, the worker's metrics on a port of its own."""
    port = free_port()
    registry = CargoRegistry(tmp_path, database_url, worker_args=("--metrics-port", str(port)))
    registry.start()
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _answers(metrics))
        yield registry, metrics
    finally:
        registry.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_worker_and_serve_expose_a_publish_and_the_dashboard_reads_only_real_names(
    running: tuple[CargoRegistry, str],
) -> None:
    registry, worker_metrics = running
    supervisor = registry.processes[1].pid
    # The index queue's lock is held by one of the supervisor's worker processes, on this host.
    wait_for(lambda: sample(scrape(worker_metrics), "jobs_consumer_lock_held", queue="index") == 1)
    (holder,) = matching(
        scrape(worker_metrics), "jobs_consumer_lock_holder_since_timestamp_seconds", queue="index"
    )
    assert int(holder["pid"]) in children(supervisor)
    assert holder["host"] == socket.gethostname()

    # A publish through the API, then its push.
    body = publish_body(simple_meta("metered", "1.0.0"), valid_crate("metered", "1.0.0"))
    published = httpx.put(
        f"{registry.base}/api/v1/crates/new",
        content=body,
        headers={"Authorization": registry.tokens["alice"]},
        timeout=30,
    )
    assert published.status_code == 200, published.text
    registry.wait_for_index(lambda: "metered" in _remote_files(registry), timeout=60)
    missing = httpx.get(f"{registry.base}/api/v1/crates/metered/9.9.9/download", timeout=10)
    assert missing.status_code == 404

    def pushed() -> bool:
        found = scrape(worker_metrics)
        return sample(found, "indexpub_index_pushes_total", result="pushed") >= 1

    wait_for(pushed)
    found = scrape(worker_metrics)
    assert sample(found, "indexpub_index_lag_seconds_count") >= 1
    assert 0 < sample(found, "indexpub_index_lag_seconds_sum") < 120
    assert sample(found, "indexpub_index_git_duration_seconds_count", operation="push") >= 1
    assert sample(found, "indexpub_index_batch_crates_count") >= 1
    assert abs(sample(found, "indexpub_index_tip_timestamp_seconds") - time.time()) < 300
    assert (
        sample(found, "jobs_run_duration_seconds_count", queue="index", job_type="sync_crate") >= 1
    )
    assert (
        sample(found, "jobs_outcomes_total", queue="index", job_type="sync_crate", outcome="done")
        >= 1
    )
    # Drained: every state of every queue drops to zero (the reading is at most 5 s old).
    wait_for(lambda: not any(v for _, v in _job_counts(scrape(worker_metrics))), timeout=30)
    assert _job_counts(scrape(worker_metrics))

    served = scrape(f"{registry.base}/metrics")
    assert (
        sample(
            served,
            "indexpub_http_requests_total",
            route="/api/v1/crates/new",
            method="PUT",
            status="200",
        )
        == 1
    )
    assert sample(served, "indexpub_publish_duration_seconds_count", outcome="published") == 1
    download = "/api/v1/crates/{name}/{version}/download"
    assert (
        sample(served, "indexpub_http_requests_total", route=download, method="GET", status="404")
        == 1
    )
    # No label holds a crate's name or a raw path.
    assert not any("metered" in v for _, pairs in served for _, v in pairs)
    assert sample(served, "jobs_metrics_database_up") == 1

    exposed = {name for name, _ in found} | {name for name, _ in served}
    names = dashboard_metric_names()
    assert names, "no metric name found in the dashboard"
    assert sorted(names - exposed) == []


def _remote_files(registry: CargoRegistry) -> str:
    from support.git import git

    return git(f"--git-dir={registry.remote}", "ls-tree", "-r", "--name-only", "HEAD")


def _job_counts(samples: Samples) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    return [(labels, v) for (name, labels), v in samples.items() if name == "jobs_queue_jobs"]


# PromQL's words that look like metric names: functions, aggregations, keywords, and the
# dashboard's variables.
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "histogram_quantile",
    "time",
    "le",
    "without",
    "max",
    "min",
    "avg",
    "count",
    "increase",
    "on",
    "ignoring",
}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def dashboard_metric_names() -> set[str]:
    """Every metric name the dashboard's PromQL reads (label matchers, label names in by(),
    strings, durations and variables left out)."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    expressions += [
        v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"
    ]
    names: set[str] = set()
    for expr in expressions:
        text = re.sub(r'"[^"]*"', "", expr)  # strings
        text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
        text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
        text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
        text = re.sub(r"\$\w+", "", text)  # variables
        text = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", text)
        for word in _IDENTIFIER.findall(text):
            if word not in PROMQL_WORDS and not word.isdigit():
                names.add(word)
    return names


def test_the_dashboard_names_every_metric_family_it_draws() -> None:
    names = dashboard_metric_names()
    # The dashboard draws what the issue asks for: each family shows in some panel.
    for wanted in [
        "jobs_queue_jobs",
        "jobs_queue_oldest_ready_age_seconds",
        "jobs_run_duration_seconds_bucket",
        "jobs_outcomes_total",
        "jobs_consumer_lock_holder_since_timestamp_seconds",
        "indexpub_index_lag_seconds_bucket",
        "indexpub_index_git_duration_seconds_bucket",
        "indexpub_index_pushes_total",
        "indexpub_index_rebuilds_total",
        "indexpub_index_batch_crates_bucket",
        "indexpub_index_tip_timestamp_seconds",
        "indexpub_http_requests_total",
        "indexpub_publish_duration_seconds_bucket",
    ]:
        assert wanted in names
    # The 15-minute line of the oldest ready age panel.
    dashboard = json.loads(DASHBOARD.read_text())
    (age,) = [p for p in dashboard["panels"] if "oldest_ready_age" in json.dumps(p.get("targets"))]
    steps = age["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["color"] == "red"] == [900]


# --- a real Prometheus ------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    """Every panel query, with the dashboard's variables as Grafana fills them in (a rate
    window of a few scrapes, every queue)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$__rate_interval", "15s").replace("$queue", ".*")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="no prometheus (Debian's package) installed"
)
def test_a_real_prometheus_scrapes_both_and_answers_every_dashboard_query(
    running: tuple[CargoRegistry, str], tmp_path: Path
) -> None:
    registry, worker_metrics = running
    body = publish_body(simple_meta("scraped", "1.0.0"), valid_crate("scraped", "1.0.0"))
    headers = {"Authorization": registry.tokens["alice"]}
    put = httpx.put(f"{registry.base}/api/v1/crates/new", content=body, headers=headers)
    assert put.status_code == 200, put.text
    registry.wait_for_index(lambda: "scraped" in _remote_files(registry), timeout=60)
    targets = [worker_metrics.split("/")[2], registry.base.split("/")[2]]
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: indexpub\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"

    def query(expr: str) -> list[object]:
        answer = httpx.get(api, params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def scraped_a_while() -> bool:
        try:
            # Both targets up for long enough that a rate over 15 s has its samples.
            return len(query("count_over_time(up[15s]) >= 8 and up == 1")) == 2
        except httpx.HTTPError:
            return False

    try:
        wait_for(scraped_a_while, timeout=90)
        empty = [expr for expr in dashboard_queries() if not query(expr)]
        assert empty == []
    finally:
        server.terminate()
        server.wait(30)
