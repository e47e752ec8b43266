"""What a heartbeat carries, and the machine facts a registration is made of."""

from __future__ import annotations

import datetime
import time

from gpufleet.api import host
from gpufleet_agent import binding, heartbeat, machine


def test_a_heartbeat_writes_only_the_fields_the_agent_owns() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    body = heartbeat.patch(
        machine.Usage(used_cpu=1.5, used_memory=2048), health=host.HealthStatus.HEALTHY, used_gpus=2, now=now
    )
    assert body == {
        "status": {
            "lastHeartbeat": "2026-01-02T03:04:05Z",
            "reportedState": "online",
            "healthStatus": "healthy",
            "usedCpu": 1.5,
            "usedMemory": 2048,
            "reportedUsedGpu": 2,
        }
    }


def test_unknown_gpu_usage_is_left_out_rather_than_reported_as_zero() -> None:
    body = heartbeat.patch(
        machine.Usage(0.1, 1), health=host.HealthStatus.UNKNOWN, used_gpus=None, now=heartbeat.utc_now()
    )
    assert "reportedUsedGpu" not in body["status"]


def test_heartbeats_within_one_second_carry_different_times() -> None:
    first = heartbeat.utc_now()
    time.sleep(0.001)
    second = heartbeat.utc_now()
    assert first.tzinfo == datetime.UTC
    assert second > first
    assert heartbeat.patch(machine.Usage(0, 0), health=host.HealthStatus.HEALTHY, used_gpus=None, now=second)["status"][
        "lastHeartbeat"
    ].endswith("Z")


def test_a_registration_describes_this_machine_as_a_kubernetes_node() -> None:
    capacity = machine.capacity()
    manifest = binding.manifest("gpu-node-7", capacity)
    spec = host.HostSpec.model_validate(manifest["spec"])
    assert manifest["metadata"] == {"name": "gpu-node-7"}
    assert spec.deployment_mode is host.DeploymentMode.KUBERNETES
    assert spec.node_name == "gpu-node-7"
    assert spec.total_cpu >= 1 and spec.total_memory > 0 and spec.total_disk > 0


def test_usage_is_within_the_machines_capacity() -> None:
    capacity, usage = machine.capacity(), machine.usage()
    assert 0 <= usage.used_cpu <= capacity.total_cpu
    assert 0 < usage.used_memory <= capacity.total_memory
