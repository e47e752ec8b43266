"""Throughput of the emulated Kubernetes API, with the server in a separate process.

Usage: python -m benchmarks.emulator_throughput [--objects 10000] [--seconds 5] [--concurrency 8]

Prints PATCH/s (merge patch of spec), status PATCH/s, the median GET latency and the
time to list all objects, so regressions in the emulator's per-request cost show up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp

from benchmarks import _support

GROUP = "bench.gpufleet.io"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"items.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"plural": "items", "singular": "item", "kind": "Item"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "count": {"type": "integer", "minimum": 0},
                                    "address": {"type": "string", "format": "ipv4"},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}
ITEMS = f"/apis/{GROUP}/v1/items"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def populate(session: aiohttp.ClientSession, count: int, concurrency: int) -> None:
    async def worker(start: int) -> None:
        for index in range(start, count, concurrency):
            body = {
                "metadata": {"name": f"item-{index:05d}", "labels": {"bench": "yes"}},
                "spec": {"count": 0, "address": "10.0.0.1", "labels": {"rack": "r1"}},
            }
            async with session.post(ITEMS, json=body) as response:
                assert response.status == 201, await response.text()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def rate(session: aiohttp.ClientSession, seconds: float, concurrency: int, count: int, status: bool) -> float:
    async def patch(index: int) -> None:
        name = f"item-{index % count:05d}"
        path = f"{ITEMS}/{name}/status" if status else f"{ITEMS}/{name}"
        body = {"status": {"seen": index}} if status else {"spec": {"count": index}}
        async with session.patch(path, json=body, headers=MERGE) as response:
            assert response.status == 200, await response.text()
            await response.read()

    return await _support.throughput(patch, seconds, concurrency)


async def get_median_ms(session: aiohttp.ClientSession, samples: int, count: int) -> float:
    timings: list[float] = []
    for index in range(samples):
        started = time.perf_counter()
        async with session.get(f"{ITEMS}/item-{index % count:05d}") as response:
            await response.read()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def list_ms(session: aiohttp.ClientSession, count: int) -> tuple[float, float]:
    """Median time to receive the full list, and to receive and parse it."""
    received: list[float] = []
    parsed: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        async with session.get(ITEMS) as response:
            raw = await response.read()
        received.append((time.perf_counter() - started) * 1000)
        assert len(json.loads(raw)["items"]) == count
        parsed.append((time.perf_counter() - started) * 1000)
    return statistics.median(received), statistics.median(parsed)


async def main(objects: int, seconds: float, concurrency: int) -> None:
    port = _support.free_port()
    with _support.process([sys.executable, "-m", "kube_emulator", "--port", str(port)]):
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
            await _support.wait_http(session, "/version")
            async with session.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD) as r:
                assert r.status == 201, await r.text()
            started = time.monotonic()
            await populate(session, objects, concurrency)
            create_rate = objects / (time.monotonic() - started)
            patch_rate = await rate(session, seconds, concurrency, objects, status=False)
            status_rate = await rate(session, seconds, concurrency, objects, status=True)
            get_ms = await get_median_ms(session, 2000, objects)
            list_received_ms, list_parsed_ms = await list_ms(session, objects)
            again_rate = await rate(session, seconds, concurrency, objects, status=False)
    rows = [
        ("objects", f"{objects}"),
        ("client concurrency", f"{concurrency}"),
        ("POST (create)/s", f"{create_rate:,.0f}"),
        ("PATCH (merge, spec)/s", f"{patch_rate:,.0f}"),
        ("status PATCH/s", f"{status_rate:,.0f}"),
        ("GET median", f"{get_ms:.2f} ms"),
        (f"list all {objects} (received)", f"{list_received_ms:.0f} ms"),
        (f"list all {objects} (+ client json parse)", f"{list_parsed_ms:.0f} ms"),
        ("PATCH/s again (no slowdown with requests served)", f"{again_rate:,.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'metric'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 12}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.objects, args.seconds, args.concurrency))
