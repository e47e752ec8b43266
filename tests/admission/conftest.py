"""Fixtures of the node-restriction suite: the chart's policies installed, agents' tokens, the real agent.

The chart is rendered for a release of its own (`gpufleet-nr`, namespace `gpufleet-nr`), so its
policies match only this suite's agent ServiceAccount and leave every other test alone. What is
applied to the cluster under test: those ValidatingAdmissionPolicies and bindings, and (for a
real cluster, where RBAC is enforced) the agent's, operator's and facade's ClusterRoles and their
Roles on the hosts' heartbeat Leases, with their bindings, the namespace and the three
ServiceAccounts. The host-Lease namespace itself (the chart's default `hostLeases.namespace`) is
the session's: `crds_installed` creates it, as an installation does.

Tokens are what a pod gets. On the emulator they are minted with the node-name claim
(`Emulator.mint_token`); on a real cluster (1.30+) they come from the TokenRequest API, bound to
a pause pod pinned to a node, so the API server itself adds the claim. Node A is the node with
a token (on a real cluster, its first node); node B is any other name: the tests never need a
token of B, only objects of B, which the administrator creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import yaml

from gpufleet.api import hostlease, meta
from gpufleet_agent import agent, kubeapi, nvml
from gpufleet_agent.settings import AgentSettings
from tests.chart import rendering
from tests.support.waiting import eventually as eventually  # re-exported: the admission tests import it from here

RELEASE = "gpufleet-nr"
NAMESPACE = "gpufleet-nr"
AGENT_SA = f"{RELEASE}-agent"
OPERATOR_SA = f"{RELEASE}-controlplane"
FACADE_SA = f"{RELEASE}-facade"
#: The namespace of the hosts' heartbeat Leases: the chart's default hostLeases.namespace, the code's default too.
LEASES = hostlease.NAMESPACE
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
_PATHS = {
    "ValidatingAdmissionPolicy": f"{ADMISSION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{ADMISSION}/validatingadmissionpolicybindings",
    "ClusterRole": f"{RBAC}/clusterroles",
    "ClusterRoleBinding": f"{RBAC}/clusterrolebindings",
    "Role": f"{RBAC}/namespaces/{LEASES}/roles",
    "RoleBinding": f"{RBAC}/namespaces/{LEASES}/rolebindings",
}
FAST = {
    "sample_interval_seconds": 0.05,
    "heartbeat_interval_seconds": 0.1,
    "discovery_interval_seconds": 0.2,
    "resync_interval_seconds": 60,
    "min_write_interval_seconds": 0,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.2,
    "metrics_port": 0,
}


def chart_objects() -> list[dict[str, Any]]:
    """The policies, bindings and the agent's, operator's and facade's RBAC (cluster-wide, and on the
    host Leases) the chart renders for this suite."""
    rendered = rendering.render({"agent": {"register": True}}, release=RELEASE, namespace=NAMESPACE)
    wanted = []
    for obj in rendering.objects(rendered):
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        ours = component in ("agent", "operator", "facade")
        rbac = obj["kind"] in ("ClusterRole", "ClusterRoleBinding") or (
            obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["namespace"] == LEASES
        )
        if obj["kind"].startswith("ValidatingAdmissionPolicy") or (ours and rbac):
            wanted.append(obj)
    assert any(obj["kind"] == "Role" for obj in wanted), f"no Role of the chart in {LEASES}"
    return wanted


class Rest:
    """Raw, synchronous calls as the administrator through the `kubernetes` client: (status, body)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, method: str, path: str, body: Any = None, **query: str) -> tuple[int, Any]:
        method_, url, headers, body_, post = self.client.param_serialize(
            method,
            path,
            query_params=list(query.items()),
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method_, url, headers, body_, post)
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        status, answer = self(method, path, body, **query)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def apply(self, path: str, obj: dict[str, Any]) -> None:
        """Create, or replace what is there."""
        status, answer = self("POST", path, obj)
        if status == 409:
            current = self.ok("GET", f"{path}/{obj['metadata']['name']}")
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.ok("PUT", f"{path}/{obj['metadata']['name']}", obj)
        else:
            assert status == 201, (path, status, answer)


class Identities:
    """Bearer tokens of this suite's ServiceAccounts, as their pods would hold them."""

    def __init__(self, kube: Any, rest: Rest, tmp: pathlib.Path) -> None:
        self._kube = kube
        self._rest = rest
        self._tmp = tmp
        self._pods: set[str] = set()

    def node_token(self, node: str) -> str:
        """The agent's token as kubelet mounts it into its pod on `node` (with the node-name claim)."""
        if self._kube.emulator is not None:
            token: str = self._kube.emulator.mint_token(NAMESPACE, AGENT_SA, node=node)
            return token
        pod = f"{AGENT_SA}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"
        if pod not in self._pods:
            self._rest.apply(f"/api/v1/namespaces/{NAMESPACE}/pods", _pause_pod(pod, node))
            self._pods.add(pod)
        uid = self._rest.ok("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")["metadata"]["uid"]
        return self._request_token(AGENT_SA, {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid})

    def unbound_token(self) -> str:
        """A token of the agent's ServiceAccount bound to no pod, as `kubectl create token` makes."""
        if self._kube.emulator is not None:
            token: str = self._kube.emulator.mint_token(NAMESPACE, AGENT_SA)
            return token
        return self._request_token(AGENT_SA, None)

    def facade_token(self) -> str:
        """The facade's token (its own ServiceAccount in the default facade.layout); no policy restricts it."""
        if self._kube.emulator is not None:
            token: str = self._kube.emulator.mint_token(NAMESPACE, FACADE_SA, node="control-plane-node")
            return token
        return self._request_token(FACADE_SA, None)

    def operator_token(self) -> str:
        """The operator's token (in its pod: bound to a pod, with the claim; the policies ignore it)."""
        if self._kube.emulator is not None:
            token: str = self._kube.emulator.mint_token(NAMESPACE, OPERATOR_SA, node="control-plane-node")
            return token
        return self._request_token(OPERATOR_SA, None)

    def _request_token(self, service_account: str, bound: dict[str, str] | None) -> str:
        spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 3600}
        if bound is not None:
            spec["boundObjectRef"] = bound
        answer = self._rest.ok(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        token: str = answer["status"]["token"]
        return token

    def kubeconfig(self, token: str) -> pathlib.Path:
        """The cluster under test's kubeconfig, authenticating with `token` instead."""
        config = yaml.safe_load(pathlib.Path(self._kube.kubeconfig).read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
        config["users"] = [{"name": context["user"], "user": {"token": token}}]
        path = self._tmp / f"kubeconfig-{uuid.uuid4().hex[:8]}"
        path.write_text(yaml.safe_dump(config))
        return path


def _pause_pod(name: str, node: str) -> dict[str, Any]:
    """A pod pinned to `node` that only has to exist: the token it is bound to names its node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeName": node,
            "serviceAccountName": AGENT_SA,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9", "imagePullPolicy": "IfNotPresent"}],
        },
    }


def _wait_until_enforced(rest: Rest) -> None:
    """A real API server loads new policies asynchronously: probe with a dry run until one refuses."""
    probe = {
        "apiVersion": meta.API_VERSION,
        "kind": "Host",
        "metadata": {"name": "gpufleet-nr-probe"},
        "spec": {"displayName": "probe", "ipAddress": "192.0.2.1", "osType": "linux", "totalCpu": 1, "totalMemory": 1},
    }
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # As the agent's ServiceAccount, by impersonation: the administrator may impersonate.
        method_, url, headers, body_, post = rest.client.param_serialize(
            "POST",
            f"/apis/{meta.API_VERSION}/hosts",
            query_params=[("dryRun", "All")],
            header_params={
                "Content-Type": "application/json",
                "Impersonate-User": f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}",
            },
            body=probe,
            auth_settings=["BearerToken"],
        )
        response = rest.client.call_api(method_, url, headers, body_, post)
        if response.status == 403 and b"ValidatingAdmissionPolicy" in response.read():
            return
        time.sleep(0.5)
    raise TimeoutError("the node-restriction policies were not enforced within 60 s")


@pytest.fixture(scope="session")
def rest(api_client: Any) -> Rest:
    return Rest(api_client)


@pytest.fixture(scope="session")
def policies(kube: Any, rest: Rest, crds_installed: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The chart's node-restriction policies (and the RBAC they sit on) applied to the cluster."""
    status, _ = rest("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    assert status in (201, 409)
    for name in (AGENT_SA, OPERATOR_SA, FACADE_SA):
        status, _ = rest("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"metadata": {"name": name}})
        assert status in (201, 409)
    objects = chart_objects()
    for obj in objects:
        rest.apply(_PATHS[obj["kind"]], obj)
    if kube.emulator is None:
        _wait_until_enforced(rest)
    yield objects
    for obj in reversed(objects):
        rest("DELETE", f"{_PATHS[obj['kind']]}/{obj['metadata']['name']}")
    rest("DELETE", f"/api/v1/namespaces/{NAMESPACE}")


@pytest.fixture(scope="session")
def identities(kube: Any, rest: Rest, policies: Any, tmp_path_factory: pytest.TempPathFactory) -> Identities:
    return Identities(kube, rest, tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="session")
def node_a(kube: Any, rest: Rest) -> str:
    """The node whose agent the tests run: a real node on a real cluster (tokens name existing nodes)."""
    if kube.emulator is not None:
        return f"node-a-{uuid.uuid4().hex[:6]}"
    nodes = rest.ok("GET", "/api/v1/nodes")["items"]
    return str(sorted(n["metadata"]["name"] for n in nodes)[0])


@pytest.fixture
def node_b() -> str:
    return f"node-b-{uuid.uuid4().hex[:6]}"


class Fleet:
    """Hosts, GPUs and host Leases written as the administrator, and everything removed after the test."""

    def __init__(self, admin: kubeapi.KubeApi) -> None:
        self.admin = admin
        self.hosts: set[str] = set()
        self.gpus: set[str] = set()
        self.leases: set[str] = set()

    async def host(self, name: str, node_name: str | None = None, status: dict[str, Any] | None = None) -> Any:
        spec: dict[str, Any] = {
            "displayName": name,
            "ipAddress": "192.0.2.7",
            "osType": "linux",
            "deploymentMode": "kubernetes",
            "totalCpu": 8,
            "totalMemory": 1 << 34,
        }
        if node_name is not None:
            spec["nodeName"] = node_name
        body = {"apiVersion": meta.API_VERSION, "kind": "Host", "metadata": {"name": name}, "spec": spec}
        self.hosts.add(name)
        created = await self.admin.create(kubeapi.HOSTS, body)
        if status is not None:
            created = await self.admin.merge_patch(f"{kubeapi.HOSTS}/{name}/status", {"status": status})
        return created

    async def gpu(self, host_name: str, index: int, labels: dict[str, str]) -> Any:
        name = f"{host_name}-gpu{index}"
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": "GPU",
            "metadata": {"name": name, "labels": {meta.HOST_LABEL: host_name, **labels}},
            "spec": {"hostName": host_name, "index": index, "uuid": f"GPU-{uuid.uuid4()}"},
        }
        self.gpus.add(name)
        return await self.admin.create(kubeapi.GPUS, body)

    async def lease(self, host_object: dict[str, Any], holder: str) -> Any:
        """The host's heartbeat Lease, owned by it and renewed now by `holder`, as its renewer would create it."""
        name = host_object["metadata"]["name"]
        body = hostlease.manifest(
            host_name=name,
            host_uid=host_object["metadata"]["uid"],
            namespace=LEASES,
            holder=holder,
            duration_seconds=40,
        )
        self.leases.add(name)
        return await self.admin.create(hostlease.path(LEASES), body)

    def track(self, kind: str, name: str) -> None:
        {"host": self.hosts, "gpu": self.gpus, "lease": self.leases}[kind].add(name)

    async def cleanup(self) -> None:
        for name in list(self.hosts):
            for gpu in await self.admin.list(kubeapi.GPUS, label_selector=f"{meta.HOST_LABEL}={name}"):
                self.gpus.add(gpu["metadata"]["name"])
        # a Host's Lease goes with it (garbage collection, asynchronous on a cluster): delete it now
        self.leases |= self.hosts
        for path, names in (
            (hostlease.path(LEASES), self.leases),
            (kubeapi.GPUS, self.gpus),
            (kubeapi.HOSTS, self.hosts),
        ):
            for name in names:
                with contextlib.suppress(kubeapi.ApiError):
                    await self.admin.delete(f"{path}/{name}")


@pytest.fixture
async def fleet(kube: Any, policies: Any) -> AsyncIterator[Fleet]:
    admin = kubeapi.connect(str(kube.kubeconfig))
    found = Fleet(admin)
    try:
        yield found
    finally:
        await found.cleanup()
        await admin.close()


@pytest.fixture
async def connect(identities: Identities) -> AsyncIterator[Callable[[str], kubeapi.KubeApi]]:
    """The agent's own API client (gpufleet_agent.kubeapi) authenticating with a given token."""
    opened: list[kubeapi.KubeApi] = []

    def connect(token: str) -> kubeapi.KubeApi:
        client = kubeapi.connect(str(identities.kubeconfig(token)))
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.close()


RunAgent = Callable[..., contextlib.AbstractAsyncContextManager[agent.Agent]]


@pytest.fixture
def run_agent(identities: Identities) -> RunAgent:
    """Run the real agent (fake NVML) for `node_name` with `token` until the block ends."""

    @contextlib.asynccontextmanager
    async def start(
        library: nvml.Library, *, token: str, node_name: str, **settings: Any
    ) -> AsyncIterator[agent.Agent]:
        values = {"node_name": node_name, "register_node": True, **FAST, **settings}
        node_agent = agent.Agent(AgentSettings(**values), library, kubeconfig=str(identities.kubeconfig(token)))
        stop = asyncio.Event()
        task = asyncio.create_task(node_agent.run(stop))
        try:
            yield node_agent
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5)

    return start
