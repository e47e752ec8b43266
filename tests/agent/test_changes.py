"""When a GPU's status is worth writing: thresholds, state changes and the resync interval."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gpufleet_agent import changes

GIB = 1024**3
THRESHOLDS = changes.Thresholds(
    temperature_celsius=1, utilization_percent=5, memory_percent=1, power_watts=10, resync_seconds=60
)
WRITTEN = changes.Observed(
    state="free",
    healthy=True,
    reason="NoFaults",
    allocated_to=None,
    temperature_celsius=40,
    utilization_percent=10,
    memory_used=10 * GIB,
    memory_total=80 * GIB,
    power_watts=100,
)


def worth(current: changes.Observed, seconds: float = 5) -> bool:
    return changes.worth_writing(WRITTEN, current, seconds_since_write=seconds, thresholds=THRESHOLDS)


def test_the_first_status_is_always_written() -> None:
    assert changes.worth_writing(None, WRITTEN, seconds_since_write=0, thresholds=THRESHOLDS)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_celsius": 40.9},
        {"utilization_percent": 14.9},
        {"memory_used": 10 * GIB + int(0.79 * GIB)},
        {"power_watts": 109},
    ],
)
def test_moves_below_thresholds_are_not_written(change: dict[str, Any]) -> None:
    assert not worth(dataclasses.replace(WRITTEN, **change))


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_celsius": 41},
        {"temperature_celsius": 39},
        {"utilization_percent": 15},
        {"memory_used": 10 * GIB + int(0.81 * GIB)},
        {"power_watts": 110},
        {"temperature_celsius": None},
    ],
)
def test_moves_at_or_beyond_thresholds_are_written(change: dict[str, Any]) -> None:
    assert worth(dataclasses.replace(WRITTEN, **change))


@pytest.mark.parametrize(
    "change",
    [
        {"healthy": False, "state": "unhealthy", "reason": "XidCritical"},
        {"reason": "DoubleBitEcc"},
        {"state": "allocated", "allocated_to": "team-a/train-0"},
    ],
)
def test_health_state_and_holder_changes_are_written_at_once(change: dict[str, Any]) -> None:
    assert worth(dataclasses.replace(WRITTEN, **change), seconds=0.1)


def test_an_unchanged_status_is_written_again_after_the_resync_interval() -> None:
    assert not worth(WRITTEN, seconds=59.9)
    assert worth(WRITTEN, seconds=60)


def test_gauge_changes_wait_for_the_minimum_interval_but_health_does_not() -> None:
    capped = dataclasses.replace(THRESHOLDS, min_interval_seconds=15)
    hotter = dataclasses.replace(WRITTEN, temperature_celsius=50)
    sick = dataclasses.replace(WRITTEN, healthy=False, state="unhealthy", reason="XidCritical")
    assert not changes.worth_writing(WRITTEN, hotter, seconds_since_write=10, thresholds=capped)
    assert changes.worth_writing(WRITTEN, hotter, seconds_since_write=15, thresholds=capped)
    assert changes.worth_writing(WRITTEN, sick, seconds_since_write=1, thresholds=capped)


def test_a_zero_threshold_writes_any_change() -> None:
    exact = dataclasses.replace(THRESHOLDS, temperature_celsius=0)
    warmer = dataclasses.replace(WRITTEN, temperature_celsius=40.1)
    assert changes.worth_writing(WRITTEN, warmer, seconds_since_write=1, thresholds=exact)
    assert not changes.worth_writing(WRITTEN, WRITTEN, seconds_since_write=1, thresholds=exact)
