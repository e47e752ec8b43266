"""The Host heartbeat: a small merge patch on the Host's `/status`, at a fixed interval.

It carries only what the agent knows (its clock's time, that it is online, health, usage);
`state`, `conditions`, `usedGpu` and `totalGpu` are the operator's to derive, so the agent never
writes them and the two never fight over a field. The interval is fixed, not change-driven:
the heartbeat is how the operator tells a live node from a dead one.
"""

from __future__ import annotations

import datetime

from gpufleet.api import host
from gpufleet_agent import kubeapi, machine


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


def utc_now() -> datetime.datetime:
    """Now in UTC with microseconds (RFC 3339 `...Z`).

    Microseconds, not whole seconds: the operator counts a heartbeat only when its timestamp is
    newer than the last one, and heartbeats less than a second apart must still differ.
    """
    return datetime.datetime.now(datetime.UTC)
