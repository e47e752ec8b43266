"""`gpufleet dev --nodes N --gpus M`: a fleet of real agents on fake NVML, in one process."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from gpufleet import devfleet
from tests.support.ports import free_port

from .conftest import Reader, eventually


async def _registered_with_gpus(reader: Reader, names: list[str], gpus: int) -> bool:
    for name in names:
        found = await reader.gpus(name)
        if await reader.host(name) is None or len(found) != gpus or not all(g.get("status") for g in found.values()):
            return False
    return True


async def test_simulated_nodes_register_with_their_gpus_and_share_one_machine(kube: Any, reader: Reader) -> None:
    async with devfleet.running(3, 2, kubeconfig=str(kube.kubeconfig), seed=1) as names:
        assert len(set(names)) == 3
        await eventually(lambda: _registered_with_gpus(reader, names, 2), within=30)
        addresses = [(await reader.host(name))["spec"]["ipAddress"] for name in names]
        assert len(set(addresses)) == 3, addresses  # each node its own address, as on a real fleet
        leases = [await reader.lease(name) for name in names]
        assert all(lease and lease["spec"]["holderIdentity"] == name for lease, name in zip(leases, names, strict=True))
    for name in names:
        await reader.delete_host(name)


async def test_two_simulated_agents_on_one_machine_do_not_collide_on_the_metrics_port(
    kube: Any, reader: Reader
) -> None:
    port = free_port()
    names = [f"sim-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    processes = []
    try:
        for name in names:
            env = {
                **os.environ,
                "KUBECONFIG": str(kube.kubeconfig),
                "NODE_NAME": name,
                "GPUFLEET_AGENT_METRICS_PORT": str(port),
                "GPUFLEET_AGENT_METRICS_HOST": "127.0.0.1",
                "GPUFLEET_AGENT_LOG_FORMAT": "text",
            }
            command = [sys.executable, "-m", "gpufleet", "agent", "--register", "--simulate", "1"]
            processes.append(
                await asyncio.create_subprocess_exec(
                    *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
                )
            )
            await eventually(lambda name=name: reader.host(name), within=30)  # one after the other
        await eventually(lambda: _registered_with_gpus(reader, names, 1), within=30)
        assert all(process.returncode is None for process in processes)
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        outputs = [(await asyncio.wait_for(process.communicate(), timeout=30))[0] for process in processes]
        for name in names:
            await reader.delete_host(name)
    assert b"serves metrics on" in outputs[1], outputs[1][-2000:]
