"""Waiting for a condition that becomes true asynchronously: one `eventually` for every suite.

Everything these tests observe settles a moment after the action that causes it (a watch
event, a status patch, a heartbeat deadline), so assertions poll. One implementation keeps the
rules the same everywhere: a check may be sync or async, may return a value (truthy = done) or
raise AssertionError (= not yet), and a timeout fails with the last thing the check said rather
than a bare "timed out", because that last failure is what explains a red test.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: What a check may raise to say "not yet"; anything else is a bug in the check and fails at once.
RETRYING: tuple[type[Exception], ...] = (AssertionError,)


def _describe(check: Callable[..., object], what: str) -> str:
    return what or getattr(check, "__qualname__", repr(check))


def _timed_out(
    check: Callable[..., object], what: str, within: float, result: object, error: Exception | None
) -> AssertionError:
    last = f"last failure: {error}" if error is not None else f"last value: {result!r}"
    return AssertionError(f"not within {within:g}s: {_describe(check, what)} ({last})")


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    within: float = ...,
    interval: float = ...,
    *,
    what: str = ...,
    retrying: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    within: float = ...,
    interval: float = ...,
    *,
    what: str = ...,
    retrying: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    within: float = 10.0,
    interval: float = 0.05,
    *,
    what: str = "",
    retrying: tuple[type[Exception], ...] = RETRYING,
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; return that.

    `check` failing with one of `retrying` (AssertionError by default) counts as "not yet".
    After `within` seconds the last failure or falsy value is raised as an AssertionError
    (chained to the last failure). The check always runs at least once, and once more after the
    deadline has passed, so a slow event loop cannot fail a condition that has come true.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    result: object = None
    while True:
        expired = loop.time() >= deadline
        error: Exception | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except retrying as failure:
            error = failure
        if expired:
            raise _timed_out(check, what, within, result, error) from error
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0.0)))


def eventually_sync(
    check: Callable[[], T],
    within: float = 10.0,
    interval: float = 0.05,
    *,
    what: str = "",
    retrying: tuple[type[Exception], ...] = RETRYING,
) -> T:
    """`eventually` for code without an event loop (tests driving subprocesses or a sync client)."""
    deadline = time.monotonic() + within
    result: Any = None
    while True:
        expired = time.monotonic() >= deadline
        error: Exception | None = None
        try:
            result = check()
            if result:
                return result  # type: ignore[no-any-return]
        except retrying as failure:
            error = failure
        if expired:
            raise _timed_out(check, what, within, result, error) from error
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
