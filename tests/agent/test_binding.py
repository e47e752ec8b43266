"""An agent waiting for its Host asks the API for it at a pace a fleet can afford.

Looking by name is one small GET; looking by `spec.nodeName` lists every Host of the fleet. The
requests are counted where they land, in the emulated API server (its request hook sees them all).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gpufleet_agent import binding, fakenvml, kubeapi
from gpufleet_agent.settings import AgentSettings
from kube_emulator import Emulator, RequestInfo

from .conftest import FAST, Reader, RunAgent, eventually


class HostRequests:
    """The agent's reads of Hosts as the API server saw them: (time on `clock`, "get" or "list")."""

    def __init__(self, node_name: str, clock: Callable[[], float]) -> None:
        self.seen: list[tuple[float, str]] = []
        self._own = f"{kubeapi.HOSTS}/{node_name}"
        self._clock = clock

    def __call__(self, info: RequestInfo) -> bool:
        """A fault predicate that never matches: it only watches requests go by."""
        if info.method == "GET" and info.path == kubeapi.HOSTS:
            self.seen.append((self._clock(), "list"))
        elif info.method == "GET" and info.path == self._own:
            self.seen.append((self._clock(), "get"))
        return False

    def times(self, kind: str) -> list[float]:
        return [at for at, seen in self.seen if seen == kind]


@pytest.fixture
def simulated() -> list[float]:
    """A clock the test moves by hand: an hour of lookups takes a second."""
    return [0.0]


@pytest.fixture
def requests(emulator: Emulator, node_name: str, simulated: list[float]) -> Iterator[HostRequests]:
    recorded = HostRequests(node_name, lambda: simulated[0])
    stop = emulator.faults.fail_when(recorded)
    yield recorded
    stop()


@pytest.fixture
async def search(
    kube: Any, crds_installed: list[str], node_name: str, simulated: list[float]
) -> AsyncIterator[binding.Search]:
    """The lookup an agent with default settings makes (register off), on the simulated clock."""
    api = kubeapi.connect(str(kube.kubeconfig))
    yield binding.Search.of(api, AgentSettings(node_name=node_name), clock=lambda: simulated[0], rng=random.Random(7))
    await api.close()


async def _bound_after(search: binding.Search, simulated: list[float], step: float, limit: float) -> float:
    """Simulated seconds until `search` finds the Host, trying every `step` as the agent's loops do."""
    started = simulated[0]
    while simulated[0] - started <= limit:
        try:
            await search.bind()
        except binding.NoHost:
            simulated[0] += step
            continue
        return simulated[0] - started
    raise AssertionError(f"not bound within {limit}s")


@pytest.mark.emulator  # the request hook is the emulator's
async def test_an_hour_without_its_host_lists_the_fleet_minutes_apart_not_every_heartbeat(
    search: binding.Search, requests: HostRequests, simulated: list[float]
) -> None:
    # The heartbeat (10 s) and the publisher (5 s samples) both ask for the Host; every 5 s here.
    for tick in range(720):
        simulated[0] = tick * 5.0
        with pytest.raises(binding.NoHost):
            await search.bind()

    lists, gets = requests.times("list"), requests.times("get")
    assert len(lists) <= 30  # one per lookup before: 720 fleet-wide lists an hour
    gaps = [later - earlier for earlier, later in itertools.pairwise(lists)]
    settled = [gap for at, gap in zip(lists[1:], gaps, strict=True) if at > 600]
    assert settled and min(settled) >= 150  # capped at 300 s, jittered down to half of it at most
    assert max(gaps) <= 300 + 5  # but it never stops looking
    assert len(gets) <= 3600 / 15 + 10  # the cheap GET by name: every 15-30 s once backed off
    assert max(later - earlier for earlier, later in itertools.pairwise(gets)) <= 30 + 5


async def test_a_host_created_later_is_found_by_name_within_the_retry_cap(
    search: binding.Search, reader: Reader, node_name: str, simulated: list[float]
) -> None:
    for tick in range(120):  # ten minutes without it: the lookups have backed off to their caps
        simulated[0] = tick * 5.0
        with pytest.raises(binding.NoHost):
            await search.bind()
    await reader.create_host(node_name, node_name)
    try:
        assert await _bound_after(search, simulated, step=5, limit=60) <= 30 + 5
    finally:
        await reader.delete_host(node_name)


async def test_a_host_registered_elsewhere_for_the_node_is_found_within_the_search_cap(
    search: binding.Search, reader: Reader, node_name: str, simulated: list[float]
) -> None:
    for tick in range(120):
        simulated[0] = tick * 5.0
        with pytest.raises(binding.NoHost):
            await search.bind()
    host_name = f"host-{node_name[-8:]}"  # as the REST facade names Hosts; only spec.nodeName ties it here
    await reader.create_host(host_name, node_name)
    try:
        assert await _bound_after(search, simulated, step=5, limit=600) <= 300 + 5
    finally:
        await reader.delete_host(host_name)


def _most_lookups(elapsed: float, initial: float, cap: float) -> int:
    """The most lookups a jittered backoff allows in `elapsed` seconds: each delay is at least half its bound."""
    count, at, bound = 1, 0.0, initial
    while True:
        at += min(bound, cap) / 2
        if at > elapsed:
            return count
        count, bound = count + 1, bound * 2


@pytest.mark.emulator
async def test_a_running_agent_without_its_host_paces_its_lookups(
    run_agent: RunAgent, reader: Reader, node_name: str, emulator: Emulator
) -> None:
    recorded = HostRequests(node_name, time.monotonic)
    stop = emulator.faults.fail_when(recorded)
    host_name = f"host-{node_name[-8:]}"
    try:
        started = time.monotonic()
        async with run_agent(fakenvml.scenario("one"), register_node=False, host_search_max_interval_seconds=1.0):
            await eventually(lambda: len(recorded.times("get")) >= 10)
            elapsed = time.monotonic() - started
            lists, gets = len(recorded.times("list")), len(recorded.times("get"))
            # Heartbeats every 0.1 s and publishing rounds every 0.05 s asked for the Host; it was looked
            # for only as often as its backoffs allow (the GET capped at 0.2 s, the list at 1 s).
            initial = FAST["backoff_initial_seconds"]
            assert 1 <= lists <= _most_lookups(elapsed, initial, 1.0), (lists, elapsed)
            assert gets <= _most_lookups(elapsed, initial, FAST["backoff_max_seconds"]), (gets, elapsed)

            await reader.create_host(host_name, node_name)
            await eventually(lambda: _heartbeat_of(reader, host_name))
    finally:
        stop()
        await reader.delete_host(host_name)


async def _heartbeat_of(reader: Reader, host_name: str) -> bool:
    return bool(((await reader.host(host_name) or {}).get("status") or {}).get("lastHeartbeat"))
