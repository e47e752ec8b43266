"""A REST facade per test, over real HTTP, against the cluster under test (emulated or real).

Each test gets a freshly started facade (its caches listed from the API, its watches running)
in static-token mode with one admin and one viewer token, and an HTTP client for it. Hosts
registered through it are deleted afterwards, straight through the Kubernetes API.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from gpufleet.facade import app as facade_app
from gpufleet.settings import AuthMode, Settings

from .helpers import ADMIN_TOKEN, HOSTS_PATH, VIEWER_TOKEN, Facade, K8s

StartFacade = Callable[[Settings], Awaitable[Facade]]


@pytest.fixture(scope="session")
def k8s(api_client: Any) -> K8s:
    return K8s(api_client)


@pytest.fixture(scope="session")
def facade_namespace(crds_installed: list[str], k8s: K8s) -> Iterator[str]:
    """A namespace of this test session for the agent-token Secrets."""
    name = f"gpufleet-facade-{uuid.uuid4().hex[:6]}"
    k8s.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    k8s("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("facade") / "tokens"
    path.write_text(f"# admins and viewers\n{ADMIN_TOKEN},admin\n{VIEWER_TOKEN},viewer\n")
    return path


@pytest.fixture
def settings(facade_namespace: str, tokens_file: pathlib.Path) -> Settings:
    return Settings(
        namespace=facade_namespace,
        auth_mode=AuthMode.STATIC,
        static_tokens_file=tokens_file,
        api_timeout_seconds=1.0,
    )


@pytest.fixture
async def start_facade(kube: Any, k8s: K8s) -> AsyncIterator[StartFacade]:
    """Start a facade with given settings; stopped, and its registered hosts deleted, at teardown."""
    servers: list[test_utils.TestServer] = []
    sessions: list[aiohttp.ClientSession] = []
    registered: list[str] = []

    async def start(settings: Settings) -> Facade:
        app = facade_app.create_app(settings, kubeconfig=str(kube.kubeconfig))
        server = test_utils.TestServer(app)
        await server.start_server()
        servers.append(server)
        await facade_app.wait_synced(app)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Facade(str(server.make_url("")).rstrip("/"), session, app, registered)

    yield start
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()
    for name in registered:
        k8s("DELETE", f"{HOSTS_PATH}/{name}")


@pytest.fixture
async def facade(start_facade: StartFacade, settings: Settings) -> Facade:
    return await start_facade(settings)
