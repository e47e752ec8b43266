"""Between the legacy REST shapes and the Kubernetes objects: pure functions, no I/O.

The REST API predates the CRDs, so its names differ (`name` is `spec.displayName`, `status` is
the operator's `status.state`, `gpu_id` is an integer while Kubernetes identifies objects by
strings). Fields a Host does not have yet read as their documented defaults: `offline`,
`unknown`, zero usage, a null `last_heartbeat`. A host's heartbeats live partly outside the Host
(its Lease's `renewTime`), which the caller passes in.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gpufleet import tokens
from gpufleet.api import formats, gpu, host, meta
from gpufleet.facade import schemas

Obj = dict[str, Any]


def gpu_id(uid: str) -> int:
    """The legacy integer id of a GPU: the first 52 bits of SHA-256(uid), exact in JavaScript numbers."""
    return int.from_bytes(hashlib.sha256(uid.encode("utf-8")).digest()[:7], "big") >> 4


def user_labels(labels: dict[str, str] | None) -> dict[str, str]:
    return {key: value for key, value in (labels or {}).items() if not key.startswith(schemas.SYSTEM_LABEL_PREFIX)}


def rfc3339(value: str | None) -> str | None:
    """A Kubernetes timestamp as the document writes them: UTC, seconds, `Z` (as is when malformed)."""
    if not value:
        return None
    parsed = formats.parse_time(value)
    return formats.rfc3339(parsed) if parsed is not None else value


def last_heartbeat(obj: Obj, renew_time: str | None) -> str | None:
    """The host's last heartbeat: the later of its Lease's `renewTime` (every heartbeat renews it) and its
    `status.lastHeartbeat` (written only when the status changes, and by agents that know no Lease).

    Compared as moments, written as the document writes timestamps; a value that does not parse
    is shown as it is (as `rfc3339` does) unless the other one parses.
    """
    stored = (obj.get("status") or {}).get("lastHeartbeat")
    if renew_time is None:
        return rfc3339(stored)
    renewed = formats.parse_time(renew_time)
    beat = formats.parse_time(stored)
    if renewed is None:
        return rfc3339(stored) or renew_time
    return formats.rfc3339(renewed if beat is None or renewed > beat else beat)


def _number(value: Any) -> int | float:
    """Integral amounts as integers (`8`, not `8.0`), as the document shows them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def state(obj: Obj) -> str:
    return str((obj.get("status") or {}).get("state") or host.HostState.OFFLINE.value)


def os_type(obj: Obj) -> str:
    return str((obj.get("spec") or {}).get("osType") or "")


def host_summary(obj: Obj, renew_time: str | None = None) -> Obj:
    """A list item: `GET /api/v1/hosts` (`renew_time`: the host's Lease's, if it has one)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "host_id": obj["metadata"]["name"],
        "name": spec.get("displayName", ""),
        "ip_address": spec.get("ipAddress", ""),
        "os_type": spec.get("osType", ""),
        "status": state(obj),
        "total_cpu": _number(spec.get("totalCpu")),
        "used_cpu": _number(status.get("usedCpu")),
        "total_memory": _number(spec.get("totalMemory")),
        "used_memory": _number(status.get("usedMemory")),
        "total_gpu": _number(status.get("totalGpu")),
        "used_gpu": _number(status.get("usedGpu")),
        "last_heartbeat": last_heartbeat(obj, renew_time),
    }


def host_detail(obj: Obj, renew_time: str | None = None) -> Obj:
    """The detail: `GET /api/v1/hosts/{host_id}`."""
    spec, status, metadata = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    return {
        **host_summary(obj, renew_time),
        "hostname": spec.get("hostname") or "",
        "os_version": spec.get("osVersion", ""),
        "deployment_mode": spec.get("deploymentMode") or host.DeploymentMode.TRADITIONAL.value,
        "health_status": status.get("healthStatus") or host.HealthStatus.UNKNOWN.value,
        "labels": user_labels(metadata.get("labels")),
        "created_at": rfc3339(metadata.get("creationTimestamp")) or "",
    }


def gpu_item(obj: Obj) -> Obj:
    """One GPU: `GET /api/v1/hosts/{host_id}/gpus`."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "gpu_id": gpu_id(obj["metadata"].get("uid") or obj["metadata"]["name"]),
        "gpu_index": _number(spec.get("index")),
        "name": spec.get("modelName", ""),
        "memory_total": _number(spec.get("memoryTotal")),
        "status": status.get("state") or gpu.GPUState.UNKNOWN.value,
        "allocated_to": status.get("allocatedTo"),
        "temperature": status.get("temperatureCelsius"),
        "utilization": status.get("utilizationPercent"),
    }


def host_spec(body: schemas.RegisterHost) -> host.HostSpec:
    """The Host spec a registration asks for (raises pydantic.ValidationError, e.g. for a bad IP)."""
    return host.HostSpec(
        display_name=body.name,
        hostname=body.hostname,
        ip_address=body.ip_address,
        os_type=body.os_type,
        os_version=body.os_version,
        deployment_mode=body.deployment_mode,
        total_cpu=body.total_cpu,
        total_memory=body.total_memory,
        total_disk=body.total_disk,
    )


def host_manifest(name: str, spec: host.HostSpec, labels: dict[str, str], token_digest: bytes) -> Obj:
    """The Host a REST registration creates, carrying the digest of the agent token it returns."""
    metadata: Obj = {"name": name, "annotations": {tokens.DIGEST_ANNOTATION: token_digest.hex()}}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": meta.API_VERSION, "kind": host.KIND, "metadata": metadata, "spec": spec.to_k8s()}


def update_patch(current: Obj, body: schemas.UpdateHost) -> Obj:
    """A merge patch setting the name and replacing the user labels (system labels kept)."""
    patch: Obj = {}
    if body.name is not None:
        patch["spec"] = {"displayName": body.name}
    if body.labels is not None:
        old = current["metadata"].get("labels") or {}
        removed: dict[str, str | None] = {key: None for key in user_labels(old) if key not in body.labels}
        patch["metadata"] = {"labels": {**removed, **body.labels}}
    return patch


def heartbeat_patch(body: schemas.Heartbeat, received_at: str) -> Obj:
    """The status merge patch of a heartbeat, stamped with the receiving server's clock."""
    return {
        "status": {
            "lastHeartbeat": received_at,
            "reportedState": body.status.value,
            "healthStatus": body.health_status.value,
            "usedCpu": body.used_cpu,
            "usedMemory": body.used_memory,
            "reportedUsedGpu": body.used_gpu,
        }
    }
