"""Prometheus metrics of the operator, all `gpufleet_`-prefixed with unit suffixes.

Fleet-wide gauges (hosts by state and health, GPUs by state, oldest heartbeat) are computed when
scraped from the operator's in-memory view, so keeping them costs nothing per heartbeat. Each
operator instance has its own registry, so several can run in one process (tests, `gpufleet dev`).
They are served on the operator's own loop with prometheus-client's aiohttp handler, beside the
readiness probe, so no thread reads the view while the loop changes it.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import prometheus_client
from aiohttp import web
from prometheus_client import aiohttp as prometheus_aiohttp
from prometheus_client import core, registry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _FleetCollector(registry.Collector):
    def __init__(
        self,
        hosts: Callable[[], Iterator[tuple[str, str]]],
        gpus: Callable[[], dict[str, int]],
        oldest_heartbeat: Callable[[], float],
    ) -> None:
        self._hosts, self._gpus, self._oldest_heartbeat = hosts, gpus, oldest_heartbeat

    def collect(self) -> Iterator[core.Metric]:
        hosts = core.GaugeMetricFamily(
            "gpufleet_hosts", "Hosts by liveness state and reported health.", labels=["state", "health"]
        )
        for (state, health), count in sorted(collections.Counter(self._hosts()).items()):
            hosts.add_metric([state, health], count)
        yield hosts
        gpus = core.GaugeMetricFamily("gpufleet_gpus", "GPU resources by state.", labels=["state"])
        for state, count in sorted(self._gpus().items()):
            gpus.add_metric([state], count)
        yield gpus
        yield core.GaugeMetricFamily(
            "gpufleet_heartbeat_age_max_seconds",
            "Seconds since the stalest online host's last observed heartbeat.",
            value=self._oldest_heartbeat(),
        )


class Metrics:
    """The operator's metrics in a registry of its own."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.transitions = prometheus_client.Counter(
            "gpufleet_host_transitions",
            "Host liveness transitions, by the state entered.",
            ["state"],
            registry=self.registry,
        )
        self.detection_delay = prometheus_client.Histogram(
            "gpufleet_offline_detection_delay_seconds",
            "From a host's liveness deadline to its offline status being written.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_dropped = prometheus_client.Counter(
            "gpufleet_events_dropped", "Events not posted (rate limit or API error).", registry=self.registry
        )
        self.heartbeats = prometheus_client.Counter(
            "gpufleet_heartbeats_observed", "Newer heartbeats observed.", registry=self.registry
        )
        self.watch_staleness = prometheus_client.Gauge(
            "gpufleet_watch_staleness_seconds",
            "Seconds since the API last confirmed an informer's view (event, bookmark, list or new watch).",
            ["resource"],
            registry=self.registry,
        )
        self.watch_fresh = prometheus_client.Gauge(
            "gpufleet_watch_fresh",
            "1 while an informer follows the API, 0 while it is stale (liveness verdicts are suspended).",
            ["resource"],
            registry=self.registry,
        )
        self.leader = prometheus_client.Gauge(
            "gpufleet_leader", "1 while this replica holds the leader Lease and may write.", registry=self.registry
        )

    def watch_fleet(
        self,
        hosts: Callable[[], Iterator[tuple[str, str]]],
        gpus: Callable[[], dict[str, int]],
        oldest_heartbeat: Callable[[], float],
    ) -> None:
        """Expose the fleet-wide gauges, computed from these callables at each scrape."""
        self.registry.register(_FleetCollector(hosts, gpus, oldest_heartbeat))

    @contextlib.asynccontextmanager
    async def serve(
        self,
        port: int,
        ready: Callable[[], str | None],
        address: str = "0.0.0.0",  # noqa: S104 - scraped and probed from other pods
    ) -> AsyncIterator[None]:
        """Serve `/metrics` and `/readyz` on `port`, on the running loop, inside the `async with`.

        `ready` returns None when the replica is ready, else why not (answered with 503), so a
        replica whose view is stale leaves the Service's endpoints without being restarted.
        """

        async def readyz(request: web.Request) -> web.Response:
            reason = ready()
            return web.Response(text=reason or "ok", status=503 if reason else 200)

        app = web.Application()
        app.router.add_get("/metrics", prometheus_aiohttp.make_aiohttp_handler(self.registry))
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address, port).start()
        try:
            yield
        finally:
            await runner.cleanup()

    def render(self) -> str:
        """The exposition text, as a scrape would see it."""
        return prometheus_client.generate_latest(self.registry).decode("utf-8")
