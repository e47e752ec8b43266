"""The shared `eventually`: what every suite's polling relies on, so its rules are pinned here."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.support.ports import free_port
from tests.support.waiting import eventually, eventually_sync


class Countdown:
    """A condition that comes true on the `after`-th call: by value, or by no longer asserting."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    def value(self) -> str | None:
        self.calls += 1
        return "done" if self.calls >= self.after else None

    def asserting(self) -> str:
        self.calls += 1
        assert self.calls >= self.after, f"only {self.calls} calls"
        return "done"

    async def value_async(self) -> str | None:
        return self.value()


async def test_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    assert await eventually(Countdown(3).value, interval=0.001) == "done"
    countdown = Countdown(3)
    assert await eventually(countdown.value_async, interval=0.001) == "done"
    assert countdown.calls == 3


async def test_an_assertion_error_means_not_yet() -> None:
    countdown = Countdown(4)
    assert await eventually(countdown.asserting, interval=0.001) == "done"
    assert countdown.calls == 4


async def test_time_up_raises_the_last_failure() -> None:
    with pytest.raises(AssertionError, match=r"not within 0.05s: .*only \d+ calls") as raised:
        await eventually(Countdown(10**9).asserting, within=0.05, interval=0.01)
    assert isinstance(raised.value.__cause__, AssertionError)


async def test_time_up_on_a_falsy_value_names_it_and_what_was_awaited() -> None:
    with pytest.raises(AssertionError, match=r"not within 0.05s: the widget \(last value: \[\]\)"):
        await eventually(lambda: [], within=0.05, interval=0.01, what="the widget")


async def test_other_errors_fail_at_once_unless_declared_retryable() -> None:
    def broken() -> bool:
        raise KeyError("bug in the check")

    started = time.monotonic()
    with pytest.raises(KeyError):
        await eventually(broken, within=5)
    assert time.monotonic() - started < 1

    flaky = iter([KeyError("not yet"), KeyError("not yet")])

    def recovering() -> bool:
        for error in flaky:
            raise error
        return True

    assert await eventually(recovering, interval=0.001, retrying=(KeyError,)) is True


async def test_a_check_slower_than_the_deadline_gets_one_more_call() -> None:
    countdown = Countdown(2)

    async def slow() -> str | None:
        await asyncio.sleep(0.1)  # the whole time allowed passes during the first call
        return countdown.value()

    assert await eventually(slow, within=0.05, interval=0) == "done"


def test_the_sync_variant_follows_the_same_rules() -> None:
    assert eventually_sync(Countdown(3).asserting, interval=0.001) == "done"
    with pytest.raises(AssertionError, match=r"not within 0.05s: .*last value: None"):
        eventually_sync(Countdown(10**9).value, within=0.05, interval=0.01)


def test_free_port_is_bindable_and_varies() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536
    assert len({free_port() for _ in range(5)}) > 1
