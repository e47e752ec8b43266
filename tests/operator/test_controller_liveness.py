"""Liveness from heartbeats on the operator's clock, with simulated time."""

from __future__ import annotations

import asyncio
import time

from gpufleet.controller import liveness

GRACE = 50.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _tracker() -> tuple[liveness.Liveness, FakeClock]:
    """A tracker whose view is fresh (its Host watch is following the API)."""
    clock = FakeClock()
    tracker = liveness.Liveness(GRACE, clock)
    tracker.resume()
    return tracker, clock


def _confirmed_expiries(tracker: liveness.Liveness, clock: FakeClock) -> list[tuple[str, float]]:
    """Expiries once the watch has delivered something a moment after now."""
    clock.advance(0.001)
    tracker.confirm(clock())
    return tracker.expired()


def test_a_new_heartbeat_keeps_a_host_online_for_one_grace_period() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    assert not tracker.is_online("h")
    assert tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(GRACE - 0.1)
    assert tracker.is_online("h") and _confirmed_expiries(tracker, clock) == []
    clock.advance(0.1)
    assert _confirmed_expiries(tracker, clock) == [("h", 1000.0 + GRACE)]
    assert not tracker.is_online("h")
    assert _confirmed_expiries(tracker, clock) == []  # reported once


def test_the_heartbeat_timestamp_is_compared_for_change_only_so_skew_does_not_matter() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    for stamp in ("2020-01-01T00:00:00Z", "2020-01-01T00:00:10Z", "1999-12-31T23:59:59Z"):  # behind, even backwards
        clock.advance(GRACE - 1)
        assert tracker.observe("h", heartbeat=stamp, reported_offline=False, state="online")
        assert tracker.is_online("h")
    assert _confirmed_expiries(tracker, clock) == []


def test_the_same_heartbeat_seen_again_does_not_extend_the_deadline() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(GRACE / 2)
    assert not tracker.observe("h", heartbeat="t1", reported_offline=False, state="online")  # e.g. a GPU change
    clock.advance(GRACE / 2)
    assert [name for name, _ in _confirmed_expiries(tracker, clock)] == ["h"]


def test_only_the_latest_deadline_of_a_host_counts() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    for beat in range(10):
        tracker.observe("h", heartbeat=f"t{beat}", reported_offline=False, state="online")
        clock.advance(10)
    clock.advance(GRACE - 10 - 0.1)
    assert _confirmed_expiries(tracker, clock) == []  # nine stale deadlines passed silently
    clock.advance(0.1)
    assert [name for name, _ in _confirmed_expiries(tracker, clock)] == ["h"]


def test_after_a_restart_online_hosts_get_a_full_grace_period_and_offline_ones_wait_for_a_heartbeat() -> None:
    tracker, clock = _tracker()
    tracker.observe("was-online", heartbeat="old", reported_offline=False, state="online")
    tracker.observe("was-offline", heartbeat="old", reported_offline=False, state="offline")
    assert tracker.is_online("was-online") and not tracker.is_online("was-offline")
    clock.advance(GRACE)
    assert [name for name, _ in _confirmed_expiries(tracker, clock)] == ["was-online"]
    tracker.observe("was-offline", heartbeat="new", reported_offline=False, state="offline")
    assert tracker.is_online("was-offline")


def test_a_host_first_seen_with_a_heartbeat_and_no_state_yet_is_online() -> None:
    tracker, _ = _tracker()
    tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
    assert tracker.is_online("h")


def test_reported_offline_is_offline_at_once() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    tracker.observe("h", heartbeat="t2", reported_offline=True, state="online")
    assert not tracker.is_online("h")
    assert _confirmed_expiries(tracker, clock) == []


def test_a_forgotten_host_never_expires() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
    tracker.forget("h")
    clock.advance(GRACE)
    assert _confirmed_expiries(tracker, clock) == []


def test_expiry_work_grows_with_heartbeats_not_with_hosts() -> None:
    tracker, clock = _tracker()
    for host in range(10_000):
        tracker.observe(f"h{host}", heartbeat="t0", reported_offline=False, state=None)
    clock.advance(GRACE / 2)
    tracker.observe("h0", heartbeat="t1", reported_offline=False, state="online")
    assert tracker.next_wake() == GRACE / 2  # the earliest deadline, without looking at every host
    clock.advance(GRACE / 2)
    assert len(_confirmed_expiries(tracker, clock)) == 9_999
    assert tracker.is_online("h0")


def test_heartbeat_ages_are_measured_on_the_operator_clock() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    assert tracker.heartbeat_age("h") is None
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(7)
    assert tracker.heartbeat_age("h") == 7
    assert tracker.oldest_heartbeat_age() == 7


class TestNoVerdictWhileBlind:
    """A host goes offline only when the operator could have seen its heartbeats all along."""

    def test_nothing_expires_before_the_view_is_first_fresh(self) -> None:
        clock = FakeClock()
        tracker = liveness.Liveness(GRACE, clock)
        tracker.observe("h", heartbeat="t1", reported_offline=False, state="online")
        clock.advance(GRACE * 3)
        tracker.confirm(clock())
        assert tracker.expired() == [] and tracker.is_online("h")

    def test_a_passed_deadline_waits_until_the_watch_has_delivered_something_after_it(self) -> None:
        tracker, clock = _tracker()
        tracker.observe("h", heartbeat="t1", reported_offline=False, state="online")
        tracker.confirm(clock())
        clock.advance(GRACE + 30)  # a silent watch: maybe the host is dead, maybe the watch is
        assert tracker.expired() == [] and tracker.is_online("h")
        assert tracker.next_wake() is None and tracker.unconfirmed() == ["h"]
        tracker.confirm(clock())
        assert [name for name, _ in tracker.expired()] == ["h"]

    def test_a_read_of_the_host_showing_no_newer_heartbeat_confirms_its_silence(self) -> None:
        tracker, clock = _tracker()
        tracker.observe("dead", heartbeat="t1", reported_offline=False, state="online")
        tracker.observe("behind", heartbeat="t1", reported_offline=False, state="online")
        clock.advance(GRACE + 1)
        tracker.checked("dead", heartbeat="t1", sent_at=clock())
        tracker.checked("behind", heartbeat="t2", sent_at=clock())  # the watch missed a heartbeat
        assert [name for name, _ in tracker.expired()] == ["dead"]
        assert tracker.is_online("behind")

    def test_while_the_view_is_stale_nothing_expires_and_afterwards_everyone_gets_a_full_grace_period(self) -> None:
        tracker, clock = _tracker()
        tracker.observe("live", heartbeat="t1", reported_offline=False, state="online")
        tracker.observe("dead", heartbeat="t1", reported_offline=False, state="online")
        clock.advance(GRACE / 2)
        tracker.suspend()  # the watch stalled
        clock.advance(GRACE * 3)
        tracker.confirm(clock())
        assert tracker.expired() == [] and tracker.unconfirmed() == []
        tracker.resume()  # fresh again: the heartbeats of the gap were never seen, so nobody is judged on them
        resumed = clock()
        clock.advance(GRACE - 1)
        tracker.observe("live", heartbeat="t2", reported_offline=False, state="online")
        assert _confirmed_expiries(tracker, clock) == []
        clock.advance(1)
        assert _confirmed_expiries(tracker, clock) == [("dead", resumed + GRACE)]
        assert tracker.is_online("live")

    def test_a_host_already_offline_stays_offline_across_a_stale_spell(self) -> None:
        tracker, _ = _tracker()
        tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
        tracker.observe("h", heartbeat="t1", reported_offline=True, state="offline")
        tracker.suspend()
        tracker.resume()
        assert not tracker.is_online("h")


async def test_the_expiry_loop_reports_a_deadline_as_the_watch_confirms_it() -> None:
    tracker = liveness.Liveness(0.2)
    tracker.resume()
    reported: list[tuple[str, float, float]] = []

    async def on_expired(gone: list[tuple[str, float]]) -> None:
        reported.extend((name, deadline, time.monotonic()) for name, deadline in gone)

    async def busy_watch() -> None:  # a fleet that heartbeats confirms the view all the time
        while True:
            tracker.confirm(time.monotonic())
            await asyncio.sleep(0.01)

    loop = asyncio.create_task(liveness.run_expiry(tracker, on_expired))
    watch = asyncio.create_task(busy_watch())
    try:
        await asyncio.sleep(0.05)  # the loop sleeps with nothing queued
        tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
        await asyncio.sleep(0.4)
    finally:
        loop.cancel()
        watch.cancel()
    [(name, deadline, noticed)] = reported
    assert name == "h"
    assert 0 <= noticed - deadline < 0.05


async def test_the_expiry_loop_reads_hosts_when_the_watch_is_quiet() -> None:
    tracker = liveness.Liveness(0.2)
    tracker.resume()
    reported: list[str] = []
    checked: list[list[str]] = []

    async def on_expired(gone: list[tuple[str, float]]) -> None:
        reported.extend(name for name, _ in gone)

    async def check(names: list[str]) -> None:
        checked.append(names)
        for name in names:
            tracker.checked(name, heartbeat="t1", sent_at=time.monotonic())

    loop = asyncio.create_task(liveness.run_expiry(tracker, on_expired, check, check_after=0.05))
    try:
        tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
        await asyncio.sleep(0.4)
    finally:
        loop.cancel()
    assert checked == [["h"]] and reported == ["h"]
