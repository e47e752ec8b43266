"""Which faults make a GPU unhealthy, and when it is healthy again (no restart needed)."""

from __future__ import annotations

import pytest

from gpufleet_agent import health, nvml
from gpufleet_agent.settings import AgentSettings

UUID = "GPU-1"


def xid(number: int) -> nvml.Event:
    return nvml.Event(uuid=UUID, event_type=nvml.EVENT_XID_CRITICAL, xid=number)


@pytest.mark.parametrize("number", [13, 31, 43, 45, 68, 109])
def test_application_xids_leave_the_gpu_healthy(number: int) -> None:
    tracker = health.Tracker(hold_seconds=60)
    assert not tracker.record_event(xid(number), now=0)
    assert tracker.verdict(UUID, now=1) == health.HEALTHY


@pytest.mark.parametrize("number", [48, 63, 64, 74, 79, 92, 94, 95])
def test_critical_xids_make_the_gpu_unhealthy_with_the_xid_in_the_message(number: int) -> None:
    tracker = health.Tracker(hold_seconds=60)
    assert tracker.record_event(xid(number), now=0)
    verdict = tracker.verdict(UUID, now=1)
    assert not verdict.healthy
    assert verdict.reason == health.XID_REASON
    assert str(number) in verdict.message


def test_a_gpu_recovers_once_the_hold_time_after_the_last_fault_passed() -> None:
    tracker = health.Tracker(hold_seconds=60)
    tracker.record_event(xid(79), now=0)
    tracker.record_event(xid(79), now=50)
    assert not tracker.verdict(UUID, now=100).healthy
    assert tracker.verdict(UUID, now=110) == health.HEALTHY


def test_a_fault_on_one_gpu_leaves_the_others_healthy() -> None:
    tracker = health.Tracker(hold_seconds=60)
    tracker.record_event(xid(79), now=0)
    assert tracker.verdict("GPU-2", now=1).healthy


def test_double_bit_ecc_event_makes_the_gpu_unhealthy() -> None:
    tracker = health.Tracker(hold_seconds=60)
    assert tracker.record_event(nvml.Event(UUID, nvml.EVENT_DOUBLE_BIT_ECC, 0), now=0)
    assert tracker.verdict(UUID, now=1).reason == health.ECC_REASON


def test_a_rising_uncorrected_ecc_counter_counts_even_without_an_event() -> None:
    tracker = health.Tracker(hold_seconds=60)
    tracker.record_ecc_count(UUID, 3, now=0)  # errors from before the agent started do not count
    assert tracker.verdict(UUID, now=0).healthy
    tracker.record_ecc_count(UUID, 4, now=5)
    verdict = tracker.verdict(UUID, now=6)
    assert (verdict.healthy, verdict.reason) == (False, health.ECC_REASON)
    assert tracker.verdict(UUID, now=70).healthy


def test_a_lost_gpu_is_unhealthy_while_reads_fail_and_healthy_when_they_work_again() -> None:
    tracker = health.Tracker(hold_seconds=60)
    lost = tracker.verdict(UUID, now=0, read_error=nvml.error(nvml.ERROR_GPU_IS_LOST))
    assert (lost.healthy, lost.reason) == (False, health.LOST_REASON)
    assert tracker.verdict(UUID, now=1).healthy


def test_other_nvml_errors_are_reported_with_their_code() -> None:
    verdict = health.Tracker(60).verdict(UUID, now=0, read_error=nvml.error(nvml.ERROR_UNKNOWN))
    assert (verdict.healthy, verdict.reason) == (False, health.NVML_ERROR_REASON)
    assert str(nvml.ERROR_UNKNOWN) in verdict.message


def test_extra_ignored_xids_can_be_configured() -> None:
    tracker = health.Tracker(60, ignored_xids=health.APPLICATION_XIDS | {94})
    assert not tracker.record_event(xid(94), now=0)


def readings(**signals: object) -> nvml.Readings:
    """A healthy sample's gauges with these health signals."""
    return nvml.Readings(40.0, 10.0, 1, 2, 100.0, 0, **signals)  # type: ignore[arg-type]


def test_health_signals_from_readings_name_their_reason() -> None:
    tracker = health.Tracker(60)
    tracker.record_readings(UUID, readings(remapped_rows=nvml.RemappedRows(0, 1, True, False)), now=0)
    assert tracker.verdict(UUID, now=0).reason == health.ROW_REMAP_PENDING_REASON
    tracker.record_readings(UUID, readings(retired_pages_pending=True), now=5)
    assert tracker.verdict(UUID, now=5).reason == health.RETIRED_PAGES_PENDING_REASON
    tracker.record_readings(UUID, readings(), now=10)  # no signal at all (a board without them): healthy
    assert tracker.verdict(UUID, now=10) == health.HEALTHY


def test_a_gone_gpu_is_forgotten_so_its_old_faults_do_not_follow_a_new_one() -> None:
    tracker = health.Tracker(60, rules=health.Rules(slowdown_sustained_seconds=0))
    tracker.record_readings(UUID, readings(clock_reasons=nvml.CLOCKS_HW_SLOWDOWN), now=0)
    tracker.record_event(xid(79), now=0)
    assert tracker.verdict(UUID, now=1).reason == health.XID_REASON  # an XID outranks a slowdown
    tracker.keep_only({"GPU-2"})
    assert tracker.verdict(UUID, now=1) == health.HEALTHY


def test_the_tracker_of_an_agent_uses_its_settings() -> None:
    settings = AgentSettings(node_name="n1", ignored_xids=[94], pcie_replays_per_minute=1000)
    tracker = health.Tracker.of(settings)
    assert not tracker.record_event(xid(94), now=0)
    tracker.record_readings(UUID, readings(pcie_replays=0), now=0)
    tracker.record_readings(UUID, readings(pcie_replays=500), now=5)
    assert tracker.verdict(UUID, now=5).healthy
