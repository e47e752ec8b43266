"""Fixtures that run the operator for real against the API under test and drive it like a user.

The operator runs in the test's event loop through `gpufleet.controller.main.serve`, the same
entry point `gpufleet operator` and `gpufleet dev` use. Hosts are applied and heartbeated over
HTTP the way kubectl and agents do (merge patches on `/status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions
from tests.support.waiting import eventually  # re-exported: the controller tests import it from here

from gpufleet import settings, tokens
from gpufleet.api import gpu, host, hostlease, meta
from gpufleet.controller import events, main

MERGE_PATCH = "application/merge-patch+json"


class Operator:
    """One operator instance running in this loop until `stop()`."""

    def __init__(self, config: settings.Settings) -> None:
        self.config = config
        self.identity = ""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Operator:
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        self.identity = f"test-{uuid.uuid4().hex[:8]}"
        self._task = asyncio.create_task(main.serve(self.config, stop=self._stop, ready=ready, identity=self.identity))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({self._task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()
        assert waiter in done, "the operator did not become ready"
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=20)
        self._task = None


class Fleet:
    """What a user does with kubectl, and what an agent does when it heartbeats."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.created: list[str] = []

    def new_name(self) -> str:
        return f"h-{uuid.uuid4().hex[:10]}"

    async def apply_host(self, name: str | None = None, *, os_type: str = "linux", node_name: str | None = None) -> str:
        name = name or self.new_name()
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": host.KIND,
            "metadata": {"name": name},
            "spec": {
                "displayName": name,
                "ipAddress": "10.0.0.1",
                "osType": os_type,
                "totalCpu": 8,
                "totalMemory": 2**34,
            },
        }
        if node_name is not None:
            body["spec"]["nodeName"] = node_name
        await self.custom.create_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, body)
        self.created.append(name)
        return name

    async def renew(self, name: str, *, holder: str | None = None) -> None:
        """Renew the host's Lease as its agent does (holder: its node, i.e. its name, by default)."""
        leases = client.CoordinationV1Api(self.custom.api_client)
        namespace = hostlease.NAMESPACE
        renewal = hostlease.renewal(holder=holder or name, duration_seconds=40)
        try:
            await leases.patch_namespaced_lease(name, namespace, renewal, _content_type=MERGE_PATCH)
        except exceptions.ApiException as error:
            if error.status != 404:
                raise
            uid = (await self.get(name))["metadata"]["uid"]
            manifest = hostlease.manifest(
                host_name=name, host_uid=uid, namespace=namespace, holder=holder or name, duration_seconds=40
            )
            await leases.create_namespaced_lease(namespace, manifest)

    async def heartbeat(self, name: str, *, at: datetime.datetime | None = None, **fields: Any) -> None:
        """Patch `/status` as an agent does: a new lastHeartbeat plus whatever it reports."""
        moment = at or datetime.datetime.now(datetime.UTC)
        patch = {
            "status": {"lastHeartbeat": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"), **fields}
        }
        await self.custom.patch_cluster_custom_object_status(
            meta.GROUP, meta.VERSION, host.PLURAL, name, patch, _content_type=MERGE_PATCH
        )

    async def get(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.custom.get_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name)
        return body

    async def status(self, name: str) -> dict[str, Any]:
        return dict((await self.get(name)).get("status") or {})

    async def condition(self, name: str, type_: str) -> dict[str, Any]:
        for item in (await self.status(name)).get("conditions", []):
            if item["type"] == type_:
                return dict(item)
        raise AssertionError(f"host {name} has no {type_} condition")

    async def delete_host(self, name: str) -> None:
        await self.custom.delete_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name)

    async def exists(self, name: str) -> bool:
        try:
            await self.get(name)
        except exceptions.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def create_gpu(self, host_name: str, index: int, state: str = "free") -> str:
        """A GPU as the agent publishes it: labelled with and owned by its Host."""
        name = gpu.object_name(host_name, index)
        owner = {
            "apiVersion": meta.API_VERSION,
            "kind": host.KIND,
            "name": host_name,
            "uid": (await self.get(host_name))["metadata"]["uid"],
        }
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": gpu.KIND,
            "metadata": {"name": name, "labels": {meta.HOST_LABEL: host_name}, "ownerReferences": [owner]},
            "spec": {"hostName": host_name, "index": index},
        }
        await self.custom.create_cluster_custom_object(meta.GROUP, meta.VERSION, gpu.PLURAL, body)
        await self.set_gpu_state(name, state)
        return name

    async def set_gpu_state(self, name: str, state: str) -> None:
        await self.custom.patch_cluster_custom_object_status(
            meta.GROUP, meta.VERSION, gpu.PLURAL, name, {"status": {"state": state}}, _content_type=MERGE_PATCH
        )

    async def delete_gpu(self, name: str) -> None:
        await self.custom.delete_cluster_custom_object(meta.GROUP, meta.VERSION, gpu.PLURAL, name)

    async def gpu_names(self, host_name: str) -> list[str]:
        listing = await self.custom.list_cluster_custom_object(
            meta.GROUP, meta.VERSION, gpu.PLURAL, label_selector=f"{meta.HOST_LABEL}={host_name}"
        )
        return sorted(item["metadata"]["name"] for item in listing["items"])

    async def token_secret(self, host_name: str) -> Any | None:
        try:
            return await self.core.read_namespaced_secret(tokens.secret_name(host_name), self.namespace)
        except exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise

    async def events_of(self, name: str) -> list[Any]:
        """The Events posted about a Host (Hosts are cluster-scoped: their Events are in `default`)."""
        listing = await self.core.list_namespaced_event(events.EVENTS_NAMESPACE)
        return [e for e in listing.items if e.involved_object.name == name and e.involved_object.kind == host.KIND]

    async def event_reasons(self, name: str) -> list[str]:
        return [e.reason for e in await self.events_of(name)]

    async def labelled(self, selector: str) -> set[str]:
        listing = await self.custom.list_cluster_custom_object(
            meta.GROUP, meta.VERSION, host.PLURAL, label_selector=selector
        )
        return {item["metadata"]["name"] for item in listing["items"]}


async def seconds_until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Seconds until `check()` is true: the detection delays the tests bound. Fails after `within`."""
    started = time.monotonic()
    await eventually(check, within=within)
    return time.monotonic() - started


GRACE = 1.0


@pytest.fixture
async def namespace(async_api_client: client.ApiClient, crds_installed: list[str]) -> AsyncIterator[str]:
    name = f"gf-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(async_api_client)
    await core.create_namespace({"metadata": {"name": name}})
    with contextlib.suppress(exceptions.ApiException):
        await core.create_namespace({"metadata": {"name": events.EVENTS_NAMESPACE}})
    yield name
    with contextlib.suppress(exceptions.ApiException):
        await core.delete_namespace(name)


@pytest.fixture
def config(namespace: str) -> settings.Settings:
    return settings.Settings(
        namespace=namespace,
        grace_period_seconds=GRACE,
        heartbeat_interval_seconds=GRACE / 4,
        leader_election=False,
        metrics_port=0,
    )


@pytest.fixture
async def operator(config: settings.Settings) -> AsyncIterator[Operator]:
    running = await Operator(config).start()
    yield running
    await running.stop()


@pytest.fixture
async def fleet(async_api_client: client.ApiClient, namespace: str, operator: Operator) -> AsyncIterator[Fleet]:
    """The user's side; hosts it created are deleted (while the operator still runs) at the end."""
    users = Fleet(async_api_client, namespace)
    yield users
    for name in users.created:
        with contextlib.suppress(exceptions.ApiException):
            await users.delete_host(name)
    for name in users.created:
        await eventually(lambda name=name: _gone(users, name))  # type: ignore[misc]


async def _gone(users: Fleet, name: str) -> bool:
    return not await users.exists(name)
