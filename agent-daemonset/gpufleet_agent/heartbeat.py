"""The heartbeat: a Lease renewed at a fixed interval, and the Host's status only when it says something new.

Every interval the agent renews its Host's Lease (`gpufleet.api.hostlease`): one small merge
patch, which is what the operator judges liveness by. The Host's status, which every Host
watcher receives whole, is written only when what it reports changes (`StatusGate`) or every
`status_resync_seconds`, as kubelet writes NodeStatus since KEP-589. The status carries only
what the agent knows (its clock's time, that it is online, health, usage); `state`,
`conditions`, `usedGpu` and `totalGpu` are the operator's, so the two never fight over a field.

When the Lease cannot be written for a reason that retrying will not cure (`LeaseUnwritable`:
403, because the chart's RBAC predates Leases or another node's agent created this host's Lease
first and the admission policy keeps it theirs; 404 on create, because the Lease namespace does
not exist), the agent heartbeats the way releases before Leases did, through the Host's status
every interval: the operator counts that too, so the host stays online while someone fixes it.
"""

from __future__ import annotations

import dataclasses
import datetime

from gpufleet.api import host, hostlease
from gpufleet_agent import kubeapi, machine

#: CPU or memory use must move by this share of the host's capacity to be worth a status write...
USAGE_STEP = 0.10
#: ...and usage alone is written at most this often (health and GPUs in use at once, always).
USAGE_INTERVAL_SECONDS = 60.0


def patch(
    usage: machine.Usage, *, health: host.HealthStatus, used_gpus: int | None, now: datetime.datetime
) -> kubeapi.JsonObj:
    status = host.HostStatus(
        last_heartbeat=now,
        reported_state=host.HostState.ONLINE,
        health_status=health,
        used_cpu=usage.used_cpu,
        used_memory=usage.used_memory,
        reported_used_gpu=used_gpus,
    ).to_k8s()
    status.pop("conditions", None)  # the model's default empty list; conditions are the operator's
    return {"status": status}


async def send(api: kubeapi.KubeApi, host_name: str, body: kubeapi.JsonObj) -> None:
    await api.merge_patch(f"{kubeapi.HOSTS}/{host_name}/status", body)


class LeaseUnwritable(kubeapi.ApiError):
    """The Host's Lease cannot be written, and retrying soon will not change that (module docstring)."""

    def __init__(self, error: kubeapi.ApiError) -> None:
        super().__init__(error.status, error.reason, "")
        self.args = error.args  # the API's own words, as the error said them


async def renew(api: kubeapi.KubeApi, bound: kubeapi.JsonObj, *, namespace: str, holder: str, duration: int) -> None:
    """Renew the Host's Lease; create it (owned by the Host) when it does not exist yet.

    A missing Lease may mean a missing Host (the garbage collector deletes a Host's Lease with
    it), so the Host is read first: its 404 tells the agent to bind or register again, and a
    Host created anew under the same name gets a Lease owned by the new one.
    """
    name = str(bound["metadata"]["name"])
    renewal = hostlease.renewal(holder=holder, duration_seconds=duration)
    try:
        await _patch(api, hostlease.path(namespace, name), renewal)
        return
    except kubeapi.ApiError as error:
        if not error.not_found:
            raise
    current = await api.get(f"{kubeapi.HOSTS}/{name}")
    manifest = hostlease.manifest(
        host_name=name,
        host_uid=str(current["metadata"].get("uid", "")),
        namespace=namespace,
        holder=holder,
        duration_seconds=duration,
    )
    try:
        await api.create(hostlease.path(namespace), manifest)
    except kubeapi.ApiError as error:
        if error.status in (403, 404):  # 404 on create: the namespace is missing
            raise LeaseUnwritable(error) from error
        if error.status != 409:
            raise
        await _patch(api, hostlease.path(namespace, name), renewal)  # created meanwhile: renew it


async def _patch(api: kubeapi.KubeApi, path: str, renewal: kubeapi.JsonObj) -> None:
    try:
        await api.merge_patch(path, renewal)
    except kubeapi.ApiError as error:
        if error.status == 403:
            raise LeaseUnwritable(error) from error
        raise


@dataclasses.dataclass(frozen=True)
class Report:
    """What a status write would say, with how far usage may drift before it is worth a write."""

    health: host.HealthStatus
    used_gpus: int | None
    used_cpu: float
    used_memory: int
    cpu_step: float
    memory_step: float

    @classmethod
    def of(
        cls, usage: machine.Usage, capacity: machine.Capacity, *, health: host.HealthStatus, used_gpus: int | None
    ) -> Report:
        return cls(
            health=health,
            used_gpus=used_gpus,
            used_cpu=usage.used_cpu,
            used_memory=usage.used_memory,
            cpu_step=capacity.total_cpu * USAGE_STEP,
            memory_step=capacity.total_memory * USAGE_STEP,
        )


class StatusGate:
    """Whether the Host's status is due: health or GPUs in use changed, CPU or memory use moved by
    a step from what was last written (from it, not across a fixed boundary, so a value hovering
    near one does not flap) and the last write is a minute old, or the resync interval passed.
    So a host costs at most 60 usage writes an hour, however its load swings, and ~12 when steady."""

    def __init__(self, resync_seconds: float) -> None:
        self.resync_seconds = resync_seconds
        self._written: Report | None = None
        self._written_at = float("-inf")

    def due(self, report: Report, now: float) -> bool:
        last = self._written
        if last is None or now - self._written_at >= self.resync_seconds:
            return True
        if (report.health, report.used_gpus) != (last.health, last.used_gpus):
            return True
        moved = (
            abs(report.used_cpu - last.used_cpu) >= report.cpu_step
            or abs(report.used_memory - last.used_memory) >= report.memory_step
        )
        return moved and now - self._written_at >= USAGE_INTERVAL_SECONDS

    def written(self, report: Report, now: float) -> None:
        self._written, self._written_at = report, now

    def forget(self) -> None:
        """Write at the next heartbeat (a new Host, or one whose status may have been lost)."""
        self._written, self._written_at = None, float("-inf")


def utc_now() -> datetime.datetime:
    """Now in UTC with microseconds (RFC 3339 `...Z`).

    Microseconds, not whole seconds: the operator counts a heartbeat only when its timestamp is
    newer than the last one, and heartbeats less than a second apart must still differ.
    """
    return datetime.datetime.now(datetime.UTC)
