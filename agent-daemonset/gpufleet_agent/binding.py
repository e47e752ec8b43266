"""Which Host this agent reports for: the one named like its node, or the one that says it is that node.

A node's Host is usually named after the node, but a host registered earlier through the
REST facade keeps its `host-xxxxxxxxxx` name and says `spec.nodeName` instead; both must bind.
With `register`, a node without a Host gets one, filled from the machine's own facts.

Looking by name is one GET of one object. Looking by `spec.nodeName` is a list of every Host in
the fleet (the Host CRD offers no field selector on it, and Hosts carry no node label), the one
costly request here. An agent waiting for its Host to be created (no `register`) used to send
that list at every heartbeat; on a fleet of thousands of nodes being provisioned that is a
fleet-sized list per node every 10 s. `Search` paces it: the GET by name at the API retry pace
(`backoff_*`, jittered, 30 s at most), the list on its own jittered backoff up to
`host_search_max_interval` (5 min), so a Host created by name is bound within 30 s and one
registered elsewhere with `spec.nodeName` within 5 min.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpufleet.api import host, meta
from gpufleet_agent import backoff, kubeapi, machine

if TYPE_CHECKING:
    from gpufleet_agent.settings import AgentSettings

logger = logging.getLogger(__name__)


class NoHost(Exception):
    """No Host describes this node, and the agent may not register one."""


def bound_node(host_object: kubeapi.JsonObj) -> str:
    """The node a Host is bound to: its `spec.nodeName` when set, else its name.

    The chart's admission policies use the same rule: an agent writes only the Host bound to its node.
    """
    node = (host_object.get("spec") or {}).get("nodeName")
    return str(node) if node else str(host_object["metadata"]["name"])


async def find_by_name(api: kubeapi.KubeApi, node_name: str) -> kubeapi.JsonObj | None:
    """The Host named like the node (unless its `spec.nodeName` names another node), or None."""
    try:
        found = await api.get(f"{kubeapi.HOSTS}/{node_name}")
    except kubeapi.ApiError as error:
        if not error.not_found:
            raise
        return None
    if bound_node(found) != node_name:
        logger.warning(
            "Host %s is named like this node but says spec.nodeName=%s: not binding to it",
            node_name,
            bound_node(found),
        )
        return None
    return found


async def find_by_node_name(api: kubeapi.KubeApi, node_name: str) -> kubeapi.JsonObj | None:
    """The Host whose `spec.nodeName` is the node, or None; this lists every Host in the fleet."""
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


async def register(api: kubeapi.KubeApi, node_name: str, ip_address: str | None) -> kubeapi.JsonObj:
    """Create the node's Host (at `ip_address` if given) from the machine's facts."""
    try:
        created = await api.create(kubeapi.HOSTS, manifest(node_name, machine.capacity(ip_address)))
    except kubeapi.ApiError as error:
        if not error.conflict:  # another agent run registered it meanwhile: use that one
            raise
        return await api.get(f"{kubeapi.HOSTS}/{node_name}")
    logger.info("registered node %s as Host %s", node_name, node_name)
    return created


class Search:
    """Finds the node's Host (registering it when allowed), asking the API no more often than due.

    `bind` may be called as often as callers like (the heartbeat and the publisher both do): while
    no Host exists, a call before the next lookup is due raises `NoHost` without any request.
    """

    @classmethod
    def of(
        cls,
        api: kubeapi.KubeApi,
        settings: AgentSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> Search:
        """The search an agent with these settings makes: by name at the API retry pace, by node name slower."""
        return cls(
            api,
            settings.node_name,
            register=settings.register_node,
            ip_address=str(settings.host_ip) if settings.host_ip else None,
            by_name=backoff.Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds, rng),
            by_node_name=backoff.Backoff(
                settings.backoff_initial_seconds, settings.host_search_max_interval_seconds, rng
            ),
            clock=clock,
        )

    def __init__(
        self,
        api: kubeapi.KubeApi,
        node_name: str,
        *,
        register: bool,
        ip_address: str | None = None,
        by_name: backoff.Backoff,
        by_node_name: backoff.Backoff,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._node_name = node_name
        self._register = register
        self._ip_address = ip_address
        self._by_name = by_name
        self._by_node_name = by_node_name
        self._clock = clock
        self._next_get = -math.inf
        self._next_list = -math.inf

    async def bind(self) -> kubeapi.JsonObj:
        """The node's Host; `NoHost` when there is none (yet) and the agent may not register one.

        API errors propagate without moving the schedule: the callers back off from those.
        """
        now = self._clock()
        by_name_due = now >= self._next_get
        # Registering must look by spec.nodeName first, or it would duplicate a Host registered
        # elsewhere; it happens once, so it need not wait for the list to be due.
        by_node_name_due = self._register or now >= self._next_list
        if not by_name_due and not by_node_name_due:
            raise self._missing()
        found = None
        if by_name_due:
            found = await find_by_name(self._api, self._node_name)
            if found is None:
                self._next_get = now + self._by_name.next_delay()
        if found is None and by_node_name_due:
            found = await find_by_node_name(self._api, self._node_name)
            if found is None:
                self._next_list = now + self._by_node_name.next_delay()
        if found is None and self._register:
            found = await register(self._api, self._node_name, self._ip_address)
        if found is None:
            raise self._missing()
        self.forget()
        return found

    def forget(self) -> None:
        """Look again at once next time (the bound Host was deleted, or one was just found)."""
        self._next_get = self._next_list = -math.inf
        self._by_name.reset()
        self._by_node_name.reset()

    def _missing(self) -> NoHost:
        return NoHost(
            f"no Host named {self._node_name!r} or with spec.nodeName={self._node_name!r}; "
            "create one, or run the agent with --register (GPUFLEET_AGENT_REGISTER=true)"
        )
