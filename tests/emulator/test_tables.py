"""Server-side printing: lists and gets asked for as a Table carry the CRD's printer columns."""

from __future__ import annotations

import re

import pytest

from kube_emulator import tables

from .helpers import GADGETS, Api, widget

AGE = re.compile(r"^\d+s$")


def test_a_list_table_has_name_then_the_crd_columns(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", size=3, seenAt="2020-01-01T00:00:00Z"))
    answer = api.table(widgets)
    assert answer["kind"] == "Table" and answer["apiVersion"] == "meta.k8s.io/v1"
    columns = [(c["name"], c["type"], c["priority"]) for c in answer["columnDefinitions"]]
    assert columns == [("Name", "string", 0), ("Size", "integer", 0), ("Mode", "string", 1), ("Seen", "date", 0)]
    [row] = answer["rows"]
    name, size, mode, seen = row["cells"]
    assert (name, size, mode) == ("w1", 3, "fast")
    assert re.fullmatch(r"\d+y\d*d?", seen), seen  # an age, not the timestamp
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "w1"
    assert answer["metadata"]["resourceVersion"]


def test_a_missing_field_is_an_empty_cell(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    assert api.table(widgets)["rows"][0]["cells"][3] is None


def test_a_get_answers_a_one_row_table(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", size=5))
    api.ok("POST", widgets, widget("w2", size=6))
    answer = api.table(f"{widgets}/w2")
    assert [row["cells"][:2] for row in answer["rows"]] == [["w2", 6]]


def test_without_printer_columns_a_table_shows_the_age(api: Api, test_crds: None) -> None:
    name = "g-table"
    api.ok("POST", GADGETS, {"apiVersion": "testing.gpufleet.io/v1", "kind": "Gadget", "metadata": {"name": name}})
    try:
        answer = api.table(GADGETS)
        assert [c["name"] for c in answer["columnDefinitions"]] == ["Name", "Age"]
        row = next(r for r in answer["rows"] if r["cells"][0] == name)
        assert AGE.match(row["cells"][1]), row
    finally:
        api("DELETE", f"{GADGETS}/{name}")


def test_include_object_controls_what_rows_carry(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", size=2))
    assert "object" not in api.table(widgets, includeObject="None")["rows"][0]
    whole = api.table(widgets, includeObject="Object")["rows"][0]["object"]
    assert whole["kind"] == "Widget" and whole["spec"]["size"] == 2


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (49 * 3600, "2d1h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_ages_read_as_kubectl_shows_them(seconds: float, shown: str) -> None:
    assert tables.human_duration(seconds) == shown
