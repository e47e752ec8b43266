"""Liveness from heartbeats, judged by the operator's own clock, with one deadline queue for all hosts.

Heartbeats come through two channels: the renewal of the host's Lease (`spec.renewTime`, what
agents and the facade write), and `status.lastHeartbeat` on the Host itself (what agents wrote
before Leases, and still write with every status report), so agents of either kind keep their
hosts online through a rolling upgrade. A heartbeat is *observed* when either value differs from
the one last seen on that channel, whatever the timestamp says: it was written by another
machine's clock, so comparing it with ours would let clock skew flip hosts (this is how the node
lifecycle controller judges Nodes). The host is then online until `now + grace` on our monotonic
clock.

Expiry is a heap of deadlines with lazy invalidation: a newer heartbeat pushes a new entry and
leaves the old one to be skipped when popped. One task sleeps until the earliest deadline, so the
cost grows with heartbeats, not with hosts x time, and no host is polled.

No verdict while blind: a host is offline only when the operator could have seen its heartbeat
for the whole grace period, on every channel. A passed deadline is a verdict only once each
channel's view is confirmed *after* the deadline: by its watch (`confirm`: an event or bookmark
arrived later, so a heartbeat written before it would have arrived too; in a fleet that
heartbeats this takes milliseconds), or, where a watch is quiet, by reading the Host and its
Lease (`checked`: reads sent after the deadline show no newer heartbeat). While any channel's
watch is stale (`suspend`) nothing expires, and when all are fresh again (`resume`) every host
still online gets a full grace period from that moment, as after a restart: a heartbeat that
fell into the gap is not held against its host.
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
#: The heartbeat channels: the Host's `status.lastHeartbeat`, and its Lease's `spec.renewTime`.
STATUS, LEASE = "hosts", "leases"


class Clock(Protocol):
    """A monotonic clock in seconds; injected so that tests simulate time instead of sleeping."""

    def __call__(self) -> float: ...


@dataclasses.dataclass
class _Tracked:
    beats: dict[str, str] = dataclasses.field(default_factory=dict)
    """The last heartbeat value seen on each channel, compared for equality only."""
    host_seen: bool = False
    """Whether the Host itself was seen (a Lease may come first)."""
    observed_at: float | None = None
    """Our monotonic time when a heartbeat was last observed (None: none since we started)."""
    deadline: float | None = None
    """Our monotonic time at which the host goes offline (None: it is offline)."""
    checked_at: float = float("-inf")
    """Our clock when a direct read of the Host (sent then) showed no newer heartbeat."""


class Liveness:
    """Which hosts are online, from observed heartbeats; `expired()` says who just went offline."""

    def __init__(
        self, grace_seconds: float, clock: Clock = time.monotonic, channels: tuple[str, ...] = (STATUS,)
    ) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._hosts: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []
        self.changed = asyncio.Event()
        """Set when a deadline earlier than every queued one may exist, so the expiry loop re-plans."""
        self._stale = set(channels)
        """Channels whose watch is stale (or not yet synced): while any is, nothing expires."""
        self._confirmed = dict.fromkeys(channels, float("-inf"))
        """Our clock when each channel's watch last confirmed its view."""
        self._awaiting_confirmation = False

    @property
    def suspended(self) -> bool:
        """While a channel's view is stale (and until each is first fresh), nothing expires."""
        return bool(self._stale)

    @property
    def confirmed_at(self) -> float:
        """Our clock up to which every channel's watch confirmed the view; only deadlines before it expire."""
        return min(self._confirmed.values())

    def observe(self, name: str, *, heartbeat: str | None, reported_offline: bool, state: str | None) -> bool:
        """Account for a host as the API shows it now; whether a newer heartbeat was observed.

        `state` is the `status.state` the operator wrote before: on first sight (a new host, or
        every host after a restart) an online host keeps a full grace period, so a restart flaps
        nothing, and an offline one waits for a heartbeat it has not seen yet.
        """
        tracked = self._hosts.setdefault(name, _Tracked())
        observed = False
        if not tracked.host_seen:
            tracked.host_seen = True
            if heartbeat is not None:
                tracked.beats[STATUS] = heartbeat
            if state == "online" or (state is None and heartbeat is not None):
                self._extend(name, tracked)
        else:
            observed = self._beat(name, tracked, STATUS, heartbeat)
        if reported_offline:
            tracked.deadline = None
        return observed

    def observe_lease(self, name: str, renew_time: str | None) -> bool:
        """Account for a renewal of the host's Lease; whether it is a newer heartbeat.

        The first value seen is a heartbeat only when the view is fresh (a Lease created or
        renewed while we watch); during the first list it may be a dead host's last renewal.
        """
        tracked = self._hosts.setdefault(name, _Tracked())
        if LEASE not in tracked.beats and self.suspended:
            if renew_time is not None:
                tracked.beats[LEASE] = renew_time
            return False
        return self._beat(name, tracked, LEASE, renew_time)

    def _beat(self, name: str, tracked: _Tracked, channel: str, value: str | None) -> bool:
        if value is None or tracked.beats.get(channel) == value:
            return False
        tracked.beats[channel] = value
        tracked.observed_at = self.clock()
        self._extend(name, tracked)
        return True

    def _extend(self, name: str, tracked: _Tracked) -> None:
        tracked.deadline = self.clock() + self.grace_seconds
        if not self._heap or tracked.deadline < self._heap[0][0]:
            self.changed.set()
        heapq.heappush(self._heap, (tracked.deadline, name))

    def is_online(self, name: str) -> bool:
        """Online until a verdict: a passed deadline not yet confirmed by the watch is no verdict."""
        tracked = self._hosts.get(name)
        return tracked is not None and tracked.deadline is not None

    def confirm(self, at: float, channel: str = STATUS) -> None:
        """The channel's watch delivered something at `at` (our clock): its view is complete up to then.

        Called for every event, so it does O(1) work and wakes the expiry loop only if it waits.
        """
        self._confirmed[channel] = at
        if self._awaiting_confirmation:
            self._awaiting_confirmation = False
            self.changed.set()

    def suspend(self, channel: str = STATUS) -> None:
        """The channel's view is stale: stop expiring until `resume`."""
        self._stale.add(channel)

    def resume(self, channel: str = STATUS) -> None:
        """The channel's view is fresh again; once every channel is, every host still online gets
        a full grace period from now."""
        was_suspended = self.suspended
        self._stale.discard(channel)
        if self.suspended or not was_suspended:
            return
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

    def checked(self, name: str, *, sent_at: float, heartbeat: str | None, renew_time: str | None = None) -> None:
        """Reads of the Host and its Lease sent at `sent_at` showed `heartbeat` and `renew_time`:
        if neither is newer than what was seen, the host's silence is real."""
        tracked = self._hosts.get(name)
        read = {STATUS: heartbeat, LEASE: renew_time}
        if tracked is not None and all(value is None or tracked.beats.get(c) == value for c, value in read.items()):
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
