"""The deep health signals through the whole agent: what `kubectl get gpus` and `/metrics` show.

A signal's reason must reach the GPU's `Healthy` condition at once (a health change is a state
change for the write policy, never rate limited), the Host's heartbeat must say `unhealthy`, and
the GPU must come back on its own when the signal's rule says so.
"""

from __future__ import annotations

from typing import Any

from gpufleet_agent import agent, fakenvml, nvml

from .conftest import Reader, RunAgent, eventually, metric


def gpu_metric(node_agent: agent.Agent, fake: fakenvml.FakeNVML, name: str, index: int, **labels: str) -> float:
    """A GPU's series from the agent's `/metrics` (0 when absent)."""
    gpu = fake.devices[index]
    identity = {"host": node_agent.host_name, "gpu": str(index), "uuid": gpu.uuid, "model": gpu.name}
    return metric(node_agent, name, **identity, **labels)


def healthy_condition(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next(c for c in conditions if c["type"] == "Healthy")


async def _gpu(reader: Reader, host_name: str, index: int, state: str, reason: str) -> dict[str, Any] | None:
    obj = (await reader.gpus(host_name)).get(f"{host_name}-gpu{index}")
    if not obj or (obj.get("status") or {}).get("state") != state:
        return None
    return obj if healthy_condition(obj)["reason"] == reason else None


async def _host_health(reader: Reader, host_name: str, expected: str) -> bool:
    found = await reader.host(host_name)
    return ((found or {}).get("status") or {}).get("healthStatus") == expected


async def test_a_pending_row_remap_shows_on_the_gpu_and_the_host_until_the_gpu_is_reset(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    async with run_agent(fake, min_write_interval_seconds=3600, gauge_write_burst=1) as node_agent:
        await eventually(lambda: _gpu(reader, node_name, 1, "free", "NoFaults"))
        fake.set_row_remap(1, pending=True, uncorrected=1)
        sick = await eventually(lambda: _gpu(reader, node_name, 1, "unhealthy", "RowRemapPending"))
        assert healthy_condition(sick)["status"] == "False"
        assert "reset" in healthy_condition(sick)["message"]
        assert await eventually(lambda: _host_health(reader, node_name, "unhealthy"))
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_row_remap_pending", 1) == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_healthy", 1) == 0
        assert metric(node_agent, "gpufleet_agent_gpu_status_writes_by_reason_total", reason="state") >= 1

        fake.set_row_remap(1, pending=False)
        await eventually(lambda: _gpu(reader, node_name, 1, "free", "NoFaults"))
        assert await eventually(lambda: _host_health(reader, node_name, "healthy"))


async def test_link_errors_and_a_sustained_slowdown_turn_gpus_unhealthy_and_back(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("eight", gpus=3)
    settings = {"link_error_hold_seconds": 0.5, "slowdown_sustained_seconds": 0.3, "slowdown_hold_seconds": 0.5}
    async with run_agent(fake, **settings) as node_agent:
        await eventually(lambda: _gpu(reader, node_name, 2, "free", "NoFaults"))
        fake.pcie_replays(0, 20)
        fake.nvlink_errors(1, 4, recovery=1)
        fake.throttle(2, nvml.CLOCKS_HW_THERMAL)
        await eventually(lambda: _gpu(reader, node_name, 0, "unhealthy", "PCIeReplays"))
        await eventually(lambda: _gpu(reader, node_name, 1, "unhealthy", "NVLinkErrors"))
        await eventually(lambda: _gpu(reader, node_name, 2, "unhealthy", "ThermalThrottling"))
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_pcie_replays_total", 0) == 20
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_nvlink_errors_total", 1, link="4", counter="recovery") == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_throttle_reasons", 2, reason="hw_thermal_slowdown") == 1

        fake.throttle(2, 0)
        await eventually(lambda: _gpu(reader, node_name, 2, "free", "NoFaults"))
        # Link errors leave the last minute's count only after a minute of samples: not waited for here.
