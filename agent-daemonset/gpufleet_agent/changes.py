"""Whether a GPU's status is worth writing: the agent's answer to API-server write load.

Sampling every few seconds and writing every sample would cost 720 writes per GPU per hour,
most of them saying "still 34 °C". Like kubelet since NodeStatus/Lease split, the agent writes
only when something a reader would care about changed: health, state or holder at once, a gauge
once it moved beyond its threshold (but not more often than a minimum interval, which caps a
busy GPU's noisy gauges), and everything after a resync interval regardless (so a reader can
tell a quiet GPU from a dead agent, and a lost write heals).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpufleet_agent.settings import AgentSettings


@dataclasses.dataclass(frozen=True)
class Thresholds:
    temperature_celsius: float
    utilization_percent: float
    memory_percent: float
    """Of the GPU's total memory."""
    power_watts: float
    resync_seconds: float
    min_interval_seconds: float = 0.0
    """Gauge-only changes wait this long after the previous write (health and holder never wait)."""

    @classmethod
    def of(cls, settings: AgentSettings) -> Thresholds:
        """The thresholds an agent with these settings writes by."""
        return cls(
            temperature_celsius=settings.temperature_threshold_celsius,
            utilization_percent=settings.utilization_threshold_percent,
            memory_percent=settings.memory_threshold_percent,
            power_watts=settings.power_threshold_watts,
            resync_seconds=settings.resync_interval_seconds,
            min_interval_seconds=settings.min_write_interval_seconds,
        )


@dataclasses.dataclass(frozen=True)
class Observed:
    """The part of a GPU's status that the write decision looks at."""

    state: str
    healthy: bool
    reason: str
    allocated_to: str | None
    temperature_celsius: float | None
    utilization_percent: float | None
    memory_used: int | None
    memory_total: int
    power_watts: float | None


def _moved(old: float | None, new: float | None, threshold: float) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) >= threshold if threshold > 0 else new != old


def worth_writing(
    written: Observed | None, current: Observed, *, seconds_since_write: float, thresholds: Thresholds
) -> bool:
    """Whether `current` should be written, given what was last written and how long ago."""
    if written is None or seconds_since_write >= thresholds.resync_seconds:
        return True
    if (written.state, written.healthy, written.reason, written.allocated_to) != (
        current.state,
        current.healthy,
        current.reason,
        current.allocated_to,
    ):
        return True
    if seconds_since_write < thresholds.min_interval_seconds:
        return False
    memory_threshold = current.memory_total * thresholds.memory_percent / 100
    return (
        _moved(written.temperature_celsius, current.temperature_celsius, thresholds.temperature_celsius)
        or _moved(written.utilization_percent, current.utilization_percent, thresholds.utilization_percent)
        or _moved(
            None if written.memory_used is None else float(written.memory_used),
            None if current.memory_used is None else float(current.memory_used),
            memory_threshold,
        )
        or _moved(written.power_watts, current.power_watts, thresholds.power_watts)
    )


class Gate:
    """What was last written for each GPU and when; decides whether the next status is due.

    Holds one entry per GPU, so its size is bounded by the devices, not by time or outages.
    """

    def __init__(self, thresholds: Thresholds) -> None:
        self._thresholds = thresholds
        self._written: dict[str, tuple[Observed, float]] = {}

    def last(self, name: str) -> Observed | None:
        entry = self._written.get(name)
        return entry[0] if entry else None

    def due(self, name: str, current: Observed, now: float) -> bool:
        entry = self._written.get(name)
        if entry is None:
            return True
        return worth_writing(entry[0], current, seconds_since_write=now - entry[1], thresholds=self._thresholds)

    def record(self, name: str, written: Observed, now: float) -> None:
        self._written[name] = (written, now)

    def keep_only(self, names: set[str]) -> None:
        """Forget GPUs whose resources are gone, so a recreated one is written at once."""
        for name in set(self._written) - names:
            del self._written[name]
