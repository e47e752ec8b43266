"""3. GET /api/v1/hosts/{host_id} — 获取主机详情 (any authenticated caller)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ._client import Api, error, is_int, ok, parse_ts

DETAIL_KEYS = {
    "host_id",
    "name",
    "hostname",
    "ip_address",
    "os_type",
    "os_version",
    "deployment_mode",
    "status",
    "health_status",
    "total_cpu",
    "used_cpu",
    "total_memory",
    "used_memory",
    "total_gpu",
    "used_gpu",
    "labels",
    "last_heartbeat",
    "created_at",
}


def test_detail_has_every_documented_field_with_its_type(api: Api, new_host: Any) -> None:
    host = new_host(name="Detail-Host", hostname="gpu01.example.com", labels={"region": "us-west", "zone": "a"})
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert set(data) == DETAIL_KEYS, sorted(set(data) ^ DETAIL_KEYS)
    for key in (
        "host_id",
        "name",
        "hostname",
        "ip_address",
        "os_type",
        "os_version",
        "deployment_mode",
        "status",
        "health_status",
        "created_at",
    ):
        assert isinstance(data[key], str), (key, data[key])
    for key in ("total_cpu", "total_memory", "used_memory", "total_gpu", "used_gpu"):
        assert is_int(data[key]), (key, data[key])
    assert type(data["used_cpu"]) in (int, float)
    assert isinstance(data["labels"], dict) and all(isinstance(v, str) for v in data["labels"].values())
    assert data["host_id"] == host.host_id
    assert data["hostname"] == "gpu01.example.com"
    assert data["labels"] == {"region": "us-west", "zone": "a"}


def test_detail_of_a_fresh_host(api: Api, new_host: Any) -> None:
    host = new_host()
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["status"] == "offline"
    assert data["health_status"] == "unknown"
    assert data["last_heartbeat"] is None
    assert data["hostname"] == ""
    assert data["labels"] == {}
    assert data["used_cpu"] == 0 and is_int(data["used_cpu"]), "whole amounts are integers"
    assert data["used_memory"] == 0 and data["total_gpu"] == 0 and data["used_gpu"] == 0
    created = parse_ts(data["created_at"])
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60


def test_detail_hides_system_labels(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host(labels={"zone": "a"})
    from .conftest import HOSTS

    labels = custom.get_cluster_custom_object(*HOSTS, host.host_id)["metadata"].get("labels") or {}
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert not any(k.startswith("gpufleet.io/") for k in data["labels"])
    assert data["labels"] == {k: v for k, v in labels.items() if not k.startswith("gpufleet.io/")}


def test_detail_unknown_host_is_404(api: Api) -> None:
    error(api.detail("host-doesnotexist"), 404, 40401)
    error(api.detail("no-such-host"), 404, 40401)


def test_viewer_can_read_detail(api: Api, new_host: Any) -> None:
    host = new_host()
    ok(api.detail(host.host_id, token=api.viewer), 200, "success")
