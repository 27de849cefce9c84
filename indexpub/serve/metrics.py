"""``indexpub serve``'s Prometheus metrics: its requests, its publishes, and the queue's state.

Each application has a registry of its own (tests make many applications in one process), served
at ``/metrics``. A request is labelled by the template of the route that answered it
(``/api/v1/crates/{name}/{version}/download``), never by its path: the series stay bounded
whatever crates exist or clients ask for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexpub.registry.queue import app as jobs_app
from jobs.metrics import JobsCollector

PUBLISH_ROUTE = "/api/v1/crates/new"
# What answered a request that no route matched (a 404 or 405 of the router).
NO_ROUTE = "none"

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    """The instruments and registry of one application."""

    def __init__(self, database_url: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.jobs = JobsCollector(jobs_app.store, database_url)
        self.registry.register(self.jobs)
        self.requests = Counter(
            "indexpub_http_requests_total",
            "Requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "indexpub_http_request_duration_seconds",
            "From a request's start to the end of its response's body, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.publishes = Histogram(
            "indexpub_publish_duration_seconds",
            "How long `cargo publish` waited for its upload's answer (the body read, the crate "
            "checked and stored, the transaction committed), by outcome: published, refused "
            "(4xx) or error (5xx).",
            ["outcome"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        for outcome in ("published", "refused", "error"):
            self.publishes.labels(outcome)

    async def endpoint(self, request: Request) -> Response:
        # The queue's collector reads the database: not on the event loop.
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.durations.labels(route).observe(seconds)
        if route == PUBLISH_ROUTE:
            outcome = "published" if status < 400 else "refused" if status < 500 else "error"
            self.publishes.labels(outcome).observe(seconds)


def route_templates(routes: Iterable[BaseRoute]) -> dict[Any, str]:
    """What the router records as a request's endpoint, mapped to its route's template."""
    templates: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route):
            templates[route.endpoint] = route.path
        elif isinstance(route, Mount):
            templates[route.app] = route.path + "/{path}"
    return templates


class MetricsMiddleware:
    """Counts and times every response by its route's template (see the module)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, templates: dict[Any, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router wrote the endpoint it chose into the scope it was handed.
            route = self.templates.get(scope.get("endpoint"), NO_ROUTE)
            self.metrics.observe(route, scope["method"], status, time.monotonic() - started)
