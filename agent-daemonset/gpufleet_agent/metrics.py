"""Prometheus metrics of the agent: GPU gauges named like DCGM exporter's, and the agent's own API writes.

Names follow Prometheus conventions (base units as suffixes) under `gpufleet_gpu_`, so a
dashboard built on DCGM exporter maps one to one: `DCGM_FI_DEV_GPU_TEMP` ->
`gpufleet_gpu_temperature_celsius`, `DCGM_FI_DEV_GPU_UTIL` (percent) ->
`gpufleet_gpu_utilization_ratio` (0-1), `DCGM_FI_DEV_FB_USED` (MiB) -> `gpufleet_gpu_memory_used_bytes`,
`DCGM_FI_DEV_POWER_USAGE` -> `gpufleet_gpu_power_watts`. The write counters let operators check
the agent's promise of few API writes, on their own fleet.

The health signals (row remapping, retired pages, clock reasons, NVLink and PCIe error counters)
and MIG (mode, instances by profile, each MIG device's memory) are exported from the latest
sample at scrape time (`_Signals`), so a counter is exposed with
the counter type and the value NVML gives (it is NVML's count since the driver loaded, not one
the agent keeps), and a GPU that vanished or cannot be read has no stale series left behind.

Each agent has its own registry, so tests can run several agents in one process.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import prometheus_client
from aiohttp import web
from prometheus_client import aiohttp as prometheus_aiohttp
from prometheus_client import metrics_core, registry

from gpufleet_agent import nvml, sampling

GPU_LABELS = ("host", "gpu", "uuid", "model")


class ServeError(Exception):
    """The metrics endpoint cannot listen (port taken, address not local)."""


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()

        def gauge(name: str, documentation: str) -> prometheus_client.Gauge:
            return prometheus_client.Gauge(name, documentation, GPU_LABELS, registry=self.registry)

        self.temperature = gauge("gpufleet_gpu_temperature_celsius", "GPU core temperature")
        self.utilization = gauge("gpufleet_gpu_utilization_ratio", "GPU utilisation over the sample period, 0-1")
        self.memory_used = gauge("gpufleet_gpu_memory_used_bytes", "Framebuffer memory in use")
        self.memory_total = gauge("gpufleet_gpu_memory_total_bytes", "Framebuffer memory in total")
        self.power = gauge("gpufleet_gpu_power_watts", "Power draw")
        self.healthy = gauge("gpufleet_gpu_healthy", "1 when the GPU is healthy, 0 when not (or unknown)")
        self.writes = prometheus_client.Counter(
            "gpufleet_agent_api_writes", "Writes to the Kubernetes API, by kind", ["kind"], registry=self.registry
        )
        self.suppressed = prometheus_client.Counter(
            "gpufleet_agent_status_writes_suppressed",
            "GPU status writes skipped because nothing moved beyond a threshold",
            registry=self.registry,
        )
        self.status_writes_by_reason = prometheus_client.Counter(
            "gpufleet_agent_gpu_status_writes_by_reason",
            "GPU status writes by why they were due: first, state, resync, jump, sustained",
            ["reason"],
            registry=self.registry,
        )
        self.status_writes_rate_limited = prometheus_client.Counter(
            "gpufleet_agent_gpu_status_writes_rate_limited",
            "GPU gauge changes held back by the per-GPU rate limit (also counted as suppressed)",
            registry=self.registry,
        )
        self.api_errors = prometheus_client.Counter(
            "gpufleet_agent_api_errors", "Failed Kubernetes API calls", registry=self.registry
        )
        self.samples = prometheus_client.Counter(
            "gpufleet_agent_samples", "NVML sampling passes", registry=self.registry
        )
        self.nvml_timeouts = prometheus_client.Counter(
            "gpufleet_agent_nvml_timeouts",
            "NVML calls that did not return within their deadline (a hung driver)",
            registry=self.registry,
        )
        self.xid_errors = prometheus_client.Counter(
            "gpufleet_gpu_xid_errors",
            "XID errors the driver posted, by GPU and XID (application XIDs included: the alert decides)",
            ["host", "uuid", "xid"],
            registry=self.registry,
        )
        self.nvml_hung = prometheus_client.Gauge(
            "gpufleet_agent_nvml_hung", "1 while an NVML call is stuck past its deadline", registry=self.registry
        )
        self._gauges = (self.temperature, self.utilization, self.memory_used, self.memory_total, self.power)
        self._labels: set[tuple[str, str, str, str]] = set()
        self._signals = _Signals()
        self.registry.register(self._signals)

    def observe(self, host_name: str, samples: list[sampling.Sample]) -> None:
        """Set every GPU's gauges; drop the series of GPUs that are gone."""
        self.samples.inc()
        self._signals.latest = (host_name, list(samples))
        seen = set()
        for sample in samples:
            labels = (host_name, str(sample.device.index), sample.device.uuid, sample.device.model_name)
            seen.add(labels)
            self.healthy.labels(*labels).set(1 if sample.verdict.healthy else 0)
            readings = sample.readings
            if readings is None:  # a lost GPU has no readings: stale values would be a lie
                self._remove(labels, self._gauges)
                continue
            for metric, value in (
                (self.temperature, readings.temperature_celsius),
                (self.utilization, _ratio(readings.utilization_percent)),
                (self.memory_used, readings.memory_used),
                (self.memory_total, readings.memory_total),
                (self.power, readings.power_watts),
            ):
                if value is not None:
                    metric.labels(*labels).set(value)
                else:  # a gauge the GPU no longer gives (utilisation in MIG mode): no stale value
                    self._remove(labels, (metric,))
        for labels in self._labels - seen:
            self._remove(labels, (*self._gauges, self.healthy))
        self._labels = seen

    @staticmethod
    def _remove(labels: tuple[str, str, str, str], metrics: tuple[prometheus_client.Gauge, ...]) -> None:
        for metric in metrics:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)


class _Signals(registry.Collector):
    """The health signals of the latest sample, as Prometheus families, built when scraped.

    DCGM exporter equivalents: `DCGM_FI_DEV_ROW_REMAP_PENDING` / `_ROW_REMAP_FAILURE` /
    `_CORRECTABLE_REMAPPED_ROWS` / `_UNCORRECTABLE_REMAPPED_ROWS`, `DCGM_FI_DEV_RETIRED_PENDING` /
    `_RETIRED_DBE` / `_RETIRED_SBE`, `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` (a mask; here one series
    per reason), `DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L<n>` and friends, `DCGM_FI_DEV_PCIE_REPLAY_COUNTER`.
    """

    def __init__(self) -> None:
        self.latest: tuple[str, list[sampling.Sample]] = ("", [])
        """Replaced whole by `observe` (on the event loop); a scrape reads whichever list is there."""

    def collect(self) -> Iterator[metrics_core.Metric]:
        host_name, samples = self.latest
        gauge, counter = metrics_core.GaugeMetricFamily, metrics_core.CounterMetricFamily
        pending = gauge(
            "gpufleet_gpu_row_remap_pending", "1 while a memory row remap waits for a GPU reset", labels=GPU_LABELS
        )
        failure = gauge(
            "gpufleet_gpu_row_remap_failure",
            "1 when a row remap found no spare row (replace the GPU)",
            labels=GPU_LABELS,
        )
        rows = gauge(
            "gpufleet_gpu_remapped_rows",
            "Memory rows remapped, by cause: correctable, uncorrectable (Ampere and later)",
            labels=(*GPU_LABELS, "cause"),
        )
        pages_pending = gauge(
            "gpufleet_gpu_retired_pages_pending",
            "1 while retired pages wait for a reboot (before Ampere)",
            labels=GPU_LABELS,
        )
        pages = gauge(
            "gpufleet_gpu_retired_pages",
            "Memory pages retired, by cause: double_bit_ecc, multiple_single_bit_ecc (before Ampere)",
            labels=(*GPU_LABELS, "cause"),
        )
        clocks = gauge(
            "gpufleet_gpu_throttle_reasons",
            "1 for each reason the clocks are held below their maximum now (NVML clock event reasons)",
            labels=(*GPU_LABELS, "reason"),
        )
        nvlink = counter(
            "gpufleet_gpu_nvlink_errors",
            "NVLink errors per active link since the driver loaded, by counter: crc_flit, crc_data, replay, recovery",
            labels=(*GPU_LABELS, "link", "counter"),
        )
        links_down = gauge(
            "gpufleet_gpu_nvlinks_down",
            "NVLinks active since the agent started that are down now (GPUs with NVLink only)",
            labels=GPU_LABELS,
        )
        pcie = counter(
            "gpufleet_gpu_pcie_replays",
            "PCIe replays (link retransmissions) since the driver loaded",
            labels=GPU_LABELS,
        )
        mig_mode = gauge(
            "gpufleet_gpu_mig_mode",
            "MIG mode, 1 enabled / 0 disabled: in effect now (mode=current), after the next GPU reset (mode=pending)",
            labels=(*GPU_LABELS, "mode"),
        )
        mig_instances = gauge(
            "gpufleet_gpu_mig_instances",
            "MIG devices (compute instances in GPU instances) by GPU instance profile, e.g. 1g.10gb",
            labels=(*GPU_LABELS, "profile"),
        )
        mig_memory = gauge(
            "gpufleet_gpu_mig_instance_memory_total_bytes",
            "Memory of each MIG device",
            labels=(*GPU_LABELS, "mig_uuid", "profile", "gpu_instance", "compute_instance"),
        )
        for sample in samples:
            readings = sample.readings
            if readings is None:
                continue
            labels = [host_name, str(sample.device.index), sample.device.uuid, sample.device.model_name]
            if readings.remapped_rows is not None:
                remapped = readings.remapped_rows
                pending.add_metric(labels, float(remapped.pending))
                failure.add_metric(labels, float(remapped.failure))
                rows.add_metric([*labels, "correctable"], remapped.corrected)
                rows.add_metric([*labels, "uncorrectable"], remapped.uncorrected)
            if readings.retired_pages_pending is not None:
                pages_pending.add_metric(labels, float(readings.retired_pages_pending))
            for cause, count in (
                ("double_bit_ecc", readings.retired_pages_double_bit),
                ("multiple_single_bit_ecc", readings.retired_pages_single_bit),
            ):
                if count is not None:
                    pages.add_metric([*labels, cause], count)
            if readings.clock_reasons is not None:
                for reason, bit in nvml.CLOCK_REASONS.items():
                    clocks.add_metric([*labels, reason], float(bool(readings.clock_reasons & bit)))
            for (link, name), count in sorted(readings.nvlink_errors.items()):
                nvlink.add_metric([*labels, str(link), name], count)
            if readings.nvlink_errors or readings.nvlinks_down:
                links_down.add_metric(labels, len(readings.nvlinks_down))
            if readings.pcie_replays is not None:
                pcie.add_metric(labels, readings.pcie_replays)
            if sample.mig is not None:
                mig = sample.mig
                mig_mode.add_metric([*labels, "current"], float(mig.enabled))
                mig_mode.add_metric([*labels, "pending"], float(mig.pending_enabled))
                profiles = collections.Counter(i.profile.name if i.profile else "" for i in mig.instances)
                for profile, count in sorted(profiles.items()):
                    mig_instances.add_metric([*labels, profile], count)
                for instance in mig.instances:
                    ids = [str(instance.gpu_instance_id), str(instance.compute_instance_id)]
                    name = instance.profile.name if instance.profile else ""
                    mig_memory.add_metric([*labels, instance.uuid, name, *ids], instance.memory_total)
        yield from (
            pending,
            failure,
            rows,
            pages_pending,
            pages,
            clocks,
            nvlink,
            links_down,
            pcie,
            mig_mode,
            mig_instances,
            mig_memory,
        )


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


async def serve(
    metrics: Metrics, host: str, port: int, unready: Callable[[], str | None] = lambda: None
) -> web.AppRunner:
    """Serve `/metrics`, `/healthz` and `/readyz` on the event loop; stop with `await runner.cleanup()`.

    `/healthz` (liveness) answers `ok` while the event loop runs. `/readyz` answers 503 with the
    reason `unready()` gives (e.g. NVML hung), else `ok`. A hung driver fails readiness, not
    liveness: a restart cannot unstick a driver, and a process with a thread stuck in the kernel
    may not even die, so a liveness failure would only add a restart loop to a sick node.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        reason = unready()
        if reason is not None:
            return web.Response(status=503, text=reason)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", prometheus_aiohttp.make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise ServeError(f"cannot serve metrics on {host}:{port}: {error}") from error
    return runner
