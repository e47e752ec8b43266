"""What the GPU agent costs: API writes per GPU per hour, and its CPU and memory with 8 GPUs.

Usage: python -m benchmarks.agent_writes [--seconds 60] [--hours 1]

Writes: the agent's own sampling and write decision (`sampling.Sampler` + `changes.Gate`, the
objects `agent.Agent` uses) on the fake NVML, driven by a simulated clock at the default 5 s
sample interval and 60 s resync, so an hour takes a fraction of a second. Heartbeats are
separate (one per 10 s per node, whatever the GPU count). The naive figure writes every sample.

Footprint: `gpufleet agent --simulate 8` as a separate process against an emulated API server
in this process, at the default intervals, for `--seconds` of wall time (metrics endpoint on).
CPU is measured after a 10 s warm-up (start-up imports excluded); RSS is the end figure and
the peak (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchmarks import _support
from gpufleet_agent import changes, fakenvml, gpustatus, health, nvml, sampling
from gpufleet_agent.settings import AgentSettings
from kube_emulator import EmulatedCluster, load_crds


def writes_per_gpu_hour(load: fakenvml.Load, hours: float, gpus: int = 8) -> float:
    settings = AgentSettings(node_name="bench")
    now = [0.0]
    fake = fakenvml.FakeNVML(gpus, load=load, clock=lambda: now[0], seed=7)
    library = nvml.Nvml(fake)
    library.start()
    sampler = sampling.Sampler(library, health.Tracker(settings.unhealthy_hold_seconds))
    sampler.discover()
    gate = changes.Gate(changes.Thresholds.of(settings))
    writes = 0
    while now[0] < hours * 3600:
        for sample in sampler.sample(now[0]):
            observed = gpustatus.observe(sample, None)
            name = str(sample.device.index)
            if gate.due(name, observed, now[0]):
                gate.record(name, observed, now[0])
                writes += 1
        now[0] += settings.sample_interval_seconds
    return writes / gpus / hours


def _writes(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("gpufleet_agent_api_writes_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            found[kind] = float(line.rsplit(" ", 1)[1])
    return found


def footprint(seconds: float) -> dict[str, float]:
    cluster = EmulatedCluster().start()
    try:
        load_crds(cluster, _support.REPO / "crds")
        kubeconfig = cluster.write_kubeconfig(pathlib.Path(tempfile.mkdtemp()) / "kubeconfig")
        port = _support.free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "NODE_NAME": "bench-node",
            "GPUFLEET_AGENT_METRICS_PORT": str(port),
            "GPUFLEET_AGENT_METRICS_HOST": "127.0.0.1",
            "GPUFLEET_AGENT_LOG_LEVEL": "WARNING",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gpufleet", "agent", "--register", "--simulate", "8"], env=env
        )
        try:
            warm_up = min(10.0, seconds / 3)
            time.sleep(warm_up)
            cpu_start, wall_start = _support.cpu_seconds(process.pid), time.monotonic()
            time.sleep(seconds - warm_up)
            cpu = _support.cpu_seconds(process.pid) - cpu_start
            wall = time.monotonic() - wall_start
            memory = _support.memory_mib(process.pid)
            writes = _writes(port)
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        cluster.stop()
    return {"cpu_percent": 100 * cpu / wall, "wall": wall, **memory, **writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of the footprint run")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours for the write counts")
    args = parser.parse_args()

    naive = 3600 / AgentSettings(node_name="bench").sample_interval_seconds
    print(
        f"GPU status writes per GPU per hour ({args.hours:g} simulated h, 8 GPUs; default settings: "
        "5 s samples, 60 s resync, gauges at most every 15 s)"
    )
    print(f"{'GPU load':<32}{'writes/GPU/h':>14}{'target':>8}{'naive':>8}")
    for label, load, target in (
        ("steady (idle)", fakenvml.Load.IDLE, "<= 60"),
        ("slow swing (--simulate)", fakenvml.Load.WAVE, ""),
        ("busy (training, noisy)", fakenvml.Load.BUSY, ""),
    ):
        print(f"{label:<32}{writes_per_gpu_hour(load, args.hours):>14.1f}{target:>8}{naive:>8.0f}")

    result = footprint(args.seconds)
    print(f"\nAgent process, 8 simulated GPUs, 5 s samples, metrics on, {result['wall']:.0f} s measured")
    print(f"{'figure':<32}{'value':>14}{'target':>8}")
    print(f"{'CPU, % of one core':<32}{result['cpu_percent']:>14.3f}{'< 1':>8}")
    print(f"{'RSS at end, MiB':<32}{result.get('VmRSS', 0):>14.1f}{'< 60':>8}")
    print(f"{'RSS peak, MiB':<32}{result.get('VmHWM', 0):>14.1f}{'< 60':>8}")
    print(f"{'GPU status writes':<32}{result.get('gpu_status', 0):>14.0f}")
    print(f"{'heartbeats':<32}{result.get('heartbeat', 0):>14.0f}")


if __name__ == "__main__":
    main()
