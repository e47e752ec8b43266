"""What a Host's operator-owned status and labels should be, and the smallest patch to get there.

Pure functions of the Host as the API shows it plus what the operator knows (liveness, GPU
counts), so every rule is unit-testable. Conditions follow `metav1.Condition`: lastTransitionTime
moves only when `status` changes, and a patch is produced only when something really changed, so
heartbeats that change nothing cost no write.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from gpufleet.api import formats, host, meta

# Reasons of the Ready condition.
NEVER_HEARTBEATED = "NoHeartbeatObserved"
HEARTBEATING = "HeartbeatObserved"
HEARTBEAT_EXPIRED = "HeartbeatExpired"
REPORTED_OFFLINE = "ReportedOffline"
# Reasons of the Healthy condition.
REPORTED_HEALTHY = "AgentReportedHealthy"
REPORTED_UNHEALTHY = "AgentReportedUnhealthy"
NOT_REPORTED = "HealthNotReported"

# Event reasons, posted on the Host at each transition.
HOST_ONLINE = "HostOnline"
HOST_OFFLINE = "HostOffline"
HOST_HEALTHY = "HostHealthy"
HOST_UNHEALTHY = "HostUnhealthy"


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Host."""

    type: str
    """`Normal` or `Warning`."""
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """The writes that bring a Host to its desired state; empty when it is there already."""

    status_patch: dict[str, Any] | None = None
    labels_patch: dict[str, str] | None = None
    events: tuple[Event, ...] = ()
    new_state: str | None = None
    """The new `status.state` when it changes (for the transitions metric)."""


def condition(
    previous: Mapping[str, Any] | None, *, type_: str, status: str, reason: str, message: str, now: datetime.datetime
) -> dict[str, Any]:
    """A condition whose lastTransitionTime is kept unless `status` really changed."""
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    else:
        since = formats.rfc3339(now)
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


def _ready(status: Mapping[str, Any], *, online: bool, grace_seconds: float) -> tuple[str, str, str]:
    if online:
        return meta.ConditionStatus.TRUE, HEARTBEATING, f"heartbeats arrive within the {grace_seconds:g}s grace period"
    if status.get("reportedState") == host.HostState.OFFLINE:
        return meta.ConditionStatus.FALSE, REPORTED_OFFLINE, "the host's agent reported it is going offline"
    if not status.get("lastHeartbeat"):
        return meta.ConditionStatus.FALSE, NEVER_HEARTBEATED, "no heartbeat has been received yet"
    return meta.ConditionStatus.FALSE, HEARTBEAT_EXPIRED, f"no new heartbeat observed for {grace_seconds:g}s"


def _healthy(status: Mapping[str, Any]) -> tuple[str, str, str]:
    reported = status.get("healthStatus")
    if reported == host.HealthStatus.HEALTHY:
        return meta.ConditionStatus.TRUE, REPORTED_HEALTHY, "the host's agent reports it healthy"
    if reported == host.HealthStatus.UNHEALTHY:
        return meta.ConditionStatus.FALSE, REPORTED_UNHEALTHY, "the host's agent reports it unhealthy"
    return meta.ConditionStatus.UNKNOWN, NOT_REPORTED, "the host's agent has not reported its health"


def _events(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> list[Event]:
    events: list[Event] = []
    was, now_ = old.get(host.READY, {}).get("status"), new[host.READY]["status"]
    if now_ != was and now_ == meta.ConditionStatus.TRUE:
        events.append(Event("Normal", HOST_ONLINE, "Host is online: " + new[host.READY]["message"]))
    elif now_ != was and was == meta.ConditionStatus.TRUE:
        events.append(Event("Warning", HOST_OFFLINE, "Host is offline: " + new[host.READY]["message"]))
    was, now_ = old.get(host.HEALTHY, {}).get("status"), new[host.HEALTHY]["status"]
    if now_ != was and now_ == meta.ConditionStatus.TRUE:
        events.append(Event("Normal", HOST_HEALTHY, "Host is healthy: " + new[host.HEALTHY]["message"]))
    elif now_ != was and now_ == meta.ConditionStatus.FALSE:
        events.append(Event("Warning", HOST_UNHEALTHY, "Host is unhealthy: " + new[host.HEALTHY]["message"]))
    return events


def plan(
    body: Mapping[str, Any],
    *,
    online: bool,
    gpus: tuple[int, int] | None,
    grace_seconds: float,
    now: datetime.datetime,
) -> Plan:
    """The writes that make `body` (a Host as the API shows it) match what the operator knows.

    `gpus` is (total, allocated) over the host's GPU resources, or None when it has none, in
    which case the reported figure of a legacy agent counts as used.
    """
    status: Mapping[str, Any] = body.get("status") or {}
    old: dict[str, Mapping[str, Any]] = {
        str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, Mapping)
    }
    ready_status, ready_reason, ready_message = _ready(status, online=online, grace_seconds=grace_seconds)
    healthy_status, healthy_reason, healthy_message = _healthy(status)
    conditions = {
        host.READY: condition(
            old.get(host.READY),
            type_=host.READY,
            status=ready_status,
            reason=ready_reason,
            message=ready_message,
            now=now,
        ),
        host.HEALTHY: condition(
            old.get(host.HEALTHY),
            type_=host.HEALTHY,
            status=healthy_status,
            reason=healthy_reason,
            message=healthy_message,
            now=now,
        ),
    }
    total, used = gpus if gpus is not None else (0, int(status.get("reportedUsedGpu") or 0))
    state = host.HostState.ONLINE.value if online else host.HostState.OFFLINE.value
    desired: dict[str, Any] = {
        "state": state,
        "conditions": [conditions[host.READY], conditions[host.HEALTHY]],
        "totalGpu": total,
        "usedGpu": used,
        "gpus": f"{used}/{total}",
    }
    generation = (body.get("metadata") or {}).get("generation")
    if generation is not None:
        desired["observedGeneration"] = generation
    status_patch = {key: value for key, value in desired.items() if status.get(key) != value}
    if "conditions" in status_patch and _same_conditions(status.get("conditions") or [], desired["conditions"]):
        del status_patch["conditions"]

    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    wanted_labels = {meta.STATUS_LABEL: state}
    os_type = (body.get("spec") or {}).get("osType")
    if os_type:
        wanted_labels[meta.OS_TYPE_LABEL] = str(os_type)
    labels_patch = {key: value for key, value in wanted_labels.items() if labels.get(key) != value}

    return Plan(
        status_patch=status_patch or None,
        labels_patch=labels_patch or None,
        events=tuple(_events(old, conditions)),
        new_state=state if status.get("state") != state else None,
    )


def _same_conditions(current: list[Any], desired: list[dict[str, Any]]) -> bool:
    """Equal as a map keyed by type, ignoring order and fields the operator does not set."""
    keys = ("status", "reason", "message", "lastTransitionTime")
    have = {c.get("type"): tuple(c.get(k) for k in keys) for c in current if isinstance(c, Mapping)}
    want = {c["type"]: tuple(c[k] for k in keys) for c in desired}
    return have == want
