"""Discovery and /version, as kubectl and Kopf need them."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from .helpers import GROUP, Api, widget


def test_version_answers_like_a_server(api: Api) -> None:
    version = api.ok("GET", "/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")


def test_core_discovery_lists_what_kopf_needs(api: Api) -> None:
    assert "v1" in api.ok("GET", "/api")["versions"]
    names = {r["name"] for r in api.ok("GET", "/api/v1")["resources"]}
    assert {"namespaces", "events", "secrets", "configmaps", "serviceaccounts"} <= names


@pytest.mark.parametrize(
    ("group", "version", "plural"),
    [
        ("coordination.k8s.io", "v1", "leases"),
        ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
        ("authentication.k8s.io", "v1", "tokenreviews"),
        ("authorization.k8s.io", "v1", "subjectaccessreviews"),
        ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
        ("events.k8s.io", "v1", "events"),
        ("rbac.authorization.k8s.io", "v1", "clusterroles"),
        ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ],
)
def test_group_discovery(api: Api, group: str, version: str, plural: str) -> None:
    groups = {g["name"] for g in api.ok("GET", "/apis")["groups"]}
    assert group in groups
    assert api.ok("GET", f"/apis/{group}")["preferredVersion"]["version"]
    names = {r["name"] for r in api.ok("GET", f"/apis/{group}/{version}")["resources"]}
    assert plural in names


def test_created_crd_is_served_with_scope_and_status(api: Api, test_crds: None) -> None:
    resources = {r["name"]: r for r in api.ok("GET", f"/apis/{GROUP}/v1")["resources"]}
    assert resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["kind"] == "Widget"
    assert "widgets/status" in resources
    assert resources["gadgets"]["namespaced"] is False
    assert "gadgets/status" not in resources


def test_namespaces_list(api: Api) -> None:
    names = {ns["metadata"]["name"] for ns in api.ok("GET", "/api/v1/namespaces")["items"]}
    assert {"default", "kube-system"} <= names


def test_unknown_path_is_a_404_status(api: Api) -> None:
    status, body = api("GET", "/apis/nonexistent.example.com/v1/things")
    assert status == 404
    assert body["kind"] == "Status" and body["code"] == 404


def _kubectl(kube: Any, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kube.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_gets_custom_resources(api: Api, kube: Any, namespace: str, widgets: str) -> None:
    api.ok("POST", widgets, widget("w-kubectl"))
    assert "w-kubectl" in _kubectl(kube, "get", "widgets", "-n", namespace, "-o", "name")
    assert "w-kubectl" in _kubectl(kube, "get", "widgets", "-n", namespace)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_apply_and_delete(api: Api, kube: Any, namespace: str, widgets: str) -> None:
    manifest = json.dumps(widget("w-applied", size=2))
    assert "created" in _kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert "unchanged" in _kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert api.ok("GET", f"{widgets}/w-applied")["spec"]["size"] == 2
    assert "configured" in _kubectl(
        kube, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(widget("w-applied", size=3))
    )
    assert api.ok("GET", f"{widgets}/w-applied")["spec"]["size"] == 3
    _kubectl(kube, "delete", "-n", namespace, "widgets", "w-applied")
    assert api("GET", f"{widgets}/w-applied")[0] == 404


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_prints_the_crd_columns(api: Api, kube: Any, namespace: str, widgets: str) -> None:
    api.ok("POST", widgets, widget("w-columns", size=7))
    header, row = _kubectl(kube, "get", "widgets", "-n", namespace).splitlines()
    assert header.split() == ["NAME", "SIZE", "SEEN"]
    assert row.split() == ["w-columns", "7"]  # a null cell prints empty
    assert _kubectl(kube, "get", "widgets", "-n", namespace, "-o", "wide").splitlines()[0].split() == [
        "NAME",
        "SIZE",
        "MODE",
        "SEEN",
    ]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_explains_a_custom_resource(kube: Any, test_crds: None) -> None:
    explained = _kubectl(kube, "explain", "widgets.spec.size")
    assert "KIND:       Widget" in explained and "size <integer>" in explained


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_describe_shows_an_objects_events(api: Api, kube: Any, namespace: str, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w-described"))
    reference = {"kind": "Widget", "name": "w-described", "namespace": namespace, "uid": created["metadata"]["uid"]}
    event = {"metadata": {"generateName": "w-"}, "reason": "Polished", "message": "shiny", "involvedObject": reference}
    api.ok("POST", f"/api/v1/namespaces/{namespace}/events", {**event, "type": "Normal"})
    described = _kubectl(kube, "describe", "widget", "w-described", "-n", namespace)
    assert "Polished" in described and "shiny" in described


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_prints_who_holds_a_lease(api: Api, kube: Any, namespace: str) -> None:
    lease = {"metadata": {"name": "node-7"}, "spec": {"holderIdentity": "node-7", "leaseDurationSeconds": 40}}
    api.ok("POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", lease)
    header, row = _kubectl(kube, "get", "leases", "-n", namespace).splitlines()
    assert header.split() == ["NAME", "HOLDER", "AGE"]
    assert row.split()[:2] == ["node-7", "node-7"]
