"""5. DELETE /api/v1/hosts/{host_id} — 删除主机 (admin)."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from ._client import Api, error, ok, wait_for
from .conftest import HOSTS, host_body


def test_delete_is_204_with_an_empty_body_then_404(api: Api) -> None:
    data = ok(api.register(host_body()), 201, "主机注册成功")["data"]
    host_id = data["host_id"]
    resp = api.delete(host_id)
    assert resp.status == 204, resp
    assert resp.raw == b"", f"a 204 carries no body: {resp.raw!r}"
    assert resp.headers.get("Content-Length") in (None, "0"), resp.headers
    error(api.detail(host_id), 404, 40401)
    error(api.gpus(host_id), 404, 40401)
    error(api.update(host_id, {"name": "x"}), 404, 40401)
    error(api.delete(host_id), 404, 40401)
    assert host_id not in {i["host_id"] for i in api.all_hosts()}


def test_delete_removes_the_kubernetes_host(api: Api, custom: Any) -> None:
    host_id = ok(api.register(host_body()), 201, "主机注册成功")["data"]["host_id"]
    assert api.delete(host_id).status == 204

    def gone() -> bool:
        try:
            custom.get_cluster_custom_object(*HOSTS, host_id)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 15, what=f"Host {host_id} to be gone from Kubernetes")


def test_heartbeat_after_delete_does_not_recreate(api: Api) -> None:
    data = ok(api.register(host_body()), 201, "主机注册成功")["data"]
    host_id, token = data["host_id"], data["agent_token"]
    assert api.delete(host_id).status == 204
    resp = api.heartbeat(
        host_id,
        {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 1, "used_gpu": 0},
        token=token,
    )
    error(resp, (404, 401), (40401, 40102))
    error(api.detail(host_id), 404, 40401)


def test_delete_unknown_is_404(api: Api) -> None:
    error(api.delete("host-doesnotexist"), 404, 40401)


def test_deleted_ip_can_be_registered_again(api: Api) -> None:
    body = host_body()
    host_id = ok(api.register(body), 201, "主机注册成功")["data"]["host_id"]
    assert api.delete(host_id).status == 204

    def again() -> Any:
        resp = api.register(body)
        return resp if resp.status == 201 else None

    resp = wait_for(again, 15, interval=0.5, what="the IP address to be free again after delete")
    api.delete(resp.json()["data"]["host_id"])


@pytest.mark.parametrize("token", ["viewer", None])
def test_delete_needs_admin(api: Api, new_host: Any, token: str | None) -> None:
    host = new_host()
    resp = api.delete(host.host_id, token=api.viewer if token else None)
    error(resp, 403 if token else 401, 40301 if token else 40101)
    ok(api.detail(host.host_id), 200, "success")
