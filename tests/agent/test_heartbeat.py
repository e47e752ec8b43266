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


class TestStatusWrites:
    """The Lease carries every heartbeat; the Host's status only news, and a resync."""

    CAPACITY = machine.Capacity(
        hostname="h",
        ip_address="10.0.0.1",
        os_type="linux",
        os_version="",
        total_cpu=10,
        total_memory=1000,
        total_disk=0,
    )

    def report(
        self, *, cpu: float = 2.0, memory: int = 300, gpus: int | None = 1, health: str = "healthy"
    ) -> heartbeat.Report:
        usage = machine.Usage(used_cpu=cpu, used_memory=memory)
        return heartbeat.Report.of(usage, self.CAPACITY, health=host.HealthStatus(health), used_gpus=gpus)

    def test_the_first_report_is_written_and_a_repeat_is_not(self) -> None:
        gate = heartbeat.StatusGate(resync_seconds=300)
        assert gate.due(self.report(), now=0)
        gate.written(self.report(), now=0)
        assert not gate.due(self.report(cpu=2.9, memory=390), now=10)  # within a tenth of capacity

    def test_news_is_written_at_once(self) -> None:
        gate = heartbeat.StatusGate(resync_seconds=300)
        gate.written(self.report(), now=0)
        assert gate.due(self.report(health="unhealthy"), now=1)
        assert gate.due(self.report(gpus=2), now=1)

    def test_usage_is_written_when_it_moved_a_tenth_of_capacity_at_most_once_a_minute(self) -> None:
        gate = heartbeat.StatusGate(resync_seconds=300)
        gate.written(self.report(), now=0)
        assert not gate.due(self.report(cpu=3.0), now=59)
        assert gate.due(self.report(cpu=3.0), now=60)
        assert gate.due(self.report(memory=400), now=60)

    def test_usage_hovering_around_a_step_writes_once(self) -> None:
        gate = heartbeat.StatusGate(resync_seconds=300)
        gate.written(self.report(cpu=2.95), now=0)
        writes = 0
        for second, cpu in enumerate([3.05, 2.95, 3.05, 2.95, 3.05], start=1):
            if gate.due(self.report(cpu=cpu), now=second):
                gate.written(self.report(cpu=cpu), now=second)
                writes += 1
        assert writes == 0

    def test_an_unchanged_status_is_written_again_after_the_resync_interval(self) -> None:
        gate = heartbeat.StatusGate(resync_seconds=300)
        gate.written(self.report(), now=0)
        assert not gate.due(self.report(), now=299)
        assert gate.due(self.report(), now=300)
        gate.forget()
        assert gate.due(self.report(), now=301)
