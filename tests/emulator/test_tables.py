"""Server-side printing: lists and gets asked for as a Table carry the CRD's printer columns."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
from typing import Any

import pytest

from kube_emulator import tables

from .helpers import GADGETS, TABLE, Api, widget

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


def test_a_table_watch_sends_one_row_tables(api: Api, widgets: str) -> None:
    """kube sends the column definitions with the first event only (kubectl get -w prints them once)."""
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    api.ok("POST", widgets, widget("w1", size=2))
    api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 7}}, "application/merge-patch+json")
    events = api.watch(widgets, count=2, accept=TABLE, resourceVersion=rv)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    first, second = (e["object"] for e in events)
    assert first["kind"] == second["kind"] == "Table"
    assert [c["name"] for c in first["columnDefinitions"]] == ["Name", "Size", "Mode", "Seen"]
    assert second["columnDefinitions"] is None
    assert second["rows"][0]["cells"] == ["w1", 7, "fast", None]
    assert second["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert second["metadata"]["resourceVersion"] == second["rows"][0]["object"]["metadata"]["resourceVersion"]


def test_a_table_watch_with_include_object(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", size=3))
    [event] = api.watch(widgets, count=1, accept=TABLE, includeObject="Object")
    assert event["type"] == "ADDED"
    row = event["object"]["rows"][0]
    assert row["cells"][:2] == ["w1", 3] and row["object"]["kind"] == "Widget"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_get_watch_prints_the_columns_of_updates(api: Api, kube: Any, namespace: str, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1", size=3))
    command = ["kubectl", "--kubeconfig", str(kube.kubeconfig), "get", "widgets", "-n", namespace, "-w"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=20).split() == ["NAME", "SIZE", "SEEN"]
        assert lines.get(timeout=20).split() == ["w1", "3"]
        api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 9}}, "application/merge-patch+json")
        assert lines.get(timeout=20).split() == ["w1", "9"]  # without the Table: "w1 <age>"
    finally:
        process.kill()
        process.wait(timeout=10)
