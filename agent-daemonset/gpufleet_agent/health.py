"""When a GPU is unhealthy, and when it is healthy again.

The rules follow the NVIDIA device plugin, which decides which GPUs kubelet may hand out:
a critical XID event makes a GPU unhealthy, except the XIDs that an application causes
(13 graphics engine exception, 31 memory page fault, 43 stopped processing, 45 preemptive
cleanup, 68 video processor exception, 109 context switch timeout): those kill one job and
leave the GPU fine. We add two signals it lacks: a double-bit (uncorrectable) ECC error, and
a device NVML cannot read at all (GPU_IS_LOST after it fell off the bus, or another NVML error).

Unlike the device plugin, which marks a GPU unhealthy until the plugin restarts, a GPU
recovers here: an event's effect lasts `hold_seconds` after the last one, and a read error
lasts as long as reads fail. Recovery without a restart matters because the agent is the
only writer of GPU health; a restart-only recovery would need a person to notice.

On top, the signals DCGM's health watches check, each named in the verdict's reason so that a
person reading `kubectl get gpus` knows what to do (docs/agent.md "Health rules"):

- **states the driver holds until someone acts**: a row remap pending (`RowRemapPending`, reset
  the GPU), a row remap that found no spare row (`RowRemapFailure`, replace the GPU), retired
  pages pending (`RetiredPagesPending`, reboot), an NVLink that was active and is down
  (`NVLinkDown`: reset the GPU, check the NVSwitch fabric). Unhealthy exactly while NVML says so:
  the driver clears them, so no hold time is needed, and a GPU handed out meanwhile would run on
  memory known to be bad, or talk to its peers over a missing link (slower over PCIe, or not at
  all). Only a link seen active since the agent started counts: one never cabled is no fault.
- **clock slowdowns**: a thermal or hardware slowdown halves the clocks or worse; every job on
  the GPU (and, in a multi-GPU job, every GPU waiting for it) runs slow. One sample of it is
  normal (a P-state change, a brief power spike), so a slowdown counts once it showed on at
  least `SLOWDOWN_SHARE` (half) of the samples of the last `slowdown_sustained_seconds`: a GPU
  that throttles on and off slows its jobs as surely as one that throttles throughout, so a
  clear sample now and then does not start the count over. The GPU stays out for
  `slowdown_hold_seconds` after that ends, so a GPU cooling down under no load is not handed a
  job that heats it up again at once. The software power cap is normal operation (the board at
  its power limit): metric only.
- **link error rates**: NVLink and PCIe errors are corrected by retransmission, so a few are
  harmless; a high rate means a bad link that slows or stalls traffic. Rates are counted over
  the last minute (`RATE_WINDOW_SECONDS`), against DCGM's limits by default, and the GPU stays
  unhealthy for `link_error_hold_seconds` after the last minute over the limit.

A signal a board does not have (row remapping before Ampere, page retirement after, NVLink on a
PCIe card) is absent, never a fault.

A GPU whose driver does not answer at all (an NVML call hung past its deadline, see `watchdog`)
is neither healthy nor unhealthy: its health is unknown (`known=False`) until NVML answers again.
Saying "healthy" would hand out a GPU nobody can vouch for; saying "unhealthy" would claim a
fault nobody observed.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING

from gpufleet_agent import nvml

if TYPE_CHECKING:
    from gpufleet_agent.settings import AgentSettings

#: XIDs caused by applications, not the GPU (the NVIDIA device plugin's default skip list).
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})

HEALTHY_REASON = "NoFaults"
XID_REASON = "XidCritical"
ECC_REASON = "DoubleBitEcc"
LOST_REASON = "GpuLost"
NVML_ERROR_REASON = "NvmlError"
HUNG_REASON = "NvmlHung"
ROW_REMAP_FAILURE_REASON = "RowRemapFailure"
ROW_REMAP_PENDING_REASON = "RowRemapPending"
RETIRED_PAGES_PENDING_REASON = "RetiredPagesPending"
NVLINK_REASON = "NVLinkErrors"
NVLINK_DOWN_REASON = "NVLinkDown"
PCIE_REASON = "PCIeReplays"
THERMAL_REASON = "ThermalThrottling"
SLOWDOWN_REASON = "HardwareSlowdown"

THERMAL_CLOCKS = nvml.CLOCKS_HW_THERMAL | nvml.CLOCKS_SW_THERMAL
"""Clock reasons that mean the GPU is too hot: `ThermalThrottling` once sustained."""
SLOWDOWN_CLOCKS = nvml.CLOCKS_HW_SLOWDOWN | nvml.CLOCKS_HW_POWER_BRAKE
"""Clock reasons that mean the board forces the clocks down (power brake, power draw too high,
or heat): `HardwareSlowdown` once sustained. HW slowdown also shows with a thermal one, which
then names the reason."""

SLOWDOWN_SHARE = 0.5
"""A slowdown counts once it showed on at least this share of the samples of the sustained time:
half the time at half the clocks is no less harmful than a quarter of the time at a quarter."""

RATE_WINDOW_SECONDS = 60.0
"""Error rates are counted over this much history: long enough that one 5 s sample's burst is
averaged with the samples around it, short enough that a bad link shows within a minute."""
NVLINK_CRC_COUNTERS = ("crc_flit", "crc_data", "replay")
"""NVLink counters held to the per-second rate limit (a replay is the retransmission a CRC error
causes); `recovery` (the link went down and retrained) is held to the per-minute count limit."""

#: Order in which a GPU's faults name its reason, most urgent action first: states that need a
#: person (replace, reset, reboot), then recent events, then rates and slowdowns that pass.
_PRIORITY = (
    ROW_REMAP_FAILURE_REASON,
    ROW_REMAP_PENDING_REASON,
    RETIRED_PAGES_PENDING_REASON,
    NVLINK_DOWN_REASON,
    XID_REASON,
    ECC_REASON,
    NVLINK_REASON,
    PCIE_REASON,
    THERMAL_REASON,
    SLOWDOWN_REASON,
)


@dataclasses.dataclass(frozen=True)
class Rules:
    """Thresholds and hold times of the signals that need them; defaults are the agent settings' defaults."""

    slowdown_sustained_seconds: float = 60.0
    """A thermal or hardware slowdown counts once seen on at least SLOWDOWN_SHARE of the samples of this long."""
    slowdown_hold_seconds: float = 300.0
    """The GPU stays unhealthy this long after the slowdown ends."""
    nvlink_crc_errors_per_second: float = 100.0
    """More CRC FLIT, CRC data or replay errors than this per second, on one link, over the last minute
    (DCGM: RM says CRC errors matter from 100 a second)."""
    nvlink_recovery_errors_per_minute: float = 0.0
    """More NVLink recovery errors than this on one link in the last minute (DCGM: any)."""
    pcie_replays_per_minute: float = 8.0
    """More PCIe replays than this in the last minute (DCGM: 8 a minute is the most RM recommends)."""
    link_error_hold_seconds: float = 300.0
    """The GPU stays unhealthy this long after the last minute over an NVLink or PCIe limit."""

    @classmethod
    def of(cls, settings: AgentSettings) -> Rules:
        """The rules an agent with these settings judges by."""
        return cls(
            slowdown_sustained_seconds=settings.slowdown_sustained_seconds,
            slowdown_hold_seconds=settings.slowdown_hold_seconds,
            nvlink_crc_errors_per_second=settings.nvlink_crc_errors_per_second,
            nvlink_recovery_errors_per_minute=settings.nvlink_recovery_errors_per_minute,
            pcie_replays_per_minute=settings.pcie_replays_per_minute,
            link_error_hold_seconds=settings.link_error_hold_seconds,
        )


def is_critical_xid(xid: int, ignored: frozenset[int] = APPLICATION_XIDS) -> bool:
    """Whether an XID means the GPU itself is at fault (rather than the application on it)."""
    return xid not in ignored


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A GPU's health: a reason in CamelCase (for the condition) and words for people."""

    healthy: bool
    reason: str
    message: str
    known: bool = True
    """False when the agent cannot tell (NVML hung); `healthy` is then False too: not vouched for."""


HEALTHY = Verdict(True, HEALTHY_REASON, "no critical XID, ECC, memory, slowdown, NVLink, PCIe or NVML fault")


def unknown(deadline_seconds: float) -> Verdict:
    """The health of a GPU while NVML does not answer within its deadline."""
    return Verdict(
        False,
        HUNG_REASON,
        f"NVML did not answer within {deadline_seconds:g}s (driver hung?); health unknown until it does",
        known=False,
    )


@dataclasses.dataclass
class _Fault:
    reason: str
    message: str
    until: float


Counters = dict[tuple[str | int, ...], int]
"""Error counters of one sample: ("pcie",) or ("nvlink", link, counter name) -> count."""


@dataclasses.dataclass
class _Signals:
    """One GPU's health signals between samples."""

    states: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(reason, message) of the states the last reading showed (row remap, retired pages)."""
    clock_samples: collections.deque[tuple[float, int]] = dataclasses.field(default_factory=collections.deque)
    """(time, clock reasons) of the samples of the last `slowdown_sustained_seconds` (and the one just before)."""
    history: collections.deque[tuple[float, Counters]] = dataclasses.field(default_factory=collections.deque)
    """Error counters of the samples of the last `RATE_WINDOW_SECONDS` (and the one just before)."""
    held: dict[str, _Fault] = dataclasses.field(default_factory=dict)
    """Faults that last until a hold time passed, by reason (slowdowns, link errors)."""


class Tracker:
    """Health of every GPU by UUID, from NVML events, ECC counters, health signals and read errors."""

    def __init__(
        self, hold_seconds: float, ignored_xids: frozenset[int] = APPLICATION_XIDS, *, rules: Rules | None = None
    ) -> None:
        self._hold_seconds = hold_seconds
        self._ignored_xids = ignored_xids
        self._rules = rules or Rules()
        self._faults: dict[str, _Fault] = {}
        self._ecc_counts: dict[str, int] = {}
        self._signals: dict[str, _Signals] = {}

    @classmethod
    def of(cls, settings: AgentSettings) -> Tracker:
        """The tracker of an agent with these settings: its hold time, ignored XIDs and signal rules."""
        return cls(
            settings.unhealthy_hold_seconds,
            APPLICATION_XIDS | set(settings.ignored_xids),
            rules=Rules.of(settings),
        )

    def record_event(self, event: nvml.Event, now: float) -> bool:
        """Take an NVML event into account; whether it counts against the GPU."""
        if event.event_type & nvml.EVENT_DOUBLE_BIT_ECC:
            self._fault(event.uuid, ECC_REASON, "double-bit ECC error", now)
            return True
        if event.event_type & nvml.EVENT_XID_CRITICAL and is_critical_xid(event.xid, self._ignored_xids):
            self._fault(event.uuid, XID_REASON, f"critical XID {event.xid}", now)
            return True
        return False

    def record_ecc_count(self, uuid: str, count: int | None, now: float) -> None:
        """A rise of the volatile uncorrected-ECC counter is a double-bit error even if its event was missed."""
        if count is None:
            return
        previous = self._ecc_counts.get(uuid)
        self._ecc_counts[uuid] = count
        if previous is not None and count > previous:
            self._fault(uuid, ECC_REASON, f"{count - previous} new double-bit ECC error(s)", now)

    def _fault(self, uuid: str, reason: str, message: str, now: float) -> None:
        self._faults[uuid] = _Fault(reason, message, now + self._hold_seconds)

    def record_readings(self, uuid: str, readings: nvml.Readings, now: float) -> None:
        """Take one sample's ECC counter and health signals into account (signals it lacks are absent)."""
        self.record_ecc_count(uuid, readings.uncorrected_ecc_errors, now)
        signals = self._signals.setdefault(uuid, _Signals())
        signals.states = _states(readings)
        self._record_slowdown(signals, readings.clock_reasons, now)
        self._record_link_errors(signals, readings, now)

    def _record_slowdown(self, signals: _Signals, reasons: int | None, now: float) -> None:
        """A slowdown on at least SLOWDOWN_SHARE of the samples over the sustained time: unhealthy."""
        sustained = self._rules.slowdown_sustained_seconds
        samples = signals.clock_samples
        samples.append((now, reasons or 0))
        while len(samples) >= 2 and samples[1][0] <= now - sustained:
            samples.popleft()  # keep one sample at or before the window's start: it shows the window is covered
        covered = samples[0][0] <= now - sustained
        window = [bits for at, bits in samples if at > now - sustained] or [reasons or 0]
        for reason, mask in ((THERMAL_REASON, THERMAL_CLOCKS), (SLOWDOWN_REASON, SLOWDOWN_CLOCKS)):
            active = (reasons or 0) & mask
            seen = sum(1 for bits in window if bits & mask)
            if not covered or not active or seen < SLOWDOWN_SHARE * len(window):
                continue  # observed too briefly, lifted now, or too rare: not (or no longer) a fault
            names = ", ".join(name for name, bit in nvml.CLOCK_REASONS.items() if active & bit)
            message = f"clocks held down by {names} on {seen} of {len(window)} samples in {sustained:g}s"
            signals.held[reason] = _Fault(reason, message, now + self._rules.slowdown_hold_seconds)

    def _record_link_errors(self, signals: _Signals, readings: nvml.Readings, now: float) -> None:
        """NVLink and PCIe error counts over the last minute against their limits."""
        counters: Counters = {("nvlink", link, name): count for (link, name), count in readings.nvlink_errors.items()}
        if readings.pcie_replays is not None:
            counters["pcie",] = readings.pcie_replays
        history = signals.history
        if history and any(counters.get(key, value) < value for key, value in history[-1][1].items()):
            history.clear()  # counters went back (GPU reset, counters reset): start counting over
        history.append((now, counters))
        while len(history) >= 2 and history[1][0] <= now - RATE_WINDOW_SECONDS:
            history.popleft()  # keep one sample at or before the window's start as the baseline
        since, baseline = history[0]
        if since >= now:
            return
        # Per minute over the window; while the history is shorter than a minute, what it holds
        # counts as the minute's (a burst is not extrapolated into a rate it never reached).
        minutes = max(now - since, RATE_WINDOW_SECONDS) / 60
        rules = self._rules
        found: dict[str, str] = {}
        for key, count in counters.items():
            added = count - baseline.get(key, count)
            if added <= 0:
                continue
            seconds = f"in the last {round(now - since, 1):g}s"
            if key[0] == "pcie":
                if added / minutes > rules.pcie_replays_per_minute:
                    limit = f"limit {rules.pcie_replays_per_minute:g} a minute"
                    found.setdefault(PCIE_REASON, f"{added} PCIe replays {seconds} ({limit})")
            elif key[2] in NVLINK_CRC_COUNTERS:
                if added / minutes / 60 > rules.nvlink_crc_errors_per_second:
                    limit = f"limit {rules.nvlink_crc_errors_per_second:g} a second"
                    found.setdefault(NVLINK_REASON, f"NVLink {key[1]}: {added} {key[2]} errors {seconds} ({limit})")
            elif added / minutes > rules.nvlink_recovery_errors_per_minute:
                limit = f"limit {rules.nvlink_recovery_errors_per_minute:g} a minute"
                found.setdefault(NVLINK_REASON, f"NVLink {key[1]}: {added} {key[2]} errors {seconds} ({limit})")
        for reason, message in found.items():
            signals.held[reason] = _Fault(reason, message, now + rules.link_error_hold_seconds)

    def keep_only(self, uuids: set[str]) -> None:
        """Forget GPUs that are gone, so the tracker holds state for the node's devices only."""
        for table in (self._faults, self._ecc_counts, self._signals):
            for uuid in set(table) - uuids:
                del table[uuid]

    def verdict(self, uuid: str, now: float, read_error: nvml.NVMLError | None = None) -> Verdict:
        """Health now: a failing read first (it is the current state), then a recent event, else healthy."""
        if read_error is not None:
            if read_error.value == nvml.ERROR_GPU_IS_LOST:
                return Verdict(False, LOST_REASON, "GPU has fallen off the bus (NVML: GPU is lost)")
            return Verdict(False, NVML_ERROR_REASON, f"NVML error {read_error.value}: {read_error}")
        found: dict[str, str] = {}
        fault = self._faults.get(uuid)
        if fault is not None and now >= fault.until:
            del self._faults[uuid]
        elif fault is not None:
            found[fault.reason] = fault.message
        signals = self._signals.get(uuid)
        if signals is not None:
            for reason, message in signals.states:
                found.setdefault(reason, message)
            for reason, held in list(signals.held.items()):
                if now >= held.until:
                    del signals.held[reason]
                else:
                    found.setdefault(reason, held.message)
        if not found:
            return HEALTHY
        reasons = sorted(found, key=_PRIORITY.index)
        message = found[reasons[0]]
        if len(reasons) > 1:
            message += f" (also {', '.join(reasons[1:])})"
        return Verdict(False, reasons[0], message)


def _states(readings: nvml.Readings) -> list[tuple[str, str]]:
    """The faults a reading shows by itself: states the driver holds until the GPU is reset or replaced."""
    found = []
    rows = readings.remapped_rows
    if rows is not None and rows.failure:
        found.append(
            (
                ROW_REMAP_FAILURE_REASON,
                f"row remapping failed: a bad memory row had no spare left ({rows.uncorrected} rows remapped "
                "for uncorrectable errors); the GPU needs replacing (RMA)",
            )
        )
    if rows is not None and rows.pending:
        found.append(
            (
                ROW_REMAP_PENDING_REASON,
                f"a memory row remap is pending ({rows.corrected} correctable, {rows.uncorrected} uncorrectable "
                "rows remapped); reset the GPU or reboot to apply it",
            )
        )
    if readings.retired_pages_pending:
        found.append(
            (
                RETIRED_PAGES_PENDING_REASON,
                "memory pages are pending retirement; reboot (or reload the driver) to retire them",
            )
        )
    if readings.nvlinks_down:
        links = ", ".join(str(link) for link in readings.nvlinks_down)
        found.append(
            (
                NVLINK_DOWN_REASON,
                f"NVLink {links} down (active before): traffic to its peers is slower or fails; "
                "reset the GPU, and check the NVSwitch fabric manager",
            )
        )
    return found
