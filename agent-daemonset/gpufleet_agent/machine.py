"""Facts about the machine the agent runs on: capacity for registration, usage for heartbeats.

Read from the kernel (`/proc`, `os`, `platform`) rather than from Kubernetes, because the Host
describes the machine, and the agent may run before or outside a cluster (`gpufleet dev`).
In a pod these are the node's figures for CPU and memory (cgroups do not hide `/proc/meminfo`
or the load average); the IP is the caller's (the chart passes the node's through `HOST_IP`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import shutil
import socket

MEMINFO = pathlib.Path("/proc/meminfo")


@dataclasses.dataclass(frozen=True)
class Capacity:
    hostname: str
    ip_address: str
    os_type: str
    os_version: str
    total_cpu: int
    total_memory: int
    total_disk: int


@dataclasses.dataclass(frozen=True)
class Usage:
    used_cpu: float
    """CPUs busy: the one-minute load average, capped at the CPU count."""
    used_memory: int
    """Bytes not available to new work (MemTotal - MemAvailable)."""


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        for line in MEMINFO.read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return values


def _default_route_address() -> str:
    """The address this machine reaches other networks from, else loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it only picks a route
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"


def _os_version() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")[:253]
    except OSError:
        return f"{platform.system()} {platform.release()}"[:253]


def capacity(ip_address: str | None = None) -> Capacity:
    """What this machine has; `ip_address` (the node's, from the downward API) wins over a guess."""
    return Capacity(
        hostname=socket.gethostname(),
        ip_address=ip_address or _default_route_address(),
        os_type="windows" if platform.system() == "Windows" else "linux",
        os_version=_os_version(),
        total_cpu=os.cpu_count() or 1,
        total_memory=_meminfo().get("MemTotal", 0),
        total_disk=shutil.disk_usage("/").total,
    )


def usage() -> Usage:
    memory = _meminfo()
    cpus = os.cpu_count() or 1
    return Usage(
        used_cpu=round(min(float(cpus), os.getloadavg()[0]), 2),
        used_memory=max(0, memory.get("MemTotal", 0) - memory.get("MemAvailable", 0)),
    )


def simulated_usage(capacity: Capacity) -> Usage:
    """What a simulated node (`--simulate`) reports: a quarter of its CPUs and two fifths of its
    memory in use. Not this machine's load: several simulated nodes share one machine, and its
    load says nothing about any of them."""
    return Usage(used_cpu=round(capacity.total_cpu / 4, 2), used_memory=capacity.total_memory * 2 // 5)
