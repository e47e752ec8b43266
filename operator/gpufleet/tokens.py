"""Per-host agent tokens: how they are made, where they live, and how they are checked.

A token is 256 random bits. Only its SHA-256 digest is kept where verifiers read it: the Host's
annotation ``gpufleet.io/agent-token-sha256``. Whoever verifies tokens (the facade) therefore
reads Hosts, never a Secret, and compares digests in constant time. Publishing the digest is
safe: a digest of 256 random bits cannot be turned back into the token, and no dictionary holds it.

The plaintext exists in two places only: the answer to the REST registration that created the
host (the caller keeps it), or, for a Host created another way (kubectl, Helm) that heartbeats
through the facade, a Secret ``gpufleet-agent-token-<host>`` in the operator's namespace that the
operator writes and that only cluster admins can read, the way Kubernetes keeps bootstrap tokens.
Hosts bound to a Kubernetes node (``spec.nodeName``) heartbeat through the API with their
agent's ServiceAccount and get no token at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from gpufleet.api import meta

PREFIX = "gfa_"
SECRET_TYPE = f"{meta.GROUP}/agent-token"
SECRET_KEY = "token"  # noqa: S105 - the key name inside the Secret, not a secret
#: The Host annotation holding the hex SHA-256 digest of the host's agent token.
DIGEST_ANNOTATION = f"{meta.GROUP}/agent-token-sha256"


def generate() -> str:
    """A new random 256-bit agent token, URL-safe, with a recognisable prefix for secret scanners."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """SHA-256 of a token: what verifiers keep instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def matches(token: str, expected_digest: bytes) -> bool:
    """Whether `token` hashes to `expected_digest`, compared in constant time."""
    return hmac.compare_digest(digest(token), expected_digest)


def digest_of_host(host_object: dict[str, Any]) -> bytes | None:
    """The agent-token digest a Host carries, or None (none issued, or not a digest)."""
    value = ((host_object.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def needs_token(host_object: dict[str, Any]) -> bool:
    """Whether a Host heartbeats through the facade yet has no token: no node, no digest.

    A Host bound to a node (``spec.nodeName``) is kept alive by that node's agent through the
    Kubernetes API, with the agent's own identity; a token for it would be a credential nobody uses.
    """
    return not (host_object.get("spec") or {}).get("nodeName") and digest_of_host(host_object) is None


def secret_name(host_name: str) -> str:
    """Name of the Secret holding a host's agent token."""
    return f"gpufleet-agent-token-{host_name}"


def secret_manifest(*, host_name: str, host_uid: str, namespace: str, token: str) -> dict[str, Any]:
    """The Secret that holds a host's token, owned by the Host so it goes when the Host goes."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(host_name),
            "namespace": namespace,
            "labels": {meta.HOST_LABEL: host_name, meta.MANAGED_BY_LABEL: meta.MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": meta.API_VERSION,
                    "kind": "Host",
                    "name": host_name,
                    "uid": host_uid,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {SECRET_KEY: base64.b64encode(token.encode("utf-8")).decode("ascii")},
    }


def token_from_secret(secret: dict[str, Any]) -> str | None:
    """The token a Secret holds, or None when it holds none."""
    encoded = (secret.get("data") or {}).get(SECRET_KEY)
    if not encoded:
        return None
    return base64.b64decode(encoded).decode("utf-8")
