"""Request observers: who made which request, and how it was answered (for black-box tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from kube_emulator import Emulator, RequestRecord

from .helpers import widget

pytestmark = pytest.mark.emulator


async def _send(url: str, method: str, path: str, token: str | None, body: object = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}{path}", json=body, headers=headers) as reply,
    ):
        await reply.read()
        return reply.status


async def test_observers_see_method_path_user_and_status(kube: Any, emulator: Emulator, widgets: str) -> None:
    url: str = kube.url
    emulator.add_user("alice-token", "alice")
    seen: list[RequestRecord] = []
    stop = emulator.observe(seen.append)
    try:
        started = time.monotonic()
        assert await _send(url, "POST", widgets, "alice-token", widget("w1")) == 201
        assert await _send(url, "GET", f"{widgets}/w1", "someone-else") == 200
        assert await _send(url, "GET", f"{widgets}/nope", None) == 404
        emulator.fail_next(1, status=503)
        assert await _send(url, "PATCH", f"{widgets}/w1", "alice-token", {"spec": {"size": 2}}) == 503
    finally:
        stop()
    assert await _send(url, "GET", f"{widgets}/w1", "alice-token") == 200  # no longer observed
    assert [(r.method, r.path, r.user, r.status) for r in seen] == [
        ("POST", widgets, "alice", 201),
        ("GET", f"{widgets}/w1", None, 200),
        ("GET", f"{widgets}/nope", None, 404),
        ("PATCH", f"{widgets}/w1", "alice", 503),
    ]
    assert all(started <= r.at <= time.monotonic() for r in seen)
    assert [r.at for r in seen] == sorted(r.at for r in seen)


async def test_a_failing_observer_does_not_fail_the_request(kube: Any, emulator: Emulator, widgets: str) -> None:
    def broken(record: RequestRecord) -> None:
        raise RuntimeError("observer bug")

    stop = emulator.observe(broken)
    try:
        assert await _send(kube.url, "POST", widgets, None, widget("w1")) == 201
    finally:
        stop()
    stop()  # stopping twice is harmless


async def test_a_client_that_gives_up_is_recorded_as_499(kube: Any, emulator: Emulator, widgets: str) -> None:
    seen: list[RequestRecord] = []
    stop = emulator.observe(seen.append)
    try:
        with emulator.unavailable("hang"):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(_send(kube.url, "GET", widgets, None), 0.3)
            for _ in range(250):  # the server notices the disconnect a moment later
                if seen:
                    break
                await asyncio.sleep(0.02)
    finally:
        stop()
    assert [(r.method, r.status) for r in seen] == [("GET", 499)]
