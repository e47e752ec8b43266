"""The REST facade with 10,000 hosts: list latency from its cache, heartbeat cost and throughput through it.

Usage: python -m benchmarks.facade [--hosts 10000] [--seconds 5] [--concurrency 16] [--rounds 3] [--rate 1000]
                                   [--facade-from CHECKOUT]

The emulated API, the facade (`gpufleet facade`) and this client run as three processes. It
prints (a) the latency of `GET /api/v1/hosts?page=N&page_size=20` against the same page obtained
the only way the API allows (list every Host, order by creation time then name, slice), and
(b) for the heartbeat, in each of `--rounds` rounds: heartbeats per second through the facade
for `--seconds`, the facade's CPU time per heartbeat (its process's user + system CPU time over
the round, from /proc, divided by the heartbeats answered), and then the same number of Lease
renewals (the merge patch a heartbeat writes) sent straight to the API server, as a rate; the
medians of the rounds are printed. Every heartbeating host heartbeats once before the rounds, so
its Lease exists and its status is written: the rounds measure the steady state, in which a
heartbeat that reports nothing new renews the Lease only. Then (c) the same heartbeats at a fixed
`--rate` for `--seconds` (open loop: sent on schedule whatever the answers do), by default the
1,000 per second of 10,000 legacy hosts heartbeating every 10 s: the facade's CPU per heartbeat
and share of a core at a fleet's pace rather than flat out (all its CPU over the window, its
background work included, so the per-heartbeat figure rises as the rate falls), and the answers'
latency. Targets:
list >= 20x faster with a median under 5 ms; at most 0.3 ms of facade CPU per heartbeat.

A shared VM's speed can drift by half within an hour, so designs are compared in one session, in turn:
`--facade-from CHECKOUT` runs the facade from another checkout of this repository (its
`operator/`, e.g. a `git worktree` of an older commit) against this emulator and client.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import aiohttp

from benchmarks import _support
from gpufleet import tokens
from gpufleet.api import hostlease

HOSTS = "/apis/gpufleet.io/v1alpha1/hosts"
NAMESPACE = "gpufleet"
ADMIN = "bench-admin-token"
MERGE = {"Content-Type": "application/merge-patch+json"}
HEARTBEAT = {"status": "online", "health_status": "healthy", "used_cpu": 8, "used_memory": 34359738368, "used_gpu": 2}
#: Hosts that heartbeat (each has an agent token); the others only make the fleet large.
AGENTS = 256
PAGE_SIZE = 20


async def populate(api: aiohttp.ClientSession, count: int, concurrency: int) -> list[tuple[str, str]]:
    """Create `count` Hosts and token Secrets for the first `AGENTS`: their (name, token)."""
    agents: list[tuple[str, str]] = []

    async def worker(start: int) -> None:
        for index in range(start, count, concurrency):
            name = f"bench-{index:05d}"
            ip = f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"
            body = {
                "apiVersion": "gpufleet.io/v1alpha1",
                "kind": "Host",
                "metadata": {"name": name, "annotations": {}},
                "spec": {
                    "displayName": name,
                    "ipAddress": ip,
                    "osType": "linux" if index % 3 else "windows",
                    "totalCpu": 32,
                    "totalMemory": 137438953472,
                },
            }
            token = tokens.generate() if index < AGENTS else None
            if token is not None:  # what a REST registration leaves: the token's digest on the Host
                body["metadata"]["annotations"] = {tokens.DIGEST_ANNOTATION: tokens.digest(token).hex()}
            async with api.post(HOSTS, json=body) as response:
                assert response.status == 201, await response.text()
            if token is not None:
                agents.append((name, token))

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return agents


async def create_leases(api: aiohttp.ClientSession, agents: list[tuple[str, str]]) -> None:
    """The heartbeating hosts' Leases, where the facade has not created them (409 when it has)."""
    for name, _ in agents:
        async with api.post(hostlease.path(hostlease.NAMESPACE), json={"metadata": {"name": name}}) as response:
            assert response.status in (201, 409), await response.text()


async def latencies(call: Callable[[int], Awaitable[None]], samples: int, pages: int) -> list[float]:
    timings = []
    for _ in range(samples):
        page = random.randint(1, pages)
        started = time.perf_counter()
        await call(page)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def main(
    count: int, seconds: float, concurrency: int, rounds: int, rate: float, facade_from: pathlib.Path | None = None
) -> None:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    api_port, facade_port = _support.free_port(), _support.free_port()
    kubeconfig = workdir / "kubeconfig"
    (workdir / "tokens").write_text(f"{ADMIN},admin\n")
    emulator = _support.emulator_command(api_port, kubeconfig)
    facade_env = {
        "KUBECONFIG": str(kubeconfig),
        "GPUFLEET_AUTH_MODE": "static",
        "GPUFLEET_STATIC_TOKENS_FILE": str(workdir / "tokens"),
        "GPUFLEET_FACADE_HOST": "127.0.0.1",
        "GPUFLEET_FACADE_PORT": str(facade_port),
        "GPUFLEET_NAMESPACE": NAMESPACE,
        "GPUFLEET_HOST_LEASE_NAMESPACE": hostlease.NAMESPACE,
        "GPUFLEET_LOG_LEVEL": "WARNING",
    }
    if facade_from is not None:
        facade_env["PYTHONPATH"] = str(facade_from / "operator")
    connector = {"limit": concurrency}
    with _support.process(emulator):
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{api_port}", connector=aiohttp.TCPConnector(**connector)
        ) as api:
            await _support.wait_http(api, "/version")
            await _support.wait_http(api, HOSTS)
            for namespace in (NAMESPACE, hostlease.NAMESPACE):
                async with api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}) as response:
                    assert response.status == 201, await response.text()
            started = time.monotonic()
            agents = await populate(api, count, concurrency)
            populate_s = time.monotonic() - started
            with _support.process([sys.executable, "-m", "gpufleet", "facade"], facade_env) as facade_process:
                async with aiohttp.ClientSession(
                    f"http://127.0.0.1:{facade_port}", connector=aiohttp.TCPConnector(**connector)
                ) as facade:
                    await _support.wait_http(facade, "/readyz")
                    if facade_from is not None:  # it may predate Leases: the direct side needs them to renew
                        await create_leases(api, agents)
                    rows = await measure(api, facade, agents, count, seconds, concurrency)
                    rows += await measure_heartbeats(
                        api, facade, facade_process.pid, agents, seconds, concurrency, rounds
                    )
                    rows += await measure_fleet_pace(facade, facade_process.pid, agents, seconds, rate)
    rows.insert(0, ("hosts (created in)", f"{count:,} ({populate_s:.1f} s)"))
    width = max(len(name) for name, _ in rows)
    print(f"{'metric'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 24}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


async def measure(
    api: aiohttp.ClientSession,
    facade: aiohttp.ClientSession,
    agents: list[tuple[str, str]],
    count: int,
    seconds: float,
    concurrency: int,
) -> list[tuple[str, str]]:
    """One run's figures as (metric, value) rows: list latency, then heartbeat throughput."""
    pages = max(1, count // PAGE_SIZE)
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def facade_page(page: int) -> None:
        query = {"page": str(page), "page_size": str(PAGE_SIZE)}
        async with facade.get("/api/v1/hosts", params=query, headers=admin) as response:
            assert response.status == 200, await response.text()
            await response.read()

    async def direct_page(page: int) -> None:
        # The API has no sorted, offset pages: list everything, order as the facade does, slice.
        async with api.get(HOSTS) as response:
            assert response.status == 200, await response.text()
            items = (await response.json())["items"]
        items.sort(key=lambda h: (h["metadata"]["creationTimestamp"], h["metadata"]["name"]))
        assert len(items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]) <= PAGE_SIZE

    await latencies(facade_page, 20, pages)  # warm-up: connections, caches
    via_facade = await latencies(facade_page, 500, pages)
    direct = await latencies(direct_page, 30, pages)

    facade_ms, direct_ms = statistics.median(via_facade), statistics.median(direct)
    return [
        ("GET /api/v1/hosts page, facade, median / p99", f"{facade_ms:.2f} / {p99(via_facade):.2f} ms"),
        ("same page by direct list + sort + slice, median / p99", f"{direct_ms:.0f} / {p99(direct):.0f} ms"),
        ("list speed-up (medians)", f"{direct_ms / facade_ms:.0f}x"),
    ]


async def heartbeat(facade: aiohttp.ClientSession, agent: tuple[str, str]) -> None:
    """One legacy heartbeat of `agent` (host name, agent token) through the facade, which must answer 200."""
    name, token = agent
    headers = {"Authorization": f"Bearer {token}"}
    async with facade.post(f"/api/v1/hosts/{name}/heartbeat", json=HEARTBEAT, headers=headers) as response:
        assert response.status == 200, await response.text()


async def measure_heartbeats(
    api: aiohttp.ClientSession,
    facade: aiohttp.ClientSession,
    facade_pid: int,
    agents: list[tuple[str, str]],
    seconds: float,
    concurrency: int,
    rounds: int,
) -> list[tuple[str, str]]:
    """Heartbeats through the facade (rate, facade CPU per heartbeat) against Lease renewals straight to the API."""

    async def through_facade(index: int) -> None:
        await heartbeat(facade, agents[index % len(agents)])

    async def straight_to_api(index: int) -> None:
        name, _ = agents[index % len(agents)]
        renewal = hostlease.renewal(holder=hostlease.FACADE_HOLDER, duration_seconds=50)
        async with api.patch(hostlease.path(hostlease.NAMESPACE, name), json=renewal, headers=MERGE) as response:
            assert response.status == 200, await response.text()

    # The first heartbeat of each host creates its Lease and writes its status: not the steady state.
    await asyncio.gather(*(through_facade(i) for i in range(len(agents))))
    facade_rates, cpu_ms, direct_rates, counts = [], [], [], []
    for _ in range(rounds):
        await asyncio.sleep(1.0)  # the watch events of what came before reach the facade outside the round
        cpu_before = _support.cpu_seconds(facade_pid)
        done, elapsed = await closed_loop(through_facade, concurrency, seconds=seconds)
        cpu = _support.cpu_seconds(facade_pid) - cpu_before
        facade_rates.append(done / elapsed)
        cpu_ms.append(1000 * cpu / done)
        counts.append(done)
        direct_done, direct_elapsed = await closed_loop(straight_to_api, concurrency, count=done)
        direct_rates.append(direct_done / direct_elapsed)
    facade_rate, direct_rate = statistics.median(facade_rates), statistics.median(direct_rates)
    return [
        ("heartbeats per round (median)", f"{statistics.median(counts):,.0f}"),
        ("facade CPU per heartbeat, median (rounds)", f"{statistics.median(cpu_ms):.3f} ms ({_join(cpu_ms, 3)})"),
        ("heartbeats/s through the facade, median (rounds)", f"{facade_rate:,.0f} ({_join(facade_rates, 0)})"),
        ("the same Lease renewals/s straight to the API, median", f"{direct_rate:,.0f} ({_join(direct_rates, 0)})"),
        ("facade / direct throughput (medians)", f"{facade_rate / direct_rate:.2f}"),
    ]


async def measure_fleet_pace(
    facade: aiohttp.ClientSession, facade_pid: int, agents: list[tuple[str, str]], seconds: float, rate: float
) -> list[tuple[str, str]]:
    """Heartbeats sent at `rate` per second for `seconds`: the facade's CPU per heartbeat, and latency."""
    latencies: list[float] = []

    async def beat(index: int) -> None:
        started = time.perf_counter()
        await heartbeat(facade, agents[index % len(agents)])
        latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.sleep(1.0)
    cpu_before = _support.cpu_seconds(facade_pid)
    started = time.monotonic()
    sent: list[asyncio.Task[None]] = []
    while (due := started + len(sent) / rate) < started + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        sent.append(asyncio.create_task(beat(len(sent))))
    await asyncio.gather(*sent)
    elapsed = time.monotonic() - started
    cpu = _support.cpu_seconds(facade_pid) - cpu_before
    return [
        (f"at {rate:,.0f} heartbeats/s: facade CPU per heartbeat", f"{1000 * cpu / len(sent):.3f} ms"),
        (f"at {rate:,.0f} heartbeats/s: facade share of a core", f"{100 * cpu / elapsed:.0f}%"),
        (
            f"at {rate:,.0f} heartbeats/s: answer latency median / p99",
            f"{statistics.median(latencies):.2f} / {p99(latencies):.2f} ms",
        ),
    ]


async def closed_loop(
    send: Callable[[int], Awaitable[None]], concurrency: int, *, seconds: float | None = None, count: int | None = None
) -> tuple[int, float]:
    """(calls, elapsed seconds) of `send(index)` from `concurrency` closed-loop workers, for `seconds`
    or until `count` calls were made (`_support.throughput` knows only durations, and the direct
    side must make as many writes as the facade answered heartbeats)."""
    done = 0
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else None

    async def worker(index: int) -> None:
        nonlocal done
        while (deadline is None or time.monotonic() < deadline) and (count is None or done < count):
            done += 1  # counted when started, so that `count` workers in flight never overshoot it
            await send(index)
            index += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, time.monotonic() - started


def _join(values: list[float], digits: int) -> str:
    return ", ".join(f"{value:,.{digits}f}" for value in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="heartbeats/s of the fleet-pace measurement")
    parser.add_argument(
        "--facade-from", type=pathlib.Path, help="run the facade from this checkout's operator/ (compare designs)"
    )
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.hosts,
            arguments.seconds,
            arguments.concurrency,
            arguments.rounds,
            arguments.rate,
            arguments.facade_from.resolve() if arguments.facade_from else None,
        )
    )
