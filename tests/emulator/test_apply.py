"""Server-side apply and managedFields: ownership, conflicts, force, removal, list types."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from typing import Any

import pytest
import yaml

from .helpers import GROUP, Api, kubectl, widget

MERGE = "application/merge-patch+json"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
VERSION = f"{GROUP}/v1"


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, operation)."""
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields") or []}


def test_apply_creates_the_object_and_records_what_it_applied(api: Api, widgets: str) -> None:
    config = widget("w1", size=2)
    config["metadata"]["labels"] = {"app": "web"}
    status, created = api.apply(f"{widgets}/w1", config, "deployer")
    assert status == 201, created
    assert created["spec"] == {"size": 2, "mode": "fast"}  # defaulted, as a create defaults
    [entry] = created["metadata"]["managedFields"]
    assert entry["manager"] == "deployer" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == VERSION and entry["fieldsType"] == "FieldsV1"
    assert TIME.match(entry["time"]), entry
    # Only what was applied: not the defaulted mode, not the name, no intermediate struct.
    assert entry["fieldsV1"] == {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:size": {}}}
    status, again = api.apply(f"{widgets}/w1", config, "deployer")
    assert status == 200 and again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_apply_needs_a_field_manager(api: Api, widgets: str) -> None:
    status, body = api.apply(f"{widgets}/w1", widget("w1"), None)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_apply_refuses_a_config_of_another_version_or_name(api: Api, widgets: str) -> None:
    wrong_version = {**widget("w1"), "apiVersion": f"{GROUP}/v2"}
    status, body = api.apply(f"{widgets}/w1", wrong_version, "deployer")
    assert status == 400 and "Incorrect version specified in apply patch" in body["message"]
    status, body = api.apply(f"{widgets}/w1", widget("other"), "deployer")
    assert status == 400 and body["reason"] == "BadRequest"


def test_creates_and_patches_record_update_entries(api: Api, widgets: str) -> None:
    body = widget("w1", size=1)
    body["metadata"]["labels"] = {"app": "web"}
    created = api.ok("POST", widgets, body, fieldManager="creator")
    entry = managers(created)[("creator", "Update")]
    assert entry["apiVersion"] == VERSION and TIME.match(entry["time"])
    # An Update owns what it created, maps that did not exist included (the "." entries).
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {".": {}, "f:mode": {}, "f:size": {}},
    }
    # Without fieldManager the manager is the User-Agent up to its first "/".
    patched = api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 5}}, MERGE)
    owners = managers(patched)
    assert owners[("OpenAPI-Generator", "Update")]["fieldsV1"] == {"f:spec": {"f:size": {}}}
    assert owners[("creator", "Update")]["fieldsV1"]["f:spec"] == {".": {}, "f:mode": {}}  # size was taken


def test_a_conflict_names_the_manager_and_the_field(api: Api, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w1", size=1), fieldManager="creator")
    stamp = managers(created)[("creator", "Update")]["time"]
    status, body = api.apply(f"{widgets}/w1", widget("w1", size=3), "deployer")
    assert status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        f'Apply failed with 1 conflict: conflict with "creator" using {VERSION} at {stamp}: .spec.size'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "creator" using {VERSION} at {stamp}',
            "field": ".spec.size",
        }
    ]
    assert api.ok("GET", f"{widgets}/w1")["spec"]["size"] == 1


def test_conflicts_between_appliers_and_force(api: Api, widgets: str) -> None:
    api.apply(f"{widgets}/w1", widget("w1", size=2, address="10.0.0.1"), "a")
    status, body = api.apply(f"{widgets}/w1", widget("w1", size=3, address="10.0.0.2"), "b")
    assert status == 409
    assert body["message"] == 'Apply failed with 2 conflicts: conflicts with "a":\n- .spec.address\n- .spec.size'
    assert [c["field"] for c in body["details"]["causes"]] == [".spec.address", ".spec.size"]
    # The same value is no conflict: both own it.
    status, shared = api.apply(f"{widgets}/w1", widget("w1", size=2), "b")
    assert status == 200
    owners = managers(shared)
    assert owners[("a", "Apply")]["fieldsV1"]["f:spec"] == {"f:address": {}, "f:size": {}}
    assert owners[("b", "Apply")]["fieldsV1"]["f:spec"] == {"f:size": {}}
    # force takes the field: the value changes and the other manager no longer owns it.
    status, forced = api.apply(f"{widgets}/w1", widget("w1", size=3), "b", force="true")
    assert status == 200 and forced["spec"]["size"] == 3
    owners = managers(forced)
    assert owners[("a", "Apply")]["fieldsV1"]["f:spec"] == {"f:address": {}}
    assert owners[("b", "Apply")]["fieldsV1"]["f:spec"] == {"f:size": {}}


def test_fields_a_manager_stops_applying_are_removed_unless_others_own_them(api: Api, widgets: str) -> None:
    first = widget("w1", size=2, labels={"a": "1", "b": "2"})
    api.apply(f"{widgets}/w1", first, "a")
    api.apply(f"{widgets}/w1", widget("w1", size=2, labels={"b": "2"}), "b")
    status, now = api.apply(f"{widgets}/w1", widget("w1", size=2), "a")
    assert status == 200
    assert now["spec"]["labels"] == {"b": "2"}  # a's "a" is gone, b still owns "b"
    assert "f:labels" not in managers(now)[("a", "Apply")]["fieldsV1"]["f:spec"]


def test_non_apply_writes_take_fields_from_appliers(api: Api, widgets: str) -> None:
    api.apply(f"{widgets}/w1", widget("w1", size=2, address="10.0.0.1"), "a")
    patched = api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 4}}, MERGE, fieldManager="editor")
    assert managers(patched)[("a", "Apply")]["fieldsV1"]["f:spec"] == {"f:address": {}}
    # Removing a field removes it from every manager.
    removed = api.ok("PATCH", f"{widgets}/w1", {"spec": {"address": None}}, MERGE, fieldManager="editor")
    assert ("a", "Apply") not in managers(removed)
    # A PUT may replace managedFields; [{}] clears them, as on a cluster.
    current = api.ok("GET", f"{widgets}/w1")
    current["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in api.ok("PUT", f"{widgets}/w1", current)["metadata"]


def test_map_lists_merge_by_key_and_atomic_lists_conflict(api: Api, widgets: str) -> None:
    api.apply(f"{widgets}/w1", widget("w1", ports=[{"name": "http", "port": 80}], hosts=["a"]), "a")
    status, merged = api.apply(f"{widgets}/w1", widget("w1", ports=[{"name": "https", "port": 443}]), "b")
    assert status == 200
    assert merged["spec"]["ports"] == [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    assert managers(merged)[("a", "Apply")]["fieldsV1"]["f:spec"] == {
        "f:hosts": {},
        "f:ports": {'k:{"name":"http"}': {".": {}, "f:name": {}, "f:port": {}}},
        "f:size": {},
    }
    status, body = api.apply(f"{widgets}/w1", widget("w1", ports=[{"name": "http", "port": 81}]), "b")
    assert status == 409 and body["details"]["causes"][0]["field"] == '.spec.ports[name="http"].port'
    status, body = api.apply(f"{widgets}/w1", widget("w1", hosts=["b"]), "b")
    assert status == 409 and [c["field"] for c in body["details"]["causes"]] == [".spec.hosts"]


def test_set_lists_merge_by_value(api: Api, widgets: str) -> None:
    api.apply(f"{widgets}/w1", widget("w1", tags=["x", "y"]), "a")
    status, merged = api.apply(f"{widgets}/w1", widget("w1", tags=["z"]), "b")
    assert status == 200 and merged["spec"]["tags"] == ["x", "y", "z"]
    assert managers(merged)[("b", "Apply")]["fieldsV1"]["f:spec"]["f:tags"] == {'v:"z"': {}}
    status, dropped = api.apply(f"{widgets}/w1", widget("w1", tags=["y"]), "a")
    assert status == 200 and dropped["spec"]["tags"] == ["y", "z"]


def test_status_is_applied_through_the_subresource(api: Api, widgets: str) -> None:
    api.apply(f"{widgets}/w1", {**widget("w1", size=2), "status": {"phase": "ignored"}}, "deployer")
    assert "status" not in api.ok("GET", f"{widgets}/w1")
    config = {"apiVersion": VERSION, "kind": "Widget", "metadata": {"name": "w1"}, "status": {"phase": "Ready"}}
    status, applied = api.apply(f"{widgets}/w1/status", config, "controller")
    assert status == 200 and applied["status"] == {"phase": "Ready"} and applied["spec"]["size"] == 2
    entry = next(e for e in applied["metadata"]["managedFields"] if e["manager"] == "controller")
    assert entry["subresource"] == "status" and entry["operation"] == "Apply"
    assert entry["fieldsV1"] == {"f:status": {"f:phase": {}}}
    status, body = api.apply(f"{widgets}/missing/status", {**config, "metadata": {"name": "missing"}}, "controller")
    assert status == 404 and body["reason"] == "NotFound"


def test_configmap_data_is_a_map_of_fields(api: Api, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
    status, created = api.apply(path, config, "deployer")
    assert status == 201 and created["data"] == {"a": "1"}
    assert managers(created)[("deployer", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}}}


def test_force_is_only_for_apply(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    status, body = api("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, MERGE, force=True)
    assert status == 422
    assert body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
    )


@pytest.mark.parametrize("manager", ["x" * 129])
def test_a_too_long_field_manager_is_invalid(api: Api, widgets: str, manager: str) -> None:
    status, body = api.apply(f"{widgets}/w1", widget("w1"), manager)
    assert status == 422 and body["details"]["causes"][0]["field"] == "fieldManager"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_apply_server_side(api: Api, kube: Any, namespace: str, widgets: str, tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / "objects.yaml"
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
    manifest.write_text(yaml.safe_dump_all([widget("w1", size=2), configmap]))
    applied = kubectl(kube.kubeconfig, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.split("\n")[:2] == [
        f"widget.{GROUP}/w1 serverside-applied",
        "configmap/cm serverside-applied",
    ]
    cm = api.ok("GET", f"/api/v1/namespaces/{namespace}/configmaps/cm")
    assert managers(cm)[("kubectl", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}}}
    # Another manager changes a field kubectl applied: the next apply conflicts, --force-conflicts wins.
    patched = kubectl(
        kube.kubeconfig,
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"size": 5}}),
    )
    assert patched.returncode == 0, patched.stderr
    refused = kubectl(kube.kubeconfig, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl-patch"' in refused.stderr
    assert ": .spec.size" in refused.stderr
    forced = kubectl(
        kube.kubeconfig, "apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", str(manifest)
    )
    assert forced.returncode == 0, forced.stderr
    assert api.ok("GET", f"{widgets}/w1")["spec"]["size"] == 2


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_moves_client_side_apply_to_server_side(
    api: Api, kube: Any, namespace: str, tmp_path: pathlib.Path
) -> None:
    manifest = tmp_path / "cm.yaml"
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}}
    manifest.write_text(yaml.safe_dump(configmap))
    assert kubectl(kube.kubeconfig, "apply", "-n", namespace, "-f", str(manifest)).returncode == 0
    path = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    assert managers(api.ok("GET", path))[("kubectl-client-side-apply", "Update")]["fieldsV1"]["f:data"] == {
        ".": {},
        "f:a": {},
        "f:b": {},
    }
    migrated = kubectl(kube.kubeconfig, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert migrated.returncode == 0, migrated.stderr
    owners = managers(api.ok("GET", path))
    assert ("kubectl-client-side-apply", "Update") not in owners
    assert owners[("kubectl", "Apply")]["fieldsV1"]["f:data"] == {"f:a": {}, "f:b": {}}
    # kubectl now owns the data server-side: a changed value applies without a conflict.
    manifest.write_text(yaml.safe_dump({**configmap, "data": {"a": "1", "b": "3"}}))
    changed = kubectl(kube.kubeconfig, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert changed.returncode == 0, changed.stderr
    assert api.ok("GET", path)["data"] == {"a": "1", "b": "3"}
