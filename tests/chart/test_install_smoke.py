"""The rendered chart's CRDs and RBAC go into a Kubernetes API as Helm would send them.

Runs against the emulated API by default and against a real cluster with `pytest --kubeconfig`.
Objects go through the `kubernetes` dynamic client (discovery, then plain REST creates) in Helm's
install order: CRDs, then the host-Lease Namespace, ServiceAccounts and RBAC (some Roles sit in
that namespace). Each is read back, and so is the leader-election
Lease the operator writes (the chart does not create it); everything created is deleted afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes import dynamic
from kubernetes.dynamic import exceptions

from . import rendering

SMOKE_NAMESPACE = "gpufleet-chart-smoke"
RELEASE = "chart-smoke"
RBAC_ORDER = ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
Manifest = dict[str, Any]


class Installer:
    """Creates objects through discovery, remembers them, and deletes them in reverse order."""

    def __init__(self, api_client: Any) -> None:
        self.client = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self.created: list[Manifest] = []

    def resource(self, manifest: Manifest) -> Any:
        return self.client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])

    def serves(self, api_version: str, kind: str) -> bool:
        try:
            self.client.resources.get(api_version=api_version, kind=kind)
        except exceptions.ResourceNotFoundError:
            return False
        return True

    def create(self, manifest: Manifest) -> Any:
        created = self.resource(manifest).create(body=manifest, namespace=manifest["metadata"].get("namespace"))
        self.created.append(manifest)
        return created

    def read(self, manifest: Manifest) -> Any:
        meta = manifest["metadata"]
        return self.resource(manifest).get(name=meta["name"], namespace=meta.get("namespace")).to_dict()

    def delete_all(self) -> None:
        for manifest in reversed(self.created):
            meta = manifest["metadata"]
            with contextlib.suppress(exceptions.NotFoundError):
                self.resource(manifest).delete(name=meta["name"], namespace=meta.get("namespace"))


@pytest.fixture(scope="module")
def chart_objects() -> list[Manifest]:
    return rendering.objects(rendering.render({}, release=RELEASE, namespace=SMOKE_NAMESPACE))


@pytest.fixture(scope="module")
def installer(api_client: Any, apply_crd: Any) -> Iterator[Installer]:
    """The chart's CRDs applied and a namespace for the release; what the tests create is deleted after."""
    for text in rendering.chart_crds().values():
        apply_crd(yaml.safe_load(text))
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=SMOKE_NAMESPACE))
        )
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    installer = Installer(api_client)
    yield installer
    installer.delete_all()
    core.delete_namespace(SMOKE_NAMESPACE)


def test_the_chart_crds_are_served(installer: Installer) -> None:
    assert installer.serves("gpufleet.io/v1alpha1", "Host")
    assert installer.serves("gpufleet.io/v1alpha1", "GPU")
    assert not installer.serves("kopf.dev/v1", "KopfPeering")  # leader election uses a built-in Lease


def _operator_env(chart_objects: list[Manifest]) -> dict[str, str]:
    operator = rendering.container_of(chart_objects, "operator")
    return {var["name"]: var["value"] for var in operator["env"] if "value" in var}


def test_the_operator_lease_can_be_created_and_renewed_only_from_its_latest_version(
    installer: Installer, chart_objects: list[Manifest]
) -> None:
    """What leaderelection.LeaderElector sends: create when absent, then updates carrying resourceVersion."""
    env = _operator_env(chart_objects)
    lease: Manifest = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": env["GPUFLEET_LEADER_LEASE_NAME"], "namespace": SMOKE_NAMESPACE},
        "spec": {
            "holderIdentity": "smoke-a",
            "leaseDurationSeconds": int(env["GPUFLEET_LEASE_DURATION_SECONDS"]),
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    }
    created = installer.create(lease).to_dict()
    renewed = {**created, "spec": {**created["spec"], "renewTime": "2026-01-01T00:00:02.000000Z"}}
    installer.resource(lease).replace(body=renewed, name=lease["metadata"]["name"], namespace=SMOKE_NAMESPACE)
    assert installer.read(lease)["spec"]["renewTime"] == "2026-01-01T00:00:02.000000Z"
    # a second replica writing from the version it read before the renewal loses the race
    taken = {**created, "spec": {**created["spec"], "holderIdentity": "smoke-b", "leaseTransitions": 1}}
    with pytest.raises(exceptions.ConflictError):
        installer.resource(lease).replace(body=taken, name=lease["metadata"]["name"], namespace=SMOKE_NAMESPACE)
    assert installer.read(lease)["spec"]["holderIdentity"] == "smoke-a"


@pytest.mark.parametrize("layout", rendering.LAYOUTS)
def test_the_service_accounts_and_rbac_are_accepted(installer: Installer, layout: str) -> None:
    """Both facade layouts' identities: each its own release, so that their cluster-scoped names differ."""
    if not installer.serves("rbac.authorization.k8s.io/v1", "ClusterRole"):
        pytest.skip("this API does not serve rbac.authorization.k8s.io/v1")
    release = RELEASE if layout == "deployment" else f"{RELEASE}-{layout}"
    # each release creates its own host-Lease namespace, as two releases must not share one
    values = rendering.with_layout({"hostLeases": {"namespace": f"{release}-leases"}}, layout)
    rendered = rendering.render(values, release=release, namespace=SMOKE_NAMESPACE)
    chart_objects = rendering.objects(rendered)
    accounts = {m["metadata"]["name"] for m in chart_objects if m["kind"] == "ServiceAccount"}
    assert (f"{release}-gpufleet-facade" in accounts) is (layout == "deployment")
    objects = sorted((m for m in chart_objects if m["kind"] in RBAC_ORDER), key=lambda m: RBAC_ORDER.index(m["kind"]))
    assert {m["kind"] for m in objects} == set(RBAC_ORDER)
    for manifest in objects:
        installer.create(manifest)
    for manifest in objects:
        stored = installer.read(manifest)
        for field in ("rules", "subjects", "roleRef"):
            assert stored.get(field) == manifest.get(field), (manifest["kind"], manifest["metadata"]["name"], field)
