"""Agent tokens for Hosts that heartbeat through the facade but were not registered through it.

A Host created with kubectl or Helm, not bound to a node, has no token until the operator issues
one: the plaintext goes to a Secret for its admin to hand to the host, and the digest to the
Host's annotation, where the facade verifies it (see `gpufleet.tokens`). The Secret is written
first, so a failure in between leaves a Secret and no digest; the next attempt finds the Secret
(create answers 409), reads it and publishes the digest of the token it already holds. The same
path migrates installations from before the digest annotation without changing anyone's token.
The token itself is never logged, evented or kept in memory beyond this call.
"""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import tokens
from gpufleet.api import host, meta

MERGE_PATCH = "application/merge-patch+json"


async def ensure(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, *, host_name: str, host_uid: str, namespace: str
) -> tuple[bool, str]:
    """Give the host a token digest: (whether a new token was issued, False for an existing
    Secret's; the digest published, in hex)."""
    token = tokens.generate()
    manifest = tokens.secret_manifest(host_name=host_name, host_uid=host_uid, namespace=namespace, token=token)
    issued = True
    try:
        await core.create_namespaced_secret(namespace, manifest)  # type: ignore[arg-type] # dicts are sent as is
    except exceptions.ApiException as error:
        if error.status != 409:
            raise
        existing = await core.read_namespaced_secret(tokens.secret_name(host_name), namespace)
        held = tokens.token_from_secret({"data": existing.data})
        if held is not None:
            token, issued = held, False
        else:  # an empty Secret of that name: fill it rather than publish nothing
            await core.replace_namespaced_secret(tokens.secret_name(host_name), namespace, manifest)  # type: ignore[arg-type]
    digest = tokens.digest(token).hex()
    patch = {"metadata": {"annotations": {tokens.DIGEST_ANNOTATION: digest}}}
    await custom.patch_cluster_custom_object(
        meta.GROUP,
        meta.VERSION,
        host.PLURAL,
        host_name,
        patch,
        _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
    )
    return issued, digest
