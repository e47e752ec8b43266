"""The agent rides out faults: API outages, objects deleted behind its back, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gpufleet_agent import fakenvml, watchdog
from kube_emulator import Emulator
from tests.support.ports import free_port

from .conftest import Reader, RunAgent, eventually, metric, parse


async def _temperature_at_least(reader: Reader, host_name: str, celsius: float) -> bool:
    obj = (await reader.gpus(host_name)).get(f"{host_name}-gpu0")
    return bool(obj and (obj.get("status") or {}).get("temperatureCelsius", 0) >= celsius)


@pytest.mark.emulator
async def test_an_api_outage_is_survived_and_the_latest_state_sent_after_it(
    run_agent: RunAgent, reader: Reader, node_name: str, emulator: Emulator
) -> None:
    fake = fakenvml.scenario("one")
    async with run_agent(fake) as node_agent:
        await eventually(lambda: _temperature_at_least(reader, node_name, 30))
        before = await eventually(lambda: reader.renewed(node_name))
        with emulator.unavailable():
            samples = metric(node_agent, "gpufleet_agent_samples_total")
            fake.heat(0, 20)
            fake.heat(0, 40)  # only the latest state matters
            await eventually(lambda: metric(node_agent, "gpufleet_agent_samples_total") >= samples + 20)
            assert metric(node_agent, "gpufleet_agent_api_errors_total") >= 2
        await eventually(lambda: _temperature_at_least(reader, node_name, 70))
        await eventually(lambda: _heartbeat_after(reader, node_name, before))


async def _heartbeat_after(reader: Reader, host_name: str, before: str) -> bool:
    renewed = await reader.renewed(host_name)
    return renewed is not None and parse(renewed) > parse(before)


@pytest.mark.emulator
async def test_the_agent_stops_within_a_second_even_while_the_api_hangs(
    run_agent: RunAgent, reader: Reader, node_name: str, emulator: Emulator
) -> None:
    async with contextlib.AsyncExitStack() as running:
        await running.enter_async_context(run_agent(fakenvml.scenario("one")))
        await eventually(lambda: _temperature_at_least(reader, node_name, 30))
        with emulator.unavailable("hang"):
            await asyncio.sleep(0.5)  # heartbeats and writes now hang in the server
            started = time.monotonic()
            await running.aclose()  # stops the agent and waits for it
            assert time.monotonic() - started < 1.0


async def test_a_deleted_host_is_registered_again(run_agent: RunAgent, reader: Reader, node_name: str) -> None:
    async with run_agent(fakenvml.scenario("one")):
        first = await eventually(lambda: reader.host(node_name))
        await reader.delete_host(node_name)
        again = await eventually(lambda: _recreated(reader, node_name, first["metadata"]["uid"]))
        await eventually(lambda: _temperature_at_least(reader, node_name, 30))
        gpu = (await reader.gpus(node_name))[f"{node_name}-gpu0"]
        assert gpu["metadata"]["ownerReferences"][0]["uid"] == again["metadata"]["uid"]


async def _recreated(reader: Reader, host_name: str, old_uid: str) -> dict[str, Any] | None:
    found = await reader.host(host_name)
    return found if found and found["metadata"]["uid"] != old_uid else None


async def test_a_gpu_resource_deleted_behind_the_agents_back_comes_back(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("one"), resync_interval_seconds=0.3):
        await eventually(lambda: _temperature_at_least(reader, node_name, 30))
        await reader.api.delete_cluster_custom_object("gpufleet.io", "v1alpha1", "gpus", f"{node_name}-gpu0")
        await eventually(lambda: _temperature_at_least(reader, node_name, 30))


async def test_the_agent_command_serves_metrics_and_stops_within_a_second_of_sigterm(
    kube: Any, reader: Reader, node_name: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "NODE_NAME": node_name,
        "GPUFLEET_AGENT_METRICS_PORT": str(port),
        "GPUFLEET_AGENT_METRICS_HOST": "127.0.0.1",
        "GPUFLEET_AGENT_SAMPLE_INTERVAL_SECONDS": "0.1",
        "GPUFLEET_AGENT_HEARTBEAT_INTERVAL_SECONDS": "0.2",
        "GPUFLEET_AGENT_LOG_FORMAT": "text",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpufleet",
        "agent",
        "--register",
        "--simulate",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await eventually(lambda: _gpus_written(reader, node_name, 2), within=30)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        for family in (
            "gpufleet_gpu_temperature_celsius",
            "gpufleet_gpu_utilization_ratio",
            "gpufleet_gpu_memory_used_bytes",
            "gpufleet_gpu_memory_total_bytes",
            "gpufleet_gpu_power_watts",
            "gpufleet_gpu_healthy",
        ):
            assert f'{family}{{gpu="1",host="{node_name}"' in text
        assert 'gpufleet_agent_api_writes_total{kind="lease"}' in text

        process.send_signal(signal.SIGTERM)
        # The agent's own measure, signal to its tasks stopped: the wall clock around the process
        # also counts interpreter start-up and teardown and the scheduler of a busy machine.
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0
        stopped = re.search(rb"stopped (\d+\.\d+)s after the signal", output)
        assert stopped is not None, output[-2000:]
        assert float(stopped.group(1)) < 1.0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader.delete_host(node_name)


async def _gpus_written(reader: Reader, host_name: str, count: int) -> bool:
    gpus = await reader.gpus(host_name)
    return len(gpus) == count and all("lastUpdateTime" in (g.get("status") or {}) for g in gpus.values())


async def test_a_taken_metrics_port_stops_the_command_with_a_message(kube: Any, node_name: str) -> None:
    """A real agent (not a simulated one, which takes a free port) needs its port: its probes are there.
    Without NVML on this machine it runs with no GPUs, which is enough to reach the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "NODE_NAME": node_name,
            "GPUFLEET_AGENT_METRICS_HOST": "127.0.0.1",
            "GPUFLEET_AGENT_METRICS_PORT": str(taken.getsockname()[1]),
            "GPUFLEET_AGENT_LOG_FORMAT": "text",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpufleet",
            "agent",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert b"cannot serve metrics" in output
    assert b"Traceback" not in output


async def _http(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def _gpus_in(reader: Reader, host_name: str, state: str, healthy: str) -> dict[str, Any] | None:
    """The host's GPUs when every one is in `state` with its Healthy condition `healthy`, else None."""
    gpus = await reader.gpus(host_name)
    for obj in gpus.values():
        status = obj.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if status.get("state") != state or conditions.get("Healthy", {}).get("status") != healthy:
            return None
    return gpus or None


async def _host_health(reader: Reader, host_name: str, expected: str) -> bool:
    return ((await reader.host(host_name) or {}).get("status") or {}).get("healthStatus") == expected


def _nvml_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == watchdog.THREAD_NAME}


@pytest.fixture
def hangable() -> Iterator[fakenvml.FakeNVML]:
    """Two GPUs on a fake driver that a test may hang; released afterwards whatever happened."""
    fake = fakenvml.scenario("eight", gpus=2)
    yield fake
    fake.release()


HUNG_DRIVER = {"nvml_call_timeout_seconds": 0.2, "unready_after_hung_samples": 3, "metrics_host": "127.0.0.1"}


async def test_a_hung_driver_turns_gpu_health_unknown_fails_readiness_and_recovers(
    run_agent: RunAgent, reader: Reader, node_name: str, hangable: fakenvml.FakeNVML
) -> None:
    port = free_port()
    async with run_agent(hangable, metrics_port=port, **HUNG_DRIVER) as node_agent:
        await eventually(lambda: _gpus_in(reader, node_name, "free", "True"))
        assert await _http(port, "/readyz") == (200, "ok")

        hangable.hang("nvmlDeviceGetMemoryInfo", 1)  # GPU 1's driver call never returns

        def round_by_round() -> bool:
            # Read in one event-loop tick, so the count and what the agent reports belong together.
            hung, latest, unready = node_agent.hung_samples, node_agent.latest, node_agent.unready()
            if hung >= 1:  # from the first sample that found NVML hung, not "healthy" as before it
                assert [(s.verdict.known, s.verdict.reason) for s in latest] == [(False, "NvmlHung")] * 2
            assert (unready is not None) == (hung >= 3), (hung, unready)
            return hung >= 6

        await eventually(round_by_round)
        unknown = await eventually(lambda: _gpus_in(reader, node_name, "unknown", "Unknown"))
        condition = next(c for c in unknown[f"{node_name}-gpu1"]["status"]["conditions"] if c["type"] == "Healthy")
        assert condition["reason"] == "NvmlHung" and "NVML did not answer" in condition["message"]
        await eventually(lambda: _host_health(reader, node_name, "unknown"))
        status, text = await _http(port, "/readyz")
        assert status == 503 and "NVML" in text
        assert await _http(port, "/healthz") == (200, "ok")  # liveness holds: a restart would not unstick a driver
        gpu0 = {"host": node_name, "gpu": "0", "uuid": hangable.devices[0].uuid, "model": hangable.devices[0].name}
        assert metric(node_agent, "gpufleet_gpu_healthy", **gpu0) == 0
        assert metric(node_agent, "gpufleet_agent_nvml_hung") == 1

        # However long it lasts: one call stuck in the driver, one timeout, no thread started per sample.
        threads, samples = _nvml_threads(), metric(node_agent, "gpufleet_agent_samples_total")
        await eventually(lambda: metric(node_agent, "gpufleet_agent_samples_total") >= samples + 10)
        assert hangable.blocked_calls == 1
        assert metric(node_agent, "gpufleet_agent_nvml_timeouts_total") == 1
        assert _nvml_threads() == threads

        hangable.release()
        await eventually(lambda: _gpus_in(reader, node_name, "free", "True"))
        await eventually(lambda: _host_health(reader, node_name, "healthy"))
        assert await _http(port, "/readyz") == (200, "ok")
        assert metric(node_agent, "gpufleet_agent_nvml_hung") == 0


async def test_a_driver_hung_at_start_is_reported_unknown_until_it_answers(
    run_agent: RunAgent, reader: Reader, node_name: str, hangable: fakenvml.FakeNVML
) -> None:
    hangable.hang("nvmlInit")
    port = free_port()
    async with run_agent(hangable, metrics_port=port, **HUNG_DRIVER) as node_agent:
        await eventually(lambda: _host_health(reader, node_name, "unknown"))  # it heartbeats all the same
        await eventually(lambda: node_agent.hung_samples >= 3)
        assert (await _http(port, "/readyz"))[0] == 503
        assert await reader.gpus(node_name) == {}
        assert hangable.blocked_calls == 1

        hangable.release()
        await eventually(lambda: _gpus_in(reader, node_name, "free", "True"))
        await eventually(lambda: _host_health(reader, node_name, "healthy"))
        assert await _http(port, "/readyz") == (200, "ok")


async def test_the_agent_stops_within_a_second_while_the_driver_is_hung(
    run_agent: RunAgent, reader: Reader, node_name: str, hangable: fakenvml.FakeNVML
) -> None:
    async with contextlib.AsyncExitStack() as running:
        node_agent = await running.enter_async_context(run_agent(hangable, **HUNG_DRIVER))
        await eventually(lambda: _gpus_in(reader, node_name, "free", "True"))
        hangable.hang("nvmlDeviceGetMemoryInfo")
        await eventually(lambda: node_agent.hung_samples >= 1)
        started = time.monotonic()
        await running.aclose()  # NVML is left as it is rather than shut down on a hung driver
        assert time.monotonic() - started < 1.0
