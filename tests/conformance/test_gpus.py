"""6. GET /api/v1/hosts/{host_id}/gpus — 获取主机 GPU 列表 (any authenticated caller).

GPU objects are created through the kubeconfig, as the node agent would (GPU CRD
gpus.gpufleet.io: name `<host>-gpu<index>`, label `gpufleet.io/host=<host>`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ._client import Api, error, is_int, is_number, ok, wait_for
from .conftest import GPUS

GPU_KEYS = {"gpu_id", "gpu_index", "name", "memory_total", "status", "allocated_to", "temperature", "utilization"}


def make_gpu(
    custom: Any,
    host_id: str,
    index: int,
    status: dict[str, Any] | None = None,
    model: str = "Tesla V100-SXM2-32GB",
    memory: int = 34359738368,
) -> dict[str, Any]:
    obj = custom.create_cluster_custom_object(
        *GPUS,
        {
            "apiVersion": "gpufleet.io/v1alpha1",
            "kind": "GPU",
            "metadata": {"name": f"{host_id}-gpu{index}", "labels": {"gpufleet.io/host": host_id}},
            "spec": {
                "hostName": host_id,
                "index": index,
                "uuid": f"GPU-{host_id}-{index}",
                "modelName": model,
                "memoryTotal": memory,
            },
        },
    )
    if status is not None:
        obj = custom.patch_cluster_custom_object_status(*GPUS, obj["metadata"]["name"], {"status": status})
    return obj


def expected_gpu_id(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:7], "big") >> 4


def test_gpus_of_a_host_without_gpus_is_empty(api: Api, new_host: Any) -> None:
    host = new_host()
    payload = ok(api.gpus(host.host_id), 200, "success")
    assert payload["data"] == {"items": []}


def test_gpus_items_have_the_documented_fields(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    other = new_host()
    g1 = make_gpu(
        custom,
        host.host_id,
        1,
        {"state": "free", "temperatureCelsius": 40, "utilizationPercent": 0},
        model="NVIDIA A100",
        memory=85899345920,
    )
    g0 = make_gpu(
        custom,
        host.host_id,
        0,
        {"state": "allocated", "allocatedTo": "env-xyz789", "temperatureCelsius": 68.5, "utilizationPercent": 85.5},
    )
    make_gpu(custom, other.host_id, 0, {"state": "free"})

    def two() -> Any:
        items = ok(api.gpus(host.host_id), 200, "success")["data"]["items"]
        return items if len(items) == 2 else None

    items = wait_for(two, 10, what="both GPUs to be listed")
    for item in items:
        assert set(item) == GPU_KEYS, sorted(set(item) ^ GPU_KEYS)
        assert is_int(item["gpu_id"]) and 0 <= item["gpu_id"] < 2**53
        assert is_int(item["gpu_index"]) and is_int(item["memory_total"])
        assert isinstance(item["name"], str) and isinstance(item["status"], str)
        assert is_number(item["temperature"]) and is_number(item["utilization"])
    assert [i["gpu_index"] for i in items] == [0, 1], "GPUs are listed by gpu_index"
    first, second = items
    assert first == {
        "gpu_id": expected_gpu_id(g0["metadata"]["uid"]),
        "gpu_index": 0,
        "name": "Tesla V100-SXM2-32GB",
        "memory_total": 34359738368,
        "status": "allocated",
        "allocated_to": "env-xyz789",
        "temperature": 68.5,
        "utilization": 85.5,
    }
    assert second["gpu_id"] == expected_gpu_id(g1["metadata"]["uid"])
    assert second["name"] == "NVIDIA A100" and second["memory_total"] == 85899345920
    assert second["status"] == "free" and second["allocated_to"] is None
    assert second["temperature"] == 40 and second["utilization"] == 0
    assert first["gpu_id"] != second["gpu_id"]
    # stable across calls
    assert ok(api.gpus(host.host_id), 200, "success")["data"]["items"] == items
    # the viewer reads them too
    assert ok(api.gpus(host.host_id, token=api.viewer), 200, "success")["data"]["items"] == items


def test_gpu_without_status_reads_unknown_and_nulls(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    make_gpu(custom, host.host_id, 0)
    items = wait_for(lambda: ok(api.gpus(host.host_id), 200, "success")["data"]["items"], 10, what="the GPU")
    assert items[0]["status"] == "unknown"
    assert items[0]["allocated_to"] is None
    assert items[0]["temperature"] is None and items[0]["utilization"] is None


def test_gpu_counts_roll_up_into_the_host(api: Api, custom: Any, new_host: Any) -> None:
    host = new_host()
    make_gpu(custom, host.host_id, 0, {"state": "allocated", "allocatedTo": "env-1"})
    make_gpu(custom, host.host_id, 1, {"state": "free"})
    make_gpu(custom, host.host_id, 2, {"state": "allocated", "allocatedTo": "env-2"})

    def rolled_up() -> Any:
        data = ok(api.detail(host.host_id), 200, "success")["data"]
        return data if (data["total_gpu"], data["used_gpu"]) == (3, 2) else None

    wait_for(rolled_up, 10, what="total_gpu=3, used_gpu=2 in the host detail")
    item = next(i for i in api.all_hosts() if i["host_id"] == host.host_id)
    assert (item["total_gpu"], item["used_gpu"]) == (3, 2)


def test_gpus_of_unknown_host_is_404(api: Api) -> None:
    error(api.gpus("host-doesnotexist"), 404, 40401)
