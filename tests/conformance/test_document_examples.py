"""The document's example payloads, replayed verbatim; responses must have the documented shape.

Each request body below is copied from the document (000_0d413d8c978fa45b.txt). Each response
is compared with the document's example response: same keys at every level, same JSON types,
the same `code` and the same success message byte for byte (values such as ids naturally differ).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ._client import Api, error, ok, wait_for
from .conftest import GPUS

REGISTER_REQUEST = """{
  "name": "GPU-Server-01",
  "ip_address": "192.168.1.10",
  "os_type": "linux",
  "os_version": "Ubuntu 20.04",
  "deployment_mode": "traditional",
  "total_cpu": 32,
  "total_memory": 137438953472,
  "total_disk": 2199023255552
}"""
REGISTER_RESPONSE = """{
  "code": 0,
  "message": "主机注册成功",
  "data": {
    "host_id": "host-abc123",
    "name": "GPU-Server-01",
    "status": "offline",
    "agent_token": "agent-token-xyz789"
  }
}"""
LIST_RESPONSE = """{
  "code": 0,
  "message": "success",
  "data": {
    "items": [
      {
        "host_id": "host-abc123",
        "name": "GPU-Server-01",
        "ip_address": "192.168.1.10",
        "os_type": "linux",
        "status": "online",
        "total_cpu": 32,
        "used_cpu": 8,
        "total_memory": 137438953472,
        "used_memory": 34359738368,
        "total_gpu": 4,
        "used_gpu": 2,
        "last_heartbeat": "2026-01-26T10:00:00Z"
      }
    ],
    "pagination": {
      "page": 1,
      "page_size": 20,
      "total": 10,
      "total_pages": 1
    }
  }
}"""
DETAIL_RESPONSE = """{
  "code": 0,
  "message": "success",
  "data": {
    "host_id": "host-abc123",
    "name": "GPU-Server-01",
    "hostname": "gpu01.example.com",
    "ip_address": "192.168.1.10",
    "os_type": "linux",
    "os_version": "Ubuntu 20.04",
    "deployment_mode": "traditional",
    "status": "online",
    "health_status": "healthy",
    "total_cpu": 32,
    "used_cpu": 8,
    "total_memory": 137438953472,
    "used_memory": 34359738368,
    "total_gpu": 4,
    "used_gpu": 2,
    "labels": {
      "region": "us-west",
      "zone": "a"
    },
    "last_heartbeat": "2026-01-26T10:00:00Z",
    "created_at": "2026-01-20T10:00:00Z"
  }
}"""
UPDATE_REQUEST = """{
  "name": "GPU-Server-01-Updated",
  "labels": {
    "region": "us-west",
    "zone": "b"
  }
}"""
UPDATE_RESPONSE = """{
  "code": 0,
  "message": "更新成功"
}"""
GPUS_RESPONSE = """{
  "code": 0,
  "message": "success",
  "data": {
    "items": [
      {
        "gpu_id": 1,
        "gpu_index": 0,
        "name": "Tesla V100-SXM2-32GB",
        "memory_total": 34359738368,
        "status": "allocated",
        "allocated_to": "env-xyz789",
        "temperature": 68.5,
        "utilization": 85.5
      }
    ]
  }
}"""
HEARTBEAT_REQUEST = """{
  "status": "online",
  "health_status": "healthy",
  "used_cpu": 8,
  "used_memory": 34359738368,
  "used_gpu": 2
}"""
HEARTBEAT_RESPONSE = """{
  "code": 0,
  "message": "心跳上报成功"
}"""


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def assert_same_shape(actual: Any, example: Any, where: str = "$") -> None:
    """Same keys at every level and the same JSON types as the document's example."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where}: object expected, got {kind(actual)}"
        if where.endswith(".labels"):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in actual.items()), where
            return
        assert set(actual) == set(example), f"{where}: keys differ: {sorted(set(actual) ^ set(example))}"
        for key in example:
            assert_same_shape(actual[key], example[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list), f"{where}: array expected"
        assert actual, f"{where}: the document shows items here, got none"
        for i, item in enumerate(actual):
            assert_same_shape(item, example[0], f"{where}[{i}]")
    else:
        want, got = kind(example), kind(actual)
        # a whole number written as 68.0 would still be a number; the document's 68.5 is a number
        assert got == want or (want == "number" and got == "integer"), (
            f"{where}: {want} expected, got {got} ({actual!r})"
        )


def test_the_documented_conversation(api: Api, custom: Any) -> None:
    # 1. register, verbatim
    resp = api.request("POST", "/api/v1/hosts", raw=REGISTER_REQUEST.encode())
    register = ok(resp, 201, "主机注册成功")
    assert_same_shape(register, json.loads(REGISTER_RESPONSE))
    host_id, token = register["data"]["host_id"], register["data"]["agent_token"]
    assert register["data"]["name"] == "GPU-Server-01" and register["data"]["status"] == "offline"
    try:
        # 7. heartbeat, verbatim, with the host's agent token
        resp = api.request("POST", f"/api/v1/hosts/{host_id}/heartbeat", raw=HEARTBEAT_REQUEST.encode(), token=token)
        assert ok(resp, 200, "心跳上报成功") == json.loads(HEARTBEAT_RESPONSE)

        # 6. GPUs: the document's GPU, published as the agent would
        gpu = custom.create_cluster_custom_object(
            *GPUS,
            {
                "apiVersion": "gpufleet.io/v1alpha1",
                "kind": "GPU",
                "metadata": {"name": f"{host_id}-gpu0", "labels": {"gpufleet.io/host": host_id}},
                "spec": {
                    "hostName": host_id,
                    "index": 0,
                    "uuid": "GPU-doc-0",
                    "modelName": "Tesla V100-SXM2-32GB",
                    "memoryTotal": 34359738368,
                },
            },
        )
        custom.patch_cluster_custom_object_status(
            *GPUS,
            gpu["metadata"]["name"],
            {
                "status": {
                    "state": "allocated",
                    "allocatedTo": "env-xyz789",
                    "temperatureCelsius": 68.5,
                    "utilizationPercent": 85.5,
                }
            },
        )
        # the facade reads from a watch cache: wait for the status patch, not only the creation
        gpus = wait_for(
            lambda: (
                (r := ok(api.gpus(host_id), 200, "success"))["data"]["items"]
                and r["data"]["items"][0]["allocated_to"]
                and r
            ),
            10,
            what="the GPU with its status in the GPU list",
        )
        assert_same_shape(gpus, json.loads(GPUS_RESPONSE))
        expected = json.loads(GPUS_RESPONSE)["data"]["items"][0]
        assert {k: v for k, v in gpus["data"]["items"][0].items() if k != "gpu_id"} == {
            k: v for k, v in expected.items() if k != "gpu_id"
        }

        # 4. update, verbatim
        resp = api.request("PUT", f"/api/v1/hosts/{host_id}", raw=UPDATE_REQUEST.encode())
        assert ok(resp, 200, "更新成功") == json.loads(UPDATE_RESPONSE)

        # 3. detail: keep heartbeating so the host is online, as in the example
        def online() -> Any:
            api.request("POST", f"/api/v1/hosts/{host_id}/heartbeat", raw=HEARTBEAT_REQUEST.encode(), token=token)
            body = ok(api.detail(host_id), 200, "success")
            return body if body["data"]["status"] == "online" else None

        detail = wait_for(online, 20, interval=0.5, what="the host to be online")
        # total_gpu/used_gpu are the operator's roll-up of GPU objects: one GPU, allocated
        detail = wait_for(
            lambda: (b := online()) and (b["data"]["total_gpu"], b["data"]["used_gpu"]) == (1, 1) and b,
            10,
            interval=0.5,
            what="total_gpu=1, used_gpu=1 in the detail",
        )
        assert_same_shape(detail, json.loads(DETAIL_RESPONSE))
        data = detail["data"]
        assert data["name"] == "GPU-Server-01-Updated"
        assert data["labels"] == {"region": "us-west", "zone": "b"}
        assert (data["ip_address"], data["os_type"], data["os_version"], data["deployment_mode"]) == (
            "192.168.1.10",
            "linux",
            "Ubuntu 20.04",
            "traditional",
        )
        assert (
            data["health_status"],
            data["total_cpu"],
            data["used_cpu"],
            data["total_memory"],
            data["used_memory"],
        ) == ("healthy", 32, 8, 137438953472, 34359738368)
        assert (data["total_gpu"], data["used_gpu"]) == (1, 1), "one GPU object, allocated"

        # 2. list: the host appears with the documented item shape
        listing = ok(api.list("status=online"), 200, "success")
        assert_same_shape(listing, json.loads(LIST_RESPONSE))
        item = next(i for i in listing["data"]["items"] if i["host_id"] == host_id)
        assert item == {k: data[k] for k in json.loads(LIST_RESPONSE)["data"]["items"][0]}
    finally:
        # 5. delete: 204, no body
        resp = api.delete(host_id)
    assert resp.status == 204 and resp.raw == b"", resp
    error(api.detail(host_id), 404, 40401)


@pytest.mark.parametrize("body", [REGISTER_REQUEST, UPDATE_REQUEST, HEARTBEAT_REQUEST])
def test_document_examples_are_json(body: str) -> None:
    assert isinstance(json.loads(body), dict)
