"""The Host resource: one machine of the fleet, registered by kubectl, the REST facade or its agent.

The spec holds what a registration says about the machine (it maps every field of the legacy
REST registration body); the status holds what its agent reports in heartbeats and what the
operator derives from them. Labels are plain `metadata.labels`, so label selectors work.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated

import pydantic

from gpufleet.api import formats, meta

KIND = "Host"
PLURAL = "hosts"
SINGULAR = "host"
SHORT_NAMES = ["gh"]

#: The conditions the operator keeps on every Host.
READY = "Ready"
HEALTHY = "Healthy"


IPAddress = Annotated[
    str,
    pydantic.AfterValidator(formats.normalised_ip),
    # A structural CRD schema cannot say "either format" with a type inside anyOf; formats alone may be.
    pydantic.WithJsonSchema({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
]


class OSType(enum.StrEnum):
    """Operating system family of a host."""

    LINUX = "linux"
    WINDOWS = "windows"


class DeploymentMode(enum.StrEnum):
    """How a host is managed.

    `traditional`: a machine outside the cluster whose legacy agent heartbeats through the REST facade.
    `kubernetes`: a cluster node whose gpufleet DaemonSet agent reports straight to the Kubernetes API.
    """

    TRADITIONAL = "traditional"
    KUBERNETES = "kubernetes"


class HostState(enum.StrEnum):
    """Liveness of a host: `online` while heartbeats arrive within the grace period, else `offline`."""

    ONLINE = "online"
    OFFLINE = "offline"


class HealthStatus(enum.StrEnum):
    """Health as reported by the host's agent; `unknown` until it has reported."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


#: CEL rules on the whole Host. Its name becomes the `gpufleet.io/host` label value of its GPUs
#: and token Secret, and label values stop at 63 characters: a longer name would register a Host
#: whose GPUs nobody could create or select.
OBJECT_RULES = [
    {
        "rule": "self.metadata.name.size() <= 63",
        "message": "a Host's name is at most 63 characters: it is the gpufleet.io/host label value of its GPUs",
    }
]


class HostSpec(meta.ApiModel):
    """What a host is: identity, operating system and capacity, as registered."""

    # CEL rules the API server enforces beyond the schema (a transition rule: on updates only).
    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(oldSelf.nodeName) || (has(self.nodeName) && self.nodeName == oldSelf.nodeName)",
                    "message": "spec.nodeName is immutable once set",
                    "fieldPath": ".nodeName",
                }
            ]
        }
    )

    display_name: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)]
    """Human-readable name of the host (the legacy API's `name`), e.g. `GPU-Server-01`."""
    hostname: Annotated[str, pydantic.StringConstraints(max_length=253)] | None = None
    """Network host name, e.g. `gpu01.example.com`."""
    ip_address: IPAddress
    """IPv4 or IPv6 address of the host; unique in the fleet."""
    os_type: OSType
    """Operating system family: `linux` or `windows`."""
    os_version: Annotated[str, pydantic.StringConstraints(max_length=253)] = ""
    """Operating system release, e.g. `Ubuntu 20.04`."""
    deployment_mode: DeploymentMode = DeploymentMode.TRADITIONAL
    """`traditional` (legacy agent through the REST facade) or `kubernetes` (DaemonSet agent on a node)."""
    node_name: Annotated[str, pydantic.StringConstraints(max_length=253)] | None = None
    """Name of the Kubernetes Node this host is, for `kubernetes` hosts whose Host name differs from it."""
    total_cpu: meta.NonNegativeInt
    """Number of logical CPUs."""
    total_memory: meta.NonNegativeInt
    """Total memory in bytes."""
    total_disk: meta.NonNegativeInt = 0
    """Total disk capacity in bytes."""


class HostStatus(meta.ApiModel):
    """What the host's agent last reported and what the operator derives from it."""

    state: HostState | None = None
    """`online` while heartbeats arrive within the grace period, else `offline`; set by the operator."""
    reported_state: HostState | None = None
    """The state the agent reported in its last heartbeat; `offline` means it is going away on purpose."""
    health_status: HealthStatus | None = None
    """Health the agent reported in its last heartbeat; `unknown` until the first one."""
    used_cpu: meta.NonNegativeFloat | None = None
    """CPUs in use, as last reported."""
    used_memory: meta.NonNegativeInt | None = None
    """Memory in use in bytes, as last reported."""
    reported_used_gpu: meta.NonNegativeInt | None = None
    """GPUs in use according to the last heartbeat (legacy agents that do not publish GPU resources)."""
    used_gpu: meta.NonNegativeInt | None = None
    """GPUs in use: allocated GPU resources of this host, or the reported figure when it has none."""
    total_gpu: meta.NonNegativeInt | None = None
    """Number of GPU resources that belong to this host."""
    gpus: Annotated[str, pydantic.StringConstraints(max_length=32)] | None = None
    """`used/total` GPUs, for `kubectl get hosts`."""
    last_heartbeat: datetime.datetime | None = None
    """When the last heartbeat was received (RFC 3339, written by the receiving side's clock)."""
    conditions: Annotated[
        list[meta.Condition],
        pydantic.Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    ] = pydantic.Field(default_factory=list)
    """`Ready` (heartbeats arrive within the grace period) and `Healthy` (the agent reports healthy)."""
    observed_generation: meta.NonNegativeInt | None = None
    """The `metadata.generation` the operator last acted on."""


PRINTER_COLUMNS: list[dict[str, object]] = [
    {"name": "Status", "type": "string", "jsonPath": ".status.state"},
    {"name": "Health", "type": "string", "jsonPath": ".status.healthStatus"},
    {"name": "IP", "type": "string", "jsonPath": ".spec.ipAddress"},
    {"name": "CPU", "type": "integer", "jsonPath": ".spec.totalCpu"},
    {"name": "Memory", "type": "integer", "jsonPath": ".spec.totalMemory", "description": "bytes"},
    {"name": "GPUs", "type": "string", "jsonPath": ".status.gpus", "description": "used/total"},
    # Not "Last Heartbeat": heartbeats renew the host's Lease, and the status is written only when
    # it changes or every 5 minutes, so a heartbeat column here would lag by minutes and lie.
    {
        "name": "Reported",
        "type": "date",
        "jsonPath": ".status.lastHeartbeat",
        "description": "when the host last reported its status (at least every 5 minutes); heartbeats renew its Lease",
    },
    {"name": "Display Name", "type": "string", "jsonPath": ".spec.displayName", "priority": 1},
    {"name": "OS", "type": "string", "jsonPath": ".spec.osType", "priority": 1},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.deploymentMode", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
