"""PATCH chosen by Content-Type: merge, JSON (with test), strategic."""

from __future__ import annotations

from .helpers import Api, widget

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def test_merge_patch_merges_and_deletes_with_null(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", labels={"a": "1", "b": "2"}))
    patched = api.ok("PATCH", f"{widgets}/w1", {"spec": {"labels": {"a": None, "c": "3"}}}, MERGE)
    assert patched["spec"]["labels"] == {"b": "2", "c": "3"}
    assert patched["spec"]["size"] == 1


def test_json_patch_with_test_ops(api: Api, widgets: str) -> None:
    created = api.ok("POST", widgets, widget("w1"))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
        {"op": "replace", "path": "/spec/size", "value": 5},
    ]
    patched = api.ok("PATCH", f"{widgets}/w1", ops, JSON_PATCH)
    assert patched["metadata"]["finalizers"] == ["example.com/f"] and patched["spec"]["size"] == 5
    status, body = api("PATCH", f"{widgets}/w1", ops, JSON_PATCH)  # the test op now fails
    assert status == 422 and body["kind"] == "Status"
    cleanup = [{"op": "remove", "path": "/metadata/finalizers"}]
    assert "finalizers" not in api.ok("PATCH", f"{widgets}/w1", cleanup, JSON_PATCH)["metadata"]


def test_strategic_merge_on_builtins_but_not_custom(api: Api, namespace: str, widgets: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    api.ok("POST", configmaps, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    patched = api.ok("PATCH", f"{configmaps}/cm", {"data": {"b": "2"}}, STRATEGIC)
    assert patched["data"] == {"a": "1", "b": "2"}
    api.ok("POST", widgets, widget("w1"))
    status, body = api("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, STRATEGIC)
    assert status == 415 and body["kind"] == "Status"
