"""Leader election on a Lease: one writer at a time, a fenced leader, a fast take-over.

Electors run with short durations of the same shape as kube-controller-manager's 15/10/2 s
(lease 2 s, renew deadline 1.2 s, retry 0.25 s). A partition is made by pointing one elector's
client at a black hole (a server that accepts connections and never answers), which is what a
half-open connection to the API looks like from the client's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from gpufleet import leaderelection

LEASE, RENEW, RETRY = 2.0, 1.2, 0.25


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A URL whose server accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()


class Replica:
    """One elector on a client of its own, with a record of when it thought it led."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.api = api
        self.identity = f"{name}-{uuid.uuid4().hex[:4]}"
        lease = leaderelection.LeaseConfig(
            namespace=namespace,
            name="controller",
            identity=self.identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.elector = leaderelection.LeaderElector(
            api,
            lease,
            on_started=lambda: self.started.append(time.monotonic()),
            on_stopped=lambda: self.stopped.append(time.monotonic()),
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run())

    async def kill(self) -> None:
        """Stop at once, without giving the Lease up: what SIGKILL does."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def replicas(kube: Any, namespace: str) -> AsyncIterator[list[Replica]]:
    apis = [await config.new_client_from_config(config_file=str(kube.kubeconfig)) for _ in range(2)]
    made = [Replica(api, namespace, name) for api, name in zip(apis, ("a", "b"), strict=True)]
    for replica in made:
        replica.start()
    yield made
    for replica in made:
        await replica.kill()
    for api in apis:
        await api.close()


async def _leader(replicas: list[Replica], within: float = 5.0) -> Replica:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        leading = [replica for replica in replicas if replica.elector.is_leader()]
        if leading:
            return leading[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no replica leads")


async def _holder(async_api_client: client.ApiClient, namespace: str) -> Any:
    return (await client.CoordinationV1Api(async_api_client).read_namespaced_lease("controller", namespace)).spec


@contextlib.asynccontextmanager
async def never_two_writers(replicas: list[Replica]) -> AsyncIterator[None]:
    """Fail if two replicas may write at the same moment (sampled every 10 ms)."""
    overlaps: list[float] = []

    async def watch() -> None:
        while True:
            if sum(replica.elector.is_leader() for replica in replicas) > 1:
                overlaps.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
    assert not overlaps, f"two writers at {len(overlaps)} samples"


async def test_one_replica_holds_the_lease_and_the_lease_shows_which(
    replicas: list[Replica], async_api_client: client.ApiClient, namespace: str
) -> None:
    async with never_two_writers(replicas):
        leader = await _leader(replicas)
        await asyncio.sleep(3 * LEASE)  # renewals go on; the standby never takes over
        assert [replica for replica in replicas if replica.elector.is_leader()] == [leader]
    spec = await _holder(async_api_client, namespace)
    assert spec.holder_identity == leader.identity and spec.lease_transitions == 0
    assert spec.lease_duration_seconds == LEASE


async def test_a_partitioned_leader_stops_writing_before_a_standby_takes_over(
    replicas: list[Replica], black_hole: str
) -> None:
    async with never_two_writers(replicas):
        leader = await _leader(replicas)
        standby = next(replica for replica in replicas if replica is not leader)
        leader.api.configuration.host = black_hole  # its renewals hang from now on
        cut = time.monotonic()
        await asyncio.sleep(LEASE + 4 * RETRY)
        assert standby.elector.is_leader() and not leader.elector.is_leader()
    assert leader.stopped and leader.stopped[-1] - cut <= RENEW + RETRY
    assert standby.started[-1] - cut <= LEASE + 3 * RETRY


async def test_a_killed_leader_is_replaced_within_the_lease_duration(
    replicas: list[Replica], async_api_client: client.ApiClient, namespace: str
) -> None:
    leader = await _leader(replicas)
    standby = next(replica for replica in replicas if replica is not leader)
    await leader.kill()
    killed = time.monotonic()
    assert await _leader([standby], within=LEASE + 4 * RETRY) is standby
    assert standby.started[-1] - killed <= LEASE + 3 * RETRY
    spec = await _holder(async_api_client, namespace)
    assert spec.holder_identity == standby.identity and spec.lease_transitions == 1


async def test_an_orderly_stop_hands_the_lease_over_at_once(replicas: list[Replica]) -> None:
    leader = await _leader(replicas)
    standby = next(replica for replica in replicas if replica is not leader)
    await leader.elector.release()
    await leader.kill()
    released = time.monotonic()
    await _leader([standby], within=3 * RETRY)
    assert standby.started[-1] - released < 3 * RETRY


def test_durations_that_cannot_fence_a_leader_are_refused() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        leaderelection.LeaseConfig(namespace="n", name="l", identity="i", lease_duration=10, renew_deadline=10)


async def test_a_fractional_lease_duration_is_stored_rounded_up(
    async_api_client: client.ApiClient, namespace: str
) -> None:
    lease = leaderelection.LeaseConfig(
        namespace=namespace, name="controller", identity="solo", lease_duration=2.5, renew_deadline=2.2, retry_period=1
    )
    leading = asyncio.Event()
    elector = leaderelection.LeaderElector(async_api_client, lease, on_started=leading.set, on_stopped=lambda: None)
    task = asyncio.create_task(elector.run())
    try:
        await asyncio.wait_for(leading.wait(), 10)
        spec = await _holder(async_api_client, namespace)
        assert spec.lease_duration_seconds == 3  # a standby never waits less than the leader's fence
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
