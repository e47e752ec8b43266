"""Host heartbeats as Leases: one `coordination.k8s.io/v1` Lease per Host, as Nodes have since KEP-589.

A heartbeat used to rewrite the Host's whole status every 10 s, and every Host watcher received
the whole Host each time. Now the heartbeat renews a small Lease in a namespace of its own
(`gpufleet-host-leases` by default, as `kube-node-lease` holds Nodes'), named like the Host and
owned by it, so the garbage collector removes it with its Host; the Host's status is written
only when what it says changes, or every few minutes.

`spec.holderIdentity` says who renews it: the node agent writes its node's name, the facade
`FACADE_HOLDER` for hosts that heartbeat through the REST API. The node-restriction admission
policy lets an agent write only Leases holding its own node's name, and the operator counts a
renewal only when the holder may speak for the Host (`may_renew`), so no node renews another's.
Writers, readers and the operator share this module so they agree on every name and field.
"""

from __future__ import annotations

from typing import Any

from gpufleet.api import formats, host, meta

NAMESPACE = "gpufleet-host-leases"
"""The default namespace of host Leases (`GPUFLEET_HOST_LEASE_NAMESPACE`, `GPUFLEET_AGENT_HOST_LEASE_NAMESPACE`)."""
FACADE_HOLDER = "gpufleet-facade"
"""The holder the REST facade writes on Leases it renews for legacy agents."""
API_VERSION = "coordination.k8s.io/v1"


def path(namespace: str, name: str | None = None) -> str:
    """The API path of the host Leases of `namespace`, or of one of them."""
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return base if name is None else f"{base}/{name}"


def manifest(*, host_name: str, host_uid: str, namespace: str, holder: str, duration_seconds: int) -> dict[str, Any]:
    """A new Lease for a Host, renewed now, owned by the Host."""
    now = formats.micro_time()
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": host_name,
            "namespace": namespace,
            "labels": {meta.HOST_LABEL: host_name},
            "ownerReferences": [
                {"apiVersion": meta.API_VERSION, "kind": host.KIND, "name": host_name, "uid": host_uid}
            ],
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_seconds,
            "acquireTime": now,
            "renewTime": now,
        },
    }


def renewal(*, holder: str, duration_seconds: int) -> dict[str, Any]:
    """The merge patch that renews a Lease now: one small write, no read, no conflict."""
    return {
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_seconds, "renewTime": formats.micro_time()}
    }


def renew_time(lease: dict[str, Any]) -> str | None:
    """The Lease's `spec.renewTime`, compared for equality only (it is another machine's clock)."""
    value = (lease.get("spec") or {}).get("renewTime")
    return value if isinstance(value, str) else None


def holder(lease: dict[str, Any]) -> str | None:
    value = (lease.get("spec") or {}).get("holderIdentity")
    return value if isinstance(value, str) else None


def bound_node(host_object: dict[str, Any]) -> str:
    """The node a Host is bound to: its `spec.nodeName` when set, else its name."""
    return str((host_object.get("spec") or {}).get("nodeName") or host_object["metadata"]["name"])


def may_renew(holder_identity: str | None, host_object: dict[str, Any]) -> bool:
    """Whether a Lease renewed by `holder_identity` speaks for this Host: its node's agent, or the
    facade (which checked the host's agent token first)."""
    return holder_identity is not None and holder_identity in (bound_node(host_object), FACADE_HOLDER)
