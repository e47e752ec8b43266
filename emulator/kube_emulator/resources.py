"""What the emulated server serves: built-in resources and resources defined by CRDs.

A real cluster serves hundreds of built-ins; the project only talks to the few below
(Kopf needs namespaces and events to start watching, leases for peering, the auth
reviews for the REST facade). A CRD turns into one :class:`ResourceDef` per served
version, carrying the scope, the status-subresource flag and the schema.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

JsonObj = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclasses.dataclass(frozen=True)
class ResourceDef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    shortnames: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    schema: JsonObj | None = dataclasses.field(default=None, compare=False, hash=False)
    printer_columns: tuple[JsonObj, ...] = dataclasses.field(default=(), compare=False, hash=False)
    field_labels: tuple[str, ...] = ()
    """Field-selector keys beyond metadata.name and metadata.namespace."""
    verbs: tuple[str, ...] = ALL_VERBS
    stored: bool = True  # reviews are answered, never stored
    unconditional_update: bool = True
    """Whether a PUT may omit resourceVersion: yes for built-ins, no for custom resources (kube's strategies)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``hosts.gpufleet.io`` as used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_group(self) -> str:
        """``Host.gpufleet.io`` as used in validation messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def storage_key(self) -> tuple[str, str]:
        """Versions of one resource share their objects."""
        return (self.group, self.plural)


def _builtin(group: str, version: str, plural: str, kind: str, namespaced: bool, **extra: Any) -> ResourceDef:
    return ResourceDef(group, version, plural, kind, namespaced, singular=kind.lower(), **extra)


# What kubectl describe selects an object's Events by, and what kubectl get events shows.
_EVENT_FIELDS = tuple(
    [f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")]
    + ["reason", "reportingComponent", "type"]
)
_EVENT_COLUMNS: tuple[JsonObj, ...] = (
    {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp"},
    {"name": "Type", "type": "string", "jsonPath": ".type"},
    {"name": "Reason", "type": "string", "jsonPath": ".reason"},
    {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
    {"name": "Message", "type": "string", "jsonPath": ".message"},
)
# kube-apiserver prints who holds a Lease: `kubectl get leases` is how people see heartbeats.
_LEASE_COLUMNS: tuple[JsonObj, ...] = (
    {"name": "Holder", "type": "string", "jsonPath": ".spec.holderIdentity"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)

BUILTINS: tuple[ResourceDef, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", False, shortnames=("ns",)),
    _builtin(
        "",
        "v1",
        "events",
        "Event",
        True,
        shortnames=("ev",),
        field_labels=_EVENT_FIELDS,
        printer_columns=_EVENT_COLUMNS,
    ),
    _builtin("", "v1", "secrets", "Secret", True, field_labels=("type",)),
    _builtin("", "v1", "configmaps", "ConfigMap", True, shortnames=("cm",)),
    _builtin("events.k8s.io", "v1", "events", "Event", True, shortnames=("ev",)),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", True, printer_columns=_LEASE_COLUMNS),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        shortnames=("crd", "crds"),
        categories=("api-extensions",),
    ),
    _builtin("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, verbs=("create",), stored=False),
    _builtin(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        verbs=("create",),
        stored=False,
    ),
    # Stored, never enforced (the emulator's AccessTable does authorisation): served so that the
    # chart's ServiceAccounts and RBAC objects can be installed and read back as on a cluster.
    _builtin(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
        stored=False,
    ),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, shortnames=("sa",)),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    # Stored and enforced (admission.py): admission policies written in CEL, and their bindings.
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        categories=("api-extensions",),
        status_subresource=True,
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
        categories=("api-extensions",),
    ),
    # Served, not run: controllers that taint a node or set a node condition need Nodes to exist.
    _builtin("", "v1", "nodes", "Node", False, shortnames=("no",), status_subresource=True),
)

CRDS = next(r for r in BUILTINS if r.plural == "customresourcedefinitions")
NAMESPACES = next(r for r in BUILTINS if r.plural == "namespaces")


def from_crd(crd: JsonObj) -> list[ResourceDef]:
    """The resources a CustomResourceDefinition serves, one per served version."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    defs: list[ResourceDef] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        defs.append(
            ResourceDef(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                shortnames=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status_subresource="status" in (version.get("subresources") or {}),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                unconditional_update=False,
            )
        )
    return defs


def crd_problems(crd: JsonObj) -> list[JsonObj]:
    """Causes for a CRD the apiserver would refuse (missing names, wrong object name)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    causes: list[JsonObj] = []
    for field, value in (
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
    ):
        if not value:
            causes.append({"reason": "FieldValueRequired", "field": field, "message": "Required value"})
    if not spec.get("versions"):
        causes.append({"reason": "FieldValueRequired", "field": "spec.versions", "message": "Required value"})
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not causes and crd.get("metadata", {}).get("name") != expected:
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "field": "metadata.name",
                "message": f'Invalid value: "{crd.get("metadata", {}).get("name")}": '
                f'must be spec.names.plural+"."+spec.group',
            }
        )
    return causes


def established(crd: JsonObj) -> JsonObj:
    """The CRD reported Established, as the apiserver does once its names are accepted."""
    spec = crd.get("spec", {})
    old_status = crd.get("status") or {}
    storage = next((v["name"] for v in spec.get("versions", []) if v.get("storage")), None)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = old_status.get("conditions") or [
        {
            "type": "NamesAccepted",
            "status": "True",
            "reason": "NoConflicts",
            "message": "no conflicts found",
            "lastTransitionTime": stamp,
        },
        {
            "type": "Established",
            "status": "True",
            "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
            "lastTransitionTime": stamp,
        },
    ]
    status = {
        "conditions": conditions,
        "acceptedNames": spec.get("names", {}),
        "storedVersions": [storage] if storage else [],
    }
    return {**crd, "status": status}
