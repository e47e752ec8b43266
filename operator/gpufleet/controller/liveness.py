"""Liveness from heartbeats, judged by the operator's own clock, with one deadline queue for all hosts.

A heartbeat is *observed* when a host's `status.lastHeartbeat` differs from the value last seen,
whatever the timestamp says: it was written by another machine's clock, so comparing it with ours
would let clock skew flip hosts (this is how the node lifecycle controller judges Nodes). The host
is then online until `now + grace` on our monotonic clock.

Expiry is a heap of deadlines with lazy invalidation: a newer heartbeat pushes a new entry and
leaves the old one to be skipped when popped. One task sleeps until the earliest deadline, so the
cost grows with heartbeats, not with hosts x time, and no host is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock in seconds; injected so that tests simulate time instead of sleeping."""

    def __call__(self) -> float: ...


@dataclasses.dataclass
class _Tracked:
    heartbeat: str | None
    """`status.lastHeartbeat` as last seen, compared for equality only."""
    observed_at: float | None = None
    """Our monotonic time when a heartbeat was last observed (None: none since we started)."""
    deadline: float | None = None
    """Our monotonic time at which the host goes offline (None: it is offline)."""


class Liveness:
    """Which hosts are online, from observed heartbeats; `expired()` says who just went offline."""

    def __init__(self, grace_seconds: float, clock: Clock = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._hosts: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []
        self.changed = asyncio.Event()
        """Set when a deadline earlier than every queued one may exist, so the expiry loop re-plans."""

    def observe(self, name: str, *, heartbeat: str | None, reported_offline: bool, state: str | None) -> bool:
        """Account for a host as the API shows it now; whether a newer heartbeat was observed.

        `state` is the `status.state` the operator wrote before: on first sight (a new host, or
        every host after a restart) an online host keeps a full grace period, so a restart flaps
        nothing, and an offline one waits for a heartbeat it has not seen yet.
        """
        tracked = self._hosts.get(name)
        observed = False
        if tracked is None:
            tracked = self._hosts[name] = _Tracked(heartbeat=heartbeat)
            if state == "online" or (state is None and heartbeat is not None):
                self._extend(name, tracked)
        elif heartbeat is not None and heartbeat != tracked.heartbeat:
            tracked.heartbeat = heartbeat
            tracked.observed_at = self.clock()
            self._extend(name, tracked)
            observed = True
        if reported_offline:
            tracked.deadline = None
        return observed

    def _extend(self, name: str, tracked: _Tracked) -> None:
        tracked.deadline = self.clock() + self.grace_seconds
        if not self._heap or tracked.deadline < self._heap[0][0]:
            self.changed.set()
        heapq.heappush(self._heap, (tracked.deadline, name))

    def is_online(self, name: str) -> bool:
        tracked = self._hosts.get(name)
        return tracked is not None and tracked.deadline is not None and self.clock() < tracked.deadline

    def forget(self, name: str) -> None:
        """Stop tracking a deleted host; its queued deadline is skipped when it comes up."""
        self._hosts.pop(name, None)

    def next_deadline(self) -> float | None:
        """The earliest queued deadline (possibly a stale one, which costs one wasted wake-up)."""
        return self._heap[0][0] if self._heap else None

    def expired(self) -> list[tuple[str, float]]:
        """Hosts whose deadline has passed since the last call, with their deadlines; they are offline now."""
        now = self.clock()
        gone: list[tuple[str, float]] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, name = heapq.heappop(self._heap)
            tracked = self._hosts.get(name)
            if tracked is not None and tracked.deadline == deadline:
                tracked.deadline = None
                gone.append((name, deadline))
        return gone

    def heartbeat_age(self, name: str) -> float | None:
        """Seconds since a heartbeat of this host was last observed, if one was since start-up."""
        tracked = self._hosts.get(name)
        if tracked is None or tracked.observed_at is None:
            return None
        return self.clock() - tracked.observed_at

    def oldest_heartbeat_age(self) -> float:
        """Largest heartbeat age among online hosts (0 when none): a fleet-wide staleness signal."""
        now = self.clock()
        ages = [now - t.observed_at for t in list(self._hosts.values()) if t.deadline is not None and t.observed_at]
        return max(ages, default=0.0)


async def run_expiry(
    liveness: Liveness,
    on_expired: Callable[[list[tuple[str, float]]], Awaitable[None]],
) -> None:
    """Forever: sleep until the earliest deadline (or until an earlier one appears), report expiries."""
    while True:
        liveness.changed.clear()
        gone = liveness.expired()
        if gone:
            await on_expired(gone)
            continue
        deadline = liveness.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - liveness.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(liveness.changed.wait(), timeout)
