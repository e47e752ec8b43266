"""Custom objects are pruned, defaulted and validated against the CRD's schema."""

from __future__ import annotations

import uuid

import pytest

from .helpers import Api, widget


def test_invalid_object_is_422_with_causes(api: Api, widgets: str) -> None:
    status, body = api("POST", widgets, widget("w1", size=0, address="10.0.0.300"))
    assert status == 422
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "Invalid"
    assert body["message"].startswith('Widget.testing.gpufleet.io "w1" is invalid:')
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert fields == {"spec.size", "spec.address"}


@pytest.mark.parametrize(
    "spec",
    [
        {"size": "one"},
        {"size": 100},
        {"size": 1, "mode": "warp"},
        {"size": 1, "name": "toolongname"},
        {"size": 1, "name": "UPPER"},
        {"size": 1, "seenAt": "yesterday"},
        {"size": 1, "labels": {"a": 1}},
        {},
    ],
)
def test_each_rule(api: Api, widgets: str, spec: dict[str, object]) -> None:
    body = widget("w1")
    body["spec"] = spec
    status, answer = api("POST", widgets, body)
    assert status == 422, answer
    assert answer["details"]["causes"][0]["field"].startswith("spec.")


def test_pruning_defaults_and_preserved_fields(api: Api, widgets: str) -> None:
    body = widget("w1", seenAt=None, extra={"anything": {"goes": [1]}}, unknown="dropped", mode=None, address=None)
    created = api.ok("POST", widgets, body)
    assert created["spec"] == {"size": 1, "mode": "fast", "seenAt": None, "extra": {"anything": {"goes": [1]}}}


def test_status_writes_are_validated_too(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    status, _ = api("PATCH", f"{widgets}/w1", {"spec": {"size": -1}}, "application/merge-patch+json")
    assert status == 422


def test_project_host_crd_validates_ip_addresses(api: Api, crds_installed: list[str]) -> None:
    import pathlib

    import yaml

    if "hosts.gpufleet.io" not in crds_installed:
        pytest.skip("crds/ has no Host CRD yet")
    sample = yaml.safe_load((pathlib.Path(__file__).parents[2] / "crds/samples/host.yaml").read_text())
    plural = "/apis/gpufleet.io/v1alpha1/hosts"
    cases = [("not-an-ip", 422), ("10.0.0.300", 422), ("fd00::1", 201), ("10.1.2.3", 201)]
    for index, (address, expected) in enumerate(cases):
        name = f"emulator-contract-host-{uuid.uuid4().hex[:6]}-{index}"
        sample["metadata"] = {"name": name}
        sample["spec"]["ipAddress"] = address
        status, body = api("POST", plural, sample)
        assert status == expected, body
        if status == 422:
            assert body["message"].startswith(f'Host.gpufleet.io "{name}" is invalid: ')
            assert "spec.ipAddress: Invalid value" in body["message"]
        else:
            api.ok("DELETE", f"{plural}/{name}")


def test_strict_field_validation_rejects_unknown_fields(api: Api, widgets: str) -> None:
    status, body = api("POST", widgets, widget("w1", unknown=1), fieldValidation="Strict")
    assert status == 400 and 'unknown field "spec.unknown"' in body["message"]
    api.ok("POST", widgets, widget("w1", unknown=1), fieldValidation="Ignore")
