"""One sampling pass: read every known GPU's gauges and decide its health.

A pass is synchronous and runs in the NVML thread under a deadline (`watchdog`): NVML calls
block, and on a sick GPU they can block for a long time, which must not stall heartbeats; a pass
past its deadline is reported with `unknown` instead of its (missing) result. The result
is a fresh snapshot; only the latest one is kept, so an agent that cannot reach the API server
holds a bounded amount of state however long the outage lasts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from gpufleet_agent import health, nvml

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sample:
    """What one pass saw of one GPU; `readings` is None when the device could not be read."""

    device: nvml.Device
    readings: nvml.Readings | None
    verdict: health.Verdict
    mig: nvml.Mig | None = None
    """MIG mode and devices as of the last discovery; None on a GPU without MIG (or when nobody can tell)."""


class Sampler:
    """Owns the NVML session and the health tracker; `discover` and `sample` run in the NVML thread."""

    def __init__(
        self,
        library: nvml.Nvml,
        tracker: health.Tracker,
        on_xid: Callable[[str, int], None] = lambda uuid, xid: None,
    ) -> None:
        self._nvml = library
        self._tracker = tracker
        self._on_xid = on_xid
        """Told of every XID the driver posts (for the XID counter), critical or not."""
        self.devices: list[nvml.Device] = []

    def discover(self) -> list[nvml.Device]:
        """Re-read the device list (GPUs appear and disappear on resets and hot-plug)."""
        self.devices = self._nvml.discover()
        self._tracker.keep_only({device.uuid for device in self.devices})
        return self.devices

    def sample(self, now: float) -> list[Sample]:
        """Every known GPU's readings and verdict at `now` (monotonic seconds)."""
        for event in self._nvml.drain_events():
            if event.event_type & nvml.EVENT_XID_CRITICAL:
                self._on_xid(event.uuid, event.xid)
            if self._tracker.record_event(event, now):
                logger.warning("GPU %s: health event %s (XID %d)", event.uuid, event.event_type, event.xid)
        samples = []
        for device in self.devices:
            try:
                readings = self._nvml.read(device.index)
            except nvml.NVMLError as error:
                verdict = self._tracker.verdict(device.uuid, now, error)
                samples.append(Sample(device, None, verdict, self._nvml.mig(device.index)))
                continue
            self._tracker.record_readings(device.uuid, readings, now)
            samples.append(
                Sample(device, readings, self._tracker.verdict(device.uuid, now), self._nvml.mig(device.index))
            )
        return samples

    def unknown(self, verdict: health.Verdict) -> list[Sample]:
        """Every known GPU with no readings and `verdict`: what a pass that hung can tell.

        Safe on the event loop while a hung pass holds the NVML thread: it makes no NVML call
        and does not touch the tracker, which only that thread updates.
        """
        return [Sample(device, None, verdict) for device in self.devices]
