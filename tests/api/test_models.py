"""The API models validate what a user would get wrong, and speak camelCase to Kubernetes."""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest

from gpufleet.api import gpu, host, meta


def host_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "displayName": "GPU-Server-01",
        "ipAddress": "192.168.1.10",
        "osType": "linux",
        "osVersion": "Ubuntu 20.04",
        "deploymentMode": "traditional",
        "totalCpu": 32,
        "totalMemory": 137438953472,
        "totalDisk": 2199023255552,
    }
    spec.update(overrides)
    return spec


class TestHostSpec:
    def test_round_trips_in_camel_case(self) -> None:
        spec = host.HostSpec.model_validate(host_spec())
        assert spec.total_memory == 137438953472
        assert spec.to_k8s() == host_spec()

    @pytest.mark.parametrize("address", ["10.0.0.1", "::1", "2001:db8::8a2e:370:7334"])
    def test_accepts_ipv4_and_ipv6(self, address: str) -> None:
        assert host.HostSpec.model_validate(host_spec(ipAddress=address)).ip_address == address

    def test_normalises_ipv6_spelling(self) -> None:
        spec = host.HostSpec.model_validate(host_spec(ipAddress="2001:0DB8:0000::0001"))
        assert spec.ip_address == "2001:db8::1"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("ipAddress", "300.1.1.1"),
            ("ipAddress", "gpu01"),
            ("totalMemory", -1),
            ("totalCpu", -4),
            ("totalDisk", "lots"),
            ("osType", "plan9"),
            ("deploymentMode", "cloud"),
            ("displayName", ""),
        ],
    )
    def test_rejects_bad_values_naming_the_field(self, field: str, value: object) -> None:
        with pytest.raises(pydantic.ValidationError) as caught:
            host.HostSpec.model_validate(host_spec(**{field: value}))
        assert caught.value.errors()[0]["loc"][0] == field

    def test_rejects_unknown_fields(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            host.HostSpec.model_validate(host_spec(gpuCount=4))

    def test_defaults_a_deployment_mode(self) -> None:
        spec = host_spec()
        del spec["deploymentMode"]
        assert host.HostSpec.model_validate(spec).deployment_mode is host.DeploymentMode.TRADITIONAL


class TestHostStatus:
    def test_conditions_serialise_as_kubernetes_conditions(self) -> None:
        now = datetime.datetime(2026, 1, 26, 10, 0, tzinfo=datetime.UTC)
        status = host.HostStatus(
            state=host.HostState.ONLINE,
            conditions=[
                meta.Condition(
                    type=host.READY,
                    status=meta.ConditionStatus.TRUE,
                    reason="HeartbeatReceived",
                    last_transition_time=now,
                )
            ],
        )
        assert status.to_k8s() == {
            "state": "online",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "HeartbeatReceived",
                    "message": "",
                    "lastTransitionTime": "2026-01-26T10:00:00Z",
                }
            ],
        }

    def test_rejects_a_condition_reason_that_is_not_camel_case(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            meta.Condition(
                type="Ready",
                status=meta.ConditionStatus.TRUE,
                reason="heartbeat received",
                last_transition_time=datetime.datetime.now(datetime.UTC),
            )


class TestGPU:
    def test_names_are_stable_per_host_and_index(self) -> None:
        assert gpu.object_name("node-a", 3) == "node-a-gpu3"

    @pytest.mark.parametrize("utilization", [-1, 100.5])
    def test_utilization_is_a_percentage(self, utilization: float) -> None:
        with pytest.raises(pydantic.ValidationError):
            gpu.GPUStatus(utilization_percent=utilization)

    def test_memory_is_non_negative_bytes(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            gpu.GPUSpec(host_name="a", index=0, memory_total=-1)
