"""Deletion: finalizers hold objects with a deletionTimestamp; owners take dependents along."""

from __future__ import annotations

import time

from tests.support.waiting import eventually_sync

from .helpers import GADGETS, GROUP, Api, widget

MERGE = "application/merge-patch+json"


def test_delete_without_finalizers_removes_and_emits_deleted(api: Api, widgets: str) -> None:
    rv = api.ok("POST", widgets, widget("w1"))["metadata"]["resourceVersion"]
    api.ok("DELETE", f"{widgets}/w1")
    assert api("GET", f"{widgets}/w1")[0] == 404
    events = api.watch(widgets, count=1, resourceVersion=rv)
    assert events[0]["type"] == "DELETED"


def test_finalizers_hold_deletion(api: Api, widgets: str) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    api.ok("POST", widgets, body)
    api.ok("DELETE", f"{widgets}/w1")
    held = api.ok("GET", f"{widgets}/w1")
    stamp = held["metadata"]["deletionTimestamp"]
    api.ok("DELETE", f"{widgets}/w1")
    assert api.ok("GET", f"{widgets}/w1")["metadata"]["deletionTimestamp"] == stamp
    api.ok("PATCH", f"{widgets}/w1", {"metadata": {"finalizers": None}}, MERGE)
    eventually_sync(lambda: api("GET", f"{widgets}/w1")[0] == 404)


def test_cascade_through_owner_references(api: Api, namespace: str, widgets: str) -> None:
    owner = api.ok(
        "POST", GADGETS, {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"generateName": "owner-"}}
    )
    ref = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gadget",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    child = widget("child")
    child["metadata"]["ownerReferences"] = [ref]
    api.ok("POST", widgets, child)
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    api.ok("POST", configmaps, {"metadata": {"name": "cm-child", "ownerReferences": [ref]}})
    api.ok("POST", configmaps, {"metadata": {"name": "cm-free"}})
    api.ok("DELETE", f"{GADGETS}/{owner['metadata']['name']}")
    eventually_sync(lambda: api("GET", f"{widgets}/child")[0] == 404)
    eventually_sync(lambda: api("GET", f"{configmaps}/cm-child")[0] == 404)
    assert api("GET", f"{configmaps}/cm-free")[0] == 200


def test_dependent_with_a_remaining_owner_survives(api: Api, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    owners = [api.ok("POST", configmaps, {"metadata": {"name": f"owner-{i}"}}) for i in range(2)]
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
        for o in owners
    ]
    api.ok("POST", configmaps, {"metadata": {"name": "shared", "ownerReferences": refs}})
    api.ok("DELETE", f"{configmaps}/owner-0")
    time.sleep(0.3)
    assert api("GET", f"{configmaps}/shared")[0] == 200
    api.ok("DELETE", f"{configmaps}/owner-1")
    eventually_sync(lambda: api("GET", f"{configmaps}/shared")[0] == 404)


def test_orphan_propagation_keeps_dependents(api: Api, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = api.ok("POST", configmaps, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    api.ok("POST", configmaps, {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    api.ok("DELETE", f"{configmaps}/owner", {"propagationPolicy": "Orphan"})
    eventually_sync(lambda: not api.ok("GET", f"{configmaps}/kept")["metadata"].get("ownerReferences"))
    assert api("GET", f"{configmaps}/owner")[0] == 404


def test_dependent_of_a_missing_owner_is_collected(api: Api, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}
    api.ok("POST", configmaps, {"metadata": {"name": "dangling", "ownerReferences": [ref]}})
    eventually_sync(lambda: api("GET", f"{configmaps}/dangling")[0] == 404, within=60)


def test_no_new_finalizer_on_an_object_being_deleted(api: Api, widgets: str) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    api.ok("POST", widgets, body)
    api.ok("DELETE", f"{widgets}/w1")
    add = {"metadata": {"finalizers": ["example.com/keep", "x"]}}
    status, answer = api("PATCH", f"{widgets}/w1", add, "application/merge-patch+json")
    assert status == 422 and answer["reason"] == "Invalid"
    assert answer["message"] == (
        'Widget.testing.gpufleet.io "w1" is invalid: metadata.finalizers: Forbidden: '
        'no new finalizers can be added if the object is being deleted, found new finalizers []string{"x"}'
    )
    assert answer["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    # Removing finalizers is still allowed, and releases the object.
    api.ok("PATCH", f"{widgets}/w1", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert api("GET", f"{widgets}/w1")[0] == 404
