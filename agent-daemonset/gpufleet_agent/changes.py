"""Whether a GPU's status is worth writing: the agent's answer to API-server write load.

Sampling every 5 s and writing every sample would cost 720 writes per GPU per hour, most of
them saying "still 34 °C", and every one of them lands in etcd and in every GPU watcher. A
Kubernetes Node costs about 372 writes an hour (a Lease renewal every 10 s, NodeStatus every
5 min); a host of 8 GPUs should not cost much more. So the agent writes a GPU's status only
when a reader would care, in three tiers:

- **state** (health, its reason, `state`, the holder, a gauge appearing or vanishing, the MIG
  mode or instances as the last discovery read them): at once,
  at the first sample that shows it, never rate limited: whoever allocates GPUs acts on these;
- **gauges** (temperature, utilisation, memory used, power): when one moved at least its
  (coarse) threshold from the value last written. A jump of twice the threshold is written at
  once; a smaller move only once it held for two samples in a row. That is the hysteresis: a
  reading hovering around a boundary, or one noisy sample, writes nothing, and a value that
  really moved is written 5 s later. Utilisation and power jump with every kernel launch, so
  the decision looks at their exponential moving average (`SMOOTHING_SECONDS`), compared with
  the average at the last write; the status still carries the sample itself, as the API says.
  On top, a token bucket per GPU caps gauge writes at one
  per `min_interval_seconds` on average after a burst of `burst`, so a GPU whose readings
  swing by more than the thresholds all the time costs a bounded, known number of writes;
- **resync**: everything after `resync_seconds` without a write, so a stored value is never
  older than that and a lost write heals. The first resync after a GPU's first write comes
  at a random point of the interval, and its bucket starts with a random fraction of a token,
  so agents restarted together (a DaemonSet rollout) do not write in lockstep afterwards.

Prometheus metrics are not subject to any of this: they show every sample.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpufleet_agent.nvml import Mig
    from gpufleet_agent.settings import AgentSettings

JUMP = 2.0
"""A gauge that moved this many thresholds at once is written at the first sample that shows it."""

GAUGES = ("temperature_celsius", "utilization_percent", "memory_used", "power_watts")

SMOOTHED = ("utilization_percent", "power_watts")
"""Fast gauges that move with every kernel launch: the decision looks at their moving average."""

SMOOTHING_SECONDS = 60.0
"""Time constant of that average: a training job's utilisation jumping ±35 points from one sample
to the next averages out, while a job starting or stopping still shows within two or three samples."""


class Why(enum.StrEnum):
    """Why a status write is due; the agent counts writes by it (`..._writes_by_reason_total`)."""

    FIRST = "first"
    """Nothing written yet since the agent started (or since the object was recreated)."""
    STATE = "state"
    """Health, its reason, state or holder changed, a gauge appeared or vanished, or MIG was reconfigured."""
    RESYNC = "resync"
    """`resync_seconds` passed without a write."""
    JUMP = "jump"
    """A gauge moved at least `JUMP` thresholds."""
    SUSTAINED = "sustained"
    """A gauge moved at least its threshold, in the same direction, on two samples in a row."""


RATE_LIMITED = (Why.JUMP, Why.SUSTAINED)
"""The reasons that take a token from the GPU's bucket; state changes and resyncs never wait."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    temperature_celsius: float
    utilization_percent: float
    memory_percent: float
    """Of the GPU's total memory."""
    power_watts: float
    resync_seconds: float
    min_interval_seconds: float = 0.0
    """One gauge write per this many seconds per GPU on average (the bucket's refill); 0: no limit."""
    burst: int = 1
    """Gauge writes a GPU may make in a row before `min_interval_seconds` applies (the bucket's size)."""

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
            burst=settings.gauge_write_burst,
        )

    def of_gauge(self, gauge: str, memory_total: int) -> float:
        """The threshold of one gauge (memory's is a share of the GPU's total memory)."""
        if gauge == "memory_used":
            return memory_total * self.memory_percent / 100
        value: float = getattr(self, gauge)
        return value


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
    mig: Mig | None = None
    """MIG mode (current and pending) and devices; a reconfiguration is a state change."""

    def gauge(self, name: str) -> float | None:
        value: float | int | None = getattr(self, name)
        return None if value is None else float(value)


Moves = dict[str, float]
"""Per gauge that moved at least its threshold from the written value: how many thresholds, signed."""


def moves(written: Observed, current: Observed, thresholds: Thresholds) -> Moves:
    """The gauges of `current` at least one threshold away from `written` (a zero threshold: any change)."""
    found: Moves = {}
    for gauge in GAUGES:
        old, new = written.gauge(gauge), current.gauge(gauge)
        if old is None or new is None or old == new:
            continue
        threshold = thresholds.of_gauge(gauge, current.memory_total)
        ratio = (new - old) / threshold if threshold > 0 else math.copysign(math.inf, new - old)
        if abs(ratio) >= 1:
            found[gauge] = ratio
    return found


def state_changed(written: Observed, current: Observed) -> bool:
    """Whether something a scheduler acts on changed: health, reason, state, holder, MIG, or a gauge (dis)appeared.

    MIG counts whole: a mode switch (or a pending one), an instance created or destroyed; `None`
    (no MIG, or nothing known while NVML hangs) against a value counts too.
    """
    if (written.state, written.healthy, written.reason, written.allocated_to, written.mig) != (
        current.state,
        current.healthy,
        current.reason,
        current.allocated_to,
        current.mig,
    ):
        return True
    return any((written.gauge(g) is None) != (current.gauge(g) is None) for g in GAUGES)


def worth_writing(
    written: Observed | None,
    current: Observed,
    *,
    seconds_since_write: float,
    thresholds: Thresholds,
    previous: Moves | None = None,
    resync_after: float | None = None,
) -> Why | None:
    """Why `current` should be written, given what was last written and how long ago; None: it should not.

    `previous` is what `moves` said of the sample before (None: unknown, so a move below `JUMP`
    thresholds is not written yet); `resync_after` overrides `thresholds.resync_seconds` (the
    gate spreads the first resync). This says nothing of the rate limit: that is the gate's.
    """
    if written is None:
        return Why.FIRST
    if state_changed(written, current):
        return Why.STATE
    if seconds_since_write >= (thresholds.resync_seconds if resync_after is None else resync_after):
        return Why.RESYNC
    now = moves(written, current, thresholds)
    if any(abs(ratio) >= JUMP for ratio in now.values()):
        return Why.JUMP
    if previous and any(gauge in previous and (previous[gauge] > 0) == (ratio > 0) for gauge, ratio in now.items()):
        return Why.SUSTAINED
    return None


@dataclasses.dataclass
class _Track:
    """One GPU's write history: what was written and when, its bucket, and the last sample's moves."""

    written: Observed
    reference: Observed
    """`written` with the fast gauges' moving averages at the time: what the next samples are compared with."""
    at: float
    resync_after: float
    tokens: float
    refilled_at: float
    averages: dict[str, float]
    averaged_at: float
    previous: Moves = dataclasses.field(default_factory=dict)
    why: Why | None = None
    """What the last `due` answered, so that `record` knows whether the write takes a token."""


class Gate:
    """What was last written for each GPU and when; decides whether the next status is due.

    Holds one small entry per GPU, so its size is bounded by the devices, not by time or outages.
    `due` is asked once per publishing round (each sample, or each retry after an API error:
    the latest sample again, which counts as a sample that held); `record` after a write succeeded.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        *,
        rng: random.Random | None = None,
        on_write: Callable[[Why], None] = lambda why: None,
        on_limited: Callable[[], None] = lambda: None,
    ) -> None:
        self._thresholds = thresholds
        self._random = rng or random.Random()
        self._on_write = on_write
        self._on_limited = on_limited
        self._tracks: dict[str, _Track] = {}

    def last(self, name: str) -> Observed | None:
        track = self._tracks.get(name)
        return track.written if track else None

    def due(self, name: str, current: Observed, now: float) -> bool:
        track = self._tracks.get(name)
        if track is None:
            return True
        smoothed = self._smooth(track, current, now)
        why = worth_writing(
            track.reference,
            smoothed,
            seconds_since_write=now - track.at,
            thresholds=self._thresholds,
            previous=track.previous,
            resync_after=track.resync_after,
        )
        track.previous = moves(track.reference, smoothed, self._thresholds)
        if why in RATE_LIMITED and self._refill(track, now) < 1:
            self._on_limited()
            why = None
        track.why = why
        return why is not None

    def record(self, name: str, written: Observed, now: float) -> None:
        """`written` was written at `now`: it is the new reference, and the resync clock starts over."""
        track = self._tracks.get(name)
        burst = float(max(1, self._thresholds.burst))
        if track is None:
            why = Why.FIRST
            # The first write refreshed everything; what follows is spread out, so that agents
            # started together (a rollout, a power cut) do not write in lockstep ever after: the
            # first resync comes at a random point of the interval, and the bucket starts with a
            # random fraction of a token (it fills up to `burst` while the GPU is quiet).
            resync = self._thresholds.resync_seconds * self._random.random()
            tokens = min(burst, self._random.random())
            averages = {g: v for g in SMOOTHED if (v := written.gauge(g)) is not None}
            self._tracks[name] = _Track(written, written, now, resync, tokens, now, averages, now)
        else:
            why = track.why or Why.STATE
            if why in RATE_LIMITED:
                track.tokens = self._refill(track, now) - 1
            track.written, track.at, track.resync_after = written, now, self._thresholds.resync_seconds
            track.reference = self._smooth(track, written, now)
            track.previous, track.why = {}, None
        self._on_write(why)

    def _smooth(self, track: _Track, current: Observed, now: float) -> Observed:
        """`current` with its fast gauges replaced by their moving averages (updated with it)."""
        weight = 1 - math.exp(-max(0.0, now - track.averaged_at) / SMOOTHING_SECONDS)
        track.averaged_at = now
        values: dict[str, float | None] = {}
        for gauge in SMOOTHED:
            value = current.gauge(gauge)
            if value is None:
                track.averages.pop(gauge, None)  # a gauge that vanished starts over when it is back
            elif gauge in track.averages:
                track.averages[gauge] += weight * (value - track.averages[gauge])
            else:
                track.averages[gauge] = value
            values[gauge] = track.averages.get(gauge)
        return dataclasses.replace(
            current, utilization_percent=values["utilization_percent"], power_watts=values["power_watts"]
        )

    def _refill(self, track: _Track, now: float) -> float:
        """The GPU's tokens at `now` (one more per `min_interval_seconds`, up to `burst`)."""
        period, burst = self._thresholds.min_interval_seconds, float(max(1, self._thresholds.burst))
        if period <= 0:
            track.tokens = burst
        else:
            track.tokens = min(burst, track.tokens + (now - track.refilled_at) / period)
        track.refilled_at = now
        return track.tokens

    def keep_only(self, names: set[str]) -> None:
        """Forget GPUs whose resources are gone, so a recreated one is written at once."""
        for name in set(self._tracks) - names:
            del self._tracks[name]
