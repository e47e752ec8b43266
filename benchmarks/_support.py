"""What every benchmark needs: free ports, child processes, their CPU and memory, waiting for HTTP.

Benchmarks run the system under test in separate processes (as in production, and so that the
load generator's CPU is not counted), read CPU time and memory from /proc, and wait for
endpoints to answer before they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
from tests.support.ports import free_port as free_port  # re-exported for every benchmark

REPO = pathlib.Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, *, stderr: int | None = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` (environment: ours plus `env`) for the duration of the block; stopped, then killed."""
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def emulator_command(port: int, kubeconfig: pathlib.Path) -> list[str]:
    """The emulated API on `port` with the CRDs installed, writing a kubeconfig for it."""
    return [
        sys.executable,
        "-m",
        "kube_emulator",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        "--crds",
        str(REPO / "crds"),
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """`VmRSS` (now) and `VmHWM` (peak) of a process, in MiB."""
    values = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


async def wait_http(session: aiohttp.ClientSession, url: str, patience: float = 60) -> None:
    """Wait until `url` answers 200 (a server still starting refuses, or answers 503)."""
    deadline = time.monotonic() + patience
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as reply:
                if reply.status == 200:
                    return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {patience:g}s")
        await asyncio.sleep(0.1)


async def throughput(send: Callable[[int], Awaitable[None]], seconds: float, concurrency: int) -> float:
    """Calls per second of `send(index)` from `concurrency` closed-loop workers over `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        index = offset
        while time.monotonic() < deadline:
            await send(index)
            done += 1
            index += concurrency

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - started)


def create_namespaces(api_url: str, *names: str) -> None:
    """Create namespaces on an (emulated, unauthenticated) API server, as an installation would."""
    for name in names:
        body = json.dumps({"metadata": {"name": name}}).encode()
        request = urllib.request.Request(  # noqa: S310 - a loopback URL the benchmark made
            f"{api_url}/api/v1/namespaces", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with contextlib.suppress(urllib.error.HTTPError), urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
