"""The status subresource keeps .status and the rest of the object apart, both ways."""

from __future__ import annotations

from .helpers import Api, widget


def test_main_resource_ignores_status(api: Api, widgets: str) -> None:
    body = widget("w1")
    body["status"] = {"phase": "Set-by-create"}
    created = api.ok("POST", widgets, body)
    assert "status" not in created
    patched = api.ok("PATCH", f"{widgets}/w1", {"status": {"phase": "X"}}, "application/merge-patch+json")
    assert "status" not in patched


def test_status_writes_change_only_status(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    patch = {"spec": {"size": 9}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready"}}
    patched = api.ok("PATCH", f"{widgets}/w1/status", patch, "application/merge-patch+json")
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["size"] == 1
    assert "labels" not in patched["metadata"]
    fetched = api.ok("GET", f"{widgets}/w1")
    fetched["status"] = {"phase": "Replaced"}
    replaced = api.ok("PUT", f"{widgets}/w1/status", fetched)
    assert replaced["status"] == {"phase": "Replaced"}
    spec_put = api.ok("GET", f"{widgets}/w1")
    spec_put["spec"]["size"] = 2
    spec_put["status"] = {"phase": "Ignored"}
    after = api.ok("PUT", f"{widgets}/w1", spec_put)
    assert after["status"] == {"phase": "Replaced"} and after["spec"]["size"] == 2
