"""Prometheus metrics of the facade: requests, latency, and how big and how fresh the caches are.

Each app has its own registry, so tests and `gpufleet dev` can run several facades (and the
operator, with its own metrics) in one process without name clashes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import aiohttp as prometheus_aiohttp

from gpufleet import informer
from gpufleet.facade import errors

PREFIX = "gpufleet_facade_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.requests = prometheus_client.Counter(
            f"{PREFIX}requests",
            "REST requests answered, by route, method and HTTP status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            f"{PREFIX}request_duration_seconds",
            "Time to answer a REST request, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_objects = prometheus_client.Gauge(
            f"{PREFIX}cache_objects",
            "Objects in an informer cache.",
            ["resource"],
            registry=self.registry,
        )
        self.cache_staleness = prometheus_client.Gauge(
            f"{PREFIX}cache_staleness_seconds",
            "Seconds since the Kubernetes API last confirmed an informer cache (list, event or bookmark).",
            ["resource"],
            registry=self.registry,
        )
        #: The counter and histogram children of each (route, method, status): `labels()` checks and
        #: locks on every call, which on the heartbeat path is worth skipping.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, view: informer.Informer) -> None:
        """Export an informer's size and staleness, read at scrape time."""
        store = view.store
        self.cache_objects.labels(view.resource).set_function(lambda: len(store))
        self.cache_staleness.labels(view.resource).set_function(view.staleness)

    @web.middleware
    async def middleware(self, request: web.Request, handler: errors.Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            # Any token is a method to HTTP: made-up ones share a label value, so series stay few.
            method = request.method if request.method in _METHODS else "other"
            series = self._series.get((route, method, status))
            if series is None:  # a few dozen at most: routes x methods x statuses
                series = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
                self._series[(route, method, status)] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    def handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`GET /metrics`: prometheus-client's own aiohttp handler (text or OpenMetrics, gzip)."""
        serve: Callable[[web.Request], Awaitable[web.StreamResponse]] = prometheus_aiohttp.make_aiohttp_handler(
            self.registry
        )
        return serve
