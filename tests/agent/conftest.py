"""Fixtures of the agent tests: an agent on a fake NVML against the cluster under test, and a reader."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import pathlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client

from gpufleet.api import hostlease, meta
from gpufleet_agent import agent, nvml, podresources
from gpufleet_agent.settings import AgentSettings
from tests.support.waiting import eventually as eventually  # re-exported: the agent tests import it from here

from .kubelet import Kubelet

#: Fast enough that a test sees several rounds in a fraction of a second.
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


class Reader:
    """Reads Hosts and GPUs through the Kubernetes API, as `kubectl get` would."""

    def __init__(self, api_client: Any) -> None:
        self.api: Any = client.CustomObjectsApi(api_client)

    async def host(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.api.get_cluster_custom_object(meta.GROUP, meta.VERSION, "hosts", name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    async def lease(self, host_name: str) -> dict[str, Any] | None:
        """The host's heartbeat Lease, as `kubectl get lease -o json` shows it."""
        try:
            found = await client.CoordinationV1Api(self.api.api_client).read_namespaced_lease(
                host_name, hostlease.NAMESPACE
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        as_json: dict[str, Any] = self.api.api_client.sanitize_for_serialization(found)
        return as_json

    async def renewed(self, host_name: str) -> str | None:
        """When the host's Lease was last renewed (`spec.renewTime`), if it has one."""
        lease = await self.lease(host_name)
        renew_time: str | None = ((lease or {}).get("spec") or {}).get("renewTime")
        return renew_time

    async def gpus(self, host_name: str) -> dict[str, dict[str, Any]]:
        listing = await self.api.list_cluster_custom_object(
            meta.GROUP, meta.VERSION, "gpus", label_selector=f"{meta.HOST_LABEL}={host_name}"
        )
        return {item["metadata"]["name"]: item for item in listing["items"]}

    async def create_host(self, name: str, node_name: str) -> dict[str, Any]:
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": "Host",
            "metadata": {"name": name},
            "spec": {
                "displayName": name,
                "ipAddress": "10.0.0.7",
                "osType": "linux",
                "deploymentMode": "kubernetes",
                "nodeName": node_name,
                "totalCpu": 8,
                "totalMemory": 1 << 34,
            },
        }
        created: dict[str, Any] = await self.api.create_cluster_custom_object(meta.GROUP, meta.VERSION, "hosts", body)
        return created

    async def delete_host(self, name: str) -> None:
        with contextlib.suppress(client.ApiException):
            await self.api.delete_cluster_custom_object(meta.GROUP, meta.VERSION, "hosts", name)
        for gpu_name in await self.gpus(name):
            with contextlib.suppress(client.ApiException):
                await self.api.delete_cluster_custom_object(meta.GROUP, meta.VERSION, "gpus", gpu_name)


@pytest.fixture
async def reader(crds_installed: list[str], async_api_client: Any) -> Reader:
    return Reader(async_api_client)


@pytest.fixture
def node_name() -> str:
    return f"node-{uuid.uuid4().hex[:8]}"


def parse(timestamp: str) -> datetime.datetime:
    """An RFC 3339 time from the API (with or without fractional seconds)."""
    return datetime.datetime.fromisoformat(timestamp)


def metric(node_agent: agent.Agent, name: str, **labels: str) -> float:
    """A figure from the agent's Prometheus registry, as a scrape would show it (0 when absent)."""
    return node_agent.metrics.registry.get_sample_value(name, labels) or 0.0


RunAgent = Callable[..., contextlib.AbstractAsyncContextManager[agent.Agent]]


@pytest.fixture
async def run_agent(kube: Any, reader: Reader, node_name: str) -> AsyncIterator[RunAgent]:
    """Start an agent for `node_name` on a fake NVML; it is stopped (and its Host deleted) afterwards."""
    hosts: set[str] = {node_name}

    @contextlib.asynccontextmanager
    async def start(
        library: nvml.Library, allocation: podresources.PodResources | None = None, **settings: Any
    ) -> AsyncIterator[agent.Agent]:
        values = {"node_name": node_name, "register_node": True, **FAST, **settings}
        node_agent = agent.Agent(
            AgentSettings(**values), library, kubeconfig=str(kube.kubeconfig), allocation=allocation
        )
        stop = asyncio.Event()
        task = asyncio.create_task(node_agent.run(stop))
        try:
            yield node_agent
        finally:
            if node_agent.host:
                hosts.add(node_agent.host_name)
            stop.set()
            await asyncio.wait_for(task, timeout=5)

    yield start
    for name in hosts:
        await reader.delete_host(name)


@pytest.fixture
async def kubelet() -> AsyncIterator[Kubelet]:
    """A stand-in kubelet serving `v1.PodResourcesLister/List` on a unix socket."""
    grpc = pytest.importorskip("grpc")
    aio = pytest.importorskip("grpc.aio")

    folder = pathlib.Path(tempfile.mkdtemp(prefix="kubelet-"))
    socket_path = folder / "kubelet.sock"

    stand_in = Kubelet(socket_path)

    async def list_pods(request: bytes, context: object) -> bytes:
        return stand_in.response

    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister", {"List": grpc.unary_unary_rpc_method_handler(list_pods)}
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    yield stand_in
    await server.stop(None)
