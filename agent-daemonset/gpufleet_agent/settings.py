"""Agent settings: one validated object from `GPUFLEET_AGENT_*` variables and the downward API's `NODE_NAME`.

The DaemonSet sets these from Helm values; the command line (`--node-name`, `--register`,
`--simulate`) overrides them. Validation happens at start-up so that a typo (a negative
interval, a resync shorter than the sample interval) fails the pod at once, with a message,
instead of making the agent hammer the API server or go silent.
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Literal, Self

import pydantic
import pydantic_settings

PositiveSeconds = Annotated[float, pydantic.Field(gt=0)]
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]
Port = Annotated[int, pydantic.Field(ge=0, le=65535)]

#: Where kubelet serves the PodResources API (mounted read-only into the agent's pod).
DEFAULT_PODRESOURCES_SOCKET = pathlib.Path("/var/lib/kubelet/pod-resources/kubelet.sock")


class AgentSettings(pydantic_settings.BaseSettings):
    """Every knob of the node agent, read from `GPUFLEET_AGENT_<NAME>` (and `NODE_NAME`)."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="GPUFLEET_AGENT_", use_attribute_docstrings=True, extra="ignore", populate_by_name=True
    )

    node_name: Annotated[
        str,
        pydantic.StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
    ] = pydantic.Field(validation_alias=pydantic.AliasChoices("NODE_NAME", "GPUFLEET_AGENT_NODE_NAME"))
    """Kubernetes node the agent runs on, from the downward API (`spec.nodeName`)."""
    host_ip: pydantic.IPvAnyAddress | None = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("HOST_IP", "GPUFLEET_AGENT_HOST_IP", "host_ip")
    )
    """The node's address for a Host the agent registers, from the downward API (`status.hostIP`);
    without it, the address of the default route."""
    register_node: bool = pydantic.Field(
        default=False, validation_alias=pydantic.AliasChoices("GPUFLEET_AGENT_REGISTER", "register_node")
    )
    """Create a Host for this node when none exists (else wait for one to be created)."""
    simulate: Annotated[int, pydantic.Field(ge=0, le=64)] | None = None
    """Use this many simulated GPUs instead of NVML (to try the system without a GPU)."""
    simulate_load: Literal["wave", "idle", "steady", "busy", "noisy"] = "wave"
    """How simulated GPUs' readings move: a half-hour swing (`wave`), `idle`, long jobs at constant
    levels (`steady`), a noisy training job (`busy`), or jobs starting and stopping every few minutes (`noisy`)."""
    sample_interval_seconds: PositiveSeconds = 5.0
    """How often GPUs are sampled through NVML."""
    resync_interval_seconds: PositiveSeconds = 600.0
    """A GPU's status is written at least this often even when nothing changed beyond a threshold
    (the most a stored reading can age); the first resync after start-up comes at a random point of it."""
    min_write_interval_seconds: NonNegativeFloat = 240.0
    """Gauge changes are written at most once per this interval per GPU on average, after a burst of
    `gauge_write_burst` (0: no limit); health, state and holder are written at once, never limited."""
    gauge_write_burst: Annotated[int, pydantic.Field(ge=1)] = 3
    """Gauge changes a GPU may write in a row before `min_write_interval_seconds` applies."""
    heartbeat_interval_seconds: PositiveSeconds = 10.0
    """How often the host's heartbeat Lease is renewed; keep it well inside the operator's grace period."""
    host_lease_namespace: str = "gpufleet-host-leases"
    """Namespace of the hosts' heartbeat Leases (the operator's `GPUFLEET_HOST_LEASE_NAMESPACE`)."""
    lease_duration_seconds: Annotated[int, pydantic.Field(ge=1)] = 40
    """`spec.leaseDurationSeconds` written on the Lease, for people and tools reading it (kubelet: 40);
    the operator judges by its own grace period."""
    status_resync_seconds: PositiveSeconds = 300.0
    """The Host's status is written when what it reports changes (state, health, GPUs in use, CPU or
    memory use by a tenth of the host's capacity), and at least this often (a Node's: 5 minutes)."""
    discovery_interval_seconds: PositiveSeconds = 60.0
    """How often the device list is re-read, so GPUs that appear or disappear are noticed."""
    nvml_call_timeout_seconds: PositiveSeconds = 5.0
    """An NVML sampling pass not done within this is taken as a hung driver: GPU health turns `unknown`."""
    unready_after_hung_samples: Annotated[int, pydantic.Field(ge=1)] = 3
    """Readiness (`/readyz`) fails after this many samples in a row found NVML hung, until it answers again."""
    temperature_threshold_celsius: NonNegativeFloat = 5.0
    """Temperature change that makes a status write worth it (held for two samples, or twice as large at once)."""
    utilization_threshold_percent: NonNegativeFloat = 20.0
    """Utilisation change, in percentage points, that makes a status write worth it (same rule)."""
    memory_threshold_percent: NonNegativeFloat = 5.0
    """Memory-used change, in percent of the GPU's total memory, that makes a status write worth it (same rule)."""
    power_threshold_watts: NonNegativeFloat = 50.0
    """Power-draw change that makes a status write worth it (same rule)."""
    unhealthy_hold_seconds: NonNegativeFloat = 60.0
    """A GPU stays unhealthy this long after its last critical XID or double-bit ECC error, then recovers."""
    ignored_xids: list[Annotated[int, pydantic.Field(ge=0)]] = pydantic.Field(default_factory=list)
    """XIDs to treat as application errors on top of 13, 31, 43, 45, 68 and 109 (JSON list, e.g. `[94]`)."""
    slowdown_sustained_seconds: NonNegativeFloat = 60.0
    """A thermal or hardware clock slowdown makes a GPU unhealthy once seen on at least half the samples
    of this long (one sample of it is normal: a P-state change, a power spike); 0: at the first sample."""
    slowdown_hold_seconds: NonNegativeFloat = 300.0
    """A GPU stays unhealthy this long after its thermal or hardware slowdown ended, so that a GPU that
    cooled down idle is not handed a job that heats it up again at once."""
    nvlink_crc_errors_per_second: NonNegativeFloat = 100.0
    """NVLink CRC (FLIT, data) or replay errors per second on one link, averaged over the last minute,
    above which a GPU is unhealthy (DCGM's limit: CRC errors matter from 100 a second)."""
    nvlink_recovery_errors_per_minute: NonNegativeFloat = 0.0
    """NVLink recovery errors (the link went down and retrained) on one link in the last minute above
    which a GPU is unhealthy (0, as DCGM: any)."""
    pcie_replays_per_minute: NonNegativeFloat = 8.0
    """PCIe replays in the last minute above which a GPU is unhealthy (DCGM's limit: 8 a minute)."""
    link_error_hold_seconds: NonNegativeFloat = 300.0
    """A GPU stays unhealthy this long after the last minute its NVLink or PCIe errors were over their limit."""
    backoff_initial_seconds: PositiveSeconds = 0.5
    """First retry delay after an API error; doubles per failure, with jitter."""
    backoff_max_seconds: PositiveSeconds = 30.0
    """Longest retry delay after repeated API errors."""
    host_search_max_interval_seconds: PositiveSeconds = 300.0
    """While no Host describes the node, the fleet-wide search for one by `spec.nodeName` backs off up to this."""
    podresources_socket: pathlib.Path = DEFAULT_PODRESOURCES_SOCKET
    """Kubelet PodResources socket; allocation is read from it when it exists and grpcio is installed."""
    gpu_resource_names: list[str] = pydantic.Field(default_factory=lambda: ["nvidia.com/gpu"])
    """Extended resource names whose devices are this node's GPUs, as seen in PodResources."""
    metrics_port: Port = 9402
    """Port of the agent's Prometheus `/metrics` (0 disables it); 9400 is DCGM exporter's."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    """Address the metrics endpoint listens on."""
    log_level: str = "INFO"
    """Python log level name."""
    log_format: str = pydantic.Field(default="json", pattern=r"^(json|text)$")
    """`json` for log collectors, `text` for people."""

    @pydantic.model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.resync_interval_seconds < self.sample_interval_seconds:
            raise ValueError("GPUFLEET_AGENT_RESYNC_INTERVAL_SECONDS must not be shorter than the sample interval")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError(
                "GPUFLEET_AGENT_BACKOFF_INITIAL_SECONDS must not exceed GPUFLEET_AGENT_BACKOFF_MAX_SECONDS"
            )
        return self
