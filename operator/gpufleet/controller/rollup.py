"""GPU counts per Host, from the GPU informer's store, whoever creates or changes the GPUs.

A GPU belongs to the Host named by its `gpufleet.io/host` label (the agent sets it, and it is
what `kubectl get gpus -l gpufleet.io/host=...` selects on); it is *used* when its state is
`allocated`. A GPU labelled with a node (`gpufleet.io/node`, set by the agent that created it,
immutable under the node-restriction policy) counts only for a Host bound to that node: an agent
can label its own GPUs with any host's name, and would otherwise inflate another node's counts.
The store keeps only a GPU's host, node and state (a fleet has eight GPUs per host, and
whole objects would dominate the operator's memory), indexed by host, so a roll-up is O(GPUs of
one host) with no list calls. Because the informer's relist replaces the store, a GPU deleted
while the watch was down stops counting as soon as the list is back.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from typing import Any

from gpufleet import informer
from gpufleet.api import gpu, meta

HOST_INDEX = "host"


def compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the roll-up needs of a GPU: its name, version, host, node, state, and the state its
    agent reported before the operator masked it (`meta.REPORTED_STATE_ANNOTATION`, or "")."""
    metadata = body["metadata"]
    labels = metadata.get("labels") or {}
    host_name = labels.get(meta.HOST_LABEL) or (body.get("spec") or {}).get("hostName") or ""
    # Interned: eight GPUs share their host's name, and the whole fleet a handful of states.
    return {
        "metadata": {"name": metadata["name"], "resourceVersion": metadata.get("resourceVersion")},
        "host": sys.intern(str(host_name)),
        "node": sys.intern(str(labels.get(meta.NODE_LABEL) or "")),
        "state": sys.intern(str((body.get("status") or {}).get("state") or gpu.GPUState.UNKNOWN.value)),
        "held": sys.intern(str((metadata.get("annotations") or {}).get(meta.REPORTED_STATE_ANNOTATION) or "")),
    }


class Rollup:
    """GPUs by host, and per-host totals derived from them."""

    def __init__(self) -> None:
        self.store = informer.Store(
            transform=compact, indexers={HOST_INDEX: lambda obj: [obj["host"]] if obj["host"] else []}
        )

    @staticmethod
    def hosts_touched(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> set[str]:
        """Hosts whose counts a change from `old` to `new` (either may be None) can have changed."""
        return {obj["host"] for obj in (new, old) if obj is not None and obj["host"]}

    def members(self, host_name: str, node_name: str) -> list[dict[str, Any]]:
        """The GPUs of a host bound to `node_name` (those that name another node are not its own)."""
        return [obj for obj in self.store.by(HOST_INDEX, host_name) if obj["node"] in ("", node_name)]

    def counts(self, host_name: str, node_name: str) -> tuple[int, int] | None:
        """(total, allocated) GPUs of a host bound to `node_name`, or None when it has no GPU
        resources at all. GPUs that name another node do not count (see the module's docstring)."""
        members = self.members(host_name, node_name)
        if not members:
            return None
        allocated = sum(1 for obj in members if obj["state"] == gpu.GPUState.ALLOCATED)
        return len(members), allocated

    def by_state(self) -> dict[str, int]:
        """Number of GPUs in each state, fleet-wide (for metrics)."""
        return dict(collections.Counter(obj["state"] for obj in list(self.store.values())))
