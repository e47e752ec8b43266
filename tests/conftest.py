"""Where tests find a Kubernetes API: a real cluster if asked for, else the emulator.

``--kubeconfig PATH`` (or ``GPUFLEET_TEST_KUBECONFIG``) runs the suite against that
cluster; otherwise one emulated API server serves the whole session. ``KUBECONFIG`` is
set at configure time, before test modules import ``kubernetes`` (which reads it on
import), so the emulator's port is chosen then and the server is started lazily on it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from gpufleet.api import hostlease
from kube_emulator import EmulatedCluster, Emulator, write_kubeconfig
from tests.support.ports import free_port

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CRDS_DIR = REPO_ROOT / "crds"
_STATE: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class Kube:
    """The cluster under test: its kubeconfig, URL, and the emulator (None on a real cluster)."""

    kubeconfig: pathlib.Path
    url: str
    emulator: Emulator | None
    cluster: EmulatedCluster | None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig", default=None, help="run against the cluster of this kubeconfig instead of the emulated API"
    )


def pytest_configure(config: pytest.Config) -> None:
    real = config.getoption("--kubeconfig") or os.environ.get("GPUFLEET_TEST_KUBECONFIG")
    if real:
        kubeconfig = pathlib.Path(real).expanduser().resolve()
        _STATE.update(real=True, kubeconfig=kubeconfig)
    else:
        port = free_port()
        folder = pathlib.Path(tempfile.mkdtemp(prefix="gpufleet-emulator-"))
        kubeconfig = write_kubeconfig(folder / "kubeconfig", f"http://127.0.0.1:{port}")
        _STATE.update(real=False, kubeconfig=kubeconfig, port=port)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    import kubernetes.config.kube_config

    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = _STATE.pop("cluster", None)
    if cluster is not None:
        cluster.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _STATE.get("real"):
        return
    skip = pytest.mark.skip(reason="needs the emulated API (running against a real cluster)")
    for item in items:
        if item.get_closest_marker("emulator"):
            item.add_marker(skip)


def _server_url(kubeconfig: pathlib.Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    server: str = cluster["server"]
    return server


@pytest.fixture(scope="session")
def kube() -> Kube:
    kubeconfig: pathlib.Path = _STATE["kubeconfig"]
    if _STATE["real"]:
        return Kube(kubeconfig, _server_url(kubeconfig), None, None)
    cluster = _STATE.get("cluster")
    if cluster is None:
        cluster = _STATE["cluster"] = EmulatedCluster(port=_STATE["port"]).start()
    return Kube(kubeconfig, cluster.url, cluster.emulator, cluster)


@pytest.fixture
def emulator(kube: Kube) -> Iterator[Emulator]:
    """The emulator's extras (fault hooks, auth tables); skips on a real cluster."""
    if kube.emulator is None:
        pytest.skip("needs the emulated API (running against a real cluster)")
    yield kube.emulator
    kube.emulator.faults.clear()


@pytest.fixture
def emulated_cluster(kube: Kube, emulator: Emulator) -> EmulatedCluster:
    assert kube.cluster is not None
    return kube.cluster


@pytest.fixture(scope="session")
def api_client(kube: Kube) -> Iterator[Any]:
    """A synchronous ``kubernetes.client.ApiClient`` for the cluster under test."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client
    client.close()


@pytest.fixture
async def async_api_client(kube: Kube) -> AsyncIterator[Any]:
    """A ``kubernetes_asyncio`` ApiClient for the cluster under test."""
    import kubernetes_asyncio

    client = await kubernetes_asyncio.config.new_client_from_config(config_file=str(kube.kubeconfig))
    async with client:
        yield client


def _apply_crd(kube: Kube, api_client: Any, crd: dict[str, Any]) -> None:
    if kube.cluster is not None:
        kube.cluster.apply_crd(crd)
        return
    import kubernetes

    api = kubernetes.client.ApiextensionsV1Api(api_client)
    name = crd["metadata"]["name"]
    try:
        api.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        current = api.read_custom_resource_definition(name)
        crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": current.metadata.resource_version}}
        api.replace_custom_resource_definition(name, crd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} was not established in 30 s")


@pytest.fixture(scope="session")
def apply_crd(kube: Kube, api_client: Any) -> Any:
    """A function that installs (or updates) one CRD and waits until it is established."""
    return lambda crd: _apply_crd(kube, api_client, crd)


@pytest.fixture(scope="session")
def crds_installed(kube: Kube, api_client: Any) -> list[str]:
    """Every CRD in ``crds/*.yaml`` applied to the cluster under test, and the namespace of the
    hosts' heartbeat Leases: what an installation provides (the chart makes both); the CRD names."""
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.create_namespace({"metadata": {"name": hostlease.NAMESPACE}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    names: list[str] = []
    for file in sorted(CRDS_DIR.glob("*.y*ml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                _apply_crd(kube, api_client, doc)
                names.append(doc["metadata"]["name"])
    return names
