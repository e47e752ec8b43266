"""GPU counts per Host, kept in memory from the GPU watch, whoever creates or changes the GPUs.

A GPU belongs to the Host named by its `gpufleet.io/host` label (the agent sets it, and it is
what `kubectl get gpus -l gpufleet.io/host=...` selects on); it is *used* when its state is
`allocated`. Counting from a watch keeps roll-up at O(1) per GPU change, with no list calls.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from gpufleet.api import gpu, meta


class Rollup:
    """Each GPU's host and state, and per-host totals derived from them."""

    def __init__(self) -> None:
        self._gpus: dict[str, tuple[str, str]] = {}
        self._by_host: dict[str, set[str]] = collections.defaultdict(set)

    def observe(self, body: Mapping[str, Any]) -> set[str]:
        """Record a GPU as the API shows it; the hosts whose counts may have changed."""
        name = str(body["metadata"]["name"])
        labels = body["metadata"].get("labels") or {}
        host_name = labels.get(meta.HOST_LABEL) or (body.get("spec") or {}).get("hostName")
        state = str((body.get("status") or {}).get("state") or gpu.GPUState.UNKNOWN.value)
        touched = self.forget(name)
        if host_name:
            self._gpus[name] = (str(host_name), state)
            self._by_host[str(host_name)].add(name)
            touched.add(str(host_name))
        return touched

    def forget(self, name: str) -> set[str]:
        """Drop a deleted GPU; the host whose counts changed (if any)."""
        previous = self._gpus.pop(name, None)
        if previous is None:
            return set()
        members = self._by_host[previous[0]]
        members.discard(name)
        if not members:
            del self._by_host[previous[0]]
        return {previous[0]}

    def counts(self, host_name: str) -> tuple[int, int] | None:
        """(total, allocated) GPUs of a host, or None when it has no GPU resources at all."""
        members = self._by_host.get(host_name)
        if not members:
            return None
        allocated = sum(1 for name in members if self._gpus[name][1] == gpu.GPUState.ALLOCATED)
        return len(members), allocated

    def by_state(self) -> dict[str, int]:
        """Number of GPUs in each state, fleet-wide (for metrics)."""
        return dict(collections.Counter(state for _, state in list(self._gpus.values())))
