"""Offline detection, CPU, memory, REST latency and API writes at today's fleet shape: 10,000 hosts x 8 GPUs.

Usage: python -m benchmarks.operator_liveness [--hosts 10000] [--gpus-per-host 8] [--interval 10]
                                             [--grace 40] [--status-every 300] [--sample 200]
                                             [--measure 30] [--rest-requests 500] [--rest-rate 50]

Five processes: the emulated API, the operator (`python -m gpufleet operator`, so its CPU time
and RSS are its own), the REST facade (`python -m gpufleet facade`, static auth with an admin
token from a tokens file), a REST prober (started only to measure the REST latencies), and this
load generator. The load generator registers the hosts and their GPU objects, then heartbeats
each host as a node agent does since heartbeats are Leases: its first heartbeat creates the
host's Lease (`hostlease.manifest`, holder = the host's name, owned by the Host) and writes its
first Host status; each later one is a single merge patch renewing the Lease
(`hostlease.renewal`), every `--interval` seconds, spread evenly over the interval. Host status
(`lastHeartbeat`, health, usage) is written again only every `--status-every` seconds per host
(300: the agents' resync), spread evenly over that period and independent of the renewals.
After convergence and one quiet interval it measures, in order:

1. the steady window (`--measure` s): CPU seconds of the operator, the facade, the emulated API
   and the load generator from /proc, as shares of a core; RSS of the operator and the facade;
   API writes per second by kind. Lease renewals and Host status writes are counted by the load
   generator (acknowledged with 2xx); the other writes (the operator's, and the facade's if it
   made any) are the advance of the emulator's resourceVersion, which every successful write
   bumps by one, minus the load generator's writes in the same window;
2. the REST latencies, heartbeats still running: a separate process (so the load generator's
   busy loop is not in the figure) sends `--rest-requests` `GET /api/v1/hosts?page=N&page_size=20`
   for random N and as many `GET /api/v1/hosts/{id}/gpus` for random hosts, alternating, paced
   at `--rest-rate` requests/s over one keep-alive connection; client-side p50/p99, and the
   facade's own `gpufleet_facade_request_duration_seconds` bucket bounds for the same routes;
3. detection: a random sample of hosts stops (renewals and status writes) at staggered times
   over one interval, and a Host watch records when each is labelled offline.

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
import http.client
import json
import math
import os
import pathlib
import random
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp

from benchmarks import _support
from gpufleet.api import hostlease

HOSTS = "/apis/gpufleet.io/v1alpha1/hosts"
GPUS = "/apis/gpufleet.io/v1alpha1/gpus"
MERGE = {"Content-Type": "application/merge-patch+json"}
ADMIN_TOKEN = "bench-admin"  # the throwaway facade's admin token
PAGE_SIZE = 20
LIST_ROUTE = "/api/v1/hosts"
GPUS_ROUTE = "/api/v1/hosts/{host_id}/gpus"


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
    """Heartbeats every host as a node agent does: a Lease renewal per interval, a status write now and then.

    Renewals are spread evenly over the interval (the first creates the Lease and writes the
    first status); status writes are spread evenly over `status_every`, on a schedule of their
    own. Stopped hosts are skipped by both.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api: str,
        uids: dict[str, str],
        *,
        interval: float,
        status_every: float,
        grace: float,
    ) -> None:
        self.session, self.api, self.interval, self.status_every = session, api, interval, status_every
        self.names = list(uids)
        self.uids = uids
        self.duration = max(1, round(grace))
        self.stopped: set[str] = set()
        self.leased: set[str] = set()
        self.last_ack: dict[str, float] = {}
        self.counts = {"lease_create": 0, "lease_renew": 0, "status": 0}
        self.errors = 0
        self.late = 0.0
        self._limit = asyncio.Semaphore(128)

    def writes(self) -> int:
        return sum(self.counts.values())

    async def _send(self, method: str, url: str, body: dict[str, Any], headers: dict[str, str] | None) -> int:
        async with self._limit:
            try:
                async with self.session.request(method, url, json=body, headers=headers) as reply:
                    await reply.read()
                    return reply.status
            except aiohttp.ClientError:
                return 0

    async def _renew(self, name: str) -> None:
        lease_url = f"{self.api}{hostlease.path(hostlease.NAMESPACE, name)}"
        if name not in self.leased:
            manifest = hostlease.manifest(
                host_name=name,
                host_uid=self.uids[name],
                namespace=hostlease.NAMESPACE,
                holder=name,
                duration_seconds=self.duration,
            )
            status = await self._send("POST", f"{self.api}{hostlease.path(hostlease.NAMESPACE)}", manifest, None)
            if status < 300:
                self.counts["lease_create"] += 1
                self.leased.add(name)
                self.last_ack[name] = time.time()
                await self._status(name)  # an agent's first report: its Host has no status yet
                return
            if status != 409:  # 409: it exists after all, renew it
                self.errors += 1
                return
            self.leased.add(name)
        renewal = hostlease.renewal(holder=name, duration_seconds=self.duration)
        status = await self._send("PATCH", lease_url, renewal, MERGE)
        if status == 404:
            self.leased.discard(name)  # gone (it should not be): created again next time
        if status >= 300 or status == 0:
            self.errors += 1
            return
        self.counts["lease_renew"] += 1
        self.last_ack[name] = time.time()

    async def _status(self, name: str) -> None:
        body = {"status": {"lastHeartbeat": _stamp(), "healthStatus": "healthy", "usedCpu": 1.5}}
        status = await self._send("PATCH", f"{self.api}{HOSTS}/{name}/status", body, MERGE)
        if status >= 300 or status == 0:
            self.errors += 1
            return
        self.counts["status"] += 1
        self.last_ack[name] = time.time()

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            await asyncio.gather(
                self._schedule(tasks, self.interval, 0.0, self._renew),
                # Periodic status writes start after the first interval (which wrote the first ones).
                self._schedule(tasks, self.status_every, self.interval, self._status),
            )
        finally:  # writes in flight die with the generator, not after the session is closed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule(self, tasks: set[asyncio.Task[None]], period: float, offset: float, send: Any) -> None:
        """Call `send(name)` for every host once per `period`, evenly spread, from `offset` seconds on."""
        step = period / len(self.names)
        started = time.monotonic() + offset
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
            task = asyncio.create_task(send(name))
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


def _histogram_quantiles(
    metrics_text: str, name: str, quantiles: list[float], labels: tuple[str, ...] = ()
) -> tuple[list[float], int]:
    """Quantiles (bucket upper bounds) of a histogram, restricted to series carrying every `labels` pair."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket") and all(label in line for label in labels):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0
    results = []
    for q in quantiles:
        rank = q * total
        results.append(next((le for le, count in ordered if count >= rank), float("nan")))
    return results, int(total)


def _online(metrics_text: str) -> int:
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith("gpufleet_hosts{") and 'state="online"' in line
        )
    )


def _gauges(metrics_text: str, name: str) -> str:
    """`resource=value` for each series of a gauge labelled by resource, e.g. `hosts=1 leases=1`."""
    values = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}{{") and 'resource="' in line:
            resource = line.split('resource="', 1)[1].split('"', 1)[0]
            values.append(f"{resource}={float(line.rsplit(' ', 1)[1]):g}")
    return " ".join(values) or "-"


def _counter(metrics_text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines() if line.startswith(f"{name} "))


async def _metric_value(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as reply:
        return await reply.text()


async def _resource_version(session: aiohttp.ClientSession, api: str) -> int:
    """The emulator's current resourceVersion: one more for every successful write, whatever its kind."""
    async with session.get(f"{api}/api/v1/namespaces", params={"limit": "1"}) as reply:
        return int((await reply.json())["metadata"]["resourceVersion"])


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def probe_rest() -> None:
    """The REST prober, a process of its own: `python -c '...probe_rest()' CONFIG_FILE` (JSON).

    Alternates list pages and GPU lists over one keep-alive connection, paced, and writes every
    latency (seconds, client side, request sent to body read) to the file `out` names.
    """
    config = json.loads(pathlib.Path(sys.argv[1]).read_text(encoding="utf-8"))
    rng = random.Random(config["seed"])
    pages, hosts = config["pages"], config["hosts"]
    headers = {"Authorization": f"Bearer {config['token']}"}
    connection = http.client.HTTPConnection("127.0.0.1", config["port"], timeout=30)
    latencies: dict[str, list[float]] = {"list": [], "gpus": []}
    failures = 0
    step = 1 / config["rate"]
    started = time.monotonic()
    for index in range(-20, 2 * config["requests"]):  # 20 unmeasured ones first: connection, caches
        due = started + (index + 20) * step
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kind = "list" if index % 2 == 0 else "gpus"
        if kind == "list":
            path = f"/api/v1/hosts?page={rng.randint(1, pages)}&page_size={PAGE_SIZE}"
        else:
            path = f"/api/v1/hosts/{hosts[rng.randrange(len(hosts))]}/gpus"
        sent = time.perf_counter()
        connection.request("GET", path, headers=headers)
        reply = connection.getresponse()
        reply.read()
        elapsed = time.perf_counter() - sent
        if reply.status != 200:
            failures += 1
        elif index >= 0:
            latencies[kind].append(elapsed)
    connection.close()
    pathlib.Path(config["out"]).write_text(json.dumps({**latencies, "failures": failures}), encoding="utf-8")


async def _probe(args: argparse.Namespace, workdir: pathlib.Path, facade_port: int, names: list[str]) -> dict[str, Any]:
    out = workdir / "rest.json"
    config = {
        "port": facade_port,
        "token": ADMIN_TOKEN,
        "pages": math.ceil(len(names) / PAGE_SIZE),
        "hosts": names,
        "requests": args.rest_requests,
        "rate": args.rest_rate,
        "seed": 1,
        "out": str(out),
    }
    code = "from benchmarks.operator_liveness import probe_rest; probe_rest()"
    config_file = workdir / "rest-config.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    with _support.process([sys.executable, "-c", code, str(config_file)], stderr=None) as prober:
        await asyncio.to_thread(prober.wait)
    if prober.returncode != 0 or not out.exists():
        raise RuntimeError(f"the REST prober failed (exit status {prober.returncode})")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    api_port, metrics_port, facade_port = _support.free_port(), _support.free_port(), _support.free_port()
    api = f"http://127.0.0.1:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    emulator_cmd = _support.emulator_command(api_port, kubeconfig)
    operator_env = {
        "KUBECONFIG": str(kubeconfig),
        "GPUFLEET_NAMESPACE": "gpufleet",
        "GPUFLEET_HOST_LEASE_NAMESPACE": hostlease.NAMESPACE,
        "GPUFLEET_LEADER_ELECTION": "false",
        "GPUFLEET_GRACE_PERIOD_SECONDS": str(args.grace),
        "GPUFLEET_HEARTBEAT_INTERVAL_SECONDS": str(args.interval),
        "GPUFLEET_STATUS_RESYNC_SECONDS": str(args.status_every),
        "GPUFLEET_METRICS_PORT": str(metrics_port),
        "GPUFLEET_LOG_LEVEL": os.environ.get("BENCH_OPERATOR_LOG_LEVEL", "WARNING"),
        "GPUFLEET_LIVENESS_PORT": "0",
    }
    connector = aiohttp.TCPConnector(limit=256)
    with _support.process(emulator_cmd) as emulator:
        async with aiohttp.ClientSession(connector=connector) as session:
            await _support.wait_http(session, f"{api}/version")
            for namespace in ("gpufleet", "default", hostlease.NAMESPACE):
                async with session.post(f"{api}/api/v1/namespaces", json={"metadata": {"name": namespace}}):
                    pass
            names = [f"bench-{i:05d}" for i in range(args.hosts)]
            uids: dict[str, str] = {}
            limit = asyncio.Semaphore(64)

            async def create(name: str) -> None:
                async with limit, session.post(f"{api}{HOSTS}", json=_host(name)) as reply:
                    uids[name] = (await reply.json())["metadata"]["uid"]

            await asyncio.gather(*(create(name) for name in names))

            async def create_gpu(name: str, index: int) -> None:
                async with limit, session.post(f"{api}{GPUS}", json=_gpu(name, index)) as reply:
                    await reply.read()

            await asyncio.gather(*(create_gpu(name, i) for name in names for i in range(args.gpus_per_host)))
            print(f"registered {args.hosts} hosts, {args.hosts * args.gpus_per_host} GPUs", file=sys.stderr, flush=True)
            tokens_file = workdir / "tokens"
            tokens_file.write_text(f"{ADMIN_TOKEN},admin\n", encoding="utf-8")
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
                facade_metrics_url = f"http://127.0.0.1:{facade_port}/metrics"
                await _support.wait_http(session, metrics_url)
                await _support.wait_http(session, f"http://127.0.0.1:{facade_port}/readyz", patience=300)
                load = LoadGenerator(
                    session, api, uids, interval=args.interval, status_every=args.status_every, grace=args.grace
                )
                generator = asyncio.create_task(load.run())
                offline_seen: dict[str, float] = {}
                watcher = asyncio.create_task(_watch_offline(session, api, offline_seen))
                try:
                    # Leases, first statuses, tokens, finalizers, then everybody online: wait until converged.
                    warm_start = time.monotonic()
                    online_hosts = 0
                    while time.monotonic() - warm_start < args.warmup:
                        await asyncio.sleep(2)
                        online_hosts = _online(await _metric_value(session, metrics_url))
                        if online_hosts == args.hosts and time.monotonic() - warm_start > args.interval:
                            break
                    converged = time.monotonic() - warm_start
                    print(f"{online_hosts} online after {converged:.0f} s", file=sys.stderr, flush=True)
                    await asyncio.sleep(args.interval)  # one quiet cycle before measuring
                    offline_seen.clear()

                    # 1. The steady window.
                    pids = {
                        "operator": operator.pid,
                        "facade": facade.pid,
                        "emulator": emulator.pid,
                        "load": os.getpid(),
                    }
                    observed_before = _counter(
                        await _metric_value(session, metrics_url), "gpufleet_heartbeats_observed_total"
                    )
                    rv_before = await _resource_version(session, api)
                    counts_before, writes_before = dict(load.counts), load.writes()
                    cpu_before = {role: _support.cpu_seconds(pid) for role, pid in pids.items()}
                    window_start = time.monotonic()
                    await asyncio.sleep(args.measure)
                    cpu = {role: _support.cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
                    window = time.monotonic() - window_start
                    rv_after = await _resource_version(session, api)
                    counts = {kind: load.counts[kind] - counts_before[kind] for kind in load.counts}
                    other_writes = max(0, rv_after - rv_before - (load.writes() - writes_before))
                    observed = (
                        _counter(await _metric_value(session, metrics_url), "gpufleet_heartbeats_observed_total")
                        - observed_before
                    )
                    online_after_window = _online(await _metric_value(session, metrics_url))
                    rss = _support.memory_mib(operator.pid)["VmRSS"]
                    facade_rss = _support.memory_mib(facade.pid)["VmRSS"]
                    lag_steady, load.late = load.late, 0.0
                    print("steady window measured; REST latencies next", file=sys.stderr, flush=True)

                    # 2. REST latencies, heartbeats still running.
                    rest = await _probe(args, workdir, facade_port, names)
                    facade_metrics = await _metric_value(session, facade_metrics_url)

                    # 3. Detection.
                    sample = random.sample(names, min(args.sample, len(names)))
                    stop_times: dict[str, float] = {}
                    rv_stop, writes_stop = await _resource_version(session, api), load.writes()
                    for name in sample:  # staggered over one interval
                        load.stopped.add(name)
                        stop_times[name] = time.time()
                        await asyncio.sleep(args.interval / len(sample))
                    await asyncio.sleep(args.grace + 3)
                    detection_writes = max(
                        0, await _resource_version(session, api) - rv_stop - (load.writes() - writes_stop)
                    )
                    metrics_text = await _metric_value(session, metrics_url)
                finally:
                    generator.cancel()
                    watcher.cancel()
                    await asyncio.gather(generator, watcher, return_exceptions=True)

    e2e = sorted(
        offline_seen[name] - (load.last_ack.get(name, stop_times[name]) + args.grace)
        for name in sample
        if name in offline_seen
    )
    (p50, p99), detected = _histogram_quantiles(metrics_text, "gpufleet_offline_detection_delay_seconds", [0.5, 0.99])
    latency = "gpufleet_facade_request_duration_seconds"
    (list_s50, list_s99), _ = _histogram_quantiles(
        facade_metrics, latency, [0.5, 0.99], (f'route="{LIST_ROUTE}"', 'method="GET"')
    )
    (gpus_s50, gpus_s99), _ = _histogram_quantiles(
        facade_metrics, latency, [0.5, 0.99], (f'route="{GPUS_ROUTE}"', 'method="GET"')
    )
    false_offline = sorted(set(offline_seen) - set(sample))
    heartbeats = counts["lease_renew"] + counts["status"] + counts["lease_create"]
    return {
        "hosts": args.hosts,
        "gpus": args.hosts * args.gpus_per_host,
        "interval": args.interval,
        "grace": args.grace,
        "status_every": args.status_every,
        "window": window,
        "online_after_warmup": online_hosts,
        "converged": converged,
        "heartbeat_rate": heartbeats / window,
        "observed_rate": observed / window,
        "cpu_per_1000": 1000 * cpu["operator"] / max(heartbeats, 1),
        "cpu_share": {role: seconds / window for role, seconds in cpu.items()},
        "writes_per_s": {
            "lease_renew": counts["lease_renew"] / window,
            "lease_create": counts["lease_create"] / window,
            "status": counts["status"] / window,
            "other": other_writes / window,
        },
        "detection_writes": detection_writes,
        "online_after_window": online_after_window,
        "fresh": _gauges(metrics_text, "gpufleet_watch_fresh"),
        "rss_mib": rss,
        "facade_rss_mib": facade_rss,
        "rest_requests": len(rest["list"]),
        "rest_failures": rest["failures"],
        "rest_rate": args.rest_rate,
        "list_p50": _quantile(rest["list"], 0.5),
        "list_p99": _quantile(rest["list"], 0.99),
        "gpus_p50": _quantile(rest["gpus"], 0.5),
        "gpus_p99": _quantile(rest["gpus"], 0.99),
        "list_server": (list_s50, list_s99),
        "gpus_server": (gpus_s50, gpus_s99),
        "sampled": len(sample),
        "detected": detected,
        "p50": p50,
        "p99": p99,
        "e2e_p50": statistics.median(e2e) if e2e else float("nan"),
        "e2e_p99": e2e[min(len(e2e) - 1, int(0.99 * len(e2e)))] if e2e else float("nan"),
        "e2e_seen": len(e2e),
        "false_offline": len(false_offline),
        "send_errors": load.errors,
        "generator_lag": lag_steady,
        "generator_lag_after": load.late,
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def _table(r: dict[str, Any]) -> str:
    share, writes = r["cpu_share"], r["writes_per_s"]
    rows = [
        ("hosts / GPU objects", f"{r['hosts']} / {r['gpus']}"),
        (
            "Lease renewal interval / Host status every / grace",
            f"{r['interval']:g} s / {r['status_every']:g} s / {r['grace']:g} s",
        ),
        ("hosts online after warm-up (time to converge)", f"{r['online_after_warmup']} ({r['converged']:.0f} s)"),
        ("hosts online at the end of the steady window", f"{r['online_after_window']}"),
        (
            "heartbeats sent / observed by the operator (steady window)",
            f"{r['heartbeat_rate']:.0f} /s / {r['observed_rate']:.0f} /s  ({r['window']:.0f} s window)",
        ),
        (
            "API writes: Lease renewals / Host status / Lease creates",
            f"{writes['lease_renew']:.0f} /s / {writes['status']:.1f} /s / {writes['lease_create']:.1f} /s",
        ),
        ("API writes: operator (+ facade), resourceVersion advance - ours", f"{writes['other']:.2f} /s"),
        ("operator CPU per 1,000 heartbeats", f"{r['cpu_per_1000']:.3f} s"),
        (
            "CPU, share of a core: operator / facade",
            f"{100 * share['operator']:.0f}% / {100 * share['facade']:.0f}%",
        ),
        (
            "CPU, share of a core: emulated API / load generator",
            f"{100 * share['emulator']:.0f}% / {100 * share['load']:.0f}%",
        ),
        ("operator RSS", f"{r['rss_mib']:.0f} MiB"),
        ("facade RSS (same fleet, caches synced)", f"{r['facade_rss_mib']:.0f} MiB"),
        (
            f"REST list page p50 / p99 (client, {r['rest_requests']} at {r['rest_rate']:g}/s with GPU lists)",
            f"{_ms(r['list_p50'])} / {_ms(r['list_p99'])}",
        ),
        (
            "REST list page p50 / p99 (facade histogram, bucket bound)",
            f"<= {_ms(r['list_server'][0])} / <= {_ms(r['list_server'][1])}",
        ),
        ("REST GPUs of a host p50 / p99 (client)", f"{_ms(r['gpus_p50'])} / {_ms(r['gpus_p99'])}"),
        (
            "REST GPUs of a host p50 / p99 (facade histogram, bucket bound)",
            f"<= {_ms(r['gpus_server'][0])} / <= {_ms(r['gpus_server'][1])}",
        ),
        ("REST requests not answered 200", f"{r['rest_failures']}"),
        ("stopped hosts detected", f"{r['detected']} of {r['sampled']}"),
        ("detection delay p50 (operator, deadline -> status written)", f"<= {r['p50'] * 1000:.0f} ms"),
        ("detection delay p99 (operator, deadline -> status written)", f"<= {r['p99'] * 1000:.0f} ms"),
        ("end-to-end p50 (last ack + grace -> offline label on a watch)", f"{r['e2e_p50'] * 1000:.0f} ms"),
        ("end-to-end p99 (upper bound)", f"{r['e2e_p99'] * 1000:.0f} ms ({r['e2e_seen']} seen)"),
        ("hosts wrongly marked offline (still heartbeating)", f"{r['false_offline']}"),
        ("operator (+ facade) writes while detecting", f"{r['detection_writes']}"),
        ("operator informers fresh at the end (1 = following the API)", r["fresh"]),
        (
            "heartbeat errors / load generator max lag (steady, later)",
            f"{r['send_errors']} / {r['generator_lag']:.2f} s, {r['generator_lag_after']:.2f} s",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 30}"]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="fleet size (default: %(default)s)")
    parser.add_argument("--gpus-per-host", type=int, default=8, help="GPU objects per host (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=10.0, help="Lease renewal interval, s (default: %(default)s)")
    parser.add_argument("--grace", type=float, default=40.0, help="grace period, s (default: %(default)s)")
    parser.add_argument(
        "--status-every", type=float, default=300.0, help="Host status write period per host, s (default: %(default)s)"
    )
    parser.add_argument("--sample", type=int, default=200, help="hosts stopped to measure (default: %(default)s)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=180.0,
        help="most seconds to wait for every host to be online (default: %(default)s)",
    )
    parser.add_argument("--measure", type=float, default=30.0, help="steady window, s (default: %(default)s)")
    parser.add_argument(
        "--rest-requests", type=int, default=500, help="REST requests of each kind (default: %(default)s)"
    )
    parser.add_argument("--rest-rate", type=float, default=50.0, help="REST requests per second (default: %(default)s)")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the operator process to PATH")
    args = parser.parse_args()
    # SIGTERM (`timeout`, a CI job cancelled) unwinds like Ctrl-C, so every child process is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(_table(asyncio.run(scenario(args))))


if __name__ == "__main__":
    main()
