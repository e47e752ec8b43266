"""The seven operations, as a caller sees them, and what each one does to the Kubernetes objects."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from typing import Any

from gpufleet import tokens
from gpufleet.api import meta

from .helpers import GPUS_PATH, HOSTS_PATH, MERGE, VIEWER_TOKEN, Facade, K8s, eventually, unique_ip, unique_name


def _parse(timestamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


class TestRegister:
    async def test_answers_the_documented_shape(self, facade: Facade) -> None:
        status, answer = await facade.call(
            "POST",
            "/api/v1/hosts",
            json={
                "name": "GPU-Server-01",
                "ip_address": unique_ip(),
                "os_type": "linux",
                "os_version": "Ubuntu 20.04",
                "deployment_mode": "traditional",
                "total_cpu": 32,
                "total_memory": 137438953472,
                "total_disk": 2199023255552,
            },
        )
        assert status == 201
        facade.registered.append(answer["data"]["host_id"])
        assert answer["code"] == 0 and answer["message"] == "主机注册成功"
        assert set(answer["data"]) == {"host_id", "name", "status", "agent_token"}
        assert re.fullmatch(r"host-[a-z0-9]{10}", answer["data"]["host_id"])
        assert answer["data"]["name"] == "GPU-Server-01" and answer["data"]["status"] == "offline"
        assert answer["data"]["agent_token"].startswith(tokens.PREFIX)

    async def test_creates_the_host_named_by_its_id(self, facade: Facade, k8s: K8s) -> None:
        ip = unique_ip()
        data = await facade.register(ip_address=ip, hostname="gpu01.example.com", labels={"region": "us-west"})
        obj = k8s.ok("GET", f"{HOSTS_PATH}/{data['host_id']}")
        assert obj["spec"] == {
            "displayName": "GPU-Server-01",
            "hostname": "gpu01.example.com",
            "ipAddress": ip,
            "osType": "linux",
            "osVersion": "Ubuntu 20.04",
            "deploymentMode": "traditional",
            "totalCpu": 32,
            "totalMemory": 137438953472,
            "totalDisk": 2199023255552,
        }
        assert obj["metadata"]["labels"] == {"region": "us-west"}

    async def test_keeps_only_the_agent_tokens_digest_on_the_host(
        self, facade: Facade, k8s: K8s, facade_namespace: str
    ) -> None:
        data = await facade.register()
        host = k8s.ok("GET", f"{HOSTS_PATH}/{data['host_id']}")
        assert host["metadata"]["annotations"][tokens.DIGEST_ANNOTATION] == tokens.digest(data["agent_token"]).hex()
        assert data["agent_token"] not in json.dumps(host)
        secrets = k8s.ok("GET", f"/api/v1/namespaces/{facade_namespace}/secrets")["items"]
        assert not [s for s in secrets if (s["metadata"].get("labels") or {}).get(meta.HOST_LABEL) == data["host_id"]]

    async def test_ipv6_addresses_are_stored_normalised(self, facade: Facade, k8s: K8s) -> None:
        data = await facade.register(ip_address="fd00:0:0:0::" + unique_ip().split(".")[-1])
        assert "::" in k8s.ok("GET", f"{HOSTS_PATH}/{data['host_id']}")["spec"]["ipAddress"]


class TestList:
    async def test_pages_through_every_host_in_creation_then_name_order(self, facade: Facade, k8s: K8s) -> None:
        mine = [(await facade.register())["host_id"] for _ in range(3)]
        listed = [item["host_id"] for item in await facade.all_hosts()]
        assert set(mine) <= set(listed)
        created = {name: k8s.ok("GET", f"{HOSTS_PATH}/{name}")["metadata"]["creationTimestamp"] for name in mine}
        assert [name for name in listed if name in created] == sorted(mine, key=lambda n: (created[n], n))

    async def test_pagination_counts_pages_of_the_requested_size(self, facade: Facade) -> None:
        for _ in range(3):
            await facade.register()
        status, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page_size": 2})
        pagination = answer["data"]["pagination"]
        assert status == 200 and answer["message"] == "success"
        assert pagination["page"] == 1 and pagination["page_size"] == 2 and pagination["total"] >= 3
        assert pagination["total_pages"] == math.ceil(pagination["total"] / 2)
        assert len(answer["data"]["items"]) == 2
        last = pagination["total_pages"]
        _, tail = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page_size": 2, "page": last})
        assert len(tail["data"]["items"]) == pagination["total"] - 2 * (last - 1)
        _, beyond = await facade.call(
            "GET", "/api/v1/hosts", token=VIEWER_TOKEN, params={"page_size": 2, "page": last + 1}
        )
        assert beyond["data"]["items"] == [] and beyond["data"]["pagination"]["total"] == pagination["total"]

    async def test_page_size_defaults_to_twenty(self, facade: Facade) -> None:
        _, answer = await facade.call("GET", "/api/v1/hosts", token=VIEWER_TOKEN)
        assert answer["data"]["pagination"]["page_size"] == 20 and answer["data"]["pagination"]["page"] == 1
        assert len(answer["data"]["items"]) <= 20

    async def test_filters_by_status_from_the_operator_roll_up(self, facade: Facade, k8s: K8s) -> None:
        online, offline = (await facade.register())["host_id"], (await facade.register())["host_id"]
        k8s.patch_status(online, {"state": "online"})

        async def split() -> bool:
            names = {item["host_id"] for item in await facade.all_hosts(status="online")}
            return online in names and offline not in names

        assert await eventually(split, within=5.0)
        assert offline in {item["host_id"] for item in await facade.all_hosts(status="offline")}
        assert online not in {item["host_id"] for item in await facade.all_hosts(status="offline")}

    async def test_filters_by_os_type(self, facade: Facade) -> None:
        windows = (await facade.register(os_type="windows"))["host_id"]
        linux = (await facade.register(os_type="linux"))["host_id"]
        found = await facade.all_hosts(os_type="windows")
        assert windows in {item["host_id"] for item in found} and linux not in {item["host_id"] for item in found}
        assert {item["os_type"] for item in found} == {"windows"}


class TestDetail:
    async def test_a_new_host_reads_with_documented_defaults(self, facade: Facade) -> None:
        data = await facade.register(labels={"zone": "a"})
        detail = await facade.detail(data["host_id"])
        assert detail["status"] == "offline" and detail["health_status"] == "unknown"
        assert detail["last_heartbeat"] is None and detail["labels"] == {"zone": "a"}
        assert detail["used_cpu"] == 0 and detail["total_gpu"] == 0 and detail["used_gpu"] == 0
        assert abs(_parse(detail["created_at"]) - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)

    async def test_gpu_counts_and_status_come_from_the_operator(self, facade: Facade, k8s: K8s) -> None:
        host_id = (await facade.register())["host_id"]
        k8s.patch_status(host_id, {"state": "online", "usedGpu": 2, "totalGpu": 4})

        async def rolled_up() -> bool:
            detail = await facade.detail(host_id)
            return (detail["status"], detail["used_gpu"], detail["total_gpu"]) == ("online", 2, 4)

        assert await eventually(rolled_up, within=5.0)

    async def test_a_host_applied_with_kubectl_is_visible(self, facade: Facade, k8s: K8s) -> None:
        name = unique_name()
        k8s.create_host(name, unique_ip())
        k8s.ok(
            "PATCH",
            f"{HOSTS_PATH}/{name}",
            {"metadata": {"labels": {"team": "ml", meta.STATUS_LABEL: "offline"}}},
            MERGE,
        )
        try:

            async def visible() -> Any:
                status, answer = await facade.call("GET", f"/api/v1/hosts/{name}", token=VIEWER_TOKEN)
                return answer["data"] if status == 200 and answer["data"]["labels"] else None

            detail = await eventually(visible, within=5.0)
            assert detail["name"] == name and detail["labels"] == {"team": "ml"}
            assert detail["hostname"] == "" and detail["deployment_mode"] == "traditional"
        finally:
            k8s("DELETE", f"{HOSTS_PATH}/{name}")


class TestUpdate:
    async def test_renames_and_replaces_user_labels_keeping_system_labels(self, facade: Facade, k8s: K8s) -> None:
        host_id = (await facade.register(labels={"region": "us-west", "zone": "a"}))["host_id"]
        k8s.ok("PATCH", f"{HOSTS_PATH}/{host_id}", {"metadata": {"labels": {meta.STATUS_LABEL: "offline"}}}, MERGE)
        await eventually(lambda: k8s_label_seen(facade, host_id), within=5.0)
        status, answer = await facade.call(
            "PUT",
            f"/api/v1/hosts/{host_id}",
            json={"name": "GPU-Server-01-Updated", "labels": {"region": "us-west", "zone": "b"}},
        )
        assert (status, answer) == (200, {"code": 0, "message": "更新成功"})
        detail = await facade.detail(host_id)  # read-your-writes: no waiting
        assert detail["name"] == "GPU-Server-01-Updated" and detail["labels"] == {"region": "us-west", "zone": "b"}
        obj = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")
        assert obj["spec"]["displayName"] == "GPU-Server-01-Updated"
        assert obj["metadata"]["labels"] == {"region": "us-west", "zone": "b", meta.STATUS_LABEL: "offline"}

    async def test_labels_alone_can_be_removed(self, facade: Facade) -> None:
        host_id = (await facade.register(labels={"zone": "a"}))["host_id"]
        status, _ = await facade.call("PUT", f"/api/v1/hosts/{host_id}", json={"labels": {}})
        assert status == 200
        detail = await facade.detail(host_id)
        assert detail["labels"] == {} and detail["name"] == "GPU-Server-01"


def k8s_label_seen(facade: Facade, host_id: str) -> bool:
    from gpufleet.facade import routes

    obj = facade.app[routes.SERVICES].hosts.get(host_id)
    return bool(obj and meta.STATUS_LABEL in (obj["metadata"].get("labels") or {}))


class TestDelete:
    async def test_answers_204_without_a_body_and_the_host_is_gone(self, facade: Facade, k8s: K8s) -> None:
        host_id = (await facade.register())["host_id"]
        status, body = await facade.call("DELETE", f"/api/v1/hosts/{host_id}")
        assert (status, body) == (204, None)
        assert k8s("GET", f"{HOSTS_PATH}/{host_id}")[0] == 404
        assert (await facade.call("GET", f"/api/v1/hosts/{host_id}", token=VIEWER_TOKEN))[0] == 404
        assert host_id not in {item["host_id"] for item in await facade.all_hosts()}
        assert (await facade.call("DELETE", f"/api/v1/hosts/{host_id}"))[0] == 404

    async def test_a_host_deleted_with_kubectl_disappears(self, facade: Facade, k8s: K8s) -> None:
        host_id = (await facade.register())["host_id"]
        k8s.ok("DELETE", f"{HOSTS_PATH}/{host_id}")

        async def gone() -> bool:
            return (await facade.call("GET", f"/api/v1/hosts/{host_id}", token=VIEWER_TOKEN))[0] == 404

        assert await eventually(gone, within=5.0)


class TestGpus:
    async def test_lists_the_hosts_gpus_by_index(self, facade: Facade, k8s: K8s) -> None:
        host_id = (await facade.register())["host_id"]
        uids = {}
        for index in (1, 0):
            name = f"{host_id}-gpu{index}"
            created = k8s.ok(
                "POST",
                GPUS_PATH,
                {
                    "apiVersion": meta.API_VERSION,
                    "kind": "GPU",
                    "metadata": {"name": name, "labels": {meta.HOST_LABEL: host_id}},
                    "spec": {
                        "hostName": host_id,
                        "index": index,
                        "modelName": "Tesla V100-SXM2-32GB",
                        "memoryTotal": 34359738368,
                    },
                },
            )
            uids[index] = created["metadata"]["uid"]
            k8s.ok(
                "PATCH",
                f"{GPUS_PATH}/{name}/status",
                {
                    "status": {
                        "state": "allocated",
                        "allocatedTo": "env-xyz789",
                        "temperatureCelsius": 68.5,
                        "utilizationPercent": 85.5,
                    }
                },
                MERGE,
            )
        try:

            async def both() -> Any:
                status, answer = await facade.call("GET", f"/api/v1/hosts/{host_id}/gpus", token=VIEWER_TOKEN)
                items = answer["data"]["items"] if status == 200 else []
                return items if len(items) == 2 and all(i["temperature"] for i in items) else None

            items = await eventually(both, within=5.0)
            assert [item["gpu_index"] for item in items] == [0, 1]
            assert items[0] == {
                "gpu_id": int.from_bytes(hashlib.sha256(uids[0].encode()).digest()[:7], "big") >> 4,
                "gpu_index": 0,
                "name": "Tesla V100-SXM2-32GB",
                "memory_total": 34359738368,
                "status": "allocated",
                "allocated_to": "env-xyz789",
                "temperature": 68.5,
                "utilization": 85.5,
            }
            assert items[0]["gpu_id"] < 2**52
        finally:
            for index in (0, 1):
                k8s("DELETE", f"{GPUS_PATH}/{host_id}-gpu{index}")

    async def test_a_host_without_gpus_has_an_empty_list(self, facade: Facade) -> None:
        host_id = (await facade.register())["host_id"]
        status, answer = await facade.call("GET", f"/api/v1/hosts/{host_id}/gpus", token=VIEWER_TOKEN)
        assert (status, answer) == (200, {"code": 0, "message": "success", "data": {"items": []}})


class TestHeartbeat:
    async def test_patches_the_host_status_with_the_server_clock(self, facade: Facade, k8s: K8s) -> None:
        data = await facade.register()
        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        status, answer = await facade.heartbeat(data["host_id"], data["agent_token"], used_cpu=7.5)
        assert (status, answer) == (200, {"code": 0, "message": "心跳上报成功"})
        reported = k8s.ok("GET", f"{HOSTS_PATH}/{data['host_id']}")["status"]
        assert before <= _parse(reported["lastHeartbeat"]) <= datetime.datetime.now(datetime.UTC)
        assert {
            key: reported[key] for key in ("reportedState", "healthStatus", "usedCpu", "usedMemory", "reportedUsedGpu")
        } == {
            "reportedState": "online",
            "healthStatus": "healthy",
            "usedCpu": 7.5,
            "usedMemory": 34359738368,
            "reportedUsedGpu": 2,
        }
        assert "state" not in reported  # liveness is the operator's to decide

    async def test_the_caller_reads_what_it_reported(self, facade: Facade) -> None:
        data = await facade.register()
        await facade.heartbeat(data["host_id"], data["agent_token"], health_status="unhealthy")
        detail = await facade.detail(data["host_id"])
        assert detail["health_status"] == "unhealthy" and detail["used_cpu"] == 8
        assert detail["used_memory"] == 34359738368 and detail["last_heartbeat"] is not None

    async def test_a_deleted_host_is_not_recreated(self, facade: Facade, k8s: K8s) -> None:
        data = await facade.register()
        await facade.call("DELETE", f"/api/v1/hosts/{data['host_id']}")
        status, answer = await facade.heartbeat(data["host_id"], data["agent_token"])
        assert (status, answer["code"]) == (404, 40401)
        assert k8s("GET", f"{HOSTS_PATH}/{data['host_id']}")[0] == 404
