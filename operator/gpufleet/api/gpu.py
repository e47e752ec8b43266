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


class MigMode(enum.StrEnum):
    """Whether a GPU is split into MIG (Multi-Instance GPU) instances."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class MigPlacement(meta.ApiModel):
    """Where a GPU instance sits on the GPU, in memory slices (`nvidia-smi mig -lgi`'s placement)."""

    start: meta.NonNegativeInt
    """First slice."""
    size: meta.NonNegativeInt
    """Slices it spans."""


class MigInstance(meta.ApiModel):
    """One MIG device: a compute instance in a GPU instance, what a workload is handed (`MIG-...`)."""

    uuid: Annotated[str, pydantic.StringConstraints(max_length=128)]
    """The MIG device's UUID, `MIG-...`."""
    profile: Annotated[str, pydantic.StringConstraints(max_length=64)] = ""
    """GPU instance profile name, e.g. `1g.10gb` or `3g.40gb` (empty when NVML would not tell)."""
    profile_id: meta.NonNegativeInt | None = None
    """NVML's GPU instance profile id (`nvidia-smi mig -lgip`'s ID)."""
    gpu_instance_id: meta.NonNegativeInt
    """GPU instance id (`nvidia-smi`'s GI ID)."""
    compute_instance_id: meta.NonNegativeInt
    """Compute instance id within the GPU instance (CI ID)."""
    placement: MigPlacement | None = None
    """Memory slices the GPU instance occupies."""
    slice_count: meta.NonNegativeInt | None = None
    """Compute slices of the GPU instance profile (the `1` of `1g.10gb`)."""
    memory_total: meta.NonNegativeInt = 0
    """Memory of the instance in bytes."""
    multiprocessor_count: meta.NonNegativeInt | None = None
    """Streaming multiprocessors (SMs) of the GPU instance profile."""


class GPUMig(meta.ApiModel):
    """MIG mode and the MIG devices of a GPU that supports MIG (absent on a GPU that does not)."""

    mode: MigMode
    """The mode in effect now."""
    pending_mode: MigMode
    """The mode the GPU is set to; it differs from `mode` until the GPU is reset (or the node rebooted)."""
    instances: Annotated[
        list[MigInstance],
        pydantic.Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
    ] = pydantic.Field(default_factory=list)
    """The MIG devices, by GPU instance id then compute instance id; empty while MIG is disabled."""


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
    `RowRemapFailure`, `RetiredPagesPending`, `NVLinkDown`, `ThermalThrottling`, `HardwareSlowdown`,
    `NVLinkErrors`, `PCIeReplays`, `GpuLost` or `NvmlError` (docs/agent.md, "Health rules")."""
    observed_generation: meta.NonNegativeInt | None = None
    """The `metadata.generation` the agent last acted on."""
    mig: GPUMig | None = None
    """MIG mode and instances, read at every device discovery (60 s); absent on a GPU without MIG support."""


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
    {"name": "MIG", "type": "string", "jsonPath": ".status.mig.mode", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
