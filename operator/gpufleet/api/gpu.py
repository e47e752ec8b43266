"""The GPU resource: one device of one Host, kept by the node agent from NVML.

GPUs are cluster-scoped like Hosts, named `<host>-gpu<index>`, labelled with their host and
owned by it (an ownerReference), so deleting a Host garbage-collects its GPUs.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated

import pydantic

from gpufleet.api import meta

KIND = "GPU"
PLURAL = "gpus"
SINGULAR = "gpu"
SHORT_NAMES = ["gg"]

#: The condition the agent keeps on every GPU.
HEALTHY = "Healthy"


def object_name(host_name: str, index: int) -> str:
    """The stable name of a host's GPU: the same device index always maps to the same object."""
    return f"{host_name}-gpu{index}"


class GPUState(enum.StrEnum):
    """Whether a GPU can be handed out."""

    FREE = "free"
    ALLOCATED = "allocated"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class GPUSpec(meta.ApiModel):
    """Identity of a GPU device, as discovered through NVML."""

    # CEL rules the API server enforces beyond the schema: a GPU object stays one device slot of one host.
    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.hostName == oldSelf.hostName",
                    "message": "spec.hostName is immutable",
                    "fieldPath": ".hostName",
                },
                {"rule": "self.index == oldSelf.index", "message": "spec.index is immutable", "fieldPath": ".index"},
            ]
        }
    )

    host_name: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)]
    """Name of the Host this GPU is installed in."""
    index: meta.NonNegativeInt
    """NVML device index on the host."""
    uuid: Annotated[str, pydantic.StringConstraints(max_length=128)] = ""
    """NVML device UUID, e.g. `GPU-5f2e…`; stable across reboots."""
    model_name: Annotated[str, pydantic.StringConstraints(max_length=253)] = ""
    """Product name, e.g. `Tesla V100-SXM2-32GB`."""
    memory_total: meta.NonNegativeInt = 0
    """Total framebuffer memory in bytes."""


class GPUStatus(meta.ApiModel):
    """Live readings of a GPU and who holds it."""

    state: GPUState | None = None
    """`free`, `allocated`, `unhealthy` or `unknown`."""
    allocated_to: Annotated[str, pydantic.StringConstraints(max_length=512)] | None = None
    """Holder of the GPU: `namespace/pod` for Kubernetes pods, or a caller-defined id."""
    temperature_celsius: float | None = None
    """Core temperature in degrees Celsius."""
    utilization_percent: Annotated[float, pydantic.Field(ge=0, le=100)] | None = None
    """GPU utilisation over the last sample period, 0-100."""
    memory_used: meta.NonNegativeInt | None = None
    """Framebuffer memory in use in bytes."""
    power_watts: meta.NonNegativeFloat | None = None
    """Power draw in watts."""
    last_update_time: datetime.datetime | None = None
    """When the agent last wrote this status (RFC 3339)."""
    conditions: Annotated[
        list[meta.Condition],
        pydantic.Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    ] = pydantic.Field(default_factory=list)
    """`Healthy`: False with a reason naming the signal: `XidCritical`, `DoubleBitEcc`, `RowRemapPending`,
    `RowRemapFailure`, `RetiredPagesPending`, `ThermalThrottling`, `HardwareSlowdown`, `NVLinkErrors`,
    `PCIeReplays`, `GpuLost` or `NvmlError` (docs/agent.md, "Health rules")."""
    observed_generation: meta.NonNegativeInt | None = None
    """The `metadata.generation` the agent last acted on."""


PRINTER_COLUMNS: list[dict[str, object]] = [
    {"name": "Host", "type": "string", "jsonPath": ".spec.hostName"},
    {"name": "Index", "type": "integer", "jsonPath": ".spec.index"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.modelName"},
    {"name": "Memory", "type": "integer", "jsonPath": ".spec.memoryTotal", "description": "bytes"},
    {"name": "Status", "type": "string", "jsonPath": ".status.state"},
    {"name": "Allocated-To", "type": "string", "jsonPath": ".status.allocatedTo"},
    {"name": "Temp", "type": "number", "jsonPath": ".status.temperatureCelsius", "description": "°C"},
    {"name": "Util", "type": "number", "jsonPath": ".status.utilizationPercent", "description": "%"},
    {"name": "UUID", "type": "string", "jsonPath": ".spec.uuid", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
