"""NVML calls with a deadline: a hung driver must turn into "unknown", not into silence.

NVML calls are blocking C calls. A sick driver (a GPU fallen off the bus mid-call, a driver stuck
in a kernel call) can keep one from ever returning, and nothing in Python can interrupt it. So the
calls run in one dedicated thread, and the event loop waits for each only until its deadline; a
call past its deadline raises `Hung` to the caller while it goes on blocking its thread.

While that call is stuck, every later call is refused at once with `Hung` rather than queued
behind it or given a thread of its own: a driver that hangs one call would hang the next one too,
and a thread per try would pile up stuck threads (each with its stack and malloc arena) for as
long as the driver stays hung. So there is at most one stuck call, in the one thread; when it
returns, its result (now stale) is dropped and calls go through again.

The thread is a daemon thread, unlike a `ThreadPoolExecutor`'s: the interpreter joins executor
threads at exit, and a thread stuck in the driver would then keep the agent from ever exiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

THREAD_NAME = "nvml"


class Hung(Exception):
    """An NVML call did not return within its deadline (`timed_out`), or one still has not (refused)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        """True for the call that just ran past its deadline; False for a call refused because of it."""


@dataclasses.dataclass
class _Job:
    function: Callable[[], Any]
    future: concurrent.futures.Future[Any]
    name: str
    started: float
    finished: float | None = None


class Watchdog:
    """Runs blocking calls one at a time in one daemon thread, each with a deadline."""

    def __init__(self, deadline_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: _Job | None = None
        self._hung: _Job | None = None

    @property
    def stuck(self) -> bool:
        """Whether a call has outlived its deadline and still not returned."""
        hung = self._hung
        return hung is not None and not hung.future.done()

    async def call(self, function: Callable[[], _T], name: str = "") -> _T:
        """`function()` in the NVML thread; its result or exception, or `Hung` past the deadline."""
        name = name or getattr(function, "__name__", "NVML call")
        last = self._last
        if last is not None and not last.future.done():
            # Only one caller awaits at a time, so an unfinished call here is one that outlived its
            # deadline (or whose caller was cancelled): refuse rather than queue behind it.
            stuck = self._clock() - last.started
            raise Hung(f"an NVML call ({last.name}) has not returned for {stuck:.0f}s", timed_out=False)
        hung, self._hung = self._hung, None
        if hung is not None and hung.finished is not None:
            logger.info("the stuck NVML call (%s) returned after %.0fs", hung.name, hung.finished - hung.started)
        job = _Job(function, concurrent.futures.Future(), name, self._clock())
        self._last = job
        self._start_thread()
        self._jobs.put(job)
        waiter = asyncio.wrap_future(job.future)
        # A result that comes after the deadline (or after the caller was cancelled) is stale and
        # nobody reads it; fetching it here keeps asyncio from logging it as a lost exception.
        waiter.add_done_callback(lambda late: late.cancelled() or late.exception())
        done, _ = await asyncio.wait({waiter}, timeout=self.deadline_seconds)
        if waiter in done:
            result: _T = waiter.result()
            return result
        self._hung = job
        raise Hung(f"NVML call {name} did not return within {self.deadline_seconds:g}s (driver hung?)", timed_out=True)

    def close(self) -> None:
        """Let the thread end after its current call; a stuck thread is left to die with the process."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.function()
            except BaseException as error:  # handed to the awaiting caller, whatever it is
                job.finished = self._clock()
                job.future.set_exception(error)
            else:
                job.finished = self._clock()
                job.future.set_result(result)
