"""Shared vocabulary of the gpufleet.io API group: names, label keys, and the condition type.

Conditions follow the Kubernetes API conventions (`metav1.Condition`): a list keyed by `type`,
with a tri-state `status` and a `lastTransitionTime` that moves only on a real transition.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated

import pydantic
from pydantic import alias_generators

GROUP = "gpufleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "gpufleet"

#: Label on Hosts mirroring `status.state`, so `kubectl get hosts -l gpufleet.io/status=offline` works.
STATUS_LABEL = f"{GROUP}/status"
#: Label on Hosts mirroring `spec.osType`, so the facade can filter server-side.
OS_TYPE_LABEL = f"{GROUP}/os-type"
#: Label on GPUs and agent-token Secrets naming the Host they belong to.
HOST_LABEL = f"{GROUP}/host"
#: Label on GPUs naming the Kubernetes Node whose agent created them; set at creation and never
#: changed, so that an admission policy (which cannot look the Host up) can tell whose GPU it is.
NODE_LABEL = f"{GROUP}/node"
#: The labels the operator keeps on Hosts; no node agent may set them.
OPERATOR_LABELS = (STATUS_LABEL, OS_TYPE_LABEL)
#: Label that marks every object gpufleet manages (Secrets in particular).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gpufleet"
#: Annotation on a GPU whose state the operator set to `unknown` because its host went offline:
#: the state its agent last reported, put back when the host is online again.
REPORTED_STATE_ANNOTATION = f"{GROUP}/reported-state"
#: Finalizer the operator puts on Hosts so their GPUs and token are cleaned up first.
CLEANUP_FINALIZER = f"{GROUP}/cleanup"


class ApiModel(pydantic.BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python, unknown keys rejected."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        use_enum_values=False,
        ser_json_timedelta="float",
    )

    def to_k8s(self) -> dict[str, object]:
        """The object as the Kubernetes API stores it: camelCase keys, unset fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(enum.StrEnum):
    """Tri-state of a condition, as in `metav1.ConditionStatus`."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


Reason = Annotated[
    str,
    pydantic.StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
]


class Condition(ApiModel):
    """One aspect of an object's current state (Kubernetes `metav1.Condition`)."""

    type: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=316)]
    """Kind of condition in CamelCase, e.g. `Ready` or `Healthy`."""
    status: ConditionStatus
    """`True`, `False` or `Unknown`."""
    reason: Reason
    """Programmatic CamelCase identifier of why the condition is in its current status."""
    message: Annotated[str, pydantic.StringConstraints(max_length=32768)] = ""
    """Human-readable details about the transition."""
    last_transition_time: datetime.datetime
    """When the condition last changed from one status to another (RFC 3339)."""
    observed_generation: Annotated[int, pydantic.Field(ge=0)] | None = None
    """The `metadata.generation` the condition was set against."""


NonNegativeInt = Annotated[int, pydantic.Field(ge=0)]
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]
