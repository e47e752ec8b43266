"""The operator's work queue: a key waits once, one worker holds it at a time, failures come back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from gpufleet.controller import workqueue


@contextlib.asynccontextmanager
async def running(queue: workqueue.WorkQueue[str]) -> AsyncIterator[workqueue.WorkQueue[str]]:
    task = asyncio.create_task(queue.run())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def recorder(
    work: Callable[[str], Awaitable[None]] | None = None,
) -> tuple[list[str], Callable[[str], Awaitable[None]]]:
    done: list[str] = []

    async def process(key: str) -> None:
        if work is not None:
            await work(key)
        done.append(key)

    return done, process


async def test_a_key_added_many_times_while_waiting_is_worked_on_once() -> None:
    done, process = recorder()
    queue = workqueue.WorkQueue("test", process, workers=2)
    for _ in range(100):
        queue.add("a")
    queue.add("b")
    async with running(queue):
        await asyncio.wait_for(queue.idle(), 5)
    assert sorted(done) == ["a", "b"]


async def test_a_key_added_while_being_worked_on_is_worked_on_again_never_concurrently() -> None:
    inside: set[str] = set()
    overlaps: list[str] = []
    release = asyncio.Event()

    async def slow(key: str) -> None:
        if key in inside:
            overlaps.append(key)
        inside.add(key)
        await release.wait()
        inside.discard(key)

    done, process = recorder(slow)
    queue = workqueue.WorkQueue("test", process, workers=4)
    async with running(queue):
        queue.add("a")
        await asyncio.sleep(0.05)  # a worker holds "a" now
        queue.add("a")  # new input arrived meanwhile: the latest state must be acted on
        queue.add("a")
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(queue.idle(), 5)
    assert done == ["a", "a"] and overlaps == []


async def test_a_failed_key_comes_back_with_backoff_until_it_succeeds() -> None:
    attempts: list[float] = []

    async def flaky(key: str) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise ConnectionResetError("the API went away")

    done, process = recorder(flaky)
    queue = workqueue.WorkQueue("test", process, workers=1, first_retry=0.05, max_retry=0.2)
    async with running(queue):
        queue.add("verdict")
        await asyncio.wait_for(queue.idle(), 5)
    assert done == ["verdict"] and len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.025  # not retried in a hot loop


async def test_the_workers_bound_how_many_keys_are_worked_on_at_once() -> None:
    inside = 0
    most = 0

    async def work(key: str) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.01)
        inside -= 1

    done, process = recorder(work)
    queue = workqueue.WorkQueue("test", process, workers=8)
    for index in range(200):
        queue.add(f"host-{index}")
    async with running(queue):
        await asyncio.wait_for(queue.idle(), 10)
    assert len(done) == 200 and most == 8
