"""Events and Leases are ordinary objects with optimistic concurrency (Kopf needs both)."""

from __future__ import annotations

import copy

from .helpers import Api


def test_core_and_events_k8s_io_events(api: Api, namespace: str) -> None:
    core = f"/api/v1/namespaces/{namespace}/events"
    event = {
        "metadata": {"generateName": "ev-"},
        "reason": "Tested",
        "message": "hello",
        "type": "Normal",
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace},
    }
    created = api.ok("POST", core, event)
    assert created["reason"] == "Tested"
    assert [e["message"] for e in api.ok("GET", core)["items"]] == ["hello"]
    new = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    modern = {
        "metadata": {"name": "ev2"},
        "reason": "Tested",
        "note": "hi",
        "type": "Normal",
        "action": "Test",
        "reportingController": "tests",
        "reportingInstance": "tests",
        "eventTime": "2026-01-01T00:00:00.000000Z",
    }
    assert api.ok("POST", new, modern)["note"] == "hi"


def test_an_objects_events_are_found_by_field_selector(api: Api, namespace: str) -> None:
    """What kubectl describe sends to show an object's Events."""
    core = f"/api/v1/namespaces/{namespace}/events"
    for name, reason in [("x", "AboutX"), ("y", "AboutY")]:
        api.ok(
            "POST",
            core,
            {
                "metadata": {"generateName": "ev-"},
                "reason": reason,
                "type": "Warning" if name == "y" else "Normal",
                "involvedObject": {"kind": "Host", "name": name, "uid": f"uid-{name}"},
            },
        )
    selector = "involvedObject.name=x,involvedObject.namespace=,involvedObject.kind=Host,involvedObject.uid=uid-x"
    assert [e["reason"] for e in api.ok("GET", "/api/v1/events", fieldSelector=selector)["items"]] == ["AboutX"]
    assert [e["reason"] for e in api.ok("GET", core, fieldSelector="type!=Normal")["items"]] == ["AboutY"]


def test_an_unknown_field_label_is_a_400(api: Api, namespace: str) -> None:
    status, body = api("GET", f"/api/v1/namespaces/{namespace}/events", fieldSelector="spec.color=red")
    assert status == 400 and "field label not supported" in body["message"]


def test_lease_optimistic_concurrency(api: Api, namespace: str) -> None:
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    lease = api.ok(
        "POST", leases, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    )
    mine = copy.deepcopy(lease)
    mine["spec"]["holderIdentity"] = "b"
    api.ok("PUT", f"{leases}/leader", mine)
    theirs = copy.deepcopy(lease)
    theirs["spec"]["holderIdentity"] = "c"
    status, body = api("PUT", f"{leases}/leader", theirs)
    assert status == 409 and body["reason"] == "Conflict"
    assert api.ok("GET", f"{leases}/leader")["spec"]["holderIdentity"] == "b"
