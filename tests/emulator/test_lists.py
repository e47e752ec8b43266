"""Lists: label and field selectors, pagination."""

from __future__ import annotations

import pytest

from .helpers import Api, widget


@pytest.fixture
def labelled(api: Api, widgets: str) -> str:
    for name, labels in [("a", {"tier": "gold", "zone": "x"}), ("b", {"tier": "silver"}), ("c", {})]:
        body = widget(name)
        body["metadata"]["labels"] = labels
        api.ok("POST", widgets, body)
    return widgets


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=gold", {"a"}),
        ("tier==silver", {"b"}),
        ("tier!=gold", {"b", "c"}),
        ("tier in (gold,silver)", {"a", "b"}),
        ("tier notin (gold)", {"b", "c"}),
        ("tier", {"a", "b"}),
        ("!tier", {"c"}),
        ("tier=gold,zone=x", {"a"}),
    ],
)
def test_label_selectors(api: Api, labelled: str, selector: str, expected: set[str]) -> None:
    items = api.ok("GET", labelled, labelSelector=selector)["items"]
    assert {item["metadata"]["name"] for item in items} == expected


def test_field_selectors(api: Api, labelled: str, namespace: str) -> None:
    items = api.ok("GET", labelled, fieldSelector="metadata.name=b")["items"]
    assert [i["metadata"]["name"] for i in items] == ["b"]
    items = api.ok("GET", labelled, fieldSelector=f"metadata.namespace={namespace},metadata.name!=b")["items"]
    assert {i["metadata"]["name"] for i in items} == {"a", "c"}


def test_limit_and_continue(api: Api, labelled: str) -> None:
    first = api.ok("GET", labelled, limit=2)
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    rest = api.ok("GET", labelled, limit=2, **{"continue": first["metadata"]["continue"]})
    names = [i["metadata"]["name"] for i in first["items"] + rest["items"]]
    assert sorted(names) == ["a", "b", "c"] and not rest["metadata"].get("continue")
