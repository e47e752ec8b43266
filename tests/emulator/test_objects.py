"""Object identity and versioning: uid, timestamps, generation, resourceVersion, conflicts."""

from __future__ import annotations

import copy

from .helpers import Api, widget


def test_server_sets_identity(api: Api, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w1"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str)
    assert api.ok("GET", f"{widgets}/w1") == created


def test_resource_version_grows_and_no_op_keeps_it(api: Api, widgets: str) -> None:
    first = api.ok("POST", widgets, widget("w1"))
    second = api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, "application/merge-patch+json")
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    same = api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    listed = api.ok("GET", widgets)
    assert int(listed["metadata"]["resourceVersion"]) >= int(second["metadata"]["resourceVersion"])


def test_generation_moves_only_with_spec(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    labelled = api.ok("PATCH", f"{widgets}/w1", {"metadata": {"labels": {"a": "b"}}}, "application/merge-patch+json")
    assert labelled["metadata"]["generation"] == 1
    status = api.ok("PATCH", f"{widgets}/w1/status", {"status": {"ok": True}}, "application/merge-patch+json")
    assert status["metadata"]["generation"] == 1
    changed = api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 3}}, "application/merge-patch+json")
    assert changed["metadata"]["generation"] == 2


def test_stale_resource_version_conflicts(api: Api, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w1"))
    api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, "application/merge-patch+json")
    stale = copy.deepcopy(created)
    stale["spec"]["size"] = 5
    status, body = api("PUT", f"{widgets}/w1", stale)
    assert status == 409 and body["reason"] == "Conflict" and body["kind"] == "Status"
    patch = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 7}}
    status, body = api("PATCH", f"{widgets}/w1", patch, "application/merge-patch+json")
    assert status == 409 and body["reason"] == "Conflict"


def test_put_replaces(api: Api, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w1", mode="slow"))
    created["spec"] = {"size": 4}
    replaced = api.ok("PUT", f"{widgets}/w1", created)
    assert replaced["spec"] == {"size": 4, "mode": "fast"}  # mode dropped, then defaulted


def test_create_existing_name_is_already_exists(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    status, body = api("POST", widgets, widget("w1"))
    assert status == 409 and body["reason"] == "AlreadyExists"


def test_missing_object_is_not_found(api: Api, widgets: str) -> None:
    status, body = api("GET", f"{widgets}/nope")
    assert status == 404
    assert body["reason"] == "NotFound" and body["status"] == "Failure" and body["apiVersion"] == "v1"


def test_generate_name(api: Api, widgets: str) -> None:
    body = widget("")
    body["metadata"] = {"generateName": "gen-"}
    created = api.ok("POST", widgets, body)
    assert created["metadata"]["name"].startswith("gen-") and len(created["metadata"]["name"]) > 4


def test_write_into_missing_namespace_is_not_found(api: Api, test_crds: None) -> None:
    status, body = api("POST", "/api/v1/namespaces/no-such-ns/configmaps", {"metadata": {"name": "x"}})
    assert status == 404 and body["reason"] == "NotFound"


def test_cluster_scoped_custom_objects(api: Api, test_crds: None) -> None:
    from .helpers import GADGETS, GROUP

    body = {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"generateName": "g-"}, "spec": {"x": 1}}
    created = api.ok("POST", GADGETS, body)
    assert "namespace" not in created["metadata"]
    assert created["spec"] == {"x": 1}
    api.ok("DELETE", f"{GADGETS}/{created['metadata']['name']}")


def test_a_custom_resource_put_needs_a_resource_version(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    status, body = api("PUT", f"{widgets}/w1", widget("w1", size=2))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'Widget.testing.gpufleet.io "w1" is invalid: '
        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 0x0: must be specified for an update",
            "field": "metadata.resourceVersion",
        }
    ]
    assert api.ok("GET", f"{widgets}/w1")["spec"]["size"] == 1


def test_a_built_in_put_may_omit_the_resource_version(api: Api, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    api.ok("POST", configmaps, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    replaced = api.ok("PUT", f"{configmaps}/cm", {"metadata": {"name": "cm"}, "data": {"a": "2"}})
    assert replaced["data"] == {"a": "2"}
