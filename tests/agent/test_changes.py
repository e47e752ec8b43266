"""When a GPU's status is worth writing: thresholds, hysteresis, state changes, the rate limit and the resync.

Time is simulated: the gate is asked with explicit `now` values, one per 5 s sample, as the agent does.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Any

import pytest

from gpufleet_agent import changes
from gpufleet_agent.settings import AgentSettings

GIB = 1024**3
SAMPLE = 5.0
THRESHOLDS = changes.Thresholds(
    temperature_celsius=5, utilization_percent=20, memory_percent=5, power_watts=50, resync_seconds=600
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
SICK = dataclasses.replace(WRITTEN, healthy=False, state="unhealthy", reason="XidCritical")


def why(current: changes.Observed, seconds: float = 5, previous: changes.Moves | None = None) -> changes.Why | None:
    return changes.worth_writing(
        WRITTEN, current, seconds_since_write=seconds, thresholds=THRESHOLDS, previous=previous
    )


class Publisher:
    """Drives a gate the way the agent's publishing loop does: one decision per sample, then the write."""

    def __init__(self, thresholds: changes.Thresholds = THRESHOLDS, *, seed: int = 0) -> None:
        self.reasons: list[changes.Why] = []
        self.gate = changes.Gate(thresholds, rng=random.Random(seed), on_write=self.reasons.append)
        self.now = 0.0
        self.writes: list[float] = []

    def sample(self, current: changes.Observed) -> bool:
        """One sample at the next 5 s tick; True when it was written."""
        self.now += SAMPLE
        if not self.gate.due("gpu0", current, self.now):
            return False
        self.gate.record("gpu0", current, self.now)
        self.writes.append(self.now)
        return True

    def samples(self, readings: Iterable[changes.Observed]) -> int:
        """Several samples in a row; how many of them were written."""
        return sum(self.sample(current) for current in readings)

    def started(self, current: changes.Observed = WRITTEN) -> Publisher:
        """The first status written, and the spread-out first resync behind us (so intervals are the regular ones)."""
        self.sample(current)
        for _ in range(int(THRESHOLDS.resync_seconds / SAMPLE) + 1):
            if self.sample(current):
                break
        self.reasons.clear()
        self.writes.clear()
        return self


def temperature(celsius: float) -> changes.Observed:
    return dataclasses.replace(WRITTEN, temperature_celsius=celsius)


# ----- the pure decision -------------------------------------------------------------------------------------


def test_the_first_status_is_always_written() -> None:
    assert changes.worth_writing(None, WRITTEN, seconds_since_write=0, thresholds=THRESHOLDS) is changes.Why.FIRST


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_celsius": 44.9},
        {"utilization_percent": 29.9},
        {"memory_used": 10 * GIB + int(3.9 * GIB)},
        {"power_watts": 149},
    ],
)
def test_moves_below_thresholds_are_not_written_however_long_they_last(change: dict[str, Any]) -> None:
    current = dataclasses.replace(WRITTEN, **change)
    assert changes.moves(WRITTEN, current, THRESHOLDS) == {}
    assert why(current, previous=changes.moves(WRITTEN, current, THRESHOLDS)) is None


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_celsius": 45},
        {"temperature_celsius": 35},
        {"utilization_percent": 30},
        {"memory_used": 10 * GIB + int(4.1 * GIB)},
        {"power_watts": 150},
    ],
)
def test_a_move_of_one_threshold_is_written_once_it_held_for_two_samples(change: dict[str, Any]) -> None:
    current = dataclasses.replace(WRITTEN, **change)
    assert why(current) is None  # the first sample that shows it
    assert why(current, previous=changes.moves(WRITTEN, current, THRESHOLDS)) is changes.Why.SUSTAINED


def test_a_move_that_reverses_direction_is_not_sustained() -> None:
    up, down = temperature(46), temperature(34)
    assert why(down, previous=changes.moves(WRITTEN, up, THRESHOLDS)) is None


@pytest.mark.parametrize("change", [{"temperature_celsius": 50}, {"utilization_percent": 60}, {"power_watts": 0}])
def test_a_jump_of_twice_the_threshold_is_written_at_once(change: dict[str, Any]) -> None:
    assert why(dataclasses.replace(WRITTEN, **change)) is changes.Why.JUMP


@pytest.mark.parametrize(
    "change",
    [
        {"healthy": False, "state": "unhealthy", "reason": "XidCritical"},
        {"reason": "DoubleBitEcc"},
        {"state": "allocated", "allocated_to": "team-a/train-0"},
        {"state": "unknown", "reason": "NvmlHung", "temperature_celsius": None},
        {"temperature_celsius": None},
    ],
)
def test_health_state_and_holder_changes_are_written_at_once(change: dict[str, Any]) -> None:
    assert why(dataclasses.replace(WRITTEN, **change), seconds=0.1) is changes.Why.STATE


def test_an_unchanged_status_is_written_again_after_the_resync_interval() -> None:
    assert why(WRITTEN, seconds=599.9) is None
    assert why(WRITTEN, seconds=600) is changes.Why.RESYNC


def test_a_zero_threshold_writes_any_change_at_once() -> None:
    exact = dataclasses.replace(THRESHOLDS, temperature_celsius=0)
    warmer = temperature(40.1)
    assert changes.worth_writing(WRITTEN, warmer, seconds_since_write=1, thresholds=exact) is changes.Why.JUMP
    assert changes.worth_writing(WRITTEN, WRITTEN, seconds_since_write=1, thresholds=exact) is None


# ----- the gate, as the agent drives it ----------------------------------------------------------------------


def test_a_one_degree_wobble_does_not_write() -> None:
    publisher = Publisher().started()
    wobble = [temperature(40 + (i % 3) - 1) for i in range(100)]  # 39, 40, 41, ... for 500 s
    assert publisher.samples(wobble) == 0


def test_a_ten_degree_rise_is_written_within_one_interval() -> None:
    publisher = Publisher().started()
    publisher.samples([WRITTEN] * 10)
    assert publisher.sample(temperature(50))  # the first sample that sees it
    assert publisher.reasons == [changes.Why.JUMP]


def test_a_health_change_is_written_at_once_even_when_gauge_writes_are_spent() -> None:
    limited = dataclasses.replace(THRESHOLDS, min_interval_seconds=240, burst=1)
    publisher = Publisher(limited).started()
    assert publisher.sample(temperature(60))  # takes the only token
    assert not publisher.sample(temperature(80))  # a jump, but no token left
    assert publisher.sample(dataclasses.replace(SICK, temperature_celsius=80))
    assert publisher.reasons == [changes.Why.JUMP, changes.Why.STATE]


def test_a_resync_happens_after_the_interval_without_change_and_not_before() -> None:
    publisher = Publisher().started()
    publisher.samples([WRITTEN] * 250)  # 1,250 s of an unchanging GPU
    assert len(publisher.writes) == 2
    assert publisher.writes[1] - publisher.writes[0] == THRESHOLDS.resync_seconds
    assert publisher.reasons == [changes.Why.RESYNC, changes.Why.RESYNC]


def test_a_gauge_write_restarts_the_resync_clock() -> None:
    publisher = Publisher().started()
    publisher.samples([WRITTEN] * 10)
    publisher.sample(temperature(50))
    written_at = publisher.writes[-1]
    publisher.samples([temperature(50)] * 150)
    assert publisher.writes[1:] == [written_at + 600]


def test_hysteresis_a_reading_flapping_across_the_threshold_writes_nothing() -> None:
    publisher = Publisher().started()
    flapping = [temperature(46 if i % 2 else 40) for i in range(100)]  # one sample over the line, one back
    assert publisher.samples(flapping) == 0


def test_hysteresis_a_reading_hovering_around_a_written_move_writes_it_once() -> None:
    publisher = Publisher().started()
    hovering = [temperature(45 + (i % 3) - 1 if i else 45) for i in range(100)]  # 45, 45, 46, 44, 45, ...
    assert publisher.samples(hovering) == 1
    assert publisher.reasons == [changes.Why.SUSTAINED]


def test_noisy_utilisation_of_a_busy_job_writes_nothing_but_a_job_ending_does() -> None:
    noise = random.Random(3)
    busy = dataclasses.replace(WRITTEN, utilization_percent=60, power_watts=260)
    publisher = Publisher().started(busy)
    jumping = [
        dataclasses.replace(
            busy, utilization_percent=60 + noise.uniform(-35, 35), power_watts=260 + noise.uniform(-40, 40)
        )
        for _ in range(100)
    ]
    assert publisher.samples(jumping) == 0
    idle = dataclasses.replace(WRITTEN, utilization_percent=0, power_watts=60)
    assert publisher.samples([idle] * 6) == 1  # within 30 s of the job's end


def test_the_rate_limit_caps_gauge_writes_of_a_gpu_whatever_its_readings_do() -> None:
    limited = dataclasses.replace(THRESHOLDS, min_interval_seconds=240, burst=3)
    publisher = Publisher(limited).started()
    swinging = [temperature(40 if i % 2 else 80) for i in range(720)]  # a 40 °C jump every sample for an hour
    written = publisher.samples(swinging)
    assert 3 + 3600 // 240 - 1 <= written <= 3 + 3600 // 240  # the burst, then one per interval
    gaps = [later - earlier for earlier, later in zip(publisher.writes[3:], publisher.writes[4:], strict=False)]
    assert min(gaps) >= 240 - SAMPLE


def test_the_first_resyncs_of_many_gpus_are_spread_over_the_interval() -> None:
    """Agents restarted together (a rollout) must not resync their GPUs in lockstep ever after."""
    gate = changes.Gate(THRESHOLDS, rng=random.Random(5))
    names = [f"gpu{index}" for index in range(100)]
    for name in names:
        gate.record(name, WRITTEN, 0.0)
    first: dict[str, float] = {}
    for tick in range(1, 121):
        for name in names:
            if name not in first and gate.due(name, WRITTEN, tick * SAMPLE):
                gate.record(name, WRITTEN, tick * SAMPLE)
                first[name] = tick * SAMPLE
    assert len(first) == 100  # every one within the interval
    assert sum(1 for at in first.values() if at <= 300) in range(30, 71)  # about half in each half


def test_defaults_keep_a_steady_gpu_within_its_share_of_the_budget() -> None:
    """An 8-GPU host may spend about 60 GPU writes an hour when nothing moves: one resync per GPU per 10 min."""
    thresholds = changes.Thresholds.of(AgentSettings(node_name="n1"))
    assert 8 * 3600 / thresholds.resync_seconds <= 60
    assert (
        thresholds.min_interval_seconds > 0 and 8 * (thresholds.burst + 3600 / thresholds.min_interval_seconds) <= 200
    )
