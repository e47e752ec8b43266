"""What deleting a Host takes with it: its GPU resources and its agent-token Secret.

Owner references would let the garbage collector do this eventually, but the finalizer makes
it happen before the Host disappears, so nothing of a deleted host outlives it, even where
garbage collection is slow or the objects were created without an owner reference.
"""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import tokens
from gpufleet.api import gpu, meta


async def release(custom: client.CustomObjectsApi, core: client.CoreV1Api, *, host_name: str, namespace: str) -> int:
    """Delete the host's GPUs and token Secret (already-gone is fine); the number of GPUs deleted."""
    listing = await custom.list_cluster_custom_object(
        meta.GROUP, meta.VERSION, gpu.PLURAL, label_selector=f"{meta.HOST_LABEL}={host_name}"
    )
    deleted = 0
    for item in listing.get("items", []):
        try:
            await custom.delete_cluster_custom_object(meta.GROUP, meta.VERSION, gpu.PLURAL, item["metadata"]["name"])
            deleted += 1
        except exceptions.ApiException as error:
            if error.status != 404:
                raise
    try:
        await core.delete_namespaced_secret(tokens.secret_name(host_name), namespace)
    except exceptions.ApiException as error:
        if error.status != 404:
            raise
    return deleted
