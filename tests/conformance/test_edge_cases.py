"""Edge cases a legacy caller can hit: non-ASCII names, races, big numbers, strict integers."""

from __future__ import annotations

import base64
import concurrent.futures
from typing import Any

import kubernetes
import pytest

from ._client import Api, error, ok, parse_ts, wait_for
from .conftest import host_body, unique_ip
from .test_gpus import make_gpu

BEAT = {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 1, "used_gpu": 0}


def test_chinese_name_round_trips(api: Api, new_host: Any) -> None:
    host = new_host(name="GPU服务器-01", os_version="统信 UOS 20")
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["name"] == "GPU服务器-01" and data["os_version"] == "统信 UOS 20"
    assert host.response["data"]["name"] == "GPU服务器-01"
    ok(api.update(host.host_id, {"name": "训练节点"}), 200, "更新成功")
    assert ok(api.detail(host.host_id), 200, "success")["data"]["name"] == "训练节点"


def test_name_of_253_characters_is_accepted(api: Api, new_host: Any) -> None:
    host = new_host(name="n" * 253)
    assert ok(api.detail(host.host_id), 200, "success")["data"]["name"] == "n" * 253


def test_prefixed_label_keys_are_accepted(api: Api, new_host: Any) -> None:
    host = new_host(labels={"example.com/zone": "a", "tier": ""})
    assert ok(api.detail(host.host_id), 200, "success")["data"]["labels"] == {"example.com/zone": "a", "tier": ""}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total_memory", 2**64),
        ("total_disk", 2**63),
        ("total_cpu", 2**63),
    ],
    ids=str,
)
def test_numbers_beyond_int64_are_400_not_500(api: Api, field: str, value: int) -> None:
    before = api.total()
    error(api.register(host_body(**{field: value})), 400, 40002)
    assert api.total() == before


def test_concurrent_registers_with_one_ip_make_one_host(api: Api) -> None:
    ip = unique_ip()
    before = api.total()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.register(host_body(ip_address=ip)), range(8)))
    created = [r for r in responses if r.status == 201]
    try:
        assert len(created) == 1, [r.status for r in responses]
        for resp in responses:
            if resp.status != 201:
                error(resp, 409, 40901)
        assert api.total() == before + 1
    finally:
        for resp in created:
            api.delete(resp.json()["data"]["host_id"])


@pytest.mark.parametrize("query", ["page_size=1_0", "page=%EF%BC%91", "page_size=%202", "page=0x1", "page=1e1"])
def test_page_parameters_must_be_plain_integers(api: Api, query: str) -> None:
    """The document types page/page_size as int: `1_0`, a full-width one (U+FF11), ` 2`, `0x1`, `1e1` are not."""
    error(api.list(query), 400, 40003)


def test_gpus_are_ordered_numerically(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    for index in (10, 2, 0):
        make_gpu(custom, host.host_id, index, {"state": "free"})
    items = wait_for(
        lambda: (i := ok(api.gpus(host.host_id), 200, "success")["data"]["items"]) and len(i) == 3 and i,
        10,
        what="three GPUs",
    )
    assert [i["gpu_index"] for i in items] == [0, 2, 10]


def test_second_heartbeat_moves_last_heartbeat_forward(api: Api, new_host: Any) -> None:
    import time

    host = new_host()
    ok(api.heartbeat(host.host_id, BEAT, token=host.agent_token), 200, "心跳上报成功")
    first = parse_ts(ok(api.detail(host.host_id), 200, "success")["data"]["last_heartbeat"])
    time.sleep(1.1)
    ok(api.heartbeat(host.host_id, BEAT, token=host.agent_token), 200, "心跳上报成功")
    second = parse_ts(ok(api.detail(host.host_id), 200, "success")["data"]["last_heartbeat"])
    assert second > first


def test_update_keeps_created_at(api: Api, new_host: Any) -> None:
    host = new_host()
    before = ok(api.detail(host.host_id), 200, "success")["data"]["created_at"]
    ok(api.update(host.host_id, {"name": "later"}), 200, "更新成功")
    assert ok(api.detail(host.host_id), 200, "success")["data"]["created_at"] == before


def test_rotating_the_token_revokes_the_old_one(api: Api, core: Any, custom: Any, new_host: Any) -> None:
    """Rotation as docs/operations.md describes it: drop the digest on the Host (and the Secret,
    if the operator made one); the operator issues a new token into the Secret."""
    from .conftest import HOSTS

    host = new_host()
    ok(api.heartbeat(host.host_id, BEAT, token=host.agent_token), 200, "心跳上报成功")
    name = f"gpufleet-agent-token-{host.host_id}"
    with pytest.raises(kubernetes.client.ApiException) as missing:  # the token left only in the answer
        core.read_namespaced_secret(name, "gpufleet")
    assert missing.value.status == 404
    custom.patch_cluster_custom_object(
        *HOSTS, host.host_id, {"metadata": {"annotations": {"gpufleet.io/agent-token-sha256": None}}}
    )

    def rotated() -> str | None:
        try:
            s = core.read_namespaced_secret(name, "gpufleet")
        except kubernetes.client.ApiException:
            return None
        return base64.b64decode(s.data["token"]).decode()

    new_token = wait_for(rotated, 10, what="the operator to issue a new token")
    assert new_token != host.agent_token
    wait_for(
        lambda: api.heartbeat(host.host_id, BEAT, token=new_token).status == 200,
        10,
        what="the new token to be accepted",
    )
    error(api.heartbeat(host.host_id, BEAT, token=host.agent_token), 401, 40102)


def test_delete_removes_gpus_and_token_secret(api: Api, custom: Any, core: Any) -> None:
    from .conftest import GPUS

    data = ok(api.register(host_body()), 201, "主机注册成功")["data"]
    host_id = data["host_id"]
    make_gpu(custom, host_id, 0, {"state": "free"})
    assert api.delete(host_id).status == 204

    def cleaned() -> bool:
        gpus = custom.list_cluster_custom_object(*GPUS, label_selector=f"gpufleet.io/host={host_id}")["items"]
        try:
            core.read_namespaced_secret(f"gpufleet-agent-token-{host_id}", "gpufleet")
        except kubernetes.client.ApiException as exc:
            return exc.status == 404 and not gpus
        return False

    wait_for(cleaned, 15, what="the host's GPUs and token Secret to be deleted")
