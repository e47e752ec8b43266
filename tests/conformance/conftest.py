"""Conformance suite: a legacy caller against `gpufleet dev`, written from the API document.

One `gpufleet dev` process (emulated Kubernetes API + operator + REST facade) is started as a
subprocess for the whole session on free loopback ports, with fixed admin/viewer tokens and a
short heartbeat grace period, and stopped (SIGINT) at the end. Tests talk to it over HTTP only
(and, for the interoperability checks, through its kubeconfig with the `kubernetes` client or
kubectl). Nothing here imports the facade.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.ports import free_port

from ._client import Api, wait_for

ADMIN_TOKEN = "conformance-admin-token-0123456789"
VIEWER_TOKEN = "conformance-viewer-token-0123456789"
GRACE_PERIOD = 5.0  # seconds; short so "offline after the grace period" is testable quickly
READY_LINE = "Press Ctrl+C to stop."
START_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Dev:
    host: str
    port: int
    api_port: int
    kubeconfig: pathlib.Path
    grace: float
    log: pathlib.Path
    api: Api


def _command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "gpufleet"
    if script.exists():
        return [str(script), "dev"]
    found = shutil.which("gpufleet")
    return [found, "dev"] if found else [sys.executable, "-m", "gpufleet", "dev"]


def dev_command(port: int, api_port: int, kubeconfig: pathlib.Path) -> list[str]:
    return [
        *_command(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-port",
        str(api_port),
        "--admin-token",
        ADMIN_TOKEN,
        "--viewer-token",
        VIEWER_TOKEN,
        "--kubeconfig",
        str(kubeconfig),
        "--grace-period",
        f"{GRACE_PERIOD:g}",
    ]


def clean_env() -> dict[str, str]:
    """A clean environment: no kubeconfig or gpufleet settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("GPUFLEET_")}
    env["PYTHONUNBUFFERED"] = "1"
    # `gpufleet dev` has no flag for the operator's metrics port (default 9090, a fixed port):
    # give every instance a free one so that two can run side by side
    env["GPUFLEET_METRICS_PORT"] = str(free_port())
    return env


@pytest.fixture(scope="session")
def dev() -> Iterator[Dev]:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-conformance-"))
    kubeconfig = workdir / "kubeconfig"
    log = workdir / "gpufleet-dev.log"
    port, api_port = free_port(), free_port()
    while api_port == port:
        api_port = free_port()
    cmd = dev_command(port, api_port, kubeconfig)
    env = clean_env()
    log_file = log.open("wb")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, env=env, cwd=workdir)
    except OSError as exc:
        pytest.fail(f"cannot start `gpufleet dev` ({' '.join(cmd)}): {exc}", pytrace=False)
    banner: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # read the banner, then keep draining stdout so the child never blocks
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            text = line.decode("utf-8", "replace")
            if not ready.is_set():
                banner.append(text)
            if READY_LINE in text:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # test_dev_lifecycle.py reports a hanging stop; here just make sure it is gone
                proc.kill()
                proc.wait(timeout=5)
        log_file.close()

    deadline = time.monotonic() + START_TIMEOUT
    while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
        ready.wait(0.1)
    if not ready.is_set():
        rc = proc.poll()
        stop()
        tail = log.read_text(errors="replace")[-3000:]
        why = f"exited with status {rc}" if rc is not None else f"not ready after {START_TIMEOUT:g} s"
        pytest.fail(
            f"`gpufleet dev` did not start ({why}); the conformance suite needs it.\n"
            f"command: {' '.join(cmd)}\nstdout: {''.join(banner)[-1500:]}\nstderr ({log}) tail:\n{tail}",
            pytrace=False,
        )
    api = Api("127.0.0.1", port, admin=ADMIN_TOKEN, viewer=VIEWER_TOKEN)
    try:
        # the banner says ready; also wait until the facade answers reads (caches synced)
        wait_for(lambda: api.list().status == 200, 15, what="GET /api/v1/hosts to answer 200")
    except AssertionError as exc:
        stop()
        pytest.fail(f"`gpufleet dev` printed its banner but the facade is not serving: {exc}", pytrace=False)
    try:
        yield Dev("127.0.0.1", port, api_port, kubeconfig, GRACE_PERIOD, log, api)
    finally:
        stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def api(dev: Dev) -> Api:
    return dev.api


@pytest.fixture(autouse=True)
def settled_fleet(request: pytest.FixtureRequest) -> None:
    """Start every test from a fleet the REST listing agrees on.

    Cleanup through the Kubernetes API returns before the facade's watch has seen it: a host
    deleted by the previous test can still be listed for a moment and then vanish, which would
    make a "bad input changes nothing" count differ by one. Waiting until REST shows exactly the
    Hosts that Kubernetes holds (and is not deleting) takes the previous test's tail out of
    this one.
    """
    if "api" not in request.fixturenames:
        return
    api: Api = request.getfixturevalue("api")
    custom = request.getfixturevalue("custom")

    def agreed() -> bool:
        items = custom.list_cluster_custom_object(*HOSTS)["items"]
        live = sum(1 for item in items if not item["metadata"].get("deletionTimestamp"))
        return api.total() == live

    wait_for(agreed, 15, what="REST to list exactly the Hosts Kubernetes holds")


@pytest.fixture(scope="session")
def custom(dev: Dev) -> Iterator[Any]:
    """`kubernetes.client.CustomObjectsApi` on the dev server's kubeconfig."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(dev.kubeconfig))
    try:
        yield kubernetes.client.CustomObjectsApi(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def core(dev: Dev) -> Iterator[Any]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(dev.kubeconfig))
    try:
        yield kubernetes.client.CoreV1Api(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def kubectl(dev: Dev) -> Callable[..., subprocess.CompletedProcess[str]]:
    path = shutil.which("kubectl") or ("/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl") else None)
    if path is None:
        pytest.skip("kubectl is not installed")

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [path, "--kubeconfig", str(dev.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=20,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


_ips = itertools.count(1)


def unique_ip() -> str:
    n = next(_ips)
    return f"10.{100 + n // 65536}.{(n // 256) % 256}.{n % 256}"


def host_body(**overrides: Any) -> dict[str, Any]:
    """A complete registration body in the document's shape, with a fresh IP address."""
    body: dict[str, Any] = {
        "name": "GPU-Server-01",
        "ip_address": unique_ip(),
        "os_type": "linux",
        "os_version": "Ubuntu 20.04",
        "deployment_mode": "traditional",
        "total_cpu": 32,
        "total_memory": 137438953472,
        "total_disk": 2199023255552,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@dataclasses.dataclass
class Registered:
    host_id: str
    agent_token: str
    body: dict[str, Any]
    response: dict[str, Any]


@pytest.fixture
def new_host(api: Api) -> Iterator[Callable[..., Registered]]:
    """Register hosts (201 expected) and delete whatever is left of them after the test."""
    made: list[str] = []

    def make(**overrides: Any) -> Registered:
        body = host_body(**overrides)
        resp = api.register(body)
        assert resp.status == 201, resp
        payload = resp.json()
        data = payload["data"]
        made.append(data["host_id"])
        return Registered(data["host_id"], data["agent_token"], body, payload)

    yield make
    for host_id in made:
        api.delete(host_id)


HOSTS = ("gpufleet.io", "v1alpha1", "hosts")
GPUS = ("gpufleet.io", "v1alpha1", "gpus")
