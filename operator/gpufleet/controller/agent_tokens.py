"""Every Host has an agent token: issue one when a Host has none, and again when its Secret is deleted.

The facade creates the Secret at registration (it must return the token), so creation here is a
plain create that treats 409 AlreadyExists as success: one request, no read-then-write race.
The token itself is never logged, evented or kept: only the Secret holds it.
"""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import tokens


async def ensure(core: client.CoreV1Api, *, host_name: str, host_uid: str, namespace: str) -> bool:
    """Make sure the host's token Secret exists; whether a new token was issued."""
    manifest = tokens.secret_manifest(
        host_name=host_name, host_uid=host_uid, namespace=namespace, token=tokens.generate()
    )
    try:
        await core.create_namespaced_secret(namespace, manifest)  # type: ignore[arg-type] # dicts are sent as is
    except exceptions.ApiException as error:
        if error.status == 409:
            return False
        raise
    return True
