"""The agent and the operator together: heartbeats keep a Host online, and its GPUs are counted.

The operator runs in this loop through `gpufleet.controller.main.serve`, the entry point of
`gpufleet operator`, with a one-second grace period so that "stays online" spans several.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from gpufleet import settings
from gpufleet.controller import events, main
from gpufleet_agent import fakenvml

from .conftest import Reader, RunAgent, eventually

GRACE = 1.0


@pytest.fixture
async def operator(async_api_client: Any, crds_installed: list[str]) -> AsyncIterator[None]:
    core: Any = client.CoreV1Api(async_api_client)
    namespace = f"gf-{uuid.uuid4().hex[:8]}"
    await core.create_namespace({"metadata": {"name": namespace}})
    with contextlib.suppress(client.ApiException):
        await core.create_namespace({"metadata": {"name": events.EVENTS_NAMESPACE}})
    config = settings.Settings(
        namespace=namespace,
        grace_period_seconds=GRACE,
        heartbeat_interval_seconds=GRACE / 4,
        leader_election=False,
        metrics_port=0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(main.serve(config, stop=stop, ready=ready, identity=f"agent-test-{namespace}"))
    await asyncio.wait_for(ready.wait(), timeout=20)
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=20)
    with contextlib.suppress(client.ApiException):
        await core.delete_namespace(namespace)


async def _status(reader: Reader, host_name: str) -> dict[str, Any]:
    return dict(((await reader.host(host_name)) or {}).get("status") or {})


async def test_heartbeats_keep_the_host_online_and_its_gpus_counted(
    operator: None, run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("eight", gpus=2), heartbeat_interval_seconds=GRACE / 4):
        status = await eventually(lambda: _online_with_gpus(reader, node_name, 2))
        assert status["healthStatus"] == "healthy"

        watched_until = time.monotonic() + 3 * GRACE
        while time.monotonic() < watched_until:  # three grace periods, online throughout
            assert (await _status(reader, node_name)).get("state") == "online"
            await asyncio.sleep(GRACE / 5)

    offline = await eventually(lambda: _in_state(reader, node_name, "offline"), within=5 * GRACE)
    assert offline["state"] == "offline"
    await reader.delete_host(node_name)  # while the operator runs, so its finalizer is released
    await eventually(lambda: _gone(reader, node_name))


async def _online_with_gpus(reader: Reader, host_name: str, count: int) -> dict[str, Any] | None:
    status = await _status(reader, host_name)
    return status if status.get("state") == "online" and status.get("totalGpu") == count else None


async def _in_state(reader: Reader, host_name: str, state: str) -> dict[str, Any] | None:
    status = await _status(reader, host_name)
    return status if status.get("state") == state else None


async def _gone(reader: Reader, host_name: str) -> bool:
    return await reader.host(host_name) is None
