"""Node remediation (opt-in): an unhealthy host's Node is tainted NoSchedule, and untainted on recovery."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from controller_support import GRACE, Fleet, eventually
from kubernetes_asyncio import client

from gpufleet import settings
from gpufleet.controller import remediation


@pytest.fixture
def config(namespace: str) -> settings.Settings:
    return settings.Settings(
        namespace=namespace,
        grace_period_seconds=GRACE,
        heartbeat_interval_seconds=GRACE / 4,
        leader_election=False,
        metrics_port=0,
        node_remediation=True,
        remediation_max_unhealthy_fraction=0.5,
    )


async def _node(fleet: Fleet) -> str:
    name = f"gpu-node-{uuid.uuid4().hex[:8]}"
    nodes = client.CoreV1Api(fleet.custom.api_client)
    await nodes.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    return name


async def _node_state(fleet: Fleet, name: str) -> tuple[bool, str | None]:
    """(tainted, the GPUFleetHealthy condition's reason)."""
    node: Any = await client.CoreV1Api(fleet.custom.api_client).read_node(name)
    taints = (node.spec.taints if node.spec else None) or []
    conditions = (node.status.conditions if node.status else None) or []
    tainted = any(t.key == remediation.TAINT_KEY and t.effect == "NoSchedule" for t in taints)
    condition = next((c for c in conditions if c.type == remediation.CONDITION), None)
    return tainted, (condition.reason if condition is not None else None)


async def test_an_unhealthy_gpu_taints_its_node_and_recovery_untaints_it(fleet: Fleet) -> None:
    node = await _node(fleet)
    host = await fleet.apply_host(node_name=node)
    gpu = await fleet.create_gpu(host, 0)
    await fleet.heartbeat(host, healthStatus="healthy")
    await fleet.set_gpu_state(gpu, "unhealthy")

    async def state_is(expected: tuple[bool, str | None]) -> bool:
        return await _node_state(fleet, node) == expected

    await eventually(lambda: state_is((True, "GPUUnhealthy")))
    await fleet.set_gpu_state(gpu, "free")
    await eventually(lambda: state_is((False, None)))
    reasons = await fleet.event_reasons(host)
    assert reasons.count("NodeTainted") == 1 and reasons.count("NodeUntainted") == 1


async def test_no_new_taints_while_more_than_the_set_share_of_the_fleet_is_unhealthy(fleet: Fleet) -> None:
    """The circuit breaker of a full disruption: a fault that wide is not fixed by draining."""
    nodes = [await _node(fleet) for _ in range(2)]
    hosts = [await fleet.apply_host(node_name=node) for node in nodes]
    await fleet.heartbeat(hosts[0], healthStatus="unhealthy")

    async def tainted(node: str) -> bool:
        return (await _node_state(fleet, node))[0]

    await eventually(lambda: tainted(nodes[0]))
    await fleet.heartbeat(hosts[1], healthStatus="unhealthy")  # 2 of 2: over half
    await eventually(lambda: _reported_unhealthy(fleet, hosts[1]))
    assert not await tainted(nodes[1])
    await fleet.heartbeat(hosts[0], healthStatus="healthy")  # recovery is never held back
    await eventually(lambda: _untainted(fleet, nodes[0]))


async def _reported_unhealthy(fleet: Fleet, host: str) -> bool:
    return (await fleet.condition(host, "Healthy"))["status"] == "False"


async def _untainted(fleet: Fleet, node: str) -> bool:
    return not (await _node_state(fleet, node))[0]
