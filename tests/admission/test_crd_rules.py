"""The invariants the CRDs carry as CEL rules (`x-kubernetes-validations`), for everyone, administrators too.

A Host is named in at most 63 characters (the label value of its GPUs); its `spec.nodeName` may be
set once and never changed or removed (the node agents' policies bind a Host to its node by it);
a GPU keeps its `spec.hostName` and `spec.index` (its name says
both). Enforced by the API server from the generated CRDs, here by the emulator's CEL, on kind by
kube-apiserver: the same tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import pytest

from gpufleet.api import meta
from gpufleet_agent import kubeapi

from .conftest import Fleet


async def invalid(call: Awaitable[Any], field: str, message: str) -> None:
    with pytest.raises(kubeapi.ApiError) as caught:
        await call
    assert (caught.value.status, caught.value.reason) == (422, "Invalid"), caught.value
    assert f"{field}: Invalid value: " in str(caught.value) and message in str(caught.value), caught.value


async def test_a_hosts_node_name_may_be_set_once_and_never_changed(fleet: Fleet) -> None:
    name = f"host-{uuid.uuid4().hex[:8]}"
    await fleet.host(name)
    path = f"{kubeapi.HOSTS}/{name}"
    await fleet.admin.merge_patch(path, {"spec": {"displayName": "renamed"}})
    await fleet.admin.merge_patch(path, {"spec": {"nodeName": "node-1"}})  # set once: fine
    immutable = "spec.nodeName is immutable once set"
    await invalid(fleet.admin.merge_patch(path, {"spec": {"nodeName": "node-2"}}), "spec.nodeName", immutable)
    await invalid(fleet.admin.merge_patch(path, {"spec": {"nodeName": None}}), "spec.nodeName", immutable)
    await fleet.admin.merge_patch(f"{path}/status", {"status": {"reportedState": "online"}})
    assert (await fleet.admin.get(path))["spec"]["nodeName"] == "node-1"


async def test_a_gpu_stays_the_same_slot_of_the_same_host(fleet: Fleet) -> None:
    host_name = f"host-{uuid.uuid4().hex[:8]}"
    await fleet.host(host_name)
    await fleet.gpu(host_name, 0, {meta.NODE_LABEL: "node-1"})
    path = f"{kubeapi.GPUS}/{host_name}-gpu0"
    await fleet.admin.merge_patch(path, {"spec": {"uuid": "GPU-replaced", "modelName": "NVIDIA H200"}})
    await invalid(fleet.admin.merge_patch(path, {"spec": {"hostName": "other"}}), "spec.hostName", "is immutable")
    await invalid(fleet.admin.merge_patch(path, {"spec": {"index": 3}}), "spec.index", "is immutable")


async def test_a_host_name_longer_than_a_label_value_is_refused(fleet: Fleet) -> None:
    """Its name labels its GPUs (gpufleet.io/host), so a Host may not be named past 63 characters."""
    await fleet.host("h" * 63)
    with pytest.raises(kubeapi.ApiError) as caught:
        await fleet.host("h" * 64)
    assert (caught.value.status, caught.value.reason) == (422, "Invalid"), caught.value
    assert "at most 63 characters" in str(caught.value), caught.value
