"""A work queue with per-key deduplication and rate-limited retries, as client-go's workqueue.

Inputs only say *which* key needs work; a fixed pool of workers does it. A key is queued at most
once however often it is added, is worked on by one worker at a time, and if it is added while a
worker holds it, it is worked on again afterwards (so the latest state is always acted on). A
failed key goes back after a per-key jittered backoff, and its pending work is never dropped.

Why not a task per key: 10,000 hosts appearing at once (a restart, a relist) became 30,000
tasks and their frames at once, the start-up burst that set the operator's memory high-water
mark; a pool of workers bounds that, and the concurrency of API writes with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from gpufleet import backoff

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    """Keys waiting for `process`, run by `workers` concurrent workers once `run()` is started."""

    def __init__(
        self,
        name: str,
        process: Callable[[Key], Awaitable[None]],
        *,
        workers: int,
        first_retry: float = 0.2,
        max_retry: float = 5.0,
    ) -> None:
        self.name = name
        self._process = process
        self._workers = workers
        self._first_retry, self._max_retry = first_retry, max_retry
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._dirty: set[Key] = set()
        """Keys that need work: queued, or added again while being processed."""
        self._processing: set[Key] = set()
        self._failures: dict[Key, backoff.Backoff] = {}
        self._waiting: dict[Key, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        """Keys waiting or being worked on (a retry waiting for its backoff counts too)."""
        return len(self._dirty | self._processing | set(self._waiting))

    def add(self, key: Key) -> None:
        """Work on `key` soon; a no-op when it is already waiting."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._idle.clear()
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Work on `key` after `delay` seconds (a retry); an earlier plain `add` still wins."""
        if key in self._waiting:
            return
        self._idle.clear()
        self._waiting[key] = asyncio.get_running_loop().call_later(delay, self._retry_now, key)

    def forget(self, key: Key) -> None:
        """Reset the key's backoff: its last attempt succeeded, or its work no longer matters."""
        self._failures.pop(key, None)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        workers = [asyncio.create_task(self._worker(), name=f"{self.name} worker") for _ in range(self._workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for handle in self._waiting.values():
                handle.cancel()

    async def idle(self) -> None:
        """Return once nothing is queued, being worked on or waiting for a retry."""
        await self._idle.wait()

    def _retry_now(self, key: Key) -> None:
        self._waiting.pop(key, None)
        self.add(key)
        self._check_idle()

    async def _next(self) -> Key:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            try:
                await self._process(key)
                self.forget(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                retry = self._failures.setdefault(key, backoff.Backoff(first=self._first_retry, cap=self._max_retry))
                delay = retry.next(error)
                if backoff.is_transient(error):
                    logger.warning("%s %s failed (retrying in %.2gs): %s", self.name, key, delay, _describe(error))
                else:
                    logger.exception("%s %s failed (retrying in %.2gs)", self.name, key, delay)
                self.add_after(key, delay)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._queue.put_nowait(key)
                self._check_idle()

    def _check_idle(self) -> None:
        if not (self._dirty or self._processing or self._waiting):
            self._idle.set()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
