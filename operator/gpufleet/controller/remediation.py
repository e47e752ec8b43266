"""Node remediation (opt-in): keep new pods off a Kubernetes Node whose GPUs are unhealthy.

When a Host bound to a Node (`spec.nodeName`) reports itself unhealthy, or one of its GPUs is
unhealthy, the Node gets the taint `gpufleet.io/gpu-unhealthy:NoSchedule` and the condition
`GPUFleetHealthy=False` (reason and message name what is wrong); on recovery both go. Running
pods are left alone (NoSchedule, not NoExecute): evicting a training job is a person's call.

Two brakes, as the node lifecycle controller has for a full disruption: new taints are rate
limited fleet-wide, and a circuit breaker adds none while more than a set share of the
node-bound hosts is unhealthy at once, since a fault that wide (a bad driver rollout, a cooling
failure) is not fixed by draining the fleet, and the taints would only stop all work. Removals
are never held back.

Taints and conditions are lists that the API would replace whole under a merge patch, and
kubelet owns the other conditions, so both are written as JSON patches guarded by the Node's
resourceVersion: a concurrent writer makes ours fail (409/422) and the host is tried again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from gpufleet.api import formats, gpu, host

TAINT_KEY = "gpufleet.io/gpu-unhealthy"
TAINT = {"key": TAINT_KEY, "effect": "NoSchedule"}
CONDITION = "GPUFleetHealthy"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Why a node should be tainted (None: it should not)."""

    reason: str | None
    message: str = ""


def judge(host_view: Mapping[str, Any], gpus: Iterable[Mapping[str, Any]]) -> Verdict:
    """Whether the host's node should be kept free of new pods, and why."""
    unhealthy = sorted(str(g["metadata"]["name"]) for g in gpus if g.get("state") == gpu.GPUState.UNHEALTHY)
    if unhealthy:
        return Verdict("GPUUnhealthy", f"unhealthy GPUs: {', '.join(unhealthy)}")
    if (host_view.get("status") or {}).get("healthStatus") == host.HealthStatus.UNHEALTHY:
        return Verdict("HostUnhealthy", "the host's agent reports it unhealthy")
    return Verdict(None)


def node_patches(node: Mapping[str, Any], verdict: Verdict) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON patches bringing the Node's taints (spec) and condition (status) to the verdict;
    empty lists when it already is. Each starts with a test of the resourceVersion read."""
    version = {"op": "test", "path": "/metadata/resourceVersion", "value": node["metadata"]["resourceVersion"]}
    spec_now = dict(node.get("spec") or {})
    taints = list(spec_now.get("taints") or [])
    has_taint = any(t.get("key") == TAINT_KEY for t in taints)
    spec: list[dict[str, Any]] = []
    if (verdict.reason is not None) != has_taint:
        wanted = [*taints, TAINT] if verdict.reason is not None else [t for t in taints if t.get("key") != TAINT_KEY]
        spec = [version, _set(node, "spec", {**spec_now, "taints": wanted}, "taints", wanted)]

    status_now = dict(node.get("status") or {})
    conditions = list(status_now.get("conditions") or [])
    current = next((c for c in conditions if c.get("type") == CONDITION), None)
    others = [c for c in conditions if c.get("type") != CONDITION]
    status: list[dict[str, Any]] = []
    if verdict.reason is not None:
        if current is None or (current.get("reason"), current.get("message")) != (verdict.reason, verdict.message):
            now = formats.rfc3339(formats.now())
            since = current.get("lastTransitionTime", now) if current and current.get("status") == "False" else now
            condition = {
                "type": CONDITION,
                "status": "False",
                "reason": verdict.reason,
                "message": verdict.message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }
            updated = [*others, condition]
            status = [version, _set(node, "status", {**status_now, "conditions": updated}, "conditions", updated)]
    elif current is not None:
        status = [version, _set(node, "status", {**status_now, "conditions": others}, "conditions", others)]
    return spec, status


def _set(node: Mapping[str, Any], parent: str, whole: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """One JSON-patch operation setting `parent.field`, creating `parent` when the Node has none."""
    if parent not in node:
        return {"op": "add", "path": f"/{parent}", "value": whole}
    return {"op": "add", "path": f"/{parent}/{field}", "value": value}  # add replaces an existing member
