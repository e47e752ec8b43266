"""The write budget: API writes and Host watch traffic per 8-GPU host per hour, at default settings.

Usage: python -m benchmarks.write_budget [--hosts 10] [--warmup 30] [--window 80]
                                          [--scenario steady|busy]... [--hours 4]

Two parts, both at the agent's and the operator's default settings:

1. **End to end** (per scenario): `--hosts` real `gpufleet agent --register --simulate 8`
   processes and the real operator (`gpufleet operator`, leader election on) against an emulated
   API server in this process. After `--warmup` seconds (registration, GPU objects, first
   statuses), every object write the API server answers with success (create, update, patch,
   delete) is counted for `--window` seconds through `Emulator.observe`, by kind, and a Host
   watch opened by this process (as the REST facade and every `kubectl get hosts -w` do) counts
   events and bytes. `steady` runs the agents with `GPUFLEET_AGENT_SIMULATE_LOAD=steady` (long
   jobs at constant levels, sensor noise), `busy` with `noisy` (jobs of random size starting and
   stopping every 5 min, utilisation jumping ±35 points every sample, thermal lag, allocator
   jitter). Agents started together write their first resync at a random point of the resync
   interval (by design), so a window shorter than that interval still counts resyncs at their
   steady-state rate; it is a sample, though: expect about ±30% on the GPU figure of `steady`.
2. **Simulated hours** (per load): the agent's own sampler and write gate (`sampling.Sampler`,
   `changes.Gate`, as `agent.Agent` uses them) on the fake NVML with a simulated clock, `--hours`
   hours after one resync interval of warm-up: GPU status writes per GPU per hour by reason, and
   how stale the temperature and utilisation stored in the GPU objects are, sampled every 5 s:
   their age (now - `lastUpdateTime`) and their error (|stored - the sample Prometheus shows|).

Writes per host per hour leave out the operator's leader-election Lease (one renewal every 2 s
for the whole fleet, whatever its size); it is shown apart. Projections to 10,000 hosts scale the
per-host figures linearly; watch bytes are per watcher (each informer on Hosts receives them all).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import aiohttp

from benchmarks import _support
from gpufleet.api import hostlease
from gpufleet_agent import changes, fakenvml, gpustatus, health, nvml, sampling
from gpufleet_agent.settings import AgentSettings
from kube_emulator import EmulatedCluster, load_crds
from kube_emulator.faults import RequestRecord

GROUP = "/apis/gpufleet.io/v1alpha1"
OPERATOR_LEASE = "gpufleet-operator"
FLEET = 10_000
GPUS_PER_HOST = 8
BUDGET = {"steady": 450, "busy": 600}
WATCH_BUDGET = 15
LOAD = {"steady": "steady", "busy": "noisy"}
KINDS = ["Lease", "Host status", "GPU status", "GPU object", "Event", "other"]
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
NAMESPACES = ["gpufleet", hostlease.NAMESPACE]
"""The operator's namespace, and the one of the hosts' heartbeat Leases."""


def kind_of(record: RequestRecord) -> str:
    """Which budget line a write falls on, from its path (the operator's leader Lease is the fleet's)."""
    parts = record.path.rstrip("/").split("/")
    if "leases" in parts:
        name = parts[parts.index("leases") + 1] if parts[-1] != "leases" else ""
        return "leader Lease" if name == OPERATOR_LEASE else "Lease"
    if record.path.startswith(f"{GROUP}/hosts/") and parts[-1] == "status":
        return "Host status"
    if record.path.startswith(f"{GROUP}/gpus"):
        return "GPU status" if parts[-1] == "status" else "GPU object"
    if "events" in parts:
        return "Event"
    return "other"


# ----- part 1: end to end ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    scenario: str
    hosts: int
    window: float
    writes: Counter[str]
    watch_events: int
    watch_bytes: int
    ages: list[float]
    agent_reasons: Counter[str]


class Recorder:
    """Counts successful writes in the window; called on the emulator's loop, so it only appends."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def __call__(self, record: RequestRecord) -> None:
        if record.method in WRITES and record.status < 400:
            self.records.append(record)

    def count(self, start: float, end: float) -> Counter[str]:
        return Counter(kind_of(r) for r in list(self.records) if start <= r.at < end)


async def _watch_hosts(api: str, counts: dict[str, int], recording: threading.Event) -> None:
    """A Host watch like an informer's: every event's bytes are counted while `recording` is set."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{api}{GROUP}/hosts", params={"watch": "true"}) as reply,
    ):
        async for line in reply.content:
            if line.strip() and recording.is_set():
                counts["events"] += 1
                counts["bytes"] += len(line)


async def _gpu_ages(api: str, session: aiohttp.ClientSession) -> list[float]:
    """How old every GPU's stored status is now, from its `lastUpdateTime`."""
    async with session.get(f"{api}{GROUP}/gpus") as reply:
        listing = await reply.json()
    now = datetime.datetime.now(datetime.UTC)
    ages = []
    for item in listing.get("items", []):
        stamp = (item.get("status") or {}).get("lastUpdateTime")
        if stamp:
            ages.append((now - datetime.datetime.fromisoformat(stamp)).total_seconds())
    return ages


def _agent_reasons(ports: list[int]) -> Counter[str]:
    """GPU status writes by reason, summed over the agents' own metrics."""
    import urllib.request

    found: Counter[str] = Counter()
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("gpufleet_agent_gpu_status_writes_by_reason_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                found[reason] += int(float(line.rsplit(" ", 1)[1]))
    return found


async def end_to_end(scenario: str, hosts: int, warmup: float, window: float) -> Measured:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-budget-"))
    cluster = EmulatedCluster().start()
    recorder = Recorder()
    stop_observing = cluster.emulator.observe(recorder)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        load_crds(cluster, _support.REPO / "crds")
        kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig")
        api = cluster.url
        async with aiohttp.ClientSession() as session:
            for namespace in NAMESPACES:
                async with session.post(f"{api}/api/v1/namespaces", json={"metadata": {"name": namespace}}):
                    pass
            base = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            operator_env = {
                **base,
                "GPUFLEET_NAMESPACE": "gpufleet",
                "GPUFLEET_METRICS_PORT": str(_support.free_port()),
                "GPUFLEET_LIVENESS_PORT": "0",
                "GPUFLEET_LOG_LEVEL": "WARNING",
            }
            processes.append(_spawn(["-m", "gpufleet", "operator"], operator_env, workdir / "operator.log"))
            ports = [_support.free_port() for _ in range(hosts)]
            for index, port in enumerate(ports):
                agent_env = {
                    **base,
                    "NODE_NAME": f"budget-{index:03d}",
                    "GPUFLEET_AGENT_SIMULATE_LOAD": LOAD[scenario],
                    "GPUFLEET_AGENT_METRICS_PORT": str(port),
                    "GPUFLEET_AGENT_METRICS_HOST": "127.0.0.1",
                    "GPUFLEET_AGENT_LOG_LEVEL": "WARNING",
                }
                command = ["-m", "gpufleet", "agent", "--register", "--simulate", str(GPUS_PER_HOST)]
                processes.append(_spawn(command, agent_env, workdir / f"agent-{index}.log"))
            counts = {"events": 0, "bytes": 0}
            recording = threading.Event()
            watcher = asyncio.create_task(_watch_hosts(api, counts, recording))
            try:
                await asyncio.sleep(warmup)
                _check_alive(processes, workdir)
                reasons_before = _agent_reasons(ports)
                recording.set()
                start = time.monotonic()
                ages: list[float] = []
                while (left := start + window - time.monotonic()) > 0:
                    await asyncio.sleep(min(10.0, left))
                    ages += await _gpu_ages(api, session)
                end = time.monotonic()
                recording.clear()
                _check_alive(processes, workdir)
                reasons = _agent_reasons(ports)
                reasons.subtract(reasons_before)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        return Measured(
            scenario, hosts, end - start, recorder.count(start, end), counts["events"], counts["bytes"], ages, reasons
        )
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_observing()
        cluster.stop()


def _spawn(args: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], env=env, cwd=_support.REPO, stdout=subprocess.DEVNULL, stderr=out
        )


def _check_alive(processes: list[subprocess.Popen[bytes]], workdir: pathlib.Path) -> None:
    dead = [proc.args for proc in processes if proc.poll() is not None]
    if dead:
        raise RuntimeError(f"{len(dead)} process(es) exited early (logs in {workdir}): {dead[0]}")


# ----- part 2: simulated hours -------------------------------------------------------------------------------


@dataclasses.dataclass
class Simulated:
    load: str
    writes_per_gpu_hour: float
    reasons: Counter[str]
    ages: list[float]
    temperature_errors: list[float]
    utilization_errors: list[float]


def simulate(load: fakenvml.Load, hours: float, gpus: int = GPUS_PER_HOST, seed: int = 7) -> Simulated:
    """The agent's sampler and gate at default settings on `gpus` fake GPUs, for `hours` of simulated time."""
    settings = AgentSettings(node_name="bench")
    now = [0.0]
    fake = fakenvml.FakeNVML(gpus, load=load, clock=lambda: now[0], seed=seed, host_tag="b0d9e7")
    library = nvml.Nvml(fake)
    library.start()
    sampler = sampling.Sampler(library, health.Tracker(settings.unhealthy_hold_seconds))
    sampler.discover()
    reasons: Counter[str] = Counter()
    measuring = [False]

    def count(why: changes.Why) -> None:
        if measuring[0]:
            reasons[why.value] += 1

    gate = changes.Gate(changes.Thresholds.of(settings), rng=random.Random(seed), on_write=count)
    warmup = settings.resync_interval_seconds
    written_at: dict[str, float] = {}
    ages: list[float] = []
    temperature_errors: list[float] = []
    utilization_errors: list[float] = []
    while now[0] < warmup + hours * 3600:
        measuring[0] = now[0] >= warmup
        for sample in sampler.sample(now[0]):
            observed = gpustatus.observe(sample, None)
            name = str(sample.device.index)
            if gate.due(name, observed, now[0]):
                gate.record(name, observed, now[0])
                written_at[name] = now[0]
            stored = gate.last(name)
            if measuring[0] and stored is not None:
                ages.append(now[0] - written_at[name])
                temperature_errors.append(_error(stored.temperature_celsius, observed.temperature_celsius))
                utilization_errors.append(_error(stored.utilization_percent, observed.utilization_percent))
        now[0] += settings.sample_interval_seconds
    total = sum(reasons.values())
    return Simulated(load.value, total / gpus / hours, reasons, ages, temperature_errors, utilization_errors)


def _error(stored: float | None, current: float | None) -> float:
    return abs(stored - current) if stored is not None and current is not None else 0.0


# ----- the tables --------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report(measured: list[Measured], simulated: dict[str, Simulated]) -> str:
    out = []
    per_hour = {m.scenario: {k: v / m.hosts / m.window * 3600 for k, v in m.writes.items()} for m in measured}
    names = [m.scenario for m in measured]
    rows = []
    for kind in KINDS:
        rows.append([kind, *(f"{per_hour[n].get(kind, 0):.0f}" for n in names)])
    totals = {n: sum(v for k, v in per_hour[n].items() if k != "leader Lease") for n in names}
    rows.append(["total per host", *(f"{totals[n]:.0f}" for n in names)])
    rows.append(["budget", *(f"<= {BUDGET[n]}" for n in names)])
    rows.append(["verdict", *("ok" if totals[n] <= BUDGET[n] else "OVER" for n in names)])
    watch = {m.scenario: m.watch_events / m.hosts / m.window * 3600 for m in measured}
    rows.append([f"Host watch events per host (budget {WATCH_BUDGET})", *(f"{watch[n]:.0f}" for n in names)])
    fleet_lease = [f"{per_hour[m.scenario].get('leader Lease', 0) * m.hosts:.0f}" for m in measured]
    rows.append(["leader Lease, whole fleet (not per host)", *fleet_lease])
    header = ["writes per 8-GPU host per hour, measured", *names]
    conditions = ", ".join(f"{m.scenario}: {m.hosts} hosts, {m.window:.0f} s" for m in measured)
    out.append(f"End to end: agents + operator at default settings against the emulated API ({conditions})")
    out.append(table(header, rows))

    rows = []
    for m in measured:
        reasons = ", ".join(f"{k} {v / m.hosts / m.window * 3600:.0f}" for k, v in sorted(m.agent_reasons.items()) if v)
        ages = f"{quantile(m.ages, 0.5):.0f} / {quantile(m.ages, 0.99):.0f} s" if m.ages else "-"
        rows.append([m.scenario, reasons or "-", ages])
    out.append("")
    out.append(
        table(
            [
                "scenario",
                "GPU status writes per host per hour by reason (agents' metrics)",
                "GPU status age p50 / p99 in the window*",
            ],
            rows,
        )
    )
    out.append("* bounded by how long the agents have run; the steady-state figures are below")

    rows = []
    for label, sim in simulated.items():
        rows.append(
            [
                label,
                f"{sim.writes_per_gpu_hour:.1f}",
                f"{sim.writes_per_gpu_hour * GPUS_PER_HOST:.0f}",
                f"{quantile(sim.ages, 0.5):.0f} / {quantile(sim.ages, 0.99):.0f} s",
                f"{quantile(sim.temperature_errors, 0.5):.0f} / {quantile(sim.temperature_errors, 0.99):.0f} °C",
                f"{quantile(sim.utilization_errors, 0.5):.0f} / {quantile(sim.utilization_errors, 0.99):.0f} pts",
                ", ".join(f"{k} {v}" for k, v in sorted(sim.reasons.items())),
            ]
        )
    out.append("")
    hours = len(next(iter(simulated.values())).ages) * 5 / 3600 / GPUS_PER_HOST
    out.append(f"Simulated hours: the agent's sampler + write gate at default settings, {hours:.3g} h per load, 8 GPUs")
    out.append(
        table(
            [
                "load",
                "GPU writes/GPU/h",
                "per host/h",
                "stored temp+util age p50 / p99",
                "temp error p50 / p99",
                "util error p50 / p99",
                "writes by reason",
            ],
            rows,
        )
    )

    rows = []
    for kind in [*KINDS, "total per host"]:
        cells = []
        for n in names:
            value = totals[n] if kind == "total per host" else per_hour[n].get(kind, 0)
            cells.append(f"{value * FLEET / 3600:.0f}")
        rows.append([kind, *cells])
    fleet_lease = [f"{per_hour[m.scenario].get('leader Lease', 0) * m.hosts / 3600:.1f}" for m in measured]
    rows.append(["leader Lease (fleet, fixed)", *fleet_lease])
    bytes_per_host = {m.scenario: m.watch_bytes / m.hosts / m.window * 3600 for m in measured}
    rows.append(["Host watch events/s per watcher", *(f"{watch[n] * FLEET / 3600:.0f}" for n in names)])
    rows.append(["Host watch KiB/s per watcher", *(f"{bytes_per_host[n] * FLEET / 3600 / 1024:.0f}" for n in names)])
    out.append("")
    out.append(f"Projected to {FLEET:,} hosts ({FLEET * GPUS_PER_HOST:,} GPUs), writes per second")
    out.append(table(["kind", *names], rows))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10, help="simulated 8-GPU agents per scenario")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before counting starts")
    parser.add_argument("--window", type=float, default=80.0, help="seconds counted")
    parser.add_argument("--scenario", action="append", choices=sorted(BUDGET), help="default: both")
    parser.add_argument("--hours", type=float, default=4.0, help="simulated hours per load")
    args = parser.parse_args()
    simulated = {
        f"{label} ({load.value})": simulate(load, args.hours)
        for label, load in (
            ("steady", fakenvml.Load.STEADY),
            ("busy", fakenvml.Load.NOISY),
            ("--simulate default", fakenvml.Load.WAVE),
            ("idle", fakenvml.Load.IDLE),
        )
    }
    measured = []
    for scenario in args.scenario or ["steady", "busy"]:
        print(
            f"running {scenario}: {args.hosts} agents, {args.warmup:g} s warm-up, {args.window:g} s counted",
            file=sys.stderr,
            flush=True,
        )
        measured.append(asyncio.run(end_to_end(scenario, args.hosts, args.warmup, args.window)))
    print(report(measured, simulated))


if __name__ == "__main__":
    main()
