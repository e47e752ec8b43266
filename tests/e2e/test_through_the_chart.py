"""What a user of the installed chart sees: the facade answers, agents report, hosts live and die.

These run only inside tests/e2e/run.sh (GPUFLEET_E2E=1), against the kind cluster it made and the
release it installed with charts/gpufleet/ci/kind-values.yaml: simulated GPUs, agent
registration, static facade tokens, a 20 s grace period. They drive the system the way people
do, through the facade's HTTP API and through kubectl, and wait on real time (it is a real cluster).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import yaml

from tests.support.waiting import eventually_sync

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("GPUFLEET_E2E") != "1", reason="end-to-end: run tests/e2e/run.sh (make e2e)"),
]

T = TypeVar("T")
ENV = os.environ.get


def _tokens() -> dict[str, str]:
    values = yaml.safe_load(pathlib.Path(ENV("GPUFLEET_E2E_VALUES", "")).read_text())
    return {entry["role"]: entry["token"] for entry in values["facade"]["auth"]["static"]["tokens"]}


def run_kubectl(*args: str) -> str:
    """Run kubectl against the e2e cluster; its standard output."""
    command = [shutil.which("kubectl") or "kubectl", "--kubeconfig", ENV("GPUFLEET_E2E_KUBECONFIG", ""), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def kubectl(*args: str) -> Any:
    return json.loads(run_kubectl(*args, "-o", "json"))


def facade(method: str, path: str, *, token: str | None, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the http URL run.sh port-forwards to
        ENV("GPUFLEET_E2E_FACADE_URL", "") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a URL we built
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def eventually(check: Callable[[], T], *, timeout: float, what: str) -> T:
    """This suite's polling: a real cluster moves in seconds, and kubectl failing means "not yet"."""
    return eventually_sync(
        check, within=timeout, interval=1.0, what=what, retrying=(AssertionError, subprocess.CalledProcessError)
    )


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return _tokens()


def test_the_facade_is_healthy_and_ready() -> None:
    assert facade("GET", "/healthz", token=None)[0] == 200
    assert facade("GET", "/readyz", token=None)[0] == 200


def test_every_node_runs_an_agent_that_registers_it_with_its_gpus() -> None:
    nodes = [n["metadata"]["name"] for n in kubectl("get", "nodes")["items"]]

    def registered() -> bool:
        hosts = {h["metadata"]["name"]: h for h in kubectl("get", "hosts")["items"]}
        return all(hosts.get(n, {}).get("status", {}).get("state") == "online" for n in nodes)

    eventually(registered, timeout=120, what=f"hosts for nodes {nodes} online")
    for node in nodes:
        gpus = kubectl("get", "gpus", "-l", f"gpufleet.io/host={node}")["items"]
        assert len(gpus) == 2  # agent.simulate in kind-values.yaml
    eventually(
        lambda: all(kubectl("get", "host", n)["status"].get("totalGpu") == 2 for n in nodes),
        timeout=60,
        what="GPU roll-up into every Host's status",
    )


def test_the_agents_report_under_the_charts_node_restriction() -> None:
    """The chart's policies are in force (kind 1.30+), and the real agents' pod-bound tokens pass them."""
    release = ENV("GPUFLEET_E2E_RELEASE", "gpufleet")
    policies = {p["metadata"]["name"] for p in kubectl("get", "validatingadmissionpolicies")["items"]}
    bindings = {b["spec"]["policyName"] for b in kubectl("get", "validatingadmissionpolicybindings")["items"]}
    expected = {f"{release}-agent-hosts", f"{release}-agent-gpus"}
    assert expected <= policies and expected <= bindings
    for node in [n["metadata"]["name"] for n in kubectl("get", "nodes")["items"]]:
        gpus = kubectl("get", "gpus", "-l", f"gpufleet.io/host={node}")["items"]
        assert gpus and all(g["metadata"]["labels"].get("gpufleet.io/node") == node for g in gpus)
        assert all("lastUpdateTime" in (g.get("status") or {}) for g in gpus)  # status writes admitted


def test_a_host_registered_through_the_facade_lives_by_its_heartbeats(tokens: dict[str, str]) -> None:
    body = {
        "name": "e2e-legacy",
        "ip_address": "10.250.0.7",
        "os_type": "linux",
        "os_version": "Ubuntu 22.04",
        "deployment_mode": "traditional",
        "total_cpu": 8,
        "total_memory": 32 * 2**30,
        "total_disk": 2**40,
    }
    assert facade("POST", "/api/v1/hosts", token=tokens["viewer"], body=body)[0] == 403
    status, created = facade("POST", "/api/v1/hosts", token=tokens["admin"], body=body)
    assert status == 201, created
    host_id, agent_token = created["data"]["host_id"], created["data"]["agent_token"]
    try:
        assert kubectl("get", "host", host_id)["spec"]["ipAddress"] == "10.250.0.7"
        beat = {"status": "online", "health_status": "healthy", "used_cpu": 2, "used_memory": 2**30, "used_gpu": 0}
        assert facade("POST", f"/api/v1/hosts/{host_id}/heartbeat", token=agent_token, body=beat)[0] == 200
        eventually(
            lambda: kubectl("get", "host", host_id)["status"].get("state") == "online",
            timeout=30,
            what="online after a heartbeat",
        )
        status, detail = facade("GET", f"/api/v1/hosts/{host_id}", token=tokens["viewer"])
        assert (status, detail["data"]["status"]) == (200, "online")
        # no more heartbeats: offline once the 20 s grace period has passed
        eventually(
            lambda: kubectl("get", "host", host_id)["status"].get("state") == "offline",
            timeout=60,
            what="offline after the grace period",
        )
    finally:
        assert facade("DELETE", f"/api/v1/hosts/{host_id}", token=tokens["admin"])[0] in (200, 204)
    eventually(
        lambda: not [h for h in kubectl("get", "hosts")["items"] if h["metadata"]["name"] == host_id],
        timeout=60,
        what="host gone after DELETE",
    )


def test_a_host_applied_with_kubectl_gets_its_agent_token() -> None:
    sample = pathlib.Path(__file__).resolve().parents[2] / "crds" / "samples" / "host.yaml"
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    namespace = ENV("GPUFLEET_E2E_NAMESPACE", "")
    run_kubectl("apply", "-f", str(sample))
    try:
        secret = eventually(
            lambda: kubectl("-n", namespace, "get", "secret", f"gpufleet-agent-token-{name}"),
            timeout=60,
            what="token Secret issued by the operator",
        )
        assert secret["type"] == "gpufleet.io/agent-token"
    finally:
        run_kubectl("delete", "-f", str(sample), "--wait=true")
    eventually(
        lambda: not kubectl("-n", namespace, "get", "secrets", "-l", f"gpufleet.io/host={name}")["items"],
        timeout=60,
        what="token Secret removed with its Host",
    )
