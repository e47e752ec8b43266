"""The document's example payloads, replayed verbatim; responses must be what the document shows.

The request and response bodies are the document's JSON blocks (000_0d413d8c978fa45b.txt),
verbatim, in `fixtures/`; requests are sent byte for byte. Each response is compared with the
document's example: same keys at every level, same JSON types, same values and messages, except
what identifies or timestamps this particular host (ids, tokens, times) and what this run
changed on purpose (the update's name and labels, a one-GPU roll-up). This is the one suite of the
document's examples: it runs end to end (`gpufleet dev`: the operator makes the host online and
rolls its GPUs up), which an in-process facade with a hand-written roll-up cannot show.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from ._client import Api, error, ok, wait_for
from .conftest import GPUS, HOSTS

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
#: Values that identify or timestamp one particular host, so cannot match the document's.
VARYING = {"host_id", "agent_token", "last_heartbeat", "created_at", "gpu_id"}


def raw(name: str) -> bytes:
    """A document block exactly as written, to send byte for byte."""
    return (FIXTURES / f"{name}.json").read_bytes()


def documented(name: str) -> Any:
    return json.loads(raw(name))


def _json_type(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value) if value is None else "bool"
    return {int: "int", float: "number", str: "str", list: "list", dict: "dict"}.get(type(value), "?")


def differences(actual: Any, expected: Any, path: str = "$", *, values: bool = True) -> list[str]:
    """Where `actual` departs from the documented `expected`: keys, JSON types, and (optionally) values."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems = [f"{path}: keys {sorted(actual)} != {sorted(expected)}"] if set(actual) != set(expected) else []
        for key in expected.keys() & actual.keys():
            compare = values and key not in VARYING
            problems += differences(actual[key], expected[key], f"{path}.{key}", values=compare)
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or not actual:
            return [f"{path}: expected a non-empty list, got {actual!r}"]
        return [problem for item in actual for problem in differences(item, expected[0], f"{path}[]", values=values)]
    # a whole number is a JSON number too (the document's 68.5 could come back as 68)
    if isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        type_ok = True
    else:
        type_ok = _json_type(actual) == _json_type(expected)
    if not type_ok:
        return [f"{path}: {actual!r} is not of the documented type of {expected!r}"]
    if values and actual != expected:
        return [f"{path}: {actual!r} != documented {expected!r}"]
    return []


def test_the_documented_conversation(api: Api, custom: Any) -> None:
    # 1. register, verbatim
    resp = api.request("POST", "/api/v1/hosts", raw=raw("register.request"))
    register = ok(resp, 201, "主机注册成功")
    assert differences(register, documented("register.response")) == []
    host_id, token = register["data"]["host_id"], register["data"]["agent_token"]
    try:
        # 7. heartbeat, verbatim, with the host's agent token
        resp = api.request("POST", f"/api/v1/hosts/{host_id}/heartbeat", raw=raw("heartbeat.request"), token=token)
        assert ok(resp, 200, "心跳上报成功") == documented("heartbeat.response")

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
        assert differences(gpus, documented("gpus.response")) == []

        # 4. update, verbatim
        resp = api.request("PUT", f"/api/v1/hosts/{host_id}", raw=raw("update.request"))
        assert ok(resp, 200, "更新成功") == documented("update.response")
        # The document's host has a hostname, its registration example none: kubectl adds it.
        custom.patch_cluster_custom_object(*HOSTS, host_id, {"spec": {"hostname": "gpu01.example.com"}})

        # 3. detail: keep heartbeating so the host is online, as in the example
        def online() -> Any:
            api.request("POST", f"/api/v1/hosts/{host_id}/heartbeat", raw=raw("heartbeat.request"), token=token)
            body = ok(api.detail(host_id), 200, "success")
            return body if body["data"]["status"] == "online" else None

        detail = wait_for(online, 20, interval=0.5, what="the host to be online")
        # total_gpu/used_gpu are the operator's roll-up of GPU objects: one GPU, allocated
        detail = wait_for(
            lambda: (
                (b := online())
                and (b["data"]["total_gpu"], b["data"]["used_gpu"], b["data"]["hostname"])
                == (1, 1, "gpu01.example.com")
                and b
            ),
            10,
            interval=0.5,
            what="total_gpu=1, used_gpu=1 and the hostname in the detail",
        )
        expected_detail = documented("detail.response")
        # what this run changed on purpose: the update, and one GPU object (allocated) where the document has 4 and 2
        expected_detail["data"] |= {
            "name": "GPU-Server-01-Updated",
            "labels": documented("update.request")["labels"],
            "total_gpu": 1,
            "used_gpu": 1,
        }
        assert differences(detail, expected_detail) == []
        data = detail["data"]

        # 2. list: the host appears with the documented item shape
        listing = ok(api.list("status=online"), 200, "success")
        assert differences(listing, documented("list.response"), values=False) == []  # other hosts are listed too
        assert (listing["data"]["pagination"]["page"], listing["data"]["pagination"]["page_size"]) == (1, 20)
        item = next(i for i in listing["data"]["items"] if i["host_id"] == host_id)
        expected_item = documented("list.response")["data"]["items"][0] | {
            k: expected_detail["data"][k] for k in ("name", "total_gpu", "used_gpu")
        }
        assert differences(item, expected_item) == []
        assert item == {k: data[k] for k in expected_item}
    finally:
        # 5. delete: 204, no body
        resp = api.delete(host_id)
    assert resp.status == 204 and resp.raw == b"", resp
    error(api.detail(host_id), 404, 40401)
