"""ServiceAccount tokens as kube-apiserver issues them through the TokenRequest API.

A token authenticates as ``system:serviceaccount:<namespace>:<name>`` in the groups
``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``. Bound to a pod (what
kubelet mounts into every pod) it also carries, in the user's ``extra``, the pod's name and uid
and, since Kubernetes 1.30 (ServiceAccountTokenPodNodeInfo), the name and uid of the pod's node:
the claim admission policies key node-restricted identities on. Every token has a credential id.
"""

from __future__ import annotations

import secrets
import uuid

from .auth import AccessTable

POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
NODE_NAME = "authentication.kubernetes.io/node-name"
NODE_UID = "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def mint(access: AccessTable, namespace: str, name: str, *, node: str | None = None, pod: str | None = None) -> str:
    """Register a new token of the ServiceAccount and return it.

    With ``node``, the token is bound to a pod on that node (``pod``, or a made-up pod name) and
    carries the node-name claim; without, it is a plain TokenRequest token that names no node.
    """
    extra: dict[str, list[str]] = {CREDENTIAL_ID: [f"JTI={uuid.uuid4()}"]}
    if node is not None or pod is not None:
        pod_name = pod or f"{name}-{secrets.token_hex(3)}"
        extra[POD_NAME] = [pod_name]
        extra[POD_UID] = [str(uuid.uuid4())]
    if node is not None:
        extra[NODE_NAME] = [node]
        extra[NODE_UID] = [str(uuid.uuid4())]
    token = f"emulated-sa.{secrets.token_urlsafe(24)}"
    access.add_user(
        token, username(namespace, name), ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"], extra
    )
    return token
