"""Kopf, run for real against the API under test: handlers run exactly once, finalizers work."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from .helpers import Api, widget

HANDLERS = pathlib.Path(__file__).with_name("kopf_handlers.py")


def _wait(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_create_and_delete_handlers_run_exactly_once(
    api: Api, namespace: str, widgets: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("GPUFLEET_KOPF_TEST_LOG", str(log))
    args = ["run", "--standalone", "--namespace", namespace, str(HANDLERS)]
    path = f"{widgets}/w-kopf"
    with KopfRunner(args, timeout=30) as runner:
        api.ok("POST", widgets, widget("w-kopf"))
        _wait(lambda: api.ok("GET", path).get("status", {}).get("created") == {"seen": True})
        assert api.ok("GET", path)["metadata"].get("finalizers")  # Kopf's, for the delete handler
        time.sleep(1.0)  # give a duplicate call the chance to happen
        api.ok("DELETE", path)
        _wait(lambda: api("GET", path)[0] == 404)
    assert runner.exception is None, runner.output
    assert log.read_text().splitlines() == [f"created {namespace}/w-kopf", f"deleted {namespace}/w-kopf"]
