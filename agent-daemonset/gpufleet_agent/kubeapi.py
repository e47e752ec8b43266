"""A small Kubernetes REST client for the agent: in-cluster config or a kubeconfig, over aiohttp.

Why not `kubernetes_asyncio` like the facade: importing it costs ~40 MB of resident memory
(its thousands of generated model classes), two thirds of the agent's 60 MB budget on every
GPU node, and the agent needs six calls on two resources. This client speaks the same REST API
with the same credentials: the service-account token (re-read as kubelet rotates it) and CA in
a pod, or the current context of `KUBECONFIG` (token, token file, client certificate, CA)
outside one. Exec and auth-provider plugins are not supported; they are refused with a message.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import ssl
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import yaml

from gpufleet.api import meta

GPUS = f"/apis/{meta.API_VERSION}/gpus"
HOSTS = f"/apis/{meta.API_VERSION}/hosts"
MERGE_PATCH = "application/merge-patch+json"

SERVICE_ACCOUNT = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TOKEN_REREAD_SECONDS = 60.0

JsonObj = dict[str, Any]


class ConfigError(Exception):
    """The agent cannot tell how to reach the API server."""


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class _Token:
    """A bearer token, fixed or read from a file that may be rotated underneath us."""

    def __init__(self, value: str | None = None, path: pathlib.Path | None = None) -> None:
        self._value = value
        self._path = path
        self._read_at = -_TOKEN_REREAD_SECONDS

    def get(self) -> str | None:
        if self._path is not None and time.monotonic() - self._read_at >= _TOKEN_REREAD_SECONDS:
            self._value = self._path.read_text().strip()
            self._read_at = time.monotonic()
        return self._value


class KubeApi:
    """JSON requests against one API server; errors become `ApiError`."""

    def __init__(
        self, server: str, *, token: _Token, ssl_context: ssl.SSLContext | None, timeout_seconds: float = 10.0
    ) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: JsonObj | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JsonObj:
        headers = {"Accept": "application/json"}
        token = self._token.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            async with self._session.request(
                method, self.server + path, data=data, headers=headers, params=params, ssl=self._ssl
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, "Unreachable", f"API server unreachable: {error.__class__.__name__} {error}") from None
        try:
            answer: JsonObj = json.loads(text) if text else {}
        except ValueError:
            answer = {"message": text[:200]}
        if status >= 400:
            raise ApiError(status, str(answer.get("reason", "")), str(answer.get("message", "")))
        return answer

    async def get(self, path: str) -> JsonObj:
        return await self.request("GET", path)

    async def list(self, path: str, *, label_selector: str | None = None) -> list[JsonObj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[JsonObj] = (await self.request("GET", path, params=params)).get("items") or []
        return items

    async def create(self, path: str, body: JsonObj) -> JsonObj:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, body: JsonObj) -> JsonObj:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> JsonObj:
        return await self.request("DELETE", path)


def connect(kubeconfig: str | None = None) -> KubeApi:
    """A client for the pod's service account, or for `kubeconfig` / `$KUBECONFIG` / `~/.kube/config`."""
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and (SERVICE_ACCOUNT / "token").exists():
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        return KubeApi(f"https://{host}:{port}", token=_Token(path=SERVICE_ACCOUNT / "token"), ssl_context=context)
    return _from_kubeconfig(_kubeconfig_path(kubeconfig))


def _kubeconfig_path(kubeconfig: str | None) -> pathlib.Path:
    if kubeconfig is None:
        kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    path = pathlib.Path(kubeconfig).expanduser()
    if not path.exists():
        raise ConfigError(f"not in a pod and no kubeconfig at {path}: set KUBECONFIG")
    return path


def _named(entries: list[JsonObj] | None, name: str, what: str, path: pathlib.Path) -> JsonObj:
    for entry in entries or []:
        if entry.get("name") == name:
            found: JsonObj = entry.get(what) or {}
            return found
    raise ConfigError(f"{path}: no {what} named {name!r}")


def _from_kubeconfig(path: pathlib.Path) -> KubeApi:
    config = yaml.safe_load(path.read_text()) or {}
    context_name = config.get("current-context")
    if not context_name:
        raise ConfigError(f"{path}: no current-context")
    context = _named(config.get("contexts"), context_name, "context", path)
    cluster = _named(config.get("clusters"), context.get("cluster", ""), "cluster", path)
    user = _named(config.get("users"), context.get("user", ""), "user", path) if context.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(f"{path}: user {context.get('user')!r} uses an exec/auth-provider plugin, unsupported here")
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{path}: cluster {context.get('cluster')!r} has no server")
    base = path.parent
    ssl_context = None
    if server.startswith("https:"):
        ssl_context = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        elif "certificate-authority-data" in cluster:
            ssl_context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            ssl_context.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        _load_client_certificate(ssl_context, user, base)
    token = _Token(path=base / user["tokenFile"]) if "tokenFile" in user else _Token(value=user.get("token"))
    return KubeApi(server, token=token, ssl_context=ssl_context)


def _load_client_certificate(context: ssl.SSLContext, user: JsonObj, base: pathlib.Path) -> None:
    if "client-certificate-data" in user and "client-key-data" in user:
        # ssl loads certificates from files only; keep them in a private temporary directory.
        folder = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-agent-"))
        cert, key = folder / "client.crt", folder / "client.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.touch(mode=0o600)
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(str(cert), str(key))
    elif "client-certificate" in user and "client-key" in user:
        context.load_cert_chain(str(base / user["client-certificate"]), str(base / user["client-key"]))
