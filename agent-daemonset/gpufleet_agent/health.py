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

A GPU whose driver does not answer at all (an NVML call hung past its deadline, see `watchdog`)
is neither healthy nor unhealthy: its health is unknown (`known=False`) until NVML answers again.
Saying "healthy" would hand out a GPU nobody can vouch for; saying "unhealthy" would claim a
fault nobody observed.
"""

from __future__ import annotations

import dataclasses

from gpufleet_agent import nvml

#: XIDs caused by applications, not the GPU (the NVIDIA device plugin's default skip list).
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})

HEALTHY_REASON = "NoFaults"
XID_REASON = "XidCritical"
ECC_REASON = "DoubleBitEcc"
LOST_REASON = "GpuLost"
NVML_ERROR_REASON = "NvmlError"
HUNG_REASON = "NvmlHung"


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


HEALTHY = Verdict(True, HEALTHY_REASON, "no critical XID, ECC or NVML error")


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


class Tracker:
    """Health of every GPU by UUID, from NVML events, ECC counters and read errors."""

    def __init__(self, hold_seconds: float, ignored_xids: frozenset[int] = APPLICATION_XIDS) -> None:
        self._hold_seconds = hold_seconds
        self._ignored_xids = ignored_xids
        self._faults: dict[str, _Fault] = {}
        self._ecc_counts: dict[str, int] = {}

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

    def verdict(self, uuid: str, now: float, read_error: nvml.NVMLError | None = None) -> Verdict:
        """Health now: a failing read first (it is the current state), then a recent event, else healthy."""
        if read_error is not None:
            if read_error.value == nvml.ERROR_GPU_IS_LOST:
                return Verdict(False, LOST_REASON, "GPU has fallen off the bus (NVML: GPU is lost)")
            return Verdict(False, NVML_ERROR_REASON, f"NVML error {read_error.value}: {read_error}")
        fault = self._faults.get(uuid)
        if fault is None:
            return HEALTHY
        if now >= fault.until:
            del self._faults[uuid]
            return HEALTHY
        return Verdict(False, fault.reason, fault.message)
