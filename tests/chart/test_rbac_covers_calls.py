"""Every request each component really makes is one the chart's RBAC allows its identity.

test_rbac.py pins what the roles grant; this is the other half. Each component runs as a process
with the environment the chart gives it, against a fresh emulated API whose request hook records
every request, through a scenario that walks its code paths (leader election and Hosts' lives for
the operator, token Secrets issued, found and refilled, host Leases watched and read; every legacy
REST call, heartbeats renewing host Leases, and the IP-claim collision paths for the facade;
registration, reporting and Lease renewals for the agent). Each API starts as an install leaves it:
the release namespace, and the host-Lease namespace the chart creates (hostLeases.namespace). Each recorded request
is turned into RBAC attributes the way the API server does and checked against what the chart's
bindings grant the ServiceAccount the component's pod runs as (with the default
facade.layout=deployment the facade's is its own), so a new API call without a new rule fails here
rather than with 403 in a cluster. The test's own requests carry `?pretty=true`, which the
components never send, to tell them apart.
"""

from __future__ import annotations

import base64
import functools
import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from gpufleet import tokens
from gpufleet.api import hostlease, meta
from gpufleet.facade import claims
from kube_emulator import EmulatedCluster, RequestInfo
from tests.support.waiting import eventually_sync

from . import processes, rendering

pytestmark = pytest.mark.emulator  # the request hook is the emulator's

NAMESPACE = rendering.NAMESPACE
LEASES = hostlease.NAMESPACE  # the chart's default hostLeases.namespace, the code's default too
LEASE_GROUP = "coordination.k8s.io"
SAMPLES = rendering.REPO / "crds" / "samples"
READ_ONLY_MARKER = "pretty"
MERGE_PATCH = "application/merge-patch+json"


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


def _assert_covered(spied: Spied, container: str, manifests: list[dict[str, Any]]) -> set[rendering.Grant]:
    """The requests recorded, each allowed to the ServiceAccount the container's pod runs as."""
    account = rendering.service_account_of(manifests, container)
    granted = rendering.bound_grants(manifests, account)
    assert granted, f"nothing is bound to {account}"
    made = spied.component_requests()
    assert made, "the request hook recorded nothing"
    denied = sorted(request for request in made if not _allowed(request, granted))
    assert denied == [], f"{container} makes requests its ServiceAccount {account} may not: {denied}"
    return made


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """This suite's polling: processes take seconds to start, and a failing check fails at once."""
    return eventually_sync(check, within=timeout, interval=0.1, what=what, retrying=())


@pytest.fixture
def spied(tmp_path: pathlib.Path) -> Iterator[Spied]:
    spied = Spied(tmp_path)
    spied.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})  # helm install --create-namespace
    host_leases = rendering.find(rendering.objects(rendering.render({})), "Namespace")  # the chart's own
    assert host_leases["metadata"]["name"] == LEASES
    spied.call("POST", "/api/v1/namespaces", host_leases)
    yield spied
    spied.cluster.stop()


def _secret(name: str, token: str | None) -> dict[str, Any]:
    """A token Secret as an administrator (or a half-finished earlier attempt) left it."""
    data = {"token": base64.b64encode(token.encode()).decode()} if token is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": tokens.SECRET_TYPE,
        "metadata": {"name": tokens.secret_name(name), "namespace": NAMESPACE},
        "data": data,
    }


def test_the_operator_stays_within_its_roles_through_hosts_lives(spied: Spied, tmp_path: pathlib.Path) -> None:
    """Three Hosts made with kubectl: one gets a new token (secrets create, hosts patch), one whose
    Secret is already there keeps its token (create answers 409: secrets get), one whose Secret is
    empty gets it filled (secrets update); deleting them takes their Secrets along (secrets delete)."""
    manifests = rendering.objects(rendering.render({}))  # leader election on: no Lease yet, the operator creates it
    sample = yaml.safe_load((SAMPLES / "host.yaml").read_text())
    gpu = yaml.safe_load((SAMPLES / "gpu.yaml").read_text())
    name = sample["metadata"]["name"]
    kept, refilled = "gpu-server-kept", "gpu-server-refilled"
    hosts, secrets = "/apis/gpufleet.io/v1alpha1/hosts", f"/api/v1/namespaces/{NAMESPACE}/secrets"

    def host(host_name: str, ip: str) -> dict[str, Any]:
        return {
            **sample,
            "metadata": {**sample["metadata"], "name": host_name},
            "spec": {**sample["spec"], "ipAddress": ip},
        }

    def digest(host_name: str) -> str | None:
        found = spied.call("GET", f"{hosts}/{host_name}") or {}
        value: str | None = (found.get("metadata", {}).get("annotations") or {}).get(tokens.DIGEST_ANNOTATION)
        return value

    def gone(host_name: str) -> bool:
        return spied.call("GET", f"{hosts}/{host_name}") is None

    def held(host_name: str) -> str | None:
        return tokens.token_from_secret(spied.call("GET", f"{secrets}/{tokens.secret_name(host_name)}") or {})

    existing_token = tokens.generate()
    spied.call("POST", secrets, _secret(kept, existing_token))
    spied.call("POST", secrets, _secret(refilled, None))
    operator = processes.Container(
        rendering.container_of(manifests, "operator"),
        kubeconfig=spied.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables={"GPUFLEET_METRICS_PORT": "metrics", "GPUFLEET_LIVENESS_PORT": "healthz"},
        log=tmp_path / "operator.log",
    )
    with operator:
        operator.wait_until_answering(operator.probe_url("startupProbe"))
        spied.call("POST", hosts, sample)
        spied.call("POST", hosts, host(kept, "192.168.1.20"))
        spied.call("POST", hosts, host(refilled, "192.168.1.30"))
        for host_name in (name, kept, refilled):
            _eventually(functools.partial(digest, host_name), f"the token digest of {host_name}:\n{operator.output()}")
            token = held(host_name)
            assert token is not None and digest(host_name) == tokens.digest(token).hex(), host_name
        assert held(kept) == existing_token  # an existing Secret's token is kept, not replaced
        spied.call("POST", "/apis/gpufleet.io/v1alpha1/gpus", gpu)
        _eventually(lambda: (spied.call("GET", f"{hosts}/{name}")["status"] or {}).get("totalGpu") == 1, "GPU roll-up")
        for host_name in (name, kept, refilled):
            spied.call("DELETE", f"{hosts}/{host_name}")
        for host_name in (name, kept, refilled):
            _eventually(functools.partial(gone, host_name), f"Host {host_name} deleted:\n{operator.output()}")
            assert spied.call("GET", f"{secrets}/{tokens.secret_name(host_name)}") is None, host_name
        # the leader renews its Lease every retry period (2 s): see one renewal, however fast the above was
        lease = operator.env["GPUFLEET_LEADER_LEASE_NAME"]
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{lease}"
        seen = _eventually(lambda: spied.call("GET", leases), "the leader Lease")["spec"]["renewTime"]
        _eventually(lambda: spied.call("GET", leases)["spec"]["renewTime"] != seen, f"a renewal:\n{operator.output()}")
    made = _assert_covered(spied, "operator", manifests)
    assert ("cluster", "gpufleet.io", "hosts/status", "patch", name) in made
    assert ("cluster", "gpufleet.io", "gpus", "delete", gpu["metadata"]["name"]) in made
    # agent tokens: issued (create, then the digest patched onto the Host), found (get), refilled (update), released
    assert (NAMESPACE, "", "secrets", "create", "") in made
    assert ("cluster", "gpufleet.io", "hosts", "patch", name) in made
    assert (NAMESPACE, "", "secrets", "get", tokens.secret_name(kept)) in made
    assert (NAMESPACE, "", "secrets", "update", tokens.secret_name(refilled)) in made
    assert {(NAMESPACE, "", "secrets", "delete", tokens.secret_name(h)) for h in (name, kept, refilled)} <= made
    assert {request[3] for request in made if request[2] == "secrets"} == {"create", "get", "update", "delete"}
    # leader election: read on every try (get), create when absent, renew and release on SIGTERM (update)
    assert (NAMESPACE, "coordination.k8s.io", "leases", "create", "") in made
    assert {(NAMESPACE, "coordination.k8s.io", "leases", verb, lease) for verb in ("get", "update")} <= made
    assert not [request for request in made if request[1] == "kopf.dev"]
    # host Leases: the informer lists and watches them; the operator never writes one
    assert {(LEASES, LEASE_GROUP, "leases", verb, "") for verb in ("list", "watch")} <= made
    assert not [r for r in made if r[0] == LEASES and r[3] not in ("get", "list", "watch")]


def test_the_operator_reads_host_leases_within_its_roles(spied: Spied, tmp_path: pathlib.Path) -> None:
    """A host kept online by its node's Lease renewals, then silent: before the verdict, with its watch
    quiet, the operator reads the Host and its Lease (fleet.Fleet._read_lease: leases get)."""
    # a 2 s grace for a quick verdict (the chart wants at least 4 heartbeat intervals)
    manifests = rendering.objects(
        rendering.render({"operator": {"gracePeriodSeconds": 2}, "agent": {"heartbeatIntervalSeconds": 0.5}})
    )
    sample = yaml.safe_load((SAMPLES / "host.yaml").read_text())
    name = sample["metadata"]["name"]
    hosts, leases = "/apis/gpufleet.io/v1alpha1/hosts", hostlease.path(LEASES)
    created = spied.call("POST", hosts, sample)
    holder = hostlease.bound_node(created)

    def state() -> str | None:
        value: str | None = ((spied.call("GET", f"{hosts}/{name}") or {}).get("status") or {}).get("state")
        return value

    def lease_read() -> bool:
        return (LEASES, LEASE_GROUP, "leases", "get", name) in spied.component_requests()

    operator = processes.Container(
        rendering.container_of(manifests, "operator"),
        kubeconfig=spied.kubeconfig,
        downward_api={"metadata.namespace": NAMESPACE},
        port_variables={"GPUFLEET_METRICS_PORT": "metrics", "GPUFLEET_LIVENESS_PORT": "healthz"},
        log=tmp_path / "operator.log",
    )
    with operator:
        operator.wait_until_answering(operator.probe_url("startupProbe"))
        uid = created["metadata"]["uid"]
        spied.call(
            "POST",
            leases,
            hostlease.manifest(host_name=name, host_uid=uid, namespace=LEASES, holder=holder, duration_seconds=2),
        )
        # a watch event or bookmark can confirm a silence before the read is due: go silent again until one is read
        for _ in range(5):
            spied.call("PATCH", f"{leases}/{name}", hostlease.renewal(holder=holder, duration_seconds=2), MERGE_PATCH)
            _eventually(lambda: state() == "online", f"online on its Lease renewal:\n{operator.output()}")
            _eventually(lambda: state() == "offline", f"offline once the renewals stop:\n{operator.output()}")
            if lease_read():
                break
        assert lease_read(), f"no read of the Lease before an offline verdict:\n{operator.output()}"
    made = _assert_covered(spied, "operator", manifests)
    assert {(LEASES, LEASE_GROUP, "leases", verb, "") for verb in ("list", "watch")} <= made


def test_the_facade_stays_within_its_roles_through_every_legacy_call(spied: Spied, tmp_path: pathlib.Path) -> None:
    """Register, heartbeat, update, read, delete; and the duplicate-IP paths: one the facade's cache
    knows, one that collides with another registration's IP claim in flight (configmaps get), and a
    stale claim taken over (configmaps delete, then create). Not one request on a Secret."""
    manifests = rendering.objects(rendering.render({}))  # kubernetes auth mode: TokenReview + SubjectAccessReview
    assert rendering.service_account_of(manifests, "facade") != rendering.service_account_of(manifests, "operator")
    spied.cluster.emulator.add_user("alice-token-0123456789", "alice")
    spied.cluster.emulator.allow("alice")
    facade = processes.Container(
        rendering.container_of(manifests, "facade"),
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
            return error.code, json.loads(error.read() or b"null")

    def registration(name: str, ip: str) -> dict[str, Any]:
        return {"name": name, "ip_address": ip, "os_type": "linux", "total_cpu": 4, "total_memory": 2**34}

    configmaps = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    # another replica's registration of 10.9.8.8, in flight: claimed, its Host not created yet
    in_flight = claims.manifest("10.9.8.8", "host-inflight0", NAMESPACE)
    spied.call("POST", configmaps, in_flight)
    # a claim on 10.9.8.9 left behind by a Host that has another IP now: stale, to be taken over
    sample = yaml.safe_load((SAMPLES / "host.yaml").read_text())
    moved = spied.call(
        "POST",
        "/apis/gpufleet.io/v1alpha1/hosts",
        {**sample, "metadata": {"name": "moved-host"}, "spec": {**sample["spec"], "ipAddress": "10.0.0.99"}},
    )
    stale = claims.manifest("10.9.8.9", "moved-host", NAMESPACE)
    owner = {"apiVersion": meta.API_VERSION, "kind": "Host", "name": "moved-host", "uid": moved["metadata"]["uid"]}
    stale["metadata"]["ownerReferences"] = [owner]
    spied.call("POST", configmaps, stale)

    admin = "alice-token-0123456789"
    with facade:
        facade.wait_until_answering(facade.probe_url("readinessProbe"))
        status, created = rest("POST", "/api/v1/hosts", admin, registration("rbac-check", "10.9.8.7"))
        assert status == 201, (created, facade.output())
        host_id, agent_token = created["data"]["host_id"], created["data"]["agent_token"]
        beat = {"status": "online", "health_status": "healthy", "used_cpu": 1, "used_memory": 2**30, "used_gpu": 0}
        assert rest("POST", f"/api/v1/hosts/{host_id}/heartbeat", agent_token, beat)[0] == 200
        renewed = spied.call("GET", hostlease.path(LEASES, host_id))  # (deleted with its Host below)
        assert renewed is not None and hostlease.holder(renewed) == hostlease.FACADE_HOLDER
        assert rest("PUT", f"/api/v1/hosts/{host_id}", admin, {"name": "renamed"})[0] == 200
        assert rest("GET", "/api/v1/hosts", admin)[0] == 200
        assert rest("GET", f"/api/v1/hosts/{host_id}", admin)[0] == 200
        assert rest("GET", f"/api/v1/hosts/{host_id}/gpus", admin)[0] == 200
        # duplicates: of a host in the cache (confirmed with a read of the Host), and of a claim in flight
        status, refused = rest("POST", "/api/v1/hosts", admin, registration("again", "10.9.8.7"))
        assert (status, refused["code"]) == (409, 40901), refused
        status, refused = rest("POST", "/api/v1/hosts", admin, registration("racing", "10.9.8.8"))
        assert (status, refused["code"]) == (409, 40901), refused
        # the stale claim is deleted (on its uid and resourceVersion) and claimed anew
        status, taken = rest("POST", "/api/v1/hosts", admin, registration("takes-over", "10.9.8.9"))
        assert status == 201, (taken, facade.output())
        for deleted in (host_id, taken["data"]["host_id"]):
            assert rest("DELETE", f"/api/v1/hosts/{deleted}", admin)[0] in (200, 204)
    made = _assert_covered(spied, "facade", manifests)
    assert ("cluster", "authentication.k8s.io", "tokenreviews", "create", "") in made
    assert ("cluster", "authorization.k8s.io", "subjectaccessreviews", "create", "") in made
    assert ("cluster", "gpufleet.io", "hosts/status", "patch", host_id) in made
    assert ("cluster", "gpufleet.io", "hosts", "get", "moved-host") in made  # the stale claim's Host, judged
    claimed = {(verb, name) for scope, _, resource, verb, name in made if resource == "configmaps"}
    assert {("create", ""), ("get", in_flight["metadata"]["name"]), ("get", stale["metadata"]["name"])} <= claimed
    assert ("delete", stale["metadata"]["name"]) in claimed
    assert ("patch", claims.name("10.9.8.7")) in claimed
    assert not [request for request in made if request[2] == "secrets"], "the facade touched a Secret"
    # the heartbeat renewed the host's Lease: patch (404 on the first), then create; the informer lists and watches
    assert {(LEASES, LEASE_GROUP, "leases", "patch", host_id), (LEASES, LEASE_GROUP, "leases", "create", "")} <= made
    assert {(LEASES, LEASE_GROUP, "leases", verb, "") for verb in ("list", "watch")} <= made


def test_the_agent_stays_within_its_roles_while_registering_and_reporting(spied: Spied, tmp_path: pathlib.Path) -> None:
    values = {"agent": {"register": True, "simulate": 2, "podResources": {"enabled": False}}}
    manifests = rendering.objects(rendering.render(values))
    agent = processes.Container(
        rendering.container_of(manifests, "agent"),
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
    # heartbeats renew the node's Lease: patch (404 on the first), the Host read, create; nothing else on Leases
    assert {
        (LEASES, LEASE_GROUP, "leases", "patch", "gpu-node-1"),
        (LEASES, LEASE_GROUP, "leases", "create", ""),
    } <= made
    assert {r[3] for r in made if r[2] == "leases"} == {"patch", "create"}
    assert hostlease.holder(spied.call("GET", hostlease.path(LEASES, "gpu-node-1"))) == "gpu-node-1"
