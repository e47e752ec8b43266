"""A malformed patch is the client's error: a 4xx with a Status, never a 5xx, and nothing changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import APPLY, Api, widget

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.mark.parametrize(
    ("content_type", "data", "status"),
    [
        (JSON_PATCH, [{"op": "replace", "path": "", "value": {"spec": {"size": 2}}}], 422),
        (JSON_PATCH, [{"op": "add", "path": "", "value": {}}], 422),
        (JSON_PATCH, [{"op": "remove", "path": ""}], 422),
        (JSON_PATCH, [{"op": "move", "from": "/spec", "path": ""}], 422),
        (JSON_PATCH, {"op": "replace", "path": "/spec/size", "value": 2}, 400),  # not a list
        (JSON_PATCH, [1, 2], 400),
        (JSON_PATCH, [{"op": "frobnicate", "path": "/spec"}], 400),
        (JSON_PATCH, [{"op": "add"}], 422),  # no path
        (JSON_PATCH, [{"op": "add", "path": 7, "value": 1}], 422),
        (JSON_PATCH, [{"op": "add", "path": "spec", "value": 1}], 400),  # not a JSON pointer
        (JSON_PATCH, [{"op": "add", "path": "/spec/size/x", "value": 1}], 422),
        (JSON_PATCH, [{"op": "add", "path": "/metadata/finalizers/٣", "value": "x"}], 422),
        (JSON_PATCH, [{"op": "copy", "path": "/spec/x"}], 422),  # no from
        (JSON_PATCH, [{"op": "replace", "path": "/metadata", "value": "m"}], 400),
        (JSON_PATCH, [{"op": "add", "path": "/metadata/labels", "value": ["a"]}], 400),
        (MERGE, [1, 2], 400),
        (MERGE, "a string", 400),
        (MERGE, None, 400),
        (MERGE, {"metadata": {"finalizers": "x"}}, 400),
        (MERGE, {"spec": {"size": "big"}}, 422),
        (STRATEGIC, {"spec": {"size": 2}}, 415),  # custom resources take no strategic merge
        ("application/json", {"spec": {"size": 2}}, 415),
        ("text/plain", {"spec": {"size": 2}}, 415),
        (None, {"spec": {"size": 2}}, 415),
    ],
)
def test_malformed_patches_are_refused(
    api: Api, widgets: str, content_type: str | None, data: Any, status: int
) -> None:
    before = api.ok("POST", widgets, widget("w1"))
    answer_status, answer = api.raw("PATCH", f"{widgets}/w1", json.dumps(data).encode(), content_type)
    assert answer_status == status, answer
    assert answer["kind"] == "Status" and answer["code"] == status
    assert api.ok("GET", f"{widgets}/w1") == before


@pytest.mark.parametrize("data", [b"{", b"\xff\xfe", b"[" * 100_000, b'{"a": 1} trailing'])
@pytest.mark.parametrize("content_type", [JSON_PATCH, MERGE])
def test_invalid_json_is_a_bad_request(api: Api, widgets: str, content_type: str, data: bytes) -> None:
    before = api.ok("POST", widgets, widget("w1"))
    status, answer = api.raw("PATCH", f"{widgets}/w1", data, content_type)
    assert status == 400 and answer["reason"] == "BadRequest"
    assert api.ok("GET", f"{widgets}/w1") == before


def test_invalid_delete_options_are_a_bad_request(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    assert api.raw("DELETE", f"{widgets}/w1", b"{", "application/json")[0] == 400
    assert api.raw("DELETE", f"{widgets}/w1", b"[]", "application/json")[0] == 400
    assert api.ok("GET", f"{widgets}/w1")["metadata"]["name"] == "w1"


# ----- property: whatever the body, never a 5xx, and a 4xx changes nothing -----------------------------------

_SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=6)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
_POINTERS = st.sampled_from(
    [
        "",
        "/",
        "/spec",
        "/spec/size",
        "/spec/mode",
        "/spec/labels/a",
        "/spec/extra/k",
        "/spec/ports/0",
        "/spec/tags/-",
        "/metadata",
        "/metadata/name",
        "/metadata/labels",
        "/metadata/labels/x",
        "/metadata/finalizers",
        "/metadata/finalizers/-",
        "/metadata/finalizers/0",
        "/metadata/ownerReferences",
        "/metadata/managedFields",
        "/status",
        "/kind",
        "/apiVersion",
        "/a~1b/~0",
        "/spec/size/0",
        "/spec/labels/01",
        "nope",
    ]
)
_OPERATION = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"]) | _JSON},
    optional={"path": _POINTERS | _JSON, "from": _POINTERS | _JSON, "value": _JSON},
)
_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["testing.gpufleet.io/v1", "v1"]) | _JSON,
        "kind": st.sampled_from(["Widget", "Gadget"]) | _JSON,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["w1", "other"]) | _JSON,
                "labels": st.dictionaries(st.text(max_size=4), _SCALARS, max_size=2) | _JSON,
                "finalizers": st.lists(st.text(max_size=4), max_size=2) | _JSON,
                "managedFields": _JSON,
                "resourceVersion": _JSON,
            },
        )
        | _JSON,
        "spec": st.fixed_dictionaries(
            {},
            optional={"size": st.integers(-5, 70) | _JSON, "mode": _JSON, "ports": _JSON, "tags": _JSON},
        )
        | _JSON,
        "status": _JSON,
    },
)
_BODIES = (
    st.lists(_OPERATION, max_size=4).map(json.dumps).map(str.encode)
    | (_OBJECTS | _JSON).map(json.dumps).map(str.encode)
    | st.binary(max_size=24)
)
_CONTENT_TYPES = st.sampled_from([JSON_PATCH, MERGE, STRATEGIC, APPLY, "application/json", "text/plain", None])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_BODIES, content_type=_CONTENT_TYPES, manager=st.sampled_from([None, "fuzzer"]), subresource=st.booleans())
def test_no_patch_body_is_a_server_error(
    api: Api, widgets: str, data: bytes, content_type: str | None, manager: str | None, subresource: bool
) -> None:
    path = f"{widgets}/w1"
    status, before = api("GET", path)
    if status == 404:
        before = api.ok("POST", widgets, widget("w1"))
    try:
        status, answer = api.raw(
            "PATCH", path + ("/status" if subresource else ""), data, content_type, fieldManager=manager
        )
        assert status < 500, answer
        if status >= 400:
            assert answer["kind"] == "Status" and answer["code"] == status, answer
            assert api.ok("GET", path) == before
        else:
            assert answer["metadata"]["name"] == "w1"
    finally:
        api("PATCH", path, {"metadata": {"finalizers": None}}, MERGE)  # never leave the namespace stuck
