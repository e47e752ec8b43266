"""Operator and facade settings: one validated object read from `GPUFLEET_*` environment variables.

The Helm chart sets these variables from its values (charts/gpufleet/values.yaml mirrors every
field here). Validation happens once, at start-up, so a typo fails fast with a clear message
instead of surfacing as odd behaviour hours later.
"""

from __future__ import annotations

import enum
import pathlib
from typing import Annotated, Self

import pydantic
import pydantic_settings


class AuthMode(enum.StrEnum):
    """How the REST facade authenticates admin and viewer callers."""

    KUBERNETES = "kubernetes"
    """Bearer tokens are Kubernetes tokens: TokenReview authenticates, SubjectAccessReview authorises."""
    STATIC = "static"
    """Bearer tokens are looked up in a mounted file of `token,role` lines (role: admin or viewer)."""


class LogFormat(enum.StrEnum):
    """Shape of log lines."""

    JSON = "json"
    TEXT = "text"


PositiveSeconds = Annotated[float, pydantic.Field(gt=0)]
#: The audience of the API server's own tokens where its service-account issuer is the usual one
#: (kubeadm, kind, k3s and most distributions): what `kubectl create token` makes by default.
API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
Port = Annotated[int, pydantic.Field(ge=0, le=65535)]


class Settings(pydantic_settings.BaseSettings):
    """Every knob of the operator and the facade, read from `GPUFLEET_<NAME>`."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="GPUFLEET_", use_attribute_docstrings=True, extra="ignore"
    )

    namespace: str = "gpufleet"
    """Namespace of the operator and the facade: agent-token Secrets and the leader-election Lease."""
    grace_period_seconds: PositiveSeconds = 50.0
    """A host is offline when no newer heartbeat was observed for this long (Kubernetes' node-monitor grace)."""
    heartbeat_interval_seconds: PositiveSeconds = 10.0
    """Interval at which agents heartbeat; only used to warn when the grace period is under 4x it."""
    host_lease_namespace: str = "gpufleet-host-leases"
    """Namespace of the hosts' heartbeat Leases (one per Host, named like it), as `kube-node-lease` is for Nodes."""
    status_resync_seconds: PositiveSeconds = 300.0
    """A REST heartbeat rewrites the Host's status only when what it reports changed, or this long after
    it last did (the Lease carries every heartbeat); as a node's status is written every 5 minutes."""
    leader_election: bool = True
    """Elect one writing replica through a `coordination.k8s.io/v1` Lease; standbys keep a warm view."""
    leader_lease_name: str = "gpufleet-operator"
    """Name of the leader-election Lease in `namespace` (`kubectl get lease` shows the holder)."""
    lease_duration_seconds: PositiveSeconds = 15.0
    """How long a standby waits, after it last saw the Lease renewed, before it takes over."""
    renew_deadline_seconds: PositiveSeconds = 10.0
    """A leader that could not renew for this long stops writing; shorter than the lease duration."""
    retry_period_seconds: PositiveSeconds = 2.0
    """Interval between attempts to acquire or renew the Lease."""
    node_remediation: bool = False
    """Taint the Kubernetes Node of an unhealthy Host (or of a Host with an unhealthy GPU)
    `gpufleet.io/gpu-unhealthy:NoSchedule` and set its `GPUFleetHealthy` condition; both go on recovery."""
    remediation_max_unhealthy_fraction: Annotated[float, pydantic.Field(ge=0, le=1)] = 0.2
    """Circuit breaker: no new taint while more than this share of the node-bound hosts is unhealthy
    (a fleet-wide fault is not fixed by draining the fleet)."""
    remediation_taints_per_minute: Annotated[float, pydantic.Field(gt=0)] = 10.0
    """Most new taints per minute, fleet-wide (removals are never held back)."""
    metrics_port: Port = 9090
    """Port of the operator's Prometheus `/metrics` endpoint (0 disables it)."""
    liveness_port: Port = 8081
    """Port of the operator's `/healthz`, answered by Kopf while its tasks are alive (0 disables it)."""
    log_level: str = "INFO"
    """Python log level name."""
    log_format: LogFormat = LogFormat.JSON
    """`json` for one JSON object per line (for log collectors) or `text` for people."""

    facade_host: str = "0.0.0.0"  # noqa: S104 - a pod serves on all its interfaces
    """Address the REST facade listens on."""
    facade_port: Port = 8080
    """Port of the REST facade (its `/metrics`, `/healthz` and `/readyz` are served there too)."""
    auth_mode: AuthMode = AuthMode.KUBERNETES
    """`kubernetes` (TokenReview + SubjectAccessReview) or `static` (tokens from `static_tokens_file`)."""
    static_tokens_file: pathlib.Path | None = None
    """File of `token,role` lines (role `admin` or `viewer`), mounted from a Secret; for `auth_mode=static`."""
    tls_cert_file: pathlib.Path | None = None
    """PEM certificate for the facade; with `tls_key_file`, the facade serves HTTPS."""
    tls_key_file: pathlib.Path | None = None
    """PEM private key for `tls_cert_file`."""
    page_size_default: Annotated[int, pydantic.Field(ge=1)] = 20
    """Hosts per page when a list request gives no `page_size`."""
    page_size_max: Annotated[int, pydantic.Field(ge=1)] = 100
    """Largest `page_size` a list request may ask for."""
    api_timeout_seconds: PositiveSeconds = 5.0
    """Longest wait for one Kubernetes API call (the facade answers 503 then; the operator retries)."""
    max_body_bytes: Annotated[int, pydantic.Field(ge=1024)] = 1024 * 1024
    """Largest request body the facade accepts (413 beyond)."""
    auth_audience: Annotated[str, pydantic.Field(min_length=1)] = API_SERVER_AUDIENCE
    """Audience Kubernetes tokens must be valid for (TokenReview `spec.audiences`); the API server's by default."""
    auth_cache_seconds: PositiveSeconds = 10.0
    """How long the facade reuses a TokenReview/SubjectAccessReview answer, a refusal included."""
    auth_cache_size: Annotated[int, pydantic.Field(ge=1)] = 10_000
    """Most TokenReview and SubjectAccessReview answers kept (each); the least recently used go first."""
    auth_failure_burst: Annotated[int, pydantic.Field(ge=1)] = 20
    """Failed authentications a client IP may have in a row before it is answered 429 (token bucket size)."""
    auth_failure_rate: Annotated[float, pydantic.Field(gt=0)] = 1.0
    """Failed authentications per second a client IP earns back (token bucket refill)."""
    audit_heartbeats: bool = True
    """Write an audit line for every heartbeat too (the other REST writes always get one)."""
    reload_interval_seconds: PositiveSeconds = 10.0
    """How often the facade looks for a changed TLS certificate or static tokens file on disk."""

    @pydantic.model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.auth_mode is AuthMode.STATIC and self.static_tokens_file is None:
            raise ValueError("GPUFLEET_STATIC_TOKENS_FILE is required when GPUFLEET_AUTH_MODE=static")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("GPUFLEET_TLS_CERT_FILE and GPUFLEET_TLS_KEY_FILE must be set together")
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "leader election needs GPUFLEET_RETRY_PERIOD_SECONDS < GPUFLEET_RENEW_DEADLINE_SECONDS"
                " < GPUFLEET_LEASE_DURATION_SECONDS, so that a leader stops writing before its Lease can be taken"
            )
        if self.page_size_default > self.page_size_max:
            raise ValueError("GPUFLEET_PAGE_SIZE_DEFAULT must not exceed GPUFLEET_PAGE_SIZE_MAX")
        return self

    def write_timeout_seconds(self) -> float:
        """Longest an operator write may take: it must land before a standby may take the Lease over."""
        return min(self.api_timeout_seconds, self.lease_duration_seconds - self.renew_deadline_seconds)

    def flapping_warning(self) -> str | None:
        """A warning when the grace period is too short for the heartbeat interval, else None."""
        if self.grace_period_seconds < 4 * self.heartbeat_interval_seconds:
            return (
                f"grace period {self.grace_period_seconds:g}s is under 4x the heartbeat interval "
                f"{self.heartbeat_interval_seconds:g}s: hosts may flap offline on a single late heartbeat"
            )
        return None
