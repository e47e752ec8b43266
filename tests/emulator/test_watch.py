"""Watches: event types, resuming from a resourceVersion, selectors, timeouts, 410 Expired."""

from __future__ import annotations

import threading
import time

import pytest

from kube_emulator import Emulator

from .helpers import Api, widget

MERGE = "application/merge-patch+json"


def test_watch_without_version_lists_existing_as_added(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    api.ok("POST", widgets, widget("w2"))
    events = api.watch(widgets, count=2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1"), ("ADDED", "w2")]


def test_watch_flag_as_python_clients_spell_it(api: Api, widgets: str) -> None:
    """Go's ParseBool reads "True" (what kubernetes_asyncio sends for watch=True) as true."""
    api.ok("POST", widgets, widget("w1"))
    events = api.watch(widgets, count=1, watch="True")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1")]


def test_resume_replays_changes_after_the_version(api: Api, widgets: str) -> None:
    listed = api.ok("GET", widgets)
    api.ok("POST", widgets, widget("w1"))
    api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, MERGE)
    api.ok("DELETE", f"{widgets}/w1")
    events = api.watch(widgets, count=3, resourceVersion=listed["metadata"]["resourceVersion"])
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)


def test_live_events_with_label_selector(api: Api, widgets: str) -> None:
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]

    def later() -> None:
        time.sleep(0.3)
        for name, tier in [("x", "other"), ("y", "gold")]:
            body = widget(name)
            body["metadata"]["labels"] = {"tier": tier}
            api.ok("POST", widgets, body)

    thread = threading.Thread(target=later)
    thread.start()
    events = api.watch(widgets, count=1, resourceVersion=rv, labelSelector="tier=gold")
    thread.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "y")]


def test_cluster_wide_watch_sees_namespaced_objects(api: Api, widgets: str, namespace: str) -> None:
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    api.ok("POST", widgets, widget("w1"))
    from .helpers import GROUP

    events = api.watch(
        f"/apis/{GROUP}/v1/widgets", count=1, resourceVersion=rv, fieldSelector=f"metadata.namespace={namespace}"
    )
    assert events[0]["object"]["metadata"]["namespace"] == namespace


def test_timeout_seconds_ends_the_stream(api: Api, widgets: str) -> None:
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    started = time.monotonic()
    assert api.watch(widgets, count=1, timeout=1, resourceVersion=rv) == []
    assert time.monotonic() - started < 4


@pytest.mark.emulator
def test_compacted_version_is_expired(api: Api, widgets: str, emulator: Emulator) -> None:
    rv = api.ok("POST", widgets, widget("w1"))["metadata"]["resourceVersion"]
    api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, MERGE)
    emulator.compact()
    events = api.watch(widgets, count=1, resourceVersion=rv)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


@pytest.mark.emulator
def test_bookmarks(api: Api, widgets: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_emulator import watching

    monkeypatch.setattr(watching, "BOOKMARK_INTERVAL", 0.2)
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    events = api.watch(widgets, count=1, timeout=2, resourceVersion=rv, allowWatchBookmarks="true")
    assert events[0]["type"] == "BOOKMARK" and events[0]["object"]["metadata"]["resourceVersion"]


def test_objects_entering_and_leaving_a_selection(api: Api, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    api.ok("PATCH", f"{widgets}/w1", {"metadata": {"labels": {"tier": "gold"}}}, MERGE)
    api.ok("PATCH", f"{widgets}/w1", {"spec": {"size": 2}}, MERGE)
    api.ok("PATCH", f"{widgets}/w1", {"metadata": {"labels": {"tier": None}}}, MERGE)
    events = api.watch(widgets, count=3, resourceVersion=rv, labelSelector="tier=gold")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
