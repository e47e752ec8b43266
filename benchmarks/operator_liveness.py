"""Offline detection and memory at fleet scale: 10,000 hosts x 8 GPUs heartbeating every 10 s.

Usage: python -m benchmarks.operator_liveness [--hosts 10000] [--gpus-per-host 8] [--interval 10]
                                             [--grace 40] [--sample 200] [--measure 30]

Four processes: the emulated API, the operator (`python -m gpufleet operator`, so its CPU time
and RSS are its own), the REST facade (`python -m gpufleet facade`, for its RSS on the same
fleet), and this load generator, which registers the hosts and their GPU objects, heartbeats each
host every `--interval` seconds (merge patches on /status, as agents do), then stops a random
sample at staggered times and watches for them to be labelled offline.

Detection delay is "from a host's deadline to its offline status being written". The operator
measures exactly that (its deadline is its own clock at the moment it observed the heartbeat,
plus the grace period) in `gpufleet_offline_detection_delay_seconds`; quantiles here are read
from that histogram's buckets. The end-to-end figure seen from outside (last heartbeat
acknowledged + grace, to the offline label arriving on a watch) is an upper bound: it also
contains the heartbeat's own trip through the watch and the label write.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp

from benchmarks import _support

HOSTS = "/apis/gpufleet.io/v1alpha1/hosts"
GPUS = "/apis/gpufleet.io/v1alpha1/gpus"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _host(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name},
        "spec": {"displayName": name, "ipAddress": "10.1.0.1", "osType": "linux", "totalCpu": 64, "totalMemory": 2**38},
    }


def _gpu(host_name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "GPU",
        "metadata": {"name": f"{host_name}-gpu{index}", "labels": {"gpufleet.io/host": host_name}},
        "spec": {
            "hostName": host_name,
            "index": index,
            "uuid": f"GPU-{host_name}-{index:02d}-0000-0000-000000000000",
            "modelName": "NVIDIA H100 80GB HBM3",
            "memoryTotal": 85_899_345_920,
        },
    }


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class LoadGenerator:
    """Heartbeats every host once per interval, spread evenly; stopped hosts are skipped."""

    def __init__(self, session: aiohttp.ClientSession, api: str, names: list[str], interval: float) -> None:
        self.session, self.api, self.names, self.interval = session, api, names, interval
        self.stopped: set[str] = set()
        self.last_ack: dict[str, float] = {}
        self.sent = 0
        self.errors = 0
        self.late = 0.0
        self._limit = asyncio.Semaphore(128)

    async def _beat(self, name: str) -> None:
        body = {"status": {"lastHeartbeat": _stamp(), "healthStatus": "healthy", "usedCpu": 1.5}}
        async with self._limit:
            try:
                async with self.session.patch(f"{self.api}{HOSTS}/{name}/status", json=body, headers=MERGE) as reply:
                    await reply.read()
                    if reply.status >= 300:
                        self.errors += 1
                        return
            except aiohttp.ClientError:
                self.errors += 1
                return
        self.last_ack[name] = time.time()
        self.sent += 1

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._send_forever(tasks)
        finally:  # beats in flight die with the generator, not after the session is closed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_forever(self, tasks: set[asyncio.Task[None]]) -> None:
        step = self.interval / len(self.names)
        started = time.monotonic()
        slot = 0
        while True:
            due = started + slot * step
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late = max(self.late, -delay)
            name = self.names[slot % len(self.names)]
            slot += 1
            if name in self.stopped:
                continue
            task = asyncio.create_task(self._beat(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _watch_offline(session: aiohttp.ClientSession, api: str, seen: dict[str, float]) -> None:
    """Record when each host is first seen labelled offline."""
    params = {"watch": "true", "labelSelector": "gpufleet.io/status=offline", "allowWatchBookmarks": "false"}
    async with session.get(f"{api}{HOSTS}", params=params, timeout=aiohttp.ClientTimeout(total=None)) as reply:
        async for line in reply.content:
            if not line.strip():
                continue
            event = json.loads(line)
            obj = event.get("object", {})
            if (obj.get("metadata", {}).get("labels") or {}).get("gpufleet.io/status") == "offline":
                seen.setdefault(obj["metadata"]["name"], time.time())


def _histogram_quantiles(metrics_text: str, name: str, quantiles: list[float]) -> tuple[list[float], int]:
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    results = []
    for q in quantiles:
        rank = q * total
        results.append(next((le for le, count in buckets if count >= rank), float("nan")))
    return results, int(total)


def _online(metrics_text: str) -> int:
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith("gpufleet_hosts{") and 'state="online"' in line
        )
    )


async def _metric_value(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as reply:
        return await reply.text()


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    api_port, metrics_port, facade_port = _support.free_port(), _support.free_port(), _support.free_port()
    api = f"http://127.0.0.1:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    emulator_cmd = _support.emulator_command(api_port, kubeconfig)
    operator_env = {
        "KUBECONFIG": str(kubeconfig),
        "GPUFLEET_NAMESPACE": "gpufleet",
        "GPUFLEET_LEADER_ELECTION": "false",
        "GPUFLEET_GRACE_PERIOD_SECONDS": str(args.grace),
        "GPUFLEET_HEARTBEAT_INTERVAL_SECONDS": str(args.interval),
        "GPUFLEET_METRICS_PORT": str(metrics_port),
        "GPUFLEET_LOG_LEVEL": os.environ.get("BENCH_OPERATOR_LOG_LEVEL", "WARNING"),
        "GPUFLEET_LIVENESS_PORT": "0",
    }
    connector = aiohttp.TCPConnector(limit=256)
    with _support.process(emulator_cmd):
        async with aiohttp.ClientSession(connector=connector) as session:
            await _support.wait_http(session, f"{api}/version")
            for namespace in ("gpufleet", "default"):
                async with session.post(f"{api}/api/v1/namespaces", json={"metadata": {"name": namespace}}):
                    pass
            names = [f"bench-{i:05d}" for i in range(args.hosts)]
            limit = asyncio.Semaphore(64)

            async def create(name: str) -> None:
                async with limit, session.post(f"{api}{HOSTS}", json=_host(name)) as reply:
                    await reply.read()

            await asyncio.gather(*(create(name) for name in names))

            async def create_gpu(name: str, index: int) -> None:
                async with limit, session.post(f"{api}{GPUS}", json=_gpu(name, index)) as reply:
                    await reply.read()

            await asyncio.gather(*(create_gpu(name, i) for name in names for i in range(args.gpus_per_host)))
            print(f"registered {args.hosts} hosts, {args.hosts * args.gpus_per_host} GPUs", file=sys.stderr, flush=True)
            tokens_file = workdir / "tokens"
            tokens_file.write_text("bench-admin,admin\n", encoding="utf-8")
            facade_env = {
                **operator_env,
                "GPUFLEET_FACADE_HOST": "127.0.0.1",
                "GPUFLEET_FACADE_PORT": str(facade_port),
                "GPUFLEET_AUTH_MODE": "static",
                "GPUFLEET_STATIC_TOKENS_FILE": str(tokens_file),
            }
            profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
            operator_log = (workdir / "operator.log").open("wb")
            print(f"operator log: {workdir / 'operator.log'}", file=sys.stderr, flush=True)
            with (
                operator_log,
                _support.process(
                    [sys.executable, *profile, "-m", "gpufleet", "operator"], operator_env, stderr=operator_log.fileno()
                ) as operator,
                _support.process([sys.executable, "-m", "gpufleet", "facade"], facade_env) as facade,
            ):
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                await _support.wait_http(session, metrics_url)
                await _support.wait_http(session, f"http://127.0.0.1:{facade_port}/readyz", patience=300)
                load = LoadGenerator(session, api, names, args.interval)
                generator = asyncio.create_task(load.run())
                offline_seen: dict[str, float] = {}
                watcher = asyncio.create_task(_watch_offline(session, api, offline_seen))
                # Initial statuses, tokens, finalizers, then everybody online: wait until converged.
                warm_start = time.monotonic()
                online_hosts = 0
                while time.monotonic() - warm_start < args.warmup:
                    await asyncio.sleep(2)
                    online_hosts = _online(await _metric_value(session, metrics_url))
                    if online_hosts == args.hosts and time.monotonic() - warm_start > args.interval:
                        break
                converged = time.monotonic() - warm_start
                await asyncio.sleep(args.interval)  # one quiet cycle before measuring
                offline_seen.clear()

                cpu_before, sent_before = _support.cpu_seconds(operator.pid), load.sent
                window_start = time.monotonic()
                await asyncio.sleep(args.measure)
                cpu = _support.cpu_seconds(operator.pid) - cpu_before
                heartbeats = load.sent - sent_before
                window = time.monotonic() - window_start
                rss = _support.memory_mib(operator.pid)["VmRSS"]
                facade_rss = _support.memory_mib(facade.pid)["VmRSS"]

                sample = random.sample(names, min(args.sample, len(names)))
                stop_times: dict[str, float] = {}
                for name in sample:  # staggered over one interval
                    load.stopped.add(name)
                    stop_times[name] = time.time()
                    await asyncio.sleep(args.interval / len(sample))
                await asyncio.sleep(args.grace + 3)
                metrics_text = await _metric_value(session, metrics_url)
                generator.cancel()
                watcher.cancel()

    e2e = sorted(
        offline_seen[name] - (load.last_ack.get(name, stop_times[name]) + args.grace)
        for name in sample
        if name in offline_seen
    )
    (p50, p99), detected = _histogram_quantiles(metrics_text, "gpufleet_offline_detection_delay_seconds", [0.5, 0.99])
    false_offline = sorted(set(offline_seen) - set(sample))
    return {
        "hosts": args.hosts,
        "gpus": args.hosts * args.gpus_per_host,
        "facade_rss_mib": facade_rss,
        "interval": args.interval,
        "grace": args.grace,
        "online_after_warmup": online_hosts,
        "converged": converged,
        "heartbeat_rate": heartbeats / window,
        "cpu_per_1000": 1000 * cpu / max(heartbeats, 1),
        "cpu_share": cpu / window,
        "rss_mib": rss,
        "sampled": len(sample),
        "detected": detected,
        "p50": p50,
        "p99": p99,
        "e2e_p50": statistics.median(e2e) if e2e else float("nan"),
        "e2e_p99": e2e[min(len(e2e) - 1, int(0.99 * len(e2e)))] if e2e else float("nan"),
        "e2e_seen": len(e2e),
        "false_offline": len(false_offline),
        "send_errors": load.errors,
        "generator_lag": load.late,
    }


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("hosts / GPU objects", f"{r['hosts']} / {r['gpus']}"),
        ("heartbeat interval / grace", f"{r['interval']:g} s / {r['grace']:g} s"),
        ("hosts online after warm-up (time to converge)", f"{r['online_after_warmup']} ({r['converged']:.0f} s)"),
        ("heartbeats observed rate", f"{r['heartbeat_rate']:.0f} /s"),
        ("operator CPU per 1,000 heartbeats", f"{r['cpu_per_1000']:.3f} s  ({100 * r['cpu_share']:.0f}% of a core)"),
        ("operator RSS", f"{r['rss_mib']:.0f} MiB"),
        ("facade RSS (same fleet, caches synced)", f"{r['facade_rss_mib']:.0f} MiB"),
        ("stopped hosts detected", f"{r['detected']} of {r['sampled']}"),
        ("detection delay p50 (operator, deadline -> status written)", f"<= {r['p50'] * 1000:.0f} ms"),
        ("detection delay p99 (operator, deadline -> status written)", f"<= {r['p99'] * 1000:.0f} ms"),
        ("end-to-end p50 (last ack + grace -> offline label on a watch)", f"{r['e2e_p50'] * 1000:.0f} ms"),
        ("end-to-end p99 (upper bound)", f"{r['e2e_p99'] * 1000:.0f} ms ({r['e2e_seen']} seen)"),
        ("hosts wrongly marked offline (still heartbeating)", f"{r['false_offline']}"),
        ("heartbeat errors / load generator max lag", f"{r['send_errors']} / {r['generator_lag']:.2f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 30}"]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="fleet size (default: %(default)s)")
    parser.add_argument("--gpus-per-host", type=int, default=8, help="GPU objects per host (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat interval, s (default: %(default)s)")
    parser.add_argument("--grace", type=float, default=40.0, help="grace period, s (default: %(default)s)")
    parser.add_argument("--sample", type=int, default=200, help="hosts stopped to measure (default: %(default)s)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=180.0,
        help="most seconds to wait for every host to be online (default: %(default)s)",
    )
    parser.add_argument("--measure", type=float, default=20.0, help="CPU window, s (default: %(default)s)")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the operator process to PATH")
    args = parser.parse_args()
    print(_table(asyncio.run(scenario(args))))


if __name__ == "__main__":
    main()
