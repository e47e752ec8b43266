"""Kubernetes interoperability: kubectl-made hosts show through REST and vice versa."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from typing import Any

import kubernetes
import pytest

from ._client import Api, error, ok, parse_ts, wait_for
from .conftest import HOSTS, unique_ip

_names = itertools.count(1)


def host_manifest(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name, "labels": {"region": "us-west", "zone": "a"}},
        "spec": {
            "displayName": "Kubectl-Host",
            "hostname": "gpu07.example.com",
            "ipAddress": ip,
            "osType": "linux",
            "osVersion": "Ubuntu 22.04",
            "deploymentMode": "kubernetes",
            "totalCpu": 16,
            "totalMemory": 68719476736,
            "totalDisk": 1099511627776,
        },
    }


@pytest.fixture
def kube_host(custom: Any) -> Any:
    made: list[str] = []

    def make() -> dict[str, Any]:
        name = f"conformance-node-{next(_names)}"
        obj = custom.create_cluster_custom_object(*HOSTS, host_manifest(name, unique_ip()))
        made.append(name)
        return obj

    yield make
    for name in made:
        with contextlib.suppress(kubernetes.client.ApiException):
            custom.delete_cluster_custom_object(*HOSTS, name)


def test_client_created_host_is_visible_through_rest(api: Api, kube_host: Any) -> None:
    obj = kube_host()
    name = obj["metadata"]["name"]
    resp = wait_for(lambda: (r := api.detail(name)).status == 200 and r, 10, what=f"{name} in REST")
    data = ok(resp, 200, "success")["data"]
    assert data["host_id"] == name
    assert data["name"] == "Kubectl-Host"
    assert data["hostname"] == "gpu07.example.com"
    assert data["ip_address"] == obj["spec"]["ipAddress"]
    assert data["os_type"] == "linux" and data["os_version"] == "Ubuntu 22.04"
    assert data["deployment_mode"] == "kubernetes"
    assert data["total_cpu"] == 16 and data["total_memory"] == 68719476736
    assert data["labels"] == {"region": "us-west", "zone": "a"}
    assert data["status"] == "offline"
    parse_ts(data["created_at"])
    assert name in {i["host_id"] for i in api.all_hosts()}


def test_client_created_host_gets_an_agent_token_that_heartbeats(api: Api, core: Any, kube_host: Any) -> None:
    name = kube_host()["metadata"]["name"]

    def token() -> str | None:
        try:
            secret = core.read_namespaced_secret(f"gpufleet-agent-token-{name}", "gpufleet")
        except kubernetes.client.ApiException:
            return None
        return base64.b64decode(secret.data["token"]).decode() if secret.data and "token" in secret.data else None

    agent = wait_for(token, 10, what="the operator to create the agent-token Secret")
    body = {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 1, "used_gpu": 0}
    wait_for(
        lambda: api.heartbeat(name, body, token=agent).status == 200,
        10,
        what="the facade to accept the operator-made token",
    )
    assert ok(api.detail(name), 200, "success")["data"]["last_heartbeat"]


def test_client_deleted_host_is_gone_from_rest(api: Api, custom: Any, kube_host: Any) -> None:
    name = kube_host()["metadata"]["name"]
    wait_for(lambda: api.detail(name).status == 200, 10, what="the host in REST")
    custom.delete_cluster_custom_object(*HOSTS, name)
    wait_for(lambda: api.detail(name).status == 404, 15, what="the host to 404 in REST")
    error(api.detail(name), 404, 40401)


def test_client_label_change_shows_in_rest(api: Api, custom: Any, kube_host: Any) -> None:
    name = kube_host()["metadata"]["name"]
    custom.patch_cluster_custom_object(*HOSTS, name, {"metadata": {"labels": {"zone": "c"}}})
    wait_for(
        lambda: api.detail(name).json().get("data", {}).get("labels", {}).get("zone") == "c",
        10,
        what="label zone=c in REST",
    )


def test_rest_registered_host_is_listed_by_kubectl(api: Api, kubectl: Any, new_host: Any) -> None:
    host = new_host(name="Via-REST")
    out = kubectl("get", "hosts.gpufleet.io", host.host_id, "-o", "json").stdout
    obj = json.loads(out)
    assert obj["spec"]["displayName"] == "Via-REST"
    assert obj["spec"]["ipAddress"] == host.body["ip_address"]
    names = kubectl("get", "hosts.gpufleet.io", "-o", "name").stdout.split()
    assert f"host.gpufleet.io/{host.host_id}" in names


def test_kubectl_applied_host_is_visible_through_rest(api: Api, kubectl: Any) -> None:
    name = f"conformance-kubectl-{next(_names)}"
    manifest = json.dumps(host_manifest(name, unique_ip()))
    kubectl("apply", "-f", "-", stdin=manifest)
    try:
        wait_for(lambda: api.detail(name).status == 200, 10, what="kubectl-applied host in REST")
        assert ok(api.detail(name), 200, "success")["data"]["name"] == "Kubectl-Host"
        ok(api.update(name, {"name": "Renamed-By-REST"}), 200, "更新成功")
        out = json.loads(kubectl("get", "hosts.gpufleet.io", name, "-o", "json").stdout)
        assert out["spec"]["displayName"] == "Renamed-By-REST"
    finally:
        kubectl("delete", "hosts.gpufleet.io", name, "--wait=false", check=False)


def test_ip_of_a_client_created_host_is_taken(api: Api, kube_host: Any) -> None:
    obj = kube_host()
    wait_for(lambda: api.detail(obj["metadata"]["name"]).status == 200, 10, what="the host in REST")
    from .conftest import host_body

    before = api.total()
    error(api.register(host_body(ip_address=obj["spec"]["ipAddress"])), 409, 40901)
    assert api.total() == before


def test_minimal_client_objects_read_with_documented_types(api: Api, custom: Any) -> None:
    """A Host and a GPU with only their required fields still read back with the documented types."""
    from .conftest import GPUS
    from .test_detail import DETAIL_KEYS

    name = f"conformance-minimal-{next(_names)}"
    manifest = {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name, "labels": {"gpufleet.io/custom-system": "x", "team": "ml"}},
        "spec": {
            "displayName": "Minimal",
            "ipAddress": unique_ip(),
            "osType": "windows",
            "totalCpu": 1,
            "totalMemory": 1,
        },
    }
    custom.create_cluster_custom_object(*HOSTS, manifest)
    try:
        custom.create_cluster_custom_object(
            *GPUS,
            {
                "apiVersion": "gpufleet.io/v1alpha1",
                "kind": "GPU",
                "metadata": {"name": f"{name}-gpu0", "labels": {"gpufleet.io/host": name}},
                "spec": {"hostName": name, "index": 0},
            },
        )
        resp = wait_for(lambda: (r := api.detail(name)).status == 200 and r, 10, what="the minimal host in REST")
        data = ok(resp, 200, "success")["data"]
        assert set(data) == DETAIL_KEYS
        assert data["hostname"] == "" and data["os_version"] == ""
        assert data["deployment_mode"] == "traditional"
        assert data["labels"] == {"team": "ml"}
        assert data["health_status"] == "unknown" and data["last_heartbeat"] is None
        items = wait_for(lambda: ok(api.gpus(name), 200, "success")["data"]["items"], 10, what="the GPU")
        assert items[0]["name"] == "" and items[0]["memory_total"] == 0 and items[0]["gpu_index"] == 0
        assert items[0]["status"] == "unknown"
    finally:
        with contextlib.suppress(kubernetes.client.ApiException):
            custom.delete_cluster_custom_object(*HOSTS, name)
