"""What the GPU agent costs on its node: CPU and memory with 8 simulated GPUs (and the writes it made).

Usage: python -m benchmarks.agent_writes [--seconds 60]

`gpufleet agent --simulate 8` as a separate process against an emulated API server in this
process, at the default intervals, for `--seconds` of wall time (metrics endpoint on). CPU is
measured after a 10 s warm-up (start-up imports excluded); RSS is the end figure and the peak
(VmHWM). The agent's API writes per hour, by kind and against the budget, and how stale GPU
readings in the API get, are `benchmarks/write_budget.py`'s (it replaced the simulated-hour
write counts this script used to print).
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
from gpufleet.api import hostlease
from kube_emulator import EmulatedCluster, load_crds


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
        _support.create_namespaces(cluster.url, hostlease.NAMESPACE)
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
    args = parser.parse_args()

    result = footprint(args.seconds)
    print(f"Agent process, 8 simulated GPUs, 5 s samples, metrics on, {result['wall']:.0f} s measured")
    print(f"{'figure':<32}{'value':>14}{'target':>8}")
    print(f"{'CPU, % of one core':<32}{result['cpu_percent']:>14.3f}{'< 1':>8}")
    print(f"{'RSS at end, MiB':<32}{result.get('VmRSS', 0):>14.1f}{'< 60':>8}")
    print(f"{'RSS peak, MiB':<32}{result.get('VmHWM', 0):>14.1f}{'< 60':>8}")
    print(f"{'GPU status writes':<32}{result.get('gpu_status', 0):>14.0f}")
    print(f"{'heartbeats (Lease renewals)':<32}{result.get('lease', 0):>14.0f}")


if __name__ == "__main__":
    main()
