"""Prometheus metrics of the operator, all `gpufleet_`-prefixed with unit suffixes.

Fleet-wide gauges (hosts by state and health, GPUs by state, oldest heartbeat) are computed when
scraped from the operator's in-memory view, so keeping them costs nothing per heartbeat. Each
operator instance has its own registry, so several can run in one process (tests, `gpufleet dev`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
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
        self.handler_duration = prometheus_client.Histogram(
            "gpufleet_handler_duration_seconds",
            "Time spent in operator handlers.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
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

    def watch_fleet(
        self,
        hosts: Callable[[], Iterator[tuple[str, str]]],
        gpus: Callable[[], dict[str, int]],
        oldest_heartbeat: Callable[[], float],
    ) -> None:
        """Expose the fleet-wide gauges, computed from these callables at each scrape."""
        self.registry.register(_FleetCollector(hosts, gpus, oldest_heartbeat))

    def serve(self, port: int, address: str = "0.0.0.0") -> Any:  # noqa: S104 - scraped from other pods
        """Serve `/metrics` on `port` in a background thread; the server, for `shutdown()`."""
        server, _ = prometheus_client.start_http_server(port, addr=address, registry=self.registry)
        return server

    def render(self) -> str:
        """The exposition text, as a scrape would see it."""
        return prometheus_client.generate_latest(self.registry).decode("utf-8")
