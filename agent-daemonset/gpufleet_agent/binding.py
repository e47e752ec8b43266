"""Which Host this agent reports for: the one named like its node, or the one that says it is that node.

A node's Host is usually named after the node, but a host registered earlier through the
REST facade keeps its `host-xxxxxxxxxx` name and says `spec.nodeName` instead; both must bind.
With `register`, a node without a Host gets one, filled from the machine's own facts.
"""

from __future__ import annotations

import logging

from gpufleet.api import host, meta
from gpufleet_agent import kubeapi, machine

logger = logging.getLogger(__name__)


class NoHost(Exception):
    """No Host describes this node, and the agent may not register one."""


async def find(api: kubeapi.KubeApi, node_name: str) -> kubeapi.JsonObj | None:
    """The node's Host: by name first, else by `spec.nodeName`; None when there is none."""
    try:
        return await api.get(f"{kubeapi.HOSTS}/{node_name}")
    except kubeapi.ApiError as error:
        if not error.not_found:
            raise
    matches = [h for h in await api.list(kubeapi.HOSTS) if (h.get("spec") or {}).get("nodeName") == node_name]
    if len(matches) > 1:
        names = sorted(h["metadata"]["name"] for h in matches)
        logger.warning("several Hosts claim node %s (%s); using %s", node_name, ", ".join(names), names[0])
        matches.sort(key=lambda h: str(h["metadata"]["name"]))
    return matches[0] if matches else None


def manifest(node_name: str, capacity: machine.Capacity) -> kubeapi.JsonObj:
    """The Host a node registers itself as."""
    spec = host.HostSpec(
        display_name=node_name,
        hostname=capacity.hostname,
        ip_address=capacity.ip_address,
        os_type=host.OSType(capacity.os_type),
        os_version=capacity.os_version,
        deployment_mode=host.DeploymentMode.KUBERNETES,
        node_name=node_name,
        total_cpu=capacity.total_cpu,
        total_memory=capacity.total_memory,
        total_disk=capacity.total_disk,
    )
    return {
        "apiVersion": meta.API_VERSION,
        "kind": host.KIND,
        "metadata": {"name": node_name},
        "spec": spec.to_k8s(),
    }


async def bind(
    api: kubeapi.KubeApi, node_name: str, *, register: bool, ip_address: str | None = None
) -> kubeapi.JsonObj:
    """The node's Host, registered first (at `ip_address` if given) when allowed and missing; else `NoHost`."""
    found = await find(api, node_name)
    if found is not None:
        return found
    if not register:
        raise NoHost(
            f"no Host named {node_name!r} or with spec.nodeName={node_name!r}; "
            "create one, or run the agent with --register (GPUFLEET_AGENT_REGISTER=true)"
        )
    try:
        created = await api.create(kubeapi.HOSTS, manifest(node_name, machine.capacity(ip_address)))
    except kubeapi.ApiError as error:
        if not error.conflict:  # another agent run registered it meanwhile: use that one
            raise
        return await api.get(f"{kubeapi.HOSTS}/{node_name}")
    logger.info("registered node %s as Host %s", node_name, node_name)
    return created
