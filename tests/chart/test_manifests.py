"""Every object the chart renders is one a Kubernetes API server of each supported version accepts.

Each values file in charts/gpufleet/ci/ is rendered by the Helm library, then every object is
validated, strictly (unknown fields rejected), against the OpenAPI schemas of each supported
Kubernetes version shipped by `kubernetes-validate`. `helm lint --strict` runs on the same files.
Before Kubernetes 1.30 the files are installed with agent.nodeRestriction off, as the chart
requires there (its ValidatingAdmissionPolicies are admissionregistration.k8s.io/v1).
"""

from __future__ import annotations

import pathlib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from . import rendering

#: Kinds outside Kubernetes' own schemas, and where the chart's use of them is checked instead.
THIRD_PARTY_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1: prometheus-operator's CRD, not installed by this chart",
}


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
@pytest.mark.parametrize("version", rendering.SUPPORTED_KUBERNETES)
def test_every_object_validates_against_kubernetes(values_file: pathlib.Path, version: str) -> None:
    validated = 0
    for manifest in rendering.objects_for(values_file, version):
        if manifest["kind"] in THIRD_PARTY_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        validated += 1
    assert validated > 10


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
@pytest.mark.parametrize("layout", rendering.LAYOUTS)
@pytest.mark.parametrize("version", [rendering.SUPPORTED_KUBERNETES[0], rendering.SUPPORTED_KUBERNETES[-1]])
def test_both_facade_layouts_validate_and_lint(values_file: pathlib.Path, layout: str, version: str) -> None:
    """facade.layout deployment (the default) and sidecar, over every values file: what an API server accepts."""
    values = rendering.values_for(rendering.with_layout(rendering.values_of(values_file), layout), version)
    manifests = rendering.objects(rendering.render(values))
    facade_pods = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-facade")]
    assert len(facade_pods) == (1 if layout == "deployment" else 0)
    for manifest in manifests:
        if manifest["kind"] not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(manifest, version, strict=True)
    report = helm.lint(rendering.CHART, values, strict=True, kube_version=f"v{version}", namespace=rendering.NAMESPACE)
    assert ([m for m in report["messages"] if m["severity"] >= 2], report["errors"]) == ([], [])


@pytest.mark.parametrize("version", rendering.SUPPORTED_KUBERNETES)
def test_the_chart_crds_validate_against_kubernetes(version: str) -> None:
    for name, text in rendering.chart_crds().items():
        crd = yaml.safe_load(text)
        assert crd["kind"] == "CustomResourceDefinition", name
        kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
def test_third_party_kinds_are_the_expected_api_versions(values_file: pathlib.Path) -> None:
    """Skipping Kubernetes validation by kind must not let a look-alike of another group through."""
    for manifest in rendering.objects_of_file(values_file):
        if manifest["kind"] in THIRD_PARTY_KINDS:
            assert THIRD_PARTY_KINDS[manifest["kind"]].startswith(manifest["apiVersion"] + ":")


@pytest.mark.parametrize("values_file", rendering.CI_VALUES, ids=rendering.ids(rendering.CI_VALUES))
@pytest.mark.parametrize("version", [rendering.SUPPORTED_KUBERNETES[0], rendering.SUPPORTED_KUBERNETES[-1]])
def test_helm_lint_strict_is_clean(values_file: pathlib.Path, version: str) -> None:
    report = helm.lint(
        rendering.CHART,
        rendering.values_for(rendering.values_of(values_file), version),
        strict=True,
        kube_version=f"v{version}",
        namespace=rendering.NAMESPACE,
    )
    # severity 1 is informational ("icon is recommended"); strict mode fails on warnings (2) and errors (3)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert (problems, report["errors"]) == ([], [])


def test_helm_lint_reports_a_broken_chart(tmp_path: pathlib.Path) -> None:
    """The lint check can fail: a template with a syntax error is reported."""
    with helm.Chart.load(rendering.CHART) as chart:
        broken = pathlib.Path(chart.save_dir(tmp_path))
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nothing | nosuchfunction }}\n")
    report = helm.lint(broken, strict=True, kube_version="v1.30.0")
    assert [m for m in report["messages"] if m["severity"] >= 2] or report["errors"]


def test_every_object_is_labelled_as_part_of_the_release() -> None:
    for manifest in rendering.objects_of_file(rendering.CHART / "ci" / "hardened-values.yaml"):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == rendering.RELEASE, manifest["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "gpufleet"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_namespaced_objects_go_to_the_release_namespace() -> None:
    """Only the operator's Event Role sits elsewhere (Events about cluster-scoped Hosts live in default),
    and each component's Role on the hosts' heartbeat Leases, in their namespace (hostLeases.namespace)."""
    elsewhere = {
        (m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        for m in rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
        if m["metadata"].get("namespace") not in (None, rendering.NAMESPACE)
    }
    leases = "gpufleet-host-leases"
    assert elsewhere == {
        ("Role", "gpufleet-operator-events", "default"),
        ("RoleBinding", "gpufleet-operator-events", "default"),
        *{
            (kind, f"gpufleet-{component}-host-leases", leases)
            for kind in ("Role", "RoleBinding")
            for component in ("operator", "facade", "agent")
        },
    }


@pytest.mark.parametrize(
    ("values", "created"),
    [
        ({}, "gpufleet-host-leases"),
        ({"hostLeases": {"namespace": "fleet-heartbeats"}}, "fleet-heartbeats"),
        ({"hostLeases": {"createNamespace": False}}, None),
        ({"hostLeases": {"namespace": rendering.NAMESPACE}}, None),  # the release namespace exists already
    ],
    ids=["default", "renamed", "not-created", "release-namespace"],
)
def test_the_host_lease_namespace_is_created_when_asked(values: dict[str, Any], created: str | None) -> None:
    manifests = rendering.objects(rendering.render(values))
    namespaces = [m for m in manifests if m["kind"] == "Namespace"]
    assert [m["metadata"]["name"] for m in namespaces] == ([created] if created else [])
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == rendering.RELEASE
        assert labels["app.kubernetes.io/component"] == "host-leases"
        # deleted with the release: Leases are renewed anew, and a kept namespace would block another release
        assert "helm.sh/resource-policy" not in (namespace["metadata"].get("annotations") or {})
    expected = values.get("hostLeases", {}).get("namespace", "gpufleet-host-leases")
    env = {
        (container["name"], var["name"]): var.get("value")
        for _, container in rendering.containers(manifests)
        for var in container.get("env", [])
        if var["name"].endswith("HOST_LEASE_NAMESPACE")
    }
    assert env == {
        ("operator", "GPUFLEET_HOST_LEASE_NAMESPACE"): expected,
        ("facade", "GPUFLEET_HOST_LEASE_NAMESPACE"): expected,
        ("agent", "GPUFLEET_AGENT_HOST_LEASE_NAMESPACE"): expected,
    }


@pytest.mark.parametrize(
    ("owner", "rendered"),
    [
        (None, False),
        ({"name": rendering.RELEASE, "namespace": rendering.NAMESPACE}, True),
        ({"name": "other", "namespace": rendering.NAMESPACE}, False),
    ],
    ids=["made-elsewhere", "this-release", "another-release"],
)
def test_an_existing_host_lease_namespace_is_used_not_taken(
    tmp_path: pathlib.Path, owner: dict[str, str] | None, rendered: bool
) -> None:
    """Where the namespace exists (`lookup`, which sees nothing offline, is replaced by what a cluster
    answers), only this release's own stays in the release: Helm could not adopt another, and would
    delete this release's on upgrade if it were no longer rendered."""
    annotations = (
        f'(dict "meta.helm.sh/release-name" "{owner["name"]}" "meta.helm.sh/release-namespace" "{owner["namespace"]}")'
        if owner
        else "dict"
    )
    with helm.Chart.load(rendering.CHART) as chart:
        copy = pathlib.Path(chart.save_dir(tmp_path))
    template = copy / "templates" / "host-lease-namespace.yaml"
    lookup = 'lookup "v1" "Namespace" "" $namespace'
    assert lookup in template.read_text()
    template.write_text(
        template.read_text().replace(lookup, f'dict "metadata" (dict "name" $namespace "annotations" {annotations})')
    )
    with helm.Chart.load(copy) as chart:
        manifests = rendering.objects(chart.render({}, name=rendering.RELEASE, namespace=rendering.NAMESPACE))
    assert any(m["kind"] == "Namespace" for m in manifests) is rendered
    # used either way: every component still gets it, and the Roles still go there
    roles = [m for m in manifests if m["kind"] == "Role" and m["metadata"]["namespace"] == "gpufleet-host-leases"]
    assert len(roles) == 3


def test_the_validator_rejects_what_an_api_server_would() -> None:
    """The validation above can fail: a misspelt field in a rendered Deployment is rejected."""
    manifests = rendering.objects_of_file(rendering.CHART / "ci" / "default-values.yaml")
    deployment = rendering.find(manifests, "Deployment", "-controlplane")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"runAsNonroot": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, rendering.SUPPORTED_KUBERNETES[-1], strict=True)
