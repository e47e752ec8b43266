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
    clock = FakeClock()
    return liveness.Liveness(GRACE, clock), clock


def test_a_new_heartbeat_keeps_a_host_online_for_one_grace_period() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    assert not tracker.is_online("h")
    assert tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(GRACE - 0.1)
    assert tracker.is_online("h") and tracker.expired() == []
    clock.advance(0.1)
    assert not tracker.is_online("h")
    assert tracker.expired() == [("h", 1000.0 + GRACE)]
    assert tracker.expired() == []  # reported once


def test_the_heartbeat_timestamp_is_compared_for_change_only_so_skew_does_not_matter() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    for stamp in ("2020-01-01T00:00:00Z", "2020-01-01T00:00:10Z", "1999-12-31T23:59:59Z"):  # behind, even backwards
        clock.advance(GRACE - 1)
        assert tracker.observe("h", heartbeat=stamp, reported_offline=False, state="online")
        assert tracker.is_online("h")
    assert tracker.expired() == []


def test_the_same_heartbeat_seen_again_does_not_extend_the_deadline() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(GRACE / 2)
    assert not tracker.observe("h", heartbeat="t1", reported_offline=False, state="online")  # e.g. a GPU change
    clock.advance(GRACE / 2)
    assert [name for name, _ in tracker.expired()] == ["h"]


def test_only_the_latest_deadline_of_a_host_counts() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    for beat in range(10):
        tracker.observe("h", heartbeat=f"t{beat}", reported_offline=False, state="online")
        clock.advance(10)
    clock.advance(GRACE - 10 - 0.1)
    assert tracker.expired() == []  # nine stale deadlines passed silently
    clock.advance(0.1)
    assert [name for name, _ in tracker.expired()] == ["h"]


def test_after_a_restart_online_hosts_get_a_full_grace_period_and_offline_ones_wait_for_a_heartbeat() -> None:
    tracker, clock = _tracker()
    tracker.observe("was-online", heartbeat="old", reported_offline=False, state="online")
    tracker.observe("was-offline", heartbeat="old", reported_offline=False, state="offline")
    assert tracker.is_online("was-online") and not tracker.is_online("was-offline")
    clock.advance(GRACE)
    assert [name for name, _ in tracker.expired()] == ["was-online"]
    tracker.observe("was-offline", heartbeat="new", reported_offline=False, state="offline")
    assert tracker.is_online("was-offline")


def test_a_host_first_seen_with_a_heartbeat_and_no_state_yet_is_online() -> None:
    tracker, _ = _tracker()
    tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
    assert tracker.is_online("h")


def test_reported_offline_is_offline_at_once() -> None:
    tracker, _ = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    tracker.observe("h", heartbeat="t2", reported_offline=True, state="online")
    assert not tracker.is_online("h")
    assert tracker.expired() == []


def test_a_forgotten_host_never_expires() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
    tracker.forget("h")
    clock.advance(GRACE)
    assert tracker.expired() == []


def test_expiry_work_grows_with_heartbeats_not_with_hosts() -> None:
    tracker, clock = _tracker()
    for host in range(10_000):
        tracker.observe(f"h{host}", heartbeat="t0", reported_offline=False, state=None)
    clock.advance(GRACE / 2)
    tracker.observe("h0", heartbeat="t1", reported_offline=False, state="online")
    assert tracker.next_deadline() == 1000.0 + GRACE  # the earliest, without looking at every host
    clock.advance(GRACE / 2)
    assert len(tracker.expired()) == 9_999
    assert tracker.is_online("h0")


def test_heartbeat_ages_are_measured_on_the_operator_clock() -> None:
    tracker, clock = _tracker()
    tracker.observe("h", heartbeat=None, reported_offline=False, state=None)
    assert tracker.heartbeat_age("h") is None
    tracker.observe("h", heartbeat="t1", reported_offline=False, state="offline")
    clock.advance(7)
    assert tracker.heartbeat_age("h") == 7
    assert tracker.oldest_heartbeat_age() == 7


async def test_the_expiry_loop_reports_a_deadline_as_it_passes() -> None:
    tracker = liveness.Liveness(0.2)
    reported: list[tuple[str, float, float]] = []

    async def on_expired(gone: list[tuple[str, float]]) -> None:
        reported.extend((name, deadline, time.monotonic()) for name, deadline in gone)

    loop = asyncio.create_task(liveness.run_expiry(tracker, on_expired))
    try:
        await asyncio.sleep(0.05)  # the loop sleeps with nothing queued
        tracker.observe("h", heartbeat="t1", reported_offline=False, state=None)
        await asyncio.sleep(0.4)
    finally:
        loop.cancel()
    [(name, deadline, noticed)] = reported
    assert name == "h"
    assert 0 <= noticed - deadline < 0.05
