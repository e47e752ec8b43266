"""Liveness from heartbeats, judged by the operator's own clock, with one deadline queue for all hosts.

A heartbeat is *observed* when a host's `status.lastHeartbeat` differs from the value last seen,
whatever the timestamp says: it was written by another machine's clock, so comparing it with ours
would let clock skew flip hosts (this is how the node lifecycle controller judges Nodes). The host
is then online until `now + grace` on our monotonic clock.

Expiry is a heap of deadlines with lazy invalidation: a newer heartbeat pushes a new entry and
leaves the old one to be skipped when popped. One task sleeps until the earliest deadline, so the
cost grows with heartbeats, not with hosts x time, and no host is polled.

No verdict while blind: a host is offline only when the operator could have seen its heartbeat
for the whole grace period. A passed deadline is a verdict only once the view is confirmed
*after* the deadline: by the watch (`confirm`: an event or bookmark arrived later, so a heartbeat
written before it would have arrived too; in a fleet that heartbeats this takes milliseconds),
or, where the watch is quiet, by reading the Host itself (`checked`: a GET sent after the
deadline shows no newer heartbeat). While the watch is stale (`suspend`) nothing expires, and
when it is fresh again (`resume`) every host still online gets a full grace period from that
moment, as after a restart: a heartbeat that fell into the gap is not held against its host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

#: How long a passed deadline waits for the watch to confirm it before the Host is read directly.
CHECK_AFTER_SECONDS = 0.25


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
    checked_at: float = float("-inf")
    """Our clock when a direct read of the Host (sent then) showed no newer heartbeat."""


class Liveness:
    """Which hosts are online, from observed heartbeats; `expired()` says who just went offline."""

    def __init__(self, grace_seconds: float, clock: Clock = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._hosts: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []
        self.changed = asyncio.Event()
        """Set when a deadline earlier than every queued one may exist, so the expiry loop re-plans."""
        self.suspended = True
        """While the view is stale (and until it is first fresh), nothing expires."""
        self.confirmed_at = float("-inf")
        """Our clock when the watch last confirmed the view; only deadlines before it can expire."""
        self._awaiting_confirmation = False

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
        """Online until a verdict: a passed deadline not yet confirmed by the watch is no verdict."""
        tracked = self._hosts.get(name)
        return tracked is not None and tracked.deadline is not None

    def confirm(self, at: float) -> None:
        """The watch delivered something at `at` (our clock): the view is complete up to then.

        Called for every event, so it does O(1) work and wakes the expiry loop only if it waits.
        """
        self.confirmed_at = at
        if self._awaiting_confirmation:
            self._awaiting_confirmation = False
            self.changed.set()

    def suspend(self) -> None:
        """The view is stale: stop expiring until `resume`."""
        self.suspended = True

    def resume(self) -> None:
        """The view is fresh again: every host still online gets a full grace period from now."""
        self.suspended = False
        deadline = self.clock() + self.grace_seconds
        self._heap = []
        for name, tracked in self._hosts.items():
            if tracked.deadline is not None:
                tracked.deadline = deadline
                self._heap.append((deadline, name))
        heapq.heapify(self._heap)
        self.changed.set()

    def forget(self, name: str) -> None:
        """Stop tracking a deleted host; its queued deadline is skipped when it comes up."""
        self._hosts.pop(name, None)

    def checked(self, name: str, *, heartbeat: str | None, sent_at: float) -> None:
        """A read of the Host sent at `sent_at` showed `heartbeat`: if nothing newer, its silence is real."""
        tracked = self._hosts.get(name)
        if tracked is not None and tracked.heartbeat == heartbeat:
            tracked.checked_at = max(tracked.checked_at, sent_at)
            self.changed.set()

    def unconfirmed(self) -> list[str]:
        """Hosts whose deadline passed that neither the watch nor a read has confirmed yet."""
        if self.suspended:
            return []
        now = self.clock()
        names = []
        for deadline, name in self._heap:  # heap order is not sorted order: look at every passed entry
            tracked = self._hosts.get(name)
            if deadline < now and tracked is not None and tracked.deadline == deadline:
                names.append(name)
        return names

    def next_wake(self) -> float | None:
        """Seconds until the expiry loop has something to do; None: only when something changes.

        None while suspended, and when the earliest deadline has passed but the watch has not
        confirmed the view beyond it yet (`confirm` wakes the loop then).
        """
        if self.suspended or not self._heap:
            return None
        earliest = self._heap[0][0]
        now = self.clock()
        if earliest > now:
            return earliest - now
        self._awaiting_confirmation = earliest >= self.confirmed_at
        return None if self._awaiting_confirmation else 0.0

    def expired(self) -> list[tuple[str, float]]:
        """Hosts whose deadline passed, confirmed by the watch, since the last call; they are offline now."""
        if self.suspended:
            return []
        now = self.clock()
        gone: list[tuple[str, float]] = []
        waiting: list[tuple[float, str]] = []
        while self._heap and self._heap[0][0] < now:
            deadline, name = heapq.heappop(self._heap)
            tracked = self._hosts.get(name)
            if tracked is None or tracked.deadline != deadline:
                continue  # superseded by a newer heartbeat, or the host was deleted
            if deadline >= self.confirmed_at and deadline >= tracked.checked_at:
                waiting.append((deadline, name))  # not confirmed yet: back in the queue
                continue
            tracked.deadline = None
            gone.append((name, deadline))
        for entry in waiting:
            heapq.heappush(self._heap, entry)
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
    check: Callable[[list[str]], Awaitable[None]] | None = None,
    check_after: float = CHECK_AFTER_SECONDS,
) -> None:
    """Forever: sleep until the earliest deadline (or until an earlier one appears), report expiries.

    A passed deadline the watch does not confirm within `check_after` seconds is handed to
    `check`, which reads the Hosts and reports through `Liveness.checked`.
    """
    while True:
        liveness.changed.clear()
        gone = liveness.expired()
        if gone:
            await on_expired(gone)
            continue
        timeout = liveness.next_wake()
        if timeout == 0.0:  # a stale heap entry at the top: expired() skipped it; look again
            await asyncio.sleep(0)
            continue
        if timeout is None and check is not None and (waiting := liveness.unconfirmed()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(liveness.changed.wait(), check_after)
                continue  # the watch confirmed (or something else changed): look again
            await check(waiting)
            await asyncio.sleep(0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(liveness.changed.wait(), timeout)
