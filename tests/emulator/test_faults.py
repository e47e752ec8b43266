"""Fault hooks: injected errors, outages, dropped watches, compaction, restarts."""

from __future__ import annotations

import threading
import time

import pytest

from kube_emulator import EmulatedCluster, Emulator, RequestInfo

from .helpers import Api, widget

pytestmark = pytest.mark.emulator


def test_fail_next(api: Api, emulator: Emulator, widgets: str) -> None:
    emulator.fail_next(2, status=503, predicate=lambda r: r.method == "GET")
    assert api("GET", widgets)[0] == 503
    assert api("POST", widgets, widget("w1"))[0] == 201
    status, body = api("GET", widgets)
    assert status == 503 and body["kind"] == "Status"
    assert api("GET", widgets)[0] == 200


def test_fail_when_until_removed(api: Api, emulator: Emulator, widgets: str) -> None:
    remove = emulator.faults.fail_when(lambda r: r.path.endswith("/w1"), status=500)
    api.ok("POST", widgets, widget("w1"))
    assert api("GET", f"{widgets}/w1")[0] == 500
    remove()
    assert api("GET", f"{widgets}/w1")[0] == 200
    assert RequestInfo("GET", "/", {}).method == "GET"


def test_unavailable_answers_503(api: Api, emulator: Emulator, widgets: str) -> None:
    with emulator.unavailable():
        assert api("GET", widgets)[0] == 503
    assert api("GET", widgets)[0] == 200


def test_unavailable_hang_delays_until_the_outage_ends(api: Api, emulator: Emulator, widgets: str) -> None:
    with emulator.unavailable("hang"):
        timer = threading.Timer(0.5, lambda: setattr(emulator.faults, "outage", None))
        timer.start()
        started = time.monotonic()
        assert api("GET", widgets)[0] == 200
        assert time.monotonic() - started >= 0.4


def test_drop_watches_ends_streams(api: Api, emulator: Emulator, widgets: str) -> None:
    rv = api.ok("GET", widgets)["metadata"]["resourceVersion"]
    threading.Timer(0.3, emulator.drop_watches).start()
    started = time.monotonic()
    assert api.watch(widgets, count=1, timeout=10, resourceVersion=rv) == []
    assert time.monotonic() - started < 5


def test_restart_keeps_state_and_url(api: Api, emulated_cluster: EmulatedCluster, widgets: str) -> None:
    api.ok("POST", widgets, widget("w1"))
    url = emulated_cluster.url
    emulated_cluster.restart()
    assert emulated_cluster.url == url
    assert api.ok("GET", f"{widgets}/w1")["metadata"]["name"] == "w1"
