"""1. POST /api/v1/hosts — 注册主机 (admin)."""

from __future__ import annotations

import re
from typing import Any

from ._client import Api, error, is_int, ok
from .conftest import HOSTS, host_body, unique_ip

HOST_ID = re.compile(r"^host-[a-z0-9]{10}$")
AGENT_TOKEN = re.compile(r"^gfa_[A-Za-z0-9_-]{43}$")


def test_register_returns_201_and_the_documented_data(api: Api) -> None:
    body = host_body(name="GPU-Server-Reg")
    resp = api.register(body)
    payload = ok(resp, 201, "主机注册成功")
    data = payload["data"]
    try:
        assert set(data) == {"host_id", "name", "status", "agent_token"}, data
        assert isinstance(data["host_id"], str) and HOST_ID.match(data["host_id"]), data
        assert data["name"] == "GPU-Server-Reg"
        assert data["status"] == "offline"
        assert isinstance(data["agent_token"], str) and AGENT_TOKEN.match(data["agent_token"]), data
    finally:
        api.delete(data["host_id"])


def test_register_ids_and_tokens_are_unique(new_host: Any) -> None:
    a, b = new_host(), new_host()
    assert a.host_id != b.host_id
    assert a.agent_token != b.agent_token


def test_registered_fields_read_back_in_detail(api: Api, new_host: Any) -> None:
    host = new_host(
        name="Reg-Detail",
        os_type="windows",
        os_version="Server 2022",
        total_cpu=64,
        total_memory=274877906944,
        total_disk=1,
    )
    detail = ok(api.detail(host.host_id), 200, "success")["data"]
    assert detail["host_id"] == host.host_id
    assert detail["name"] == "Reg-Detail"
    assert detail["ip_address"] == host.body["ip_address"]
    assert detail["os_type"] == "windows"
    assert detail["os_version"] == "Server 2022"
    assert detail["deployment_mode"] == "traditional"
    assert detail["total_cpu"] == 64 and is_int(detail["total_cpu"])
    assert detail["total_memory"] == 274877906944 and is_int(detail["total_memory"])
    assert detail["status"] == "offline"


def test_register_optional_fields_take_their_defaults(api: Api, new_host: Any) -> None:
    host = new_host(os_version=..., deployment_mode=..., total_disk=...)
    detail = ok(api.detail(host.host_id), 200, "success")["data"]
    assert detail["os_version"] == ""
    assert detail["deployment_mode"] == "traditional"


def test_register_kubernetes_mode_and_extras(api: Api, new_host: Any) -> None:
    host = new_host(
        deployment_mode="kubernetes", hostname="gpu01.example.com", labels={"region": "us-west", "zone": "a"}
    )
    detail = ok(api.detail(host.host_id), 200, "success")["data"]
    assert detail["deployment_mode"] == "kubernetes"
    assert detail["hostname"] == "gpu01.example.com"
    assert detail["labels"] == {"region": "us-west", "zone": "a"}


def test_register_ipv6_is_accepted_and_normalised(api: Api, new_host: Any) -> None:
    host = new_host(ip_address="2001:DB8:0:0::00A1")
    detail = ok(api.detail(host.host_id), 200, "success")["data"]
    assert detail["ip_address"] == "2001:db8::a1"


def test_registered_host_is_a_kubernetes_host(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host(name="Reg-Kube", labels={"team": "ml"})
    obj = custom.get_cluster_custom_object(*HOSTS, host.host_id)
    spec = obj["spec"]
    assert spec["displayName"] == "Reg-Kube"
    assert spec["ipAddress"] == host.body["ip_address"]
    assert spec["osType"] == "linux"
    assert spec["osVersion"] == "Ubuntu 20.04"
    assert spec["deploymentMode"] == "traditional"
    assert spec["totalCpu"] == 32
    assert spec["totalMemory"] == 137438953472
    assert spec["totalDisk"] == 2199023255552
    assert obj["metadata"]["labels"]["team"] == "ml"


def test_register_response_status_is_offline_even_if_body_has_status(api: Api) -> None:
    """`status` is not a registration field; an unknown field is rejected (docs/facade.md)."""
    before = api.total()
    resp = api.register({**host_body(), "status": "online"})
    error(resp, 400, 40002)
    assert api.total() == before


def test_register_ip_must_be_unique(api: Api, new_host: Any) -> None:
    ip = unique_ip()
    new_host(ip_address=ip)
    before = api.total()
    error(api.register(host_body(ip_address=ip)), 409, 40901)
    assert api.total() == before


def test_register_ip_uniqueness_uses_the_normalised_form(api: Api, new_host: Any) -> None:
    new_host(ip_address="2001:db8::b2")
    error(api.register(host_body(ip_address="2001:0DB8:0000::00B2")), 409, 40901)
