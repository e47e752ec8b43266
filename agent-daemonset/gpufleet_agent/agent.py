"""The agent's event loop: sample GPUs, publish what changed, heartbeat the Host.

Three tasks, each with one job, sharing only the latest snapshot:

- sampling reads NVML every `sample_interval` (in the NVML thread, under a deadline: `watchdog`)
  and replaces the snapshot; it never waits on the API server, so readings and metrics stay
  current during an outage, nor forever on a hung driver, whose GPUs it reports `unknown`;
- publishing keeps GPU objects in line with the devices and writes each GPU's status when
  `changes.worth_writing` says so; after an API error it backs off with jitter and then sends
  whatever is latest, so nothing queues up: the state kept is one snapshot, however long the outage;
- heartbeating renews the Host's Lease at a fixed interval, retrying sooner after a failure, and
  writes the Host's status when what it reports changed or every few minutes (`heartbeat`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web

from gpufleet.api import formats, gpu, host, meta
from gpufleet_agent import (
    backoff,
    binding,
    changes,
    gpustatus,
    health,
    heartbeat,
    kubeapi,
    machine,
    metrics,
    nvml,
    podresources,
    reconcile,
    sampling,
    watchdog,
)
from gpufleet_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

#: How often the agent says again that it heartbeats without its Lease.
LEASE_WARN_EVERY_SECONDS = 60.0


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        library: nvml.Library,
        *,
        kubeconfig: str | None = None,
        allocation: podresources.PodResources | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics.Metrics()
        self._nvml = nvml.Nvml(library)
        self._sampler = sampling.Sampler(
            self._nvml,
            health.Tracker.of(settings),
            on_xid=lambda uuid, xid: self.metrics.xid_errors.labels(self.host_name, uuid, str(xid)).inc(),
        )
        self._kubeconfig = kubeconfig
        self._allocation = allocation
        self._clock = clock
        self._gate = changes.Gate(
            changes.Thresholds.of(settings),
            on_write=lambda why: self.metrics.status_writes_by_reason.labels(why.value).inc(),
            on_limited=self.metrics.status_writes_rate_limited.inc,
        )
        self.host: kubeapi.JsonObj | None = None
        self.nvml_available = False
        self.latest: list[sampling.Sample] = []
        self._api: kubeapi.KubeApi | None = None
        self._search: binding.Search | None = None
        # One thread for NVML: calls are serialised (the session is not shared between threads) and
        # the agent does not grow a pool of threads, each with its own malloc arena; each call has a
        # deadline, and a hung one blocks only that thread (see `watchdog`).
        self._nvml_thread = watchdog.Watchdog(settings.nvml_call_timeout_seconds, clock=clock)
        self._nvml_start_hung = False
        self.hung_samples = 0
        """Sampling rounds in a row that found NVML hung; readiness fails from `unready_after_hung_samples`."""
        self.metrics.nvml_hung.set_function(lambda: float(self._nvml_thread.stuck))
        self._fresh = asyncio.Event()
        self._host_lock = asyncio.Lock()
        self._needs_sync = True
        self._devices: list[nvml.Device] = []
        self._objects: dict[str, kubeapi.JsonObj] = {}
        self._transitions: dict[str, gpustatus.Transition] = {}
        self._holders: dict[str, str] | None = None
        self._status_gate = heartbeat.StatusGate(settings.status_resync_seconds)
        self._lease_warned: float | None = None
        self._capacity: machine.Capacity | None = None

    @property
    def host_name(self) -> str:
        return str(self.host["metadata"]["name"]) if self.host else self.settings.node_name

    @property
    def api(self) -> kubeapi.KubeApi:
        if self._api is None:
            raise RuntimeError("the agent is not running")
        return self._api

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises if a task fails unexpectedly (the pod restarts)."""
        self._api = kubeapi.connect(self._kubeconfig)  # a bad kubeconfig fails before anything starts
        self._search = binding.Search.of(self._api, self.settings, clock=self._clock)
        tasks: list[asyncio.Task[object]] = []
        runner = None
        try:
            try:
                await self._start_nvml()
            except watchdog.Hung as hang:
                self._hung(hang)  # a round like a sample's; sampling tries again once NVML answers
            if self.settings.metrics_port:
                runner = await self._serve_metrics()
            tasks = [
                asyncio.create_task(self._sample_forever(), name="sampling"),
                asyncio.create_task(self._publish_forever(), name="publishing"),
                asyncio.create_task(self._heartbeat_forever(), name="heartbeat"),
                asyncio.create_task(stop.wait(), name="stop"),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks[:-1]:
                if task.done():
                    task.result()  # a loop that ended on its own failed: let its exception out
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._api.close()
            if self._allocation is not None:
                await self._allocation.close()
            if runner is not None:
                await runner.cleanup()
            if self._nvml_thread.stuck:
                # Shutting NVML down would hang on the same driver; the process exit releases it.
                logger.warning("NVML is hung: leaving it without shutting it down")
            elif self.nvml_available:
                self._nvml.stop()
            self._nvml_thread.close()
            logger.info("agent stopped")

    async def _start_nvml(self) -> None:
        """Initialise NVML. Raises `watchdog.Hung` when the driver does not answer: sampling retries it."""
        self._nvml_start_hung = False
        try:
            driver = await self._nvml_thread.call(self._nvml.start, "nvmlInit")
        except watchdog.Hung:
            self._nvml_start_hung = True
            raise
        except nvml.NVMLError as error:
            logger.error(
                "NVML is unavailable (%s): this node reports no GPUs and keeps heartbeating; "
                "install the NVIDIA driver and container toolkit, or run with --simulate N",
                error,
            )
            return
        self.nvml_available = True
        logger.info("NVML initialised, driver %s", driver)

    # ----- sampling -------------------------------------------------------------------------------------------

    async def _serve_metrics(self) -> web.AppRunner:
        """The metrics endpoint. A simulated node whose port is taken (several simulated nodes on
        one machine) takes a free one and says which; a real one stops, as its probes need it."""
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            return await metrics.serve(self.metrics, host, port, self.unready)
        except metrics.ServeError as error:
            if self.settings.simulate is None:
                raise
            runner = await metrics.serve(self.metrics, host, 0, self.unready)
            bound = [site.name for site in runner.sites]
            logger.warning("%s; this simulated node serves metrics on %s instead", error, ", ".join(bound))
            return runner

    async def _sample_forever(self) -> None:
        next_discovery = -math.inf
        while True:
            now = self._clock()
            try:
                if self._nvml_start_hung:
                    await self._start_nvml()
                if self.nvml_available and now >= next_discovery:
                    await self._discover()
                    next_discovery = now + self.settings.discovery_interval_seconds
                if self.nvml_available:
                    await self._sample(now)
                self._answered()
            except watchdog.Hung as hang:
                self._hung(hang)
                # A hang often comes with a device falling off the bus or being reset: list the
                # devices again as soon as NVML answers.
                next_discovery = -math.inf
            self.metrics.observe(self.host_name, self.latest)
            self._fresh.set()
            await asyncio.sleep(self.settings.sample_interval_seconds)

    async def _sample(self, now: float) -> None:
        try:
            self.latest = await self._nvml_thread.call(functools.partial(self._sampler.sample, now), "sampling")
        except nvml.NVMLError as error:
            logger.warning("NVML sampling failed: %s; keeping the previous sample", error)

    def _hung(self, hang: watchdog.Hung) -> None:
        """A round in which NVML did not answer: every known GPU is `unknown`, and readiness counts down."""
        self.hung_samples += 1
        if hang.timed_out:
            self.metrics.nvml_timeouts.inc()
            logger.error("%s: GPU health is unknown until NVML answers", hang)
        if self.hung_samples == self.settings.unready_after_hung_samples:
            logger.error("NVML hung for %d samples in a row: the agent reports itself not ready", self.hung_samples)
        self.latest = self._sampler.unknown(health.unknown(self.settings.nvml_call_timeout_seconds))

    def _answered(self) -> None:
        if self.hung_samples:
            logger.warning("NVML answers again after %d hung sample(s); health is reported again", self.hung_samples)
        self.hung_samples = 0

    def unready(self) -> str | None:
        """Why the agent is not ready (`/readyz` answers 503 with it), or None when it is."""
        if self.hung_samples >= self.settings.unready_after_hung_samples:
            return (
                f"NVML has not answered for {self.hung_samples} samples in a row "
                f"(deadline {self.settings.nvml_call_timeout_seconds:g}s per call): the GPU driver is hung"
            )
        return None

    async def _discover(self) -> None:
        try:
            devices = await self._nvml_thread.call(self._sampler.discover, "discovery")
        except nvml.NVMLError as error:
            logger.warning("NVML device discovery failed: %s; keeping the known devices", error)
            return
        if devices != self._devices:
            if not devices:
                logger.warning("NVML lists no GPUs on this node")
            else:
                logger.info("NVML lists %d GPU(s): %s", len(devices), ", ".join(d.uuid or "?" for d in devices))
            self._devices = devices
            self._needs_sync = True

    # ----- publishing -----------------------------------------------------------------------------------------

    async def _publish_forever(self) -> None:
        retry = backoff.Backoff(self.settings.backoff_initial_seconds, self.settings.backoff_max_seconds)
        while True:
            await self._fresh.wait()
            self._fresh.clear()
            try:
                await self._publish()
            except (kubeapi.ApiError, binding.NoHost) as error:
                delay = retry.next_delay()
                if isinstance(error, kubeapi.ApiError):  # a missing Host is the heartbeat's to report
                    self.metrics.api_errors.inc()
                    if retry.failures == 1 or retry.failures % 10 == 0:
                        logger.warning("publishing GPU state failed (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                self._fresh.set()  # then send whatever is latest
            else:
                if retry.failures:
                    logger.info("publishing GPU state works again after %d failure(s)", retry.failures)
                retry.reset()

    async def _publish(self) -> None:
        bound = await self._ensure_host()
        if self._needs_sync and self.nvml_available:
            self._needs_sync = False
            try:
                self._objects = await reconcile.sync(
                    self.api, bound, self._devices, self._count_write, node_name=self.settings.node_name
                )
            except BaseException:
                self._needs_sync = True
                raise
            self._remember_transitions()
        self._holders = await self._read_holders()
        for sample in self.latest:
            name = gpu.object_name(self.host_name, sample.device.index)
            if name in self._objects:
                await self._publish_status(name, sample)

    def _count_write(self, kind: str) -> None:
        self.metrics.writes.labels(kind).inc()

    def _remember_transitions(self) -> None:
        """Keep each GPU's Healthy transition time across agent restarts, from what the objects say."""
        for name, obj in self._objects.items():
            if name in self._transitions:
                continue
            for condition in (obj.get("status") or {}).get("conditions") or []:
                if condition.get("type") == gpu.HEALTHY and condition.get("status") in set(meta.ConditionStatus):
                    since = formats.parse_time(condition.get("lastTransitionTime"))
                    if since is not None:
                        status = meta.ConditionStatus(condition["status"])
                        self._transitions[name] = gpustatus.Transition(status, since)
        self._gate.keep_only(set(self._objects))
        for name in set(self._transitions) - set(self._objects):
            del self._transitions[name]

    async def _publish_status(self, name: str, sample: sampling.Sample) -> None:
        allocation_known = self._holders is not None
        holder = None
        if self._holders is not None:
            holder = self._holders.get(sample.device.uuid) or self._holders.get(str(sample.device.index))
        observed = gpustatus.observe(sample, holder)
        now = self._clock()
        if not self._gate.due(name, observed, now):
            self.metrics.suppressed.inc()
            return
        written = self._gate.last(name)
        wall = heartbeat.utc_now().replace(microsecond=0)  # Kubernetes' own timestamps are whole seconds
        transition = self._transitions.get(name)
        status = gpustatus.condition_status(sample.verdict)
        if transition is None or transition.status != status:
            transition = self._transitions[name] = gpustatus.Transition(status, wall)
            if status is meta.ConditionStatus.UNKNOWN:
                logger.warning("GPU %s health is unknown: %s", name, sample.verdict.message)
            elif status is meta.ConditionStatus.FALSE:
                logger.warning("GPU %s is unhealthy: %s", name, sample.verdict.message)
            elif written is not None:
                logger.info("GPU %s is healthy again", name)
        state = gpu.GPUState(observed.state) if allocation_known else await self._external_state(name, observed)
        body = gpustatus.patch(
            sample, observed, transition=transition, now=wall, allocation_known=allocation_known, state_value=state
        )
        try:
            await self.api.merge_patch(f"{kubeapi.GPUS}/{name}/status", body)
        except kubeapi.ApiError as error:
            if not error.not_found:
                raise
            self._needs_sync = True  # deleted behind our back: recreate on the next round
            return
        self.metrics.writes.labels("gpu_status").inc()
        self._gate.record(name, observed, now)

    async def _external_state(self, name: str, observed: changes.Observed) -> gpu.GPUState | None:
        """Where someone else allocates: mark unhealthy (or unknown), and on recovery restore free/allocated."""
        if not observed.healthy:
            return gpu.GPUState(observed.state)  # unhealthy, or unknown while NVML hangs
        written = self._gate.last(name)
        if written is not None and written.healthy:
            return None  # leave the allocator's state alone
        current = (await self.api.get(f"{kubeapi.GPUS}/{name}")).get("status") or {}
        if written is None and current.get("state") in (gpu.GPUState.FREE, gpu.GPUState.ALLOCATED):
            return None
        return gpustatus.state(True, current.get("allocatedTo"))

    async def _read_holders(self) -> dict[str, str] | None:
        if self._allocation is None:
            return None
        try:
            return await self._allocation.holders()
        except Exception as error:
            logger.warning("kubelet PodResources failed (%s); keeping the last known allocation", error)
            return self._holders

    # ----- the Host -------------------------------------------------------------------------------------------

    async def _ensure_host(self) -> kubeapi.JsonObj:
        async with self._host_lock:
            if self.host is None:
                if self._search is None:
                    raise RuntimeError("the agent is not running")
                self.host = await self._search.bind()
                self._needs_sync = True
                self._status_gate.forget()
                logger.info("bound to Host %s of node %s", self.host_name, self.settings.node_name)
            return self.host

    def host_health(self) -> host.HealthStatus:
        """Unhealthy when a GPU is; else unknown when NVML is unavailable or hung, or a GPU's health is unknown."""
        if any(s.verdict.known and not s.verdict.healthy for s in self.latest):
            return host.HealthStatus.UNHEALTHY
        if not self.nvml_available or self.hung_samples or any(not s.verdict.known for s in self.latest):
            return host.HealthStatus.UNKNOWN
        return host.HealthStatus.HEALTHY

    async def _heartbeat_forever(self) -> None:
        interval = self.settings.heartbeat_interval_seconds
        retry = backoff.Backoff(self.settings.backoff_initial_seconds, min(interval, self.settings.backoff_max_seconds))
        next_beat = self._clock()
        while True:
            try:
                await self._heartbeat()
            except binding.NoHost as error:
                if retry.failures % 10 == 0:
                    logger.warning("%s", error)
                retry.failures += 1
                next_beat = self._clock() + interval
            except kubeapi.ApiError as error:
                self.metrics.api_errors.inc()
                if error.not_found:
                    self._forget_host()
                delay = retry.next_delay()
                if retry.failures == 1 or retry.failures % 10 == 0:
                    logger.warning("heartbeat failed (%s); retrying in %.1fs", error, delay)
                next_beat = self._clock() + delay
            else:
                retry.reset()
                next_beat = max(next_beat + interval, self._clock())
            await asyncio.sleep(max(0.0, next_beat - self._clock()))

    async def _heartbeat(self) -> None:
        bound = await self._ensure_host()
        try:
            await heartbeat.renew(
                self.api,
                bound,
                namespace=self.settings.host_lease_namespace,
                holder=self.settings.node_name,
                duration=self.settings.lease_duration_seconds,
            )
        except heartbeat.LeaseUnwritable as error:
            leased = False
            self.metrics.api_errors.inc()
            self._warn_lease_unwritable(bound["metadata"]["name"], error)
        else:
            leased = True
            self.metrics.writes.labels("lease").inc()
        used = None
        if self._holders is not None:
            used = sum(1 for s in self.latest if s.device.uuid in self._holders or str(s.device.index) in self._holders)
        if self._capacity is None:
            self._capacity = machine.capacity(str(self.settings.host_ip) if self.settings.host_ip else None)
        simulated = self.settings.simulate is not None
        usage = machine.simulated_usage(self._capacity) if simulated else machine.usage()
        health, now = self.host_health(), self._clock()
        report = heartbeat.Report.of(usage, self._capacity, health=health, used_gpus=used)
        if leased and not self._status_gate.due(report, now):
            return  # without the Lease, the status's lastHeartbeat is the heartbeat: written every time
        body = heartbeat.patch(usage, health=health, used_gpus=used, now=heartbeat.utc_now())
        await heartbeat.send(self.api, bound["metadata"]["name"], body)
        self._status_gate.written(report, now)
        self.metrics.writes.labels("host_status").inc()

    def _warn_lease_unwritable(self, host_name: str, error: heartbeat.LeaseUnwritable) -> None:
        """Say what is wrong, at most once a minute: the fallback keeps the host online, but
        every heartbeat is now a Host status write, which every Host watcher receives."""
        now = self._clock()
        if self._lease_warned is not None and now - self._lease_warned < LEASE_WARN_EVERY_SECONDS:
            return
        self._lease_warned = now
        logger.warning(
            "cannot write the Lease of host %s in namespace %r (%s); heartbeating through the Host's status "
            "instead. If the Lease is held by another node (kubectl -n %s get lease %s), delete it; "
            "otherwise give this agent create and patch on leases there",
            host_name,
            self.settings.host_lease_namespace,
            error,
            self.settings.host_lease_namespace,
            host_name,
        )

    def _forget_host(self) -> None:
        """The Host is gone (deleted): bind again (or register) on the next round."""
        if self.host is not None:
            logger.warning("Host %s no longer exists", self.host_name)
        self.host = None
        self._status_gate.forget()
        if self._search is not None:
            self._search.forget()
        self._objects.clear()
        self._gate.keep_only(set())
        self._needs_sync = True
