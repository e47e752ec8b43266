"""Every request each component really makes is one the chart's RBAC allows it.

test_rbac.py pins what the roles grant; this is the other half. Each component runs as a process
with the environment the chart gives it, against a fresh emulated API whose request hook records
every request, through a scenario that walks its code paths (leader election and a Host's life for
the operator, every legacy REST call for the facade, registration and reporting for the agent). Each recorded request
is turned into RBAC attributes the way the API server does and checked against the component's
rendered roles, so a new API call without a new rule fails here rather than with 403 in a cluster.
The test's own requests carry `?pretty=true`, which the components never send, to tell them apart.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from kube_emulator import EmulatedCluster, RequestInfo

from . import processes, rendering

pytestmark = pytest.mark.emulator  # the request hook is the emulator's

NAMESPACE = rendering.NAMESPACE
SAMPLES = rendering.REPO / "crds" / "samples"
READ_ONLY_MARKER = "pretty"


class Spied:
    """A fresh emulated API with the chart's CRDs, recording every request it serves."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.cluster = EmulatedCluster(port=processes.free_port()).start()
        self.kubeconfig = self.cluster.write_kubeconfig(tmp_path / "kubeconfig")
        for text in rendering.chart_crds().values():
            self.cluster.apply_crd(yaml.safe_load(text))
        self.requests: list[RequestInfo] = []
        self.cluster.emulator.faults.fail_when(self._record)

    def _record(self, info: RequestInfo) -> bool:
        """A fault predicate that never matches: it only sees every request go by."""
        self.requests.append(info)
        return False

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """A request of the test itself (marked), answering the decoded body or None on 404."""
        request = urllib.request.Request(  # noqa: S310 - http on loopback
            f"{self.cluster.url}{path}?{READ_ONLY_MARKER}=true",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": content_type, "Authorization": "Bearer emulator-token"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def component_requests(self) -> set[rendering.Grant]:
        return {attrs for info in self.requests if (attrs := _attributes(info)) is not None}


def _attributes(info: RequestInfo) -> rendering.Grant | None:
    """RBAC attributes of a resource request, as the API server derives them; None for the rest."""
    if READ_ONLY_MARKER in info.query:
        return None
    parts = info.path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # discovery and other non-resource URLs: every authenticated user may read them
    scope = "cluster"
    if rest[0] == "namespaces" and len(rest) >= 3:
        scope, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else "")
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    watching = info.query.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watching else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[info.method]
    return (scope, group, resource, verb, name)


def _allowed(request: rendering.Grant, granted: set[rendering.Grant]) -> bool:
    scope, group, resource, verb, name = request
    return any(
        (granted_scope, granted_name) in ((scope, ""), (scope, name), ("cluster", ""), ("cluster", name))
        for granted_scope, g, r, v, granted_name in granted
        if (g, r, v) == (group, resource, verb)
    )


def _assert_covered(spied: Spied, component: str, manifests: list[dict[str, Any]]) -> set[rendering.Grant]:
    granted = rendering.component_grants(manifests, component)
    made = spied.component_requests()
    assert made, "the request hook recorded nothing"
    denied = sorted(request for request in made if not _allowed(request, granted))
    assert denied == [], f"{component} makes requests its chart roles do not allow"
    return made


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what}")


@pytest.fixture
def spied(tmp_path: pathlib.Path) -> Iterator[Spied]:
    spied = Spied(tmp_path)
    spied.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    yield spied
    spied.cluster.stop()


def _workload_container(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    workload = rendering.find(manifests, kind)
    spec: dict[str, Any] = next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)
    return spec


def test_the_operator_stays_within_its_roles_through_a_hosts_life(spied: Spied, tmp_path: pathlib.Path) -> None:
    manifests = rendering.objects(rendering.render({}))  # leader election on: no Lease yet, the operator creates it
    host = yaml.safe_load((SAMPLES / "host.yaml").read_text())
    gpu = yaml.safe_load((SAMPLES / "gpu.yaml").read_text())
    name = host["metadata"]["name"]
    hosts, secret = (
        "/apis/gpufleet.io/v1alpha1/hosts",
        f"/api/v1/namespaces/{NAMESPACE}/secrets/gpufleet-agent-token-{name}",
    )
    operator = processes.Container(
        _workload_container(manifests, "Deployment", "operator"),
        kubeconfig=spied.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables={"GPUFLEET_METRICS_PORT": "metrics", "GPUFLEET_LIVENESS_PORT": "healthz"},
        log=tmp_path / "operator.log",
    )
    with operator:
        operator.wait_until_answering(operator.probe_url("startupProbe"))
        spied.call("POST", hosts, host)
        first = _eventually(lambda: spied.call("GET", secret), "the agent token Secret")
        spied.call("POST", "/apis/gpufleet.io/v1alpha1/gpus", gpu)
        _eventually(lambda: (spied.call("GET", f"{hosts}/{name}")["status"] or {}).get("totalGpu") == 1, "GPU roll-up")
        spied.call("DELETE", secret)
        _eventually(
            lambda: (spied.call("GET", secret) or first)["metadata"]["uid"] != first["metadata"]["uid"],
            "token rotation",
        )
        spied.call("DELETE", f"{hosts}/{name}")
        _eventually(lambda: spied.call("GET", f"{hosts}/{name}") is None, f"Host deleted:\n{operator.output()}")
        # the leader renews its Lease every retry period (2 s): see one renewal, however fast the above was
        lease = operator.env["GPUFLEET_LEADER_LEASE_NAME"]
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{lease}"
        seen = _eventually(lambda: spied.call("GET", leases), "the leader Lease")["spec"]["renewTime"]
        _eventually(lambda: spied.call("GET", leases)["spec"]["renewTime"] != seen, f"a renewal:\n{operator.output()}")
    made = _assert_covered(spied, "operator", manifests)
    assert ("cluster", "gpufleet.io", "hosts/status", "patch", name) in made
    assert ("cluster", "gpufleet.io", "gpus", "delete", gpu["metadata"]["name"]) in made
    # leader election: read on every try (get), create when absent, renew and release on SIGTERM (update)
    assert (NAMESPACE, "coordination.k8s.io", "leases", "create", "") in made
    assert {(NAMESPACE, "coordination.k8s.io", "leases", verb, lease) for verb in ("get", "update")} <= made
    assert not [request for request in made if request[1] == "kopf.dev"]


def test_the_facade_stays_within_its_roles_through_every_legacy_call(spied: Spied, tmp_path: pathlib.Path) -> None:
    manifests = rendering.objects(rendering.render({}))  # kubernetes auth mode: TokenReview + SubjectAccessReview
    spied.cluster.emulator.add_user("alice-token-0123456789", "alice")
    spied.cluster.emulator.allow("alice")
    facade = processes.Container(
        _workload_container(manifests, "Deployment", "facade"),
        kubeconfig=spied.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables={"GPUFLEET_FACADE_PORT": "facade"},
        log=tmp_path / "facade.log",
    )

    def rest(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - http on loopback
            facade.url("facade", path),
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    admin = "alice-token-0123456789"
    with facade:
        facade.wait_until_answering(facade.probe_url("readinessProbe"))
        body = {
            "name": "rbac-check",
            "ip_address": "10.9.8.7",
            "os_type": "linux",
            "total_cpu": 4,
            "total_memory": 2**34,
        }
        status, created = rest("POST", "/api/v1/hosts", admin, body)
        assert status == 201, (created, facade.output())
        host_id, agent_token = created["data"]["host_id"], created["data"]["agent_token"]
        beat = {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 2**30, "used_gpu": 0}
        assert rest("POST", f"/api/v1/hosts/{host_id}/heartbeat", agent_token, beat)[0] == 200
        assert rest("PUT", f"/api/v1/hosts/{host_id}", admin, {"name": "renamed"})[0] == 200
        assert rest("GET", "/api/v1/hosts", admin)[0] == 200
        assert rest("GET", f"/api/v1/hosts/{host_id}", admin)[0] == 200
        assert rest("GET", f"/api/v1/hosts/{host_id}/gpus", admin)[0] == 200
        assert rest("DELETE", f"/api/v1/hosts/{host_id}", admin)[0] in (200, 204)
    made = _assert_covered(spied, "facade", manifests)
    assert ("cluster", "authorization.k8s.io", "subjectaccessreviews", "create", "") in made


def test_the_agent_stays_within_its_roles_while_registering_and_reporting(spied: Spied, tmp_path: pathlib.Path) -> None:
    values = {"agent": {"register": True, "simulate": 2, "podResources": {"enabled": False}}}
    manifests = rendering.objects(rendering.render(values))
    agent = processes.Container(
        _workload_container(manifests, "DaemonSet", "agent"),
        kubeconfig=spied.kubeconfig,
        downward_api={"spec.nodeName": "gpu-node-1", "status.hostIP": "192.0.2.10"},
        port_variables={"GPUFLEET_AGENT_METRICS_PORT": "metrics"},
        log=tmp_path / "agent.log",
    )
    gpus = "/apis/gpufleet.io/v1alpha1/gpus"
    with agent:
        host = "/apis/gpufleet.io/v1alpha1/hosts/gpu-node-1"
        _eventually(lambda: (spied.call("GET", host) or {}).get("status", {}).get("lastHeartbeat"), agent.output())
        _eventually(
            lambda: all((spied.call("GET", f"{gpus}/gpu-node-1-gpu{index}") or {}).get("status") for index in (0, 1)),
            f"GPU status written:\n{agent.output()}",
        )
        assert spied.call("GET", host)["spec"]["ipAddress"] == "192.0.2.10"  # the node's, from the downward API
    made = _assert_covered(spied, "agent", manifests)
    assert ("cluster", "gpufleet.io", "hosts", "create", "") in made
    assert ("cluster", "gpufleet.io", "gpus/status", "patch", "gpu-node-1-gpu0") in made
