"""The legacy REST API's bodies as pydantic models: what callers send and what they get back.

Field names are snake_case exactly as in the API document, so these models are the contract the
callers were written against. They validate request bodies (strictly: `"32"` is not a CPU count)
and they generate the OpenAPI document; responses are rendered as plain dicts by `translate` for
speed, and the tests check those dicts against these models through the served OpenAPI document.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

import pydantic

from gpufleet.api import formats, gpu, host, meta

INT64_MAX = 2**63 - 1

#: Kubernetes label rules: an optional DNS-subdomain prefix and `/`, then a 63-character name.
LABEL_NAME_PATTERN = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_PREFIX_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_PATTERN = rf"^({LABEL_PREFIX_PATTERN}/)?{LABEL_NAME_PATTERN}$"
LABEL_VALUE_PATTERN = rf"^({LABEL_NAME_PATTERN})?$"

#: Labels under this prefix belong to gpufleet (the operator's mirrors): callers neither see nor set them.
SYSTEM_LABEL_PREFIX = f"{meta.GROUP}/"
#: Most user labels a host may carry (Kubernetes itself allows far more, but they all travel in each
#: Host, watch event and list answer).
MAX_LABELS = 64

#: What no name or text field may contain: C0 and C1 control characters (NUL, ESC, DEL, ...), line and
#: paragraph separators, bidirectional overrides and isolates (they make text display as something
#: else), the byte-order mark, and lone surrogates (not encodable as UTF-8).
FORBIDDEN_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
_FORBIDDEN = re.compile(rf"[{FORBIDDEN_CHARACTERS}\ud800-\udfff]")
#: The same, as the JSON schema `pattern` of such fields (for the OpenAPI document and its fuzzing).
TEXT_PATTERN = f"^[^{FORBIDDEN_CHARACTERS}]*$"


def _check_label_key(key: str) -> str:
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > 253:
        raise ValueError("the prefix of a label key must be at most 253 characters")
    if key.startswith(SYSTEM_LABEL_PREFIX):
        raise ValueError(f"label keys under {SYSTEM_LABEL_PREFIX} are reserved for gpufleet")
    return key


def _check_text(value: str) -> str:
    found = _FORBIDDEN.search(value)
    if found is not None:
        raise ValueError(
            "must not contain control or bidirectional formatting characters "
            f"(U+{ord(found.group()):04X} at position {found.start()})"
        )
    return value


Count = Annotated[int, pydantic.Field(ge=0, le=INT64_MAX)]
Amount = Annotated[float, pydantic.Field(ge=0, allow_inf_nan=False)]
_PLAIN_TEXT = (pydantic.AfterValidator(_check_text), pydantic.Field(json_schema_extra={"pattern": TEXT_PATTERN}))
Text = Annotated[str, pydantic.StringConstraints(max_length=253), *_PLAIN_TEXT]
Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253), *_PLAIN_TEXT]
LabelKey = Annotated[
    str,
    pydantic.StringConstraints(max_length=317, pattern=LABEL_KEY_PATTERN),
    pydantic.AfterValidator(_check_label_key),
]
LabelValue = Annotated[str, pydantic.StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
Labels = Annotated[dict[LabelKey, LabelValue], pydantic.Field(max_length=MAX_LABELS)]
Timestamp = Annotated[str, pydantic.Field(examples=["2026-01-26T10:00:00Z"], description="RFC 3339, UTC")]


class _Request(pydantic.BaseModel):
    """Request bodies: strict types, unknown fields rejected, so a typo is an error and not a no-op."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)


class _Response(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


# ----- requests -------------------------------------------------------------------------------------


class RegisterHost(_Request):
    """Body of `POST /api/v1/hosts`."""

    name: Name
    """Display name, e.g. `GPU-Server-01`."""
    ip_address: Annotated[
        str,
        pydantic.AfterValidator(formats.normalised_ip),
        pydantic.Field(json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
    ]
    """IPv4 or IPv6 address; unique in the fleet (409 when another host has it)."""
    os_type: host.OSType
    """`linux` or `windows`."""
    os_version: Text = ""
    """Operating system release, e.g. `Ubuntu 20.04`."""
    deployment_mode: host.DeploymentMode = host.DeploymentMode.TRADITIONAL
    """`traditional` (legacy agent heartbeating through this API) or `kubernetes` (cluster node)."""
    total_cpu: Count
    """Number of logical CPUs."""
    total_memory: Count
    """Total memory in bytes."""
    total_disk: Count = 0
    """Total disk capacity in bytes."""
    hostname: Text | None = None
    """Network host name, e.g. `gpu01.example.com`."""
    labels: Labels = pydantic.Field(default_factory=dict)
    """User labels (Kubernetes label rules; keys under `gpufleet.io/` are reserved)."""


class UpdateHost(_Request):
    """Body of `PUT /api/v1/hosts/{host_id}`: a new name, new labels, or both."""

    name: Name | None = None
    """New display name."""
    labels: Labels | None = None
    """The host's user labels, replaced as a whole (system labels are kept)."""

    @pydantic.model_validator(mode="after")
    def _something_to_update(self) -> Self:
        if self.name is None and self.labels is None:
            raise ValueError("give at least one of name and labels")
        return self


class Heartbeat(_Request):
    """Body of `POST /api/v1/hosts/{host_id}/heartbeat`, sent by the host's agent."""

    status: host.HostState
    """`online`, or `offline` when the agent is going away on purpose."""
    health_status: host.HealthStatus
    """`healthy`, `unhealthy` or `unknown`."""
    used_cpu: Amount
    """CPUs in use."""
    used_memory: Count
    """Memory in use in bytes."""
    used_gpu: Count
    """GPUs in use (used when the host publishes no GPU resources)."""


# ----- responses ------------------------------------------------------------------------------------


class RegisteredHost(_Response):
    host_id: str
    """Generated id (`host-` and 10 lowercase alphanumerics); also the Host's name in Kubernetes."""
    name: str
    status: host.HostState
    agent_token: str
    """The token the host's agent sends as `Authorization: Bearer ...` on heartbeats. Shown once."""


class HostSummary(_Response):
    host_id: str
    name: str
    ip_address: str
    os_type: host.OSType
    status: host.HostState
    """From the operator's liveness roll-up; `offline` until it has seen a heartbeat."""
    total_cpu: int
    used_cpu: float
    total_memory: int
    used_memory: int
    total_gpu: int
    used_gpu: int
    last_heartbeat: Timestamp | None
    """When the last heartbeat was received; null before the first."""


class HostDetail(HostSummary):
    hostname: str
    """Empty when unknown."""
    os_version: str
    deployment_mode: host.DeploymentMode
    health_status: host.HealthStatus
    labels: dict[str, str]
    created_at: Timestamp


class Pagination(_Response):
    page: int
    page_size: int
    total: int
    """Hosts matching the filters, over all pages."""
    total_pages: int
    """`ceil(total / page_size)`; 0 when nothing matches."""


class HostPage(_Response):
    items: list[HostSummary]
    pagination: Pagination


class GPUItem(_Response):
    gpu_id: int
    """First 52 bits of the SHA-256 of the GPU object's uid: stable for its life, JavaScript-safe."""
    gpu_index: int
    name: str
    """Product name, e.g. `Tesla V100-SXM2-32GB`."""
    memory_total: int
    """Bytes."""
    status: gpu.GPUState
    allocated_to: str | None
    temperature: float | None
    """Degrees Celsius."""
    utilization: float | None
    """Percent, 0-100."""


class GPUList(_Response):
    items: list[GPUItem]


class _Envelope(_Response):
    code: Annotated[int, pydantic.Field(description="0 on success")]
    message: str


class RegisterResponse(_Envelope):
    data: RegisteredHost


class HostPageResponse(_Envelope):
    data: HostPage


class HostDetailResponse(_Envelope):
    data: HostDetail


class GPUListResponse(_Envelope):
    data: GPUList


class MessageResponse(_Envelope):
    """A success with nothing to return but its message."""


class FieldError(_Response):
    field: str
    """Dotted path of the offending field (`body.labels.zone`, `query.page`), or empty."""
    message: str


class ErrorDetails(_Response):
    errors: list[FieldError]


class ErrorResponse(_Response):
    """Every error: a non-zero `code` from the documented table and a human-readable `message`."""

    code: Annotated[int, pydantic.Field(ge=1)]
    message: str
    data: ErrorDetails | None = None
    """Present for validation errors: which fields were wrong and why."""
