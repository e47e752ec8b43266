"""What the facade tests share: tokens, a registration body, an HTTP client and raw API calls."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import subprocess
import uuid
from typing import Any

import aiohttp
import pytest

from gpufleet.api import formats, host, meta
from tests.support.waiting import eventually as eventually  # re-exported: the facade tests import it from here

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
VIEWER_TOKEN = "viewer-" + uuid.uuid4().hex
HOSTS_PATH = f"/apis/{meta.GROUP}/{meta.VERSION}/{host.PLURAL}"
GPUS_PATH = f"/apis/{meta.GROUP}/{meta.VERSION}/gpus"
MERGE = "application/merge-patch+json"

#: The API document's registration example (its IP is replaced by a unique one per test).
REGISTRATION: dict[str, Any] = {
    "name": "GPU-Server-01",
    "os_type": "linux",
    "os_version": "Ubuntu 20.04",
    "deployment_mode": "traditional",
    "total_cpu": 32,
    "total_memory": 137438953472,
    "total_disk": 2199023255552,
}
HEARTBEAT: dict[str, Any] = {
    "status": "online",
    "health_status": "healthy",
    "used_cpu": 8,
    "used_memory": 34359738368,
    "used_gpu": 2,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_ip() -> str:
    """An address no other test uses (the fleet rejects a second host with the same IP)."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2]}"


def unique_ipv6_groups() -> tuple[int, int]:
    """Two non-zero 16-bit groups that make `fd00::<a>:<b>` an address no other test uses.

    Thirty-two random bits, as `unique_ip` has 24: a test that registers an address a few times
    over, in several spellings, must not meet an address it registered itself a round before.
    The groups are never 0, so every spelling built from them is of the same address.
    """
    raw = uuid.uuid4().bytes
    return 1 + int.from_bytes(raw[0:2]) % 0xFFFF, 1 + int.from_bytes(raw[2:4]) % 0xFFFF


def unique_name(prefix: str = "kubectl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class K8s:
    """Raw synchronous calls to the Kubernetes API (as kubectl would make them): (status, JSON)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        serialized = self.client.param_serialize(
            method,
            path,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*serialized)
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        status, answer = self(method, path, body, content_type)
        assert 200 <= status < 300, (status, answer)
        return answer

    def create_host(self, name: str, ip: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": host.KIND,
            "metadata": {"name": name},
            "spec": {
                "displayName": name,
                "ipAddress": ip,
                "osType": "linux",
                "totalCpu": 4,
                "totalMemory": 1024,
                **spec,
            },
        }
        created: dict[str, Any] = self.ok("POST", HOSTS_PATH, body)
        return created

    def patch_status(self, name: str, status: dict[str, Any]) -> Any:
        """What the operator would write (state, roll-up), so tests need no operator."""
        return self.ok("PATCH", f"{HOSTS_PATH}/{name}/status", {"status": status}, MERGE)


@dataclasses.dataclass
class Facade:
    """A running facade and an HTTP client for it."""

    url: str
    http: aiohttp.ClientSession
    app: Any
    registered: list[str]

    async def call(self, method: str, path: str, *, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> tuple[int, Any]:
        """(HTTP status, parsed JSON body or None) of one request."""
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def register(self, **fields: Any) -> dict[str, Any]:
        """Register a host (a unique IP unless given); the response's `data`."""
        body = {**REGISTRATION, "ip_address": unique_ip(), **fields}
        status, answer = await self.call("POST", "/api/v1/hosts", json=body)
        assert status == 201, answer
        data: dict[str, Any] = answer["data"]
        self.registered.append(data["host_id"])
        return data

    async def heartbeat(self, host_id: str, token: str | None, **fields: Any) -> tuple[int, Any]:
        return await self.call("POST", f"/api/v1/hosts/{host_id}/heartbeat", token=token, json={**HEARTBEAT, **fields})

    async def detail(self, host_id: str) -> dict[str, Any]:
        status, answer = await self.call("GET", f"/api/v1/hosts/{host_id}", token=VIEWER_TOKEN)
        assert status == 200, answer
        data: dict[str, Any] = answer["data"]
        return data

    async def all_hosts(self, **query: Any) -> list[dict[str, Any]]:
        """Every host, page after page."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            status, answer = await self.call(
                "GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page": page, "page_size": 100, **query}
            )
            assert status == 200, answer
            items += answer["data"]["items"]
            if page >= answer["data"]["pagination"]["total_pages"]:
                return items
            page += 1


def hosts_with_ip(k8s: K8s, ip: str) -> list[str]:
    """Names of the Hosts the API has (being deleted or not) with this IP address, however spelled."""
    wanted = formats.same_ip_key(ip)
    items = k8s.ok("GET", HOSTS_PATH)["items"]
    return sorted(
        item["metadata"]["name"] for item in items if formats.same_ip_key(item["spec"]["ipAddress"]) == wanted
    )


def configmap_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


def self_signed(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl in `folder` (the test skips without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "tls.crt", folder / "tls.key"
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key
