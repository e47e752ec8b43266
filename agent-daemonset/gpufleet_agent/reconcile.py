"""GPU resources follow the devices: one object per device, created, corrected and deleted as they change.

Objects are named `<host>-gpu<index>` (the same index keeps the same object across restarts),
labelled with their host and owned by the Host, so that deleting a Host garbage-collects its
GPUs even when no agent is left to do it. Only the agent writes their spec.

Each is also labelled `gpufleet.io/node` with the agent's node, at creation and never changed:
the chart's admission policies let an agent write only GPUs labelled with its own node (a
policy cannot look the Host up). A GPU from before that label gets it on the first sync; one
labelled with another node is left alone (its agent keeps it; this one could not write it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gpufleet.api import gpu, meta
from gpufleet_agent import kubeapi, nvml

logger = logging.getLogger(__name__)


def owner_reference(host_object: kubeapi.JsonObj) -> kubeapi.JsonObj:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": "Host",
        "name": host_object["metadata"]["name"],
        "uid": host_object["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }


def spec(host_name: str, device: nvml.Device) -> kubeapi.JsonObj:
    return gpu.GPUSpec(
        host_name=host_name,
        index=device.index,
        uuid=device.uuid,
        model_name=device.model_name,
        memory_total=device.memory_total,
    ).to_k8s()


def node_of(obj: kubeapi.JsonObj) -> str | None:
    """The node a GPU object says it belongs to (its `gpufleet.io/node` label), None when unlabelled."""
    labels = obj.get("metadata", {}).get("labels") or {}
    node = labels.get(meta.NODE_LABEL)
    return str(node) if node else None


def manifest(host_object: kubeapi.JsonObj, device: nvml.Device, node_name: str) -> kubeapi.JsonObj:
    host_name = host_object["metadata"]["name"]
    return {
        "apiVersion": meta.API_VERSION,
        "kind": gpu.KIND,
        "metadata": {
            "name": gpu.object_name(host_name, device.index),
            "labels": {meta.HOST_LABEL: host_name, meta.NODE_LABEL: node_name},
            "ownerReferences": [owner_reference(host_object)],
        },
        "spec": spec(host_name, device),
    }


async def sync(
    api: kubeapi.KubeApi,
    host_object: kubeapi.JsonObj,
    devices: list[nvml.Device],
    on_write: Callable[[str], None] = lambda kind: None,
    *,
    node_name: str,
) -> dict[str, kubeapi.JsonObj]:
    """Make the host's GPU objects match `devices`; returns the objects by name as they now are.

    `node_name` is the agent's node, which its GPUs are labelled with. `on_write` is told of every
    write (`gpu_create`, `gpu_update`, `gpu_delete`), for the metrics.
    """
    host_name = host_object["metadata"]["name"]
    existing: dict[str, kubeapi.JsonObj] = {}
    for obj in await api.list(kubeapi.GPUS, label_selector=f"{meta.HOST_LABEL}={host_name}"):
        if not _foreign(obj, node_name):
            existing[obj["metadata"]["name"]] = obj
    current: dict[str, kubeapi.JsonObj] = {}
    for device in devices:
        name = gpu.object_name(host_name, device.index)
        old = existing.pop(name, None)
        if old is None:
            try:
                current[name] = await api.create(kubeapi.GPUS, manifest(host_object, device, node_name))
                on_write("gpu_create")
                logger.info("created GPU %s (%s, %s)", name, device.uuid or "identity unknown", device.model_name)
                continue
            except kubeapi.ApiError as error:
                if not error.conflict:
                    raise
                old = await api.get(f"{kubeapi.GPUS}/{name}")
                if _foreign(old, node_name):
                    continue
        current[name] = await _correct(api, host_object, device, old, on_write, node_name)
    for name in existing:
        try:
            await api.delete(f"{kubeapi.GPUS}/{name}")
            on_write("gpu_delete")
            logger.info("deleted GPU %s: its device is gone", name)
        except kubeapi.ApiError as error:
            if not error.not_found:
                raise
    return current


def _foreign(obj: kubeapi.JsonObj, node_name: str) -> bool:
    """A GPU labelled with another node: logged, and never written by this agent."""
    node = node_of(obj)
    if node is None or node == node_name:
        return False
    logger.warning(
        "GPU %s is labelled %s=%s, not this node (%s): leaving it alone",
        obj["metadata"]["name"],
        meta.NODE_LABEL,
        node,
        node_name,
    )
    return True


async def _correct(
    api: kubeapi.KubeApi,
    host_object: kubeapi.JsonObj,
    device: nvml.Device,
    old: kubeapi.JsonObj,
    on_write: Callable[[str], None],
    node_name: str,
) -> kubeapi.JsonObj:
    """Patch spec, owner and node label only where they differ; a lost device (no UUID) keeps its last identity."""
    name = old["metadata"]["name"]
    patch: kubeapi.JsonObj = {}
    desired = spec(host_object["metadata"]["name"], device)
    if device.uuid and old.get("spec") != desired:
        patch["spec"] = desired
    owner = owner_reference(host_object)
    metadata: kubeapi.JsonObj = {}
    if not any(ref.get("uid") == owner["uid"] for ref in old["metadata"].get("ownerReferences") or []):
        metadata["ownerReferences"] = [owner]
    if node_of(old) is None:
        metadata["labels"] = {meta.NODE_LABEL: node_name}  # a GPU from before the label: adopt it
    if metadata:
        patch["metadata"] = metadata
    if not patch:
        return old
    logger.info("updated GPU %s: %s", name, ", ".join(sorted(patch)))
    updated = await api.merge_patch(f"{kubeapi.GPUS}/{name}", patch)
    on_write("gpu_update")
    return updated
