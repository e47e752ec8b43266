"""4. PUT /api/v1/hosts/{host_id} — 更新主机信息 (admin)."""

from __future__ import annotations

from typing import Any

import pytest

from ._client import Api, error, ok
from .conftest import HOSTS

UPDATED = "更新成功"


def test_update_with_the_documented_body(api: Api, new_host: Any) -> None:
    host = new_host(labels={"region": "eu", "zone": "a"})
    resp = api.update(host.host_id, {"name": "GPU-Server-01-Updated", "labels": {"region": "us-west", "zone": "b"}})
    body = ok(resp, 200, UPDATED)
    assert body == {"code": 0, "message": UPDATED}, "the document shows no data in the update response"
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["name"] == "GPU-Server-01-Updated"
    assert data["labels"] == {"region": "us-west", "zone": "b"}


def test_update_message_bytes(api: Api, new_host: Any) -> None:
    host = new_host()
    resp = api.update(host.host_id, {"name": "x"})
    ok(resp, 200, UPDATED)
    assert "更新成功".encode() in resp.raw or b"\\u66f4\\u65b0\\u6210\\u529f" in resp.raw


def test_update_labels_replace_the_whole_set(api: Api, new_host: Any) -> None:
    host = new_host(labels={"a": "1", "b": "2"})
    ok(api.update(host.host_id, {"labels": {"c": "3"}}), 200, UPDATED)
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data["labels"] == {"c": "3"}
    assert data["name"] == host.body["name"], "a labels-only update must keep the name"


def test_update_name_only_keeps_labels(api: Api, new_host: Any) -> None:
    host = new_host(labels={"keep": "me"})
    ok(api.update(host.host_id, {"name": "Renamed"}), 200, UPDATED)
    data = ok(api.detail(host.host_id), 200, "success")["data"]
    assert data == {**data, "name": "Renamed", "labels": {"keep": "me"}}


def test_update_empty_labels_clears_them(api: Api, new_host: Any) -> None:
    host = new_host(labels={"a": "1"})
    ok(api.update(host.host_id, {"labels": {}}), 200, UPDATED)
    assert ok(api.detail(host.host_id), 200, "success")["data"]["labels"] == {}


def test_update_is_visible_in_kubernetes_and_keeps_system_labels(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    before = custom.get_cluster_custom_object(*HOSTS, host.host_id)["metadata"].get("labels") or {}
    system = {k: v for k, v in before.items() if k.startswith("gpufleet.io/")}
    ok(api.update(host.host_id, {"name": "Kube-Renamed", "labels": {"zone": "b"}}), 200, UPDATED)
    obj = custom.get_cluster_custom_object(*HOSTS, host.host_id)
    assert obj["spec"]["displayName"] == "Kube-Renamed"
    labels = obj["metadata"].get("labels") or {}
    assert labels.get("zone") == "b"
    for key, value in system.items():
        assert labels.get(key) == value, f"system label {key} lost"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": 5},
        {"name": None},
        {"labels": "zone=b"},
        {"labels": ["zone"]},
        {"labels": {"zone": 1}},
        {"labels": {"bad key!": "v"}},
        {"labels": {"-leading": "v"}},
        {"labels": {"zone": "has space"}},
        {"labels": {"zone": "x" * 64}},
        {"labels": {"k" * 64: "v"}},
        {"labels": {"gpufleet.io/status": "online"}},
        {"name": "ok", "unknown_field": 1},
        {"ip_address": "10.0.0.1"},
        ["name"],
    ],
    ids=lambda b: repr(b)[:40],
)
def test_bad_update_is_400_and_changes_nothing(api: Api, new_host: Any, body: Any) -> None:
    host = new_host(labels={"zone": "a"})
    before = ok(api.detail(host.host_id), 200, "success")["data"]
    error(api.update(host.host_id, body), 400, 40002)
    assert ok(api.detail(host.host_id), 200, "success")["data"] == before


def test_update_malformed_json_is_400(api: Api, new_host: Any) -> None:
    host = new_host()
    error(api.request("PUT", f"/api/v1/hosts/{host.host_id}", raw=b'{"name": '), 400, 40001)


def test_update_unknown_host_is_404(api: Api) -> None:
    error(api.update("host-doesnotexist", {"name": "x"}), 404, 40401)


def test_update_wrong_content_type_is_415(api: Api, new_host: Any) -> None:
    host = new_host()
    error(
        api.request("PUT", f"/api/v1/hosts/{host.host_id}", raw=b'{"name":"x"}', content_type="text/plain"), 415, 41501
    )
    assert ok(api.detail(host.host_id), 200, "success")["data"]["name"] == host.body["name"]
