"""Rendering the chart the way `helm install` would, offline, with the Helm library itself.

`helm_python` (PyPI `helm-python-sdk`) embeds Helm's Go SDK, so these tests run the real template
engine, `values.schema.json` enforcement and `helm lint` without a helm binary or a cluster.
Rendering is cached per values file: every test module reads the same few renders.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpufleet"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "gpufleet"
NAMESPACE = "gpufleet-system"

#: Kubernetes minor versions the chart supports (Chart.yaml kubeVersion and what CI validates against).
SUPPORTED_KUBERNETES = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
#: From here on the chart installs agent.nodeRestriction (ValidatingAdmissionPolicy v1, the node-name
#: claim); older versions are supported with it turned off (docs/operations.md "Node restriction").
NODE_RESTRICTION_SINCE = "1.30.0"

#: facade.layout: the facade in pods of its own under its own ServiceAccount (the default), or a
#: sidecar of the control-plane pod sharing the operator's ServiceAccount.
LAYOUTS = ["deployment", "sidecar"]

Manifest = dict[str, Any]


def values_of(path: pathlib.Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded or {}


def render(values: dict[str, Any], *, release: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, for `values` over the chart's defaults (raises on bad values)."""
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(values, name=release, namespace=namespace)
    return rendered


def objects(rendered: dict[str, str]) -> list[Manifest]:
    """Every Kubernetes object in a render (NOTES.txt and empty documents left out)."""
    found: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


@functools.cache
def _render_file(path: pathlib.Path) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(render(values_of(path)).items()))


def rendered_file(path: pathlib.Path) -> dict[str, str]:
    return dict(_render_file(path))


def objects_of_file(path: pathlib.Path) -> list[Manifest]:
    return objects(rendered_file(path))


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def has_node_restriction(version: str) -> bool:
    return _minor(version) >= _minor(NODE_RESTRICTION_SINCE)


def values_for(values: dict[str, Any], version: str) -> dict[str, Any]:
    """`values` as installed on Kubernetes `version`: without agent.nodeRestriction before 1.30."""
    if has_node_restriction(version):
        return values
    agent = {**values.get("agent", {}), "nodeRestriction": {"enabled": False}}
    return {**values, "agent": agent}


@functools.cache
def _render_for(path: pathlib.Path, version: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(render(values_for(values_of(path), version)).items()))


def objects_for(path: pathlib.Path, version: str) -> list[Manifest]:
    """The objects of a values file as installed on Kubernetes `version` (see `values_for`)."""
    if has_node_restriction(version):
        return objects_of_file(path)
    return objects(dict(_render_for(path, version)))


def chart_crds() -> dict[str, str]:
    """File name -> text of every CRD the chart installs from its crds/ folder."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((CHART / "crds").glob("*.yaml"))}


def find(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} named *{name_suffix}, found {len(matches)}"
    return matches[0]


def containers(manifests: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, container) for every container of every Deployment and DaemonSet."""
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "DaemonSet"):
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                yield manifest, container


def with_layout(values: dict[str, Any], layout: str) -> dict[str, Any]:
    """`values` with facade.layout set to `layout`."""
    return {**values, "facade": {**values.get("facade", {}), "layout": layout}}


def workload_of(manifests: list[Manifest], container_name: str) -> Manifest:
    """The one Deployment or DaemonSet that runs a container of this name."""
    found = [w for w, c in containers(manifests) if c["name"] == container_name]
    assert len(found) == 1, f"expected one workload running {container_name}, found {len(found)}"
    return found[0]


def container_of(manifests: list[Manifest], container_name: str) -> Manifest:
    """The container of this name, in whichever workload runs it."""
    pod = workload_of(manifests, container_name)["spec"]["template"]["spec"]
    found: Manifest = next(c for c in pod["containers"] if c["name"] == container_name)
    return found


def service_account_of(manifests: list[Manifest], container_name: str) -> str:
    """The ServiceAccount the container runs as: its pod's."""
    name: str = workload_of(manifests, container_name)["spec"]["template"]["spec"]["serviceAccountName"]
    return name


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels-style selector selects an object with these labels."""
    return bool(selector) and selector.items() <= labels.items()


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def ids(paths: list[pathlib.Path]) -> list[str]:
    return [path.name.removesuffix("-values.yaml") for path in paths]


Grant = tuple[str, str, str, str, str]
"""(scope, apiGroup, resource, verb, resourceName): scope is "cluster" or a namespace, name "" means any."""


def grants(role: Manifest) -> set[Grant]:
    """A Role's or ClusterRole's rules flattened, so that how a template groups them does not matter."""
    scope = role["metadata"].get("namespace", "cluster")
    return {
        (scope, group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def component_grants(manifests: list[Manifest], component: str) -> set[Grant]:
    """Everything the roles labelled for `component` grant."""
    roles = [
        m
        for m in manifests
        if m["kind"] in ("Role", "ClusterRole") and m["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return set().union(*(grants(role) for role in roles))


def bound_grants(manifests: list[Manifest], service_account: str, namespace: str = NAMESPACE) -> set[Grant]:
    """Everything the chart's bindings grant one ServiceAccount, whichever component the roles are for.

    A RoleBinding grants in its own namespace, also when it refers to a ClusterRole.
    """
    roles = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m["kind"] in ("Role", "ClusterRole")}
    granted: set[Grant] = set()
    for binding in (m for m in manifests if m["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = binding.get("subjects") or []
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s.get("namespace") == namespace
            for s in subjects
        ):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else None
        granted |= {(scope or s, g, r, v, n) for s, g, r, v, n in grants(role)}
    return granted
