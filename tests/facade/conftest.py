"""A REST facade per test, over real HTTP, against the cluster under test (emulated or real).

Each test gets a freshly started facade (its caches listed from the API, its watches running)
in static-token mode with one admin and one viewer token, and an HTTP client for it. Hosts
registered through it are deleted afterwards, straight through the Kubernetes API.
"""

from __future__ import annotations

import dataclasses
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import test_utils

from gpufleet.api import hostlease
from gpufleet.facade import app as facade_app
from gpufleet.facade import main
from gpufleet.settings import AuthMode, Settings
from kube_emulator import Emulator

from .helpers import ADMIN_TOKEN, HOSTS_PATH, VIEWER_TOKEN, Facade, K8s


class StartFacade(Protocol):
    async def __call__(self, settings: Settings, *, kubeconfig: str | None = None) -> Facade:
        """A started facade with these settings (on the cluster under test, or that of `kubeconfig`)."""


class FacadeTestServer(test_utils.TestServer):
    """aiohttp's test server with the facade's own runner (its HTTP limits, its envelope for unparsable requests)."""

    async def _make_runner(self, **kwargs: Any) -> main.Runner:
        return main.Runner(self.app, **kwargs)


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
def host_lease_namespace(crds_installed: list[str], k8s: K8s) -> str:
    """The namespace of the hosts' heartbeat Leases, as an installation has it (the chart creates it).

    The default one, shared with the `gpufleet facade` processes of test_replicas.py (which run with
    default settings); created here if the session has not made it yet, and left in place.
    """
    status, answer = k8s("POST", "/api/v1/namespaces", {"metadata": {"name": hostlease.NAMESPACE}})
    assert status in (201, 409), answer
    return hostlease.NAMESPACE


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("facade") / "tokens"
    path.write_text(f"# admins and viewers\n{ADMIN_TOKEN},admin\n{VIEWER_TOKEN},viewer\n")
    return path


@pytest.fixture
def settings(facade_namespace: str, host_lease_namespace: str, tokens_file: pathlib.Path) -> Settings:
    return Settings(
        namespace=facade_namespace,
        host_lease_namespace=host_lease_namespace,
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

    async def start(settings: Settings, *, kubeconfig: str | None = None) -> Facade:
        app = facade_app.create_app(settings, kubeconfig=kubeconfig or str(kube.kubeconfig))
        server = FacadeTestServer(app)
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


#: The audience an API server's own tokens are for (kubeadm, kind: its service-account issuer).
API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclasses.dataclass
class TokenReviews:
    """The emulator's TokenReview, made audience-aware as an API server is, and every review it got.

    A token is valid for the API server's audience unless `audiences` says otherwise. A review
    asking for audiences answers the ones the token has among them (`status.audiences`), and
    does not authenticate a token that has none of them.
    """

    answer: Callable[[dict[str, Any]], dict[str, Any]]
    audiences: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    reviewed: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)

    def __call__(self, review: dict[str, Any]) -> dict[str, Any]:
        spec = review.get("spec") or {}
        token, wanted = spec.get("token", ""), list(spec.get("audiences") or [])
        if "audiences" in spec:  # the emulator reviews tokens of its own requests too, without audiences
            self.reviewed.append((token, wanted))
        answer = self.answer(review)
        status = dict(answer["status"])
        if status.get("authenticated"):
            has = self.audiences.get(token, [API_SERVER_AUDIENCE])
            granted = [audience for audience in wanted if audience in has] if wanted else has
            if granted:
                status["audiences"] = granted
            else:
                status = {"authenticated": False, "error": "token audiences are invalid for the target audiences"}
        return {**answer, "status": status}

    def tokens(self) -> list[str]:
        return [token for token, _ in self.reviewed]


@pytest.fixture
def token_reviews(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> TokenReviews:
    """Kubernetes-mode users (`k8s-admin-token`: alice, admin; `k8s-viewer-token`: bob, viewer;
    `k8s-nobody-token`: carol, no rights), behind an audience-aware TokenReview."""
    emulator.add_user("k8s-admin-token", "alice", ["fleet-admins"])
    emulator.add_user("k8s-viewer-token", "bob")
    emulator.add_user("k8s-nobody-token", "carol")
    emulator.allow("fleet-admins", "*", "gpufleet.io", "hosts")
    for verb in ("get", "list"):
        emulator.allow("bob", verb, "gpufleet.io", "hosts")
    reviews = TokenReviews(emulator.access.token_review)
    monkeypatch.setattr(emulator.access, "token_review", reviews)
    return reviews


@pytest.fixture
def kubernetes_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_mode": AuthMode.KUBERNETES, "static_tokens_file": None})
