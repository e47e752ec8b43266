"""7. POST /api/v1/hosts/{host_id}/heartbeat — 主机心跳上报 (the host's agent token)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from ._client import Api, error, ok, parse_ts, wait_for
from .conftest import HOSTS

RECEIVED = "心跳上报成功"
DOC_BODY = {"status": "online", "health_status": "healthy", "used_cpu": 8, "used_memory": 34359738368, "used_gpu": 2}


def test_heartbeat_with_the_documented_body(api: Api, new_host: Any) -> None:
    host = new_host()
    resp = api.heartbeat(host.host_id, DOC_BODY, token=host.agent_token)
    body = ok(resp, 200, RECEIVED)
    assert body == {"code": 0, "message": RECEIVED}, "the document shows no data in the heartbeat response"
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    beat = parse_ts(data["last_heartbeat"])
    assert abs((dt.datetime.now(dt.UTC) - beat).total_seconds()) < 30, data["last_heartbeat"]
    assert data["health_status"] == "healthy"
    assert data["used_cpu"] == 8 and type(data["used_cpu"]) is int
    assert data["used_memory"] == 34359738368
    # used_gpu is the operator's roll-up: the heartbeat's figure for a host without GPU objects
    wait_for(
        lambda: ok(api.detail(host.host_id), 200, "success")["data"]["used_gpu"] == 2,
        10,
        what="used_gpu 2 (reported by the heartbeat) in the detail",
    )


def test_heartbeat_goes_online_then_offline_after_the_grace_period(api: Api, new_host: Any, dev: Any) -> None:
    host = new_host()
    assert ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "offline"

    def online() -> bool:
        ok(api.heartbeat(host.host_id, DOC_BODY, token=host.agent_token), 200, RECEIVED)
        return ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "online"

    wait_for(online, dev.grace, interval=0.5, what="status online after heartbeats")
    assert host.host_id in {i["host_id"] for i in api.all_hosts("status=online")}
    assert host.host_id not in {i["host_id"] for i in api.all_hosts("status=offline")}
    # while heartbeats keep arriving, the host stays online past the grace period (no flapping)
    until = time.monotonic() + dev.grace + 1
    while time.monotonic() < until:
        ok(api.heartbeat(host.host_id, DOC_BODY, token=host.agent_token), 200, RECEIVED)
        assert ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "online", "flapped offline"
        time.sleep(1)
    stopped = time.monotonic()
    wait_for(
        lambda: ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "offline",
        dev.grace + 10,
        interval=0.5,
        what="status offline after the grace period",
    )
    assert time.monotonic() - stopped >= dev.grace - 1.5, "went offline before the grace period elapsed"
    assert host.host_id in {i["host_id"] for i in api.all_hosts("status=offline")}


def test_a_single_heartbeat_brings_the_host_online(api: Api, new_host: Any, dev: Any) -> None:
    host = new_host()
    ok(api.heartbeat(host.host_id, DOC_BODY, token=host.agent_token), 200, RECEIVED)
    wait_for(
        lambda: ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "online",
        dev.grace - 1,
        interval=0.2,
        what="status online after one heartbeat",
    )


def test_heartbeat_reporting_offline_makes_the_host_offline(api: Api, new_host: Any, dev: Any) -> None:
    host = new_host()

    def online() -> bool:
        ok(api.heartbeat(host.host_id, DOC_BODY, token=host.agent_token), 200, RECEIVED)
        return ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "online"

    wait_for(online, dev.grace, interval=0.5, what="status online after heartbeats")
    ok(api.heartbeat(host.host_id, {**DOC_BODY, "status": "offline"}, token=host.agent_token), 200, RECEIVED)
    wait_for(
        lambda: ok(api.detail(host.host_id), 200, "success")["data"]["status"] == "offline",
        dev.grace - 1,
        interval=0.25,
        what="status offline right after an offline heartbeat",
    )


def test_whole_amounts_are_integers(api: Api, new_host: Any) -> None:
    host = new_host()
    ok(api.heartbeat(host.host_id, {**DOC_BODY, "used_cpu": 8.0}, token=host.agent_token), 200, RECEIVED)
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["used_cpu"] == 8 and type(data["used_cpu"]) is int, "8.0 is written as 8"


def test_heartbeat_kubernetes_status(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    ok(
        api.heartbeat(
            host.host_id, {**DOC_BODY, "health_status": "unhealthy", "used_cpu": 2.5}, token=host.agent_token
        ),
        200,
        RECEIVED,
    )
    status = custom.get_cluster_custom_object(*HOSTS, host.host_id).get("status") or {}
    assert status.get("healthStatus") == "unhealthy"
    assert status.get("lastHeartbeat")
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["health_status"] == "unhealthy"
    assert data["used_cpu"] == 2.5


def test_another_hosts_token_is_403(api: Api, new_host: Any) -> None:
    a, b = new_host(), new_host()
    error(api.heartbeat(a.host_id, DOC_BODY, token=b.agent_token), 403, 40302)
    assert ok(api.detail(a.host_id), 200, "success")["data"]["last_heartbeat"] is None


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_admin_and_viewer_tokens_cannot_heartbeat(api: Api, new_host: Any, who: str) -> None:
    host = new_host()
    token = api.admin if who == "admin" else api.viewer
    error(api.heartbeat(host.host_id, DOC_BODY, token=token), (401, 403), (40301, 40102))
    assert ok(api.detail(host.host_id), 200, "success")["data"]["last_heartbeat"] is None


def test_no_token_or_unknown_token_is_401(api: Api, new_host: Any) -> None:
    host = new_host()
    resp = api.heartbeat(host.host_id, DOC_BODY, token=None)
    error(resp, 401, 40101)
    assert (resp.headers.get("WWW-Authenticate") or "").lower().startswith("bearer")
    resp = api.heartbeat(host.host_id, DOC_BODY, token="gfa_" + "x" * 43)
    error(resp, 401, 40102)
    assert (resp.headers.get("WWW-Authenticate") or "").lower().startswith("bearer")
    assert ok(api.detail(host.host_id), 200, "success")["data"]["last_heartbeat"] is None


def test_agent_token_cannot_do_anything_else(api: Api, new_host: Any) -> None:
    host = new_host()
    token = host.agent_token
    error(api.list(token=token), 403, 40301)
    error(api.detail(host.host_id, token=token), 403, 40301)
    error(api.gpus(host.host_id, token=token), 403, 40301)
    error(api.update(host.host_id, {"name": "x"}, token=token), 403, 40301)
    error(api.delete(host.host_id, token=token), 403, 40301)
    from .conftest import host_body

    error(api.register(host_body(), token=token), 403, 40301)
    ok(api.detail(host.host_id), 200, "success")


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in DOC_BODY.items() if k != "status"},
        {k: v for k, v in DOC_BODY.items() if k != "health_status"},
        {k: v for k, v in DOC_BODY.items() if k != "used_cpu"},
        {k: v for k, v in DOC_BODY.items() if k != "used_memory"},
        {k: v for k, v in DOC_BODY.items() if k != "used_gpu"},
        {**DOC_BODY, "status": "busy"},
        {**DOC_BODY, "health_status": "fine"},
        {**DOC_BODY, "used_cpu": -1},
        {**DOC_BODY, "used_memory": -1},
        {**DOC_BODY, "used_gpu": -1},
        {**DOC_BODY, "used_memory": "34359738368"},
        {**DOC_BODY, "used_gpu": 1.5},
        {**DOC_BODY, "used_cpu": "8"},
        {},
        [],
    ],
    ids=lambda b: repr(b)[:50],
)
def test_bad_heartbeat_is_400_and_changes_nothing(api: Api, new_host: Any, body: Any) -> None:
    host = new_host()
    error(api.heartbeat(host.host_id, body, token=host.agent_token), 400, 40002)
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["last_heartbeat"] is None and data["health_status"] == "unknown"


def test_heartbeat_malformed_json_and_content_type(api: Api, new_host: Any) -> None:
    host = new_host()
    path = f"/api/v1/hosts/{host.host_id}/heartbeat"
    error(api.request("POST", path, raw=b"{not json", token=host.agent_token), 400, 40001)
    error(
        api.request("POST", path, raw=b'{"status":"online"}', content_type="text/plain", token=host.agent_token),
        415,
        41501,
    )
