"""The only door to NVML: every call the agent makes to the NVIDIA driver goes through here.

Keeping NVML behind one small module means one place to read for "what do we ask the driver",
one place to swap the real library for the fake one (`fakenvml`) in tests and `--simulate`,
and one place that turns NVML's C-style answers into plain values. The fake raises the real
library's error types, so the handling below is exercised exactly as in production.

Calls may block for milliseconds (longer on a sick GPU, forever on a hung driver), so callers run
them in the NVML thread under a deadline (`watchdog`), never on the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pynvml

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

NVMLError = pynvml.NVMLError
#: Error codes the agent tells apart; the fake raises these same codes.
ERROR_UNINITIALIZED = pynvml.NVML_ERROR_UNINITIALIZED
ERROR_INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
ERROR_TIMEOUT = pynvml.NVML_ERROR_TIMEOUT
ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
ERROR_UNKNOWN = pynvml.NVML_ERROR_UNKNOWN

EVENT_XID_CRITICAL = pynvml.nvmlEventTypeXidCriticalError
EVENT_DOUBLE_BIT_ECC = pynvml.nvmlEventTypeDoubleBitEccError
TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
MEMORY_ERROR_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC


def error(code: int) -> pynvml.NVMLError:
    """The library's own exception for an NVML return code (`NVMLError_GpuIsLost` for 15, ...)."""
    return pynvml.NVMLError(code)


class Library(Protocol):
    """The subset of `pynvml` the agent calls; the real module and `fakenvml.FakeNVML` both provide it."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter_type: int) -> int: ...
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None: ...
    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> Any: ...
    def nvmlEventSetFree(self, event_set: Any) -> None: ...


def real_library() -> Library:
    """The real NVML bindings (loading libnvidia-ml happens in `nvmlInit`)."""
    library: Library = pynvml  # the module provides every function of the protocol
    return library


@dataclasses.dataclass(frozen=True)
class Device:
    """Identity of one GPU, read once at discovery."""

    index: int
    uuid: str
    model_name: str
    memory_total: int


@dataclasses.dataclass(frozen=True)
class Readings:
    """One sample of a GPU's gauges; a gauge the device does not support is None."""

    temperature_celsius: float | None
    utilization_percent: float | None
    memory_used: int | None
    memory_total: int | None
    power_watts: float | None
    uncorrected_ecc_errors: int | None


@dataclasses.dataclass(frozen=True)
class Event:
    """A health event from NVML: an XID error or a double-bit ECC error on a device (by UUID)."""

    uuid: str
    event_type: int
    xid: int


class Nvml:
    """NVML for one process: initialised once, devices by index, events drained without blocking."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self._handles: dict[int, Any] = {}
        self._devices: dict[int, Device] = {}
        self._registered: set[str] = set()
        self._event_set: Any = None

    def start(self) -> str:
        """Load and initialise NVML; returns the driver version. Raises `NVMLError` (e.g. LibraryNotFound)."""
        self._library.nvmlInit()
        return self._library.nvmlSystemGetDriverVersion()

    def stop(self) -> None:
        """Release the event set and shut NVML down; errors on the way out are not worth reporting."""
        try:
            if self._event_set is not None:
                self._library.nvmlEventSetFree(self._event_set)
            self._library.nvmlShutdown()
        except pynvml.NVMLError:
            pass
        self._event_set = None
        self._handles.clear()
        self._registered.clear()

    def discover(self) -> list[Device]:
        """Every device NVML lists now.

        A device that answers GPU_IS_LOST (fallen off the bus) or another error keeps its slot in
        the listing, so it is kept too, under the identity it had when it was last readable (or a
        blank one), and its reads fail: it must show up as unhealthy rather than vanish from the fleet.
        """
        count = self._library.nvmlDeviceGetCount()
        devices: dict[int, Device] = {}
        handles: dict[int, Any] = {}
        for index in range(count):
            try:
                handle = self._library.nvmlDeviceGetHandleByIndex(index)
                handles[index] = handle
                devices[index] = Device(
                    index=index,
                    uuid=self._library.nvmlDeviceGetUUID(handle),
                    model_name=self._library.nvmlDeviceGetName(handle),
                    memory_total=int(self._library.nvmlDeviceGetMemoryInfo(handle).total),
                )
            except pynvml.NVMLError:  # GPU_IS_LOST mostly; any device-level error alike
                handles.setdefault(index, self._handles.get(index))
                devices[index] = self._devices.get(index) or Device(index, uuid="", model_name="", memory_total=0)
        self._handles = handles
        self._devices = devices
        self._register_events([d for d in devices.values() if d.uuid and d.uuid not in self._registered])
        return list(devices.values())

    def _register_events(self, devices: list[Device]) -> None:
        if not devices:
            return
        if self._event_set is None:
            self._event_set = self._library.nvmlEventSetCreate()
        for device in devices:
            handle = self._handles[device.index]
            for event_types in (EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC, EVENT_XID_CRITICAL):
                try:
                    self._library.nvmlDeviceRegisterEvents(handle, event_types, self._event_set)
                except pynvml.NVMLError_NotSupported:
                    continue  # some boards cannot report ECC events; XIDs alone still count
                except pynvml.NVMLError as error:  # lost, or events not permitted in this container
                    logger.warning("no NVML health events for GPU %s: %s", device.uuid, error)
                    break
                self._registered.add(device.uuid)
                break

    def read(self, index: int) -> Readings:
        """Sample a device's gauges. Raises `NVMLError` when the device cannot be read at all."""
        handle = self._handles.get(index)
        if handle is None:
            raise error(ERROR_GPU_IS_LOST)
        memory = self._library.nvmlDeviceGetMemoryInfo(handle)  # the call that fails first on a lost GPU
        return Readings(
            temperature_celsius=self._optional(
                lambda: float(self._library.nvmlDeviceGetTemperature(handle, TEMPERATURE_GPU))
            ),
            utilization_percent=self._optional(lambda: float(self._library.nvmlDeviceGetUtilizationRates(handle).gpu)),
            memory_used=int(memory.used),
            memory_total=int(memory.total),
            power_watts=self._optional(lambda: self._library.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            uncorrected_ecc_errors=self._optional(
                lambda: int(self._library.nvmlDeviceGetTotalEccErrors(handle, MEMORY_ERROR_UNCORRECTED, VOLATILE_ECC))
            ),
        )

    @staticmethod
    def _optional(read: Callable[[], _T]) -> _T | None:
        """A gauge the board does not support (NotSupported) is None; any other error propagates."""
        try:
            return read()
        except pynvml.NVMLError_NotSupported:
            return None

    def drain_events(self) -> list[Event]:
        """Every pending health event, without waiting (a zero timeout answers Timeout when none is left)."""
        if self._event_set is None:
            return []
        events: list[Event] = []
        while True:
            try:
                data = self._library.nvmlEventSetWait(self._event_set, 0)
            except pynvml.NVMLError_Timeout:
                return events
            except pynvml.NVMLError as error:  # the per-device reads still tell what is wrong
                logger.warning("reading NVML events failed: %s", error)
                return events
            try:
                uuid = self._library.nvmlDeviceGetUUID(data.device)
            except pynvml.NVMLError:
                uuid = ""  # an event not tied to a readable device; the per-device reads will tell
            events.append(Event(uuid=uuid, event_type=int(data.eventType), xid=int(data.eventData)))
