"""Per-host agent tokens: how they are made, where they live, and how they are checked.

A token is 256 random bits, kept in a Secret in the operator's namespace (labelled for gpufleet
and owned by its Host), the way Kubernetes keeps bootstrap tokens: readable only through RBAC
on Secrets. Whoever verifies tokens (the facade) keeps only their SHA-256 digests in memory and
compares digests in constant time, so a token never needs to be held or logged in the clear.
Deleting the Secret rotates the token: the operator issues a new one.
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


def generate() -> str:
    """A new random 256-bit agent token, URL-safe, with a recognisable prefix for secret scanners."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """SHA-256 of a token: what verifiers keep instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def matches(token: str, expected_digest: bytes) -> bool:
    """Whether `token` hashes to `expected_digest`, compared in constant time."""
    return hmac.compare_digest(digest(token), expected_digest)


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
