"""A legacy caller replays the API document's examples and gets the documented shapes back.

The fixtures are the document's JSON blocks, verbatim. Only the IP address of the registration
is replaced (the fleet refuses a second host with one address) and the operator's roll-up is
written by hand (no operator runs here). Ids and timestamps differ by nature; everything else
the document shows must come back as shown: keys, JSON types, values and messages.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from gpufleet.api import meta

from .helpers import GPUS_PATH, HOSTS_PATH, MERGE, VIEWER_TOKEN, Facade, K8s, settled, unique_ip

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
#: Values that identify or timestamp one particular host, so cannot match the document's.
VARYING = {"host_id", "agent_token", "ip_address", "last_heartbeat", "created_at", "gpu_id"}


def documented(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


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
    if isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        type_ok = True
    else:
        type_ok = _json_type(actual) == _json_type(expected)
    if not type_ok:
        return [f"{path}: {actual!r} is not of the documented type of {expected!r}"]
    if values and actual != expected:
        return [f"{path}: {actual!r} != documented {expected!r}"]
    return []


async def test_a_legacy_caller_gets_the_documented_answers(facade: Facade, k8s: K8s) -> None:
    registration = {**documented("register.request"), "ip_address": unique_ip()}
    status, answer = await facade.call("POST", "/api/v1/hosts", json=registration)
    assert status == 201
    host_id, agent_token = answer["data"]["host_id"], answer["data"]["agent_token"]
    facade.registered.append(host_id)
    assert differences(answer, documented("register.response")) == []

    status, answer = await facade.call(
        "POST", f"/api/v1/hosts/{host_id}/heartbeat", token=agent_token, json=documented("heartbeat.request")
    )
    assert (status, answer) == (200, documented("heartbeat.response"))

    status, answer = await facade.call("PUT", f"/api/v1/hosts/{host_id}", json=documented("update.request"))
    assert (status, answer) == (200, documented("update.response"))

    # What the operator, the agent and kubectl would add: the roll-up, a GPU, a hostname.
    k8s.patch_status(host_id, {"state": "online", "usedGpu": 2, "totalGpu": 4})
    k8s.ok("PATCH", f"{HOSTS_PATH}/{host_id}", {"spec": {"hostname": "gpu01.example.com"}}, MERGE)
    gpu = documented("gpus.response")["data"]["items"][0]
    gpu_name = f"{host_id}-gpu0"
    k8s.ok(
        "POST",
        GPUS_PATH,
        {
            "apiVersion": meta.API_VERSION,
            "kind": "GPU",
            "metadata": {"name": gpu_name, "labels": {meta.HOST_LABEL: host_id}},
            "spec": {
                "hostName": host_id,
                "index": gpu["gpu_index"],
                "modelName": gpu["name"],
                "memoryTotal": gpu["memory_total"],
            },
        },
    )
    k8s.ok(
        "PATCH",
        f"{GPUS_PATH}/{gpu_name}/status",
        {
            "status": {
                "state": gpu["status"],
                "allocatedTo": gpu["allocated_to"],
                "temperatureCelsius": gpu["temperature"],
                "utilizationPercent": gpu["utilization"],
            }
        },
        MERGE,
    )
    try:
        expected_detail = documented("detail.response")
        expected_detail["data"] |= {"name": "GPU-Server-01-Updated", "labels": documented("update.request")["labels"]}

        async def detail_matches() -> list[str]:
            _, answer = await facade.call("GET", f"/api/v1/hosts/{host_id}", token=VIEWER_TOKEN)
            return differences(answer, expected_detail)

        assert await settled(detail_matches) == []

        _, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page": 1, "page_size": 20})
        assert differences(answer, documented("list.response"), values=False) == []
        assert answer["data"]["pagination"]["page"] == 1 and answer["data"]["pagination"]["page_size"] == 20
        page_items = [item for item in await facade.all_hosts() if item["host_id"] == host_id]
        expected_item = documented("list.response")["data"]["items"][0] | {"name": "GPU-Server-01-Updated"}
        assert differences(page_items[0], expected_item) == []

        async def gpus_match() -> list[str]:
            _, answer = await facade.call("GET", f"/api/v1/hosts/{host_id}/gpus", token=VIEWER_TOKEN)
            return differences(answer, documented("gpus.response"))

        assert await settled(gpus_match) == []
    finally:
        k8s("DELETE", f"{GPUS_PATH}/{gpu_name}")

    status, body = await facade.call("DELETE", f"/api/v1/hosts/{host_id}")
    # The document shows an envelope with "删除成功", but a 204 carries no body in HTTP.
    assert (status, body) == (204, None)
    assert documented("delete.response")["code"] == 0
