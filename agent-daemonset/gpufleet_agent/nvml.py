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
from collections.abc import Callable, Mapping
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
FEATURE_ENABLED: int = pynvml.NVML_FEATURE_ENABLED
FEATURE_DISABLED: int = pynvml.NVML_FEATURE_DISABLED
ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
ERROR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND

MIG_ENABLE: int = pynvml.NVML_DEVICE_MIG_ENABLE
MIG_DISABLE: int = pynvml.NVML_DEVICE_MIG_DISABLE
#: GPU instance profiles are asked for by index (`NVML_GPU_INSTANCE_PROFILE_1_SLICE`, ...), below this.
GPU_INSTANCE_PROFILE_COUNT: int = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT

PAGE_RETIREMENT_DOUBLE_BIT = pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
PAGE_RETIREMENT_SINGLE_BIT = pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS

NVLINK_MAX_LINKS: int = pynvml.NVML_NVLINK_MAX_LINKS
#: The NVLink error counters read per active link, by the name metrics and messages use. DCGM's
#: NVLink health watch looks at these four (the ECC lane counters are per-lane detail of CRC data).
NVLINK_COUNTERS: dict[str, int] = {
    "crc_flit": pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
    "crc_data": pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
    "replay": pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
    "recovery": pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
}

# Clock event ("throttle") reasons, a bit mask. The `nvmlClocksThrottleReason*` names are the ones
# every supported pynvml has; newer ones call them `nvmlClocksEventReason*`, with the same values.
CLOCKS_GPU_IDLE = pynvml.nvmlClocksThrottleReasonGpuIdle
CLOCKS_APPLICATIONS_SETTING = pynvml.nvmlClocksThrottleReasonApplicationsClocksSetting
CLOCKS_SW_POWER_CAP = pynvml.nvmlClocksThrottleReasonSwPowerCap
CLOCKS_HW_SLOWDOWN = pynvml.nvmlClocksThrottleReasonHwSlowdown
CLOCKS_SYNC_BOOST = pynvml.nvmlClocksThrottleReasonSyncBoost
CLOCKS_SW_THERMAL = pynvml.nvmlClocksThrottleReasonSwThermalSlowdown
CLOCKS_HW_THERMAL = pynvml.nvmlClocksThrottleReasonHwThermalSlowdown
CLOCKS_HW_POWER_BRAKE = pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown
CLOCKS_DISPLAY_SETTING = pynvml.nvmlClocksThrottleReasonDisplayClockSetting
#: Every reason by the name the `gpufleet_gpu_throttle_reasons{reason}` metric uses.
CLOCK_REASONS: dict[str, int] = {
    "gpu_idle": CLOCKS_GPU_IDLE,
    "applications_clocks_setting": CLOCKS_APPLICATIONS_SETTING,
    "sw_power_cap": CLOCKS_SW_POWER_CAP,
    "hw_slowdown": CLOCKS_HW_SLOWDOWN,
    "sync_boost": CLOCKS_SYNC_BOOST,
    "sw_thermal_slowdown": CLOCKS_SW_THERMAL,
    "hw_thermal_slowdown": CLOCKS_HW_THERMAL,
    "hw_power_brake_slowdown": CLOCKS_HW_POWER_BRAKE,
    "display_clock_setting": CLOCKS_DISPLAY_SETTING,
}

#: What a health signal's call may answer on a device or driver without the feature: the signal is
#: absent (None), the GPU is not unhealthy for it. NotSupported: the board lacks it (row remapping
#: before Ampere, page retirement from Ampere on, NVLink on PCIe cards); FunctionNotFound: the
#: driver's libnvidia-ml predates the call; NoPermission: the container may not ask; InvalidArgument:
#: a link index past the device's links.
_ABSENT = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLError_NoPermission,
    pynvml.NVMLError_InvalidArgument,
)


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
    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int: ...
    def nvmlDeviceGetRetiredPages(self, device: Any, sourceFilter: int) -> list[int]: ...
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int: ...
    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int: ...
    def nvmlDeviceGetNvLinkErrorCounter(self, device: Any, link: int, counter: int) -> int: ...
    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> Any: ...
    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int: ...
    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int: ...
    def nvmlDeviceGetGpuInstanceById(self, device: Any, gpuInstanceId: int) -> Any: ...
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any: ...
    def nvmlDeviceGetGpuInstanceProfileInfo(self, device: Any, profile: int, version: int = 2) -> Any: ...
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
class RemappedRows:
    """What `nvmlDeviceGetRemappedRows` answers (Ampere and later; earlier GPUs retire pages instead).

    A row remap replaces a bad DRAM row with a spare one; it takes effect at the next GPU reset,
    and until then `pending` is set. `failure` means a remap was needed and no spare row was left:
    the memory can no longer heal itself.
    """

    corrected: int
    """Rows remapped for correctable errors."""
    uncorrected: int
    """Rows remapped for uncorrectable errors."""
    pending: bool
    failure: bool


@dataclasses.dataclass(frozen=True)
class Readings:
    """One sample of a GPU's gauges and health signals; one the device does not support is None (or empty)."""

    temperature_celsius: float | None
    utilization_percent: float | None
    memory_used: int | None
    memory_total: int | None
    power_watts: float | None
    uncorrected_ecc_errors: int | None
    remapped_rows: RemappedRows | None = None
    retired_pages_pending: bool | None = None
    """Pages retired (pre-Ampere) whose retirement takes effect at the next reboot / driver reload."""
    retired_pages_double_bit: int | None = None
    """Pages retired for a double-bit ECC error, ever (`nvmlDeviceGetRetiredPages`)."""
    retired_pages_single_bit: int | None = None
    """Pages retired for repeated single-bit ECC errors, ever."""
    clock_reasons: int | None = None
    """Why the clocks are below their maximum now: a bit mask of `CLOCKS_*` (NVML's clock event reasons)."""
    nvlink_errors: Mapping[tuple[int, str], int] = dataclasses.field(default_factory=dict)
    """NVLink error counters of the active links: (link, counter name from `NVLINK_COUNTERS`) -> count."""
    nvlinks_down: tuple[int, ...] = ()
    """NVLinks that were active since the agent started and are down now."""
    pcie_replays: int | None = None
    """PCIe replays (link-level retransmissions) since the driver loaded."""


@dataclasses.dataclass(frozen=True)
class MigProfile:
    """A GPU instance profile the board offers (`nvmlDeviceGetGpuInstanceProfileInfo`)."""

    id: int
    name: str
    slice_count: int
    memory_mb: int
    multiprocessor_count: int


@dataclasses.dataclass(frozen=True)
class MigInstance:
    """One MIG device (a compute instance in a GPU instance): what a workload is handed."""

    uuid: str
    """`MIG-...`."""
    gpu_instance_id: int
    compute_instance_id: int
    memory_total: int
    """Bytes (`nvmlDeviceGetMemoryInfo` on the MIG device)."""
    profile: MigProfile | None = None
    """The GPU instance's profile; None when NVML would not say (no MIG monitor capability)."""
    placement_start: int | None = None
    placement_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Mig:
    """MIG mode (in effect now, and set for after the next GPU reset) and the MIG devices, read at discovery."""

    enabled: bool
    pending_enabled: bool
    instances: tuple[MigInstance, ...] = ()


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
        self._nvlinks: dict[int, tuple[int, ...]] = {}
        """Per device index, the NVLinks to watch: every link seen active at a discovery since the
        agent started (empty: none, or no NVLink), so that one that went down stays watched."""
        self._links_seen: dict[str, frozenset[int]] = {}
        """Per GPU UUID, the NVLinks seen active at any discovery (a GPU's index may change, its UUID not)."""
        self._reported: set[tuple[str, int]] = set()
        """(call, error code) pairs of unexpected signal errors already logged, so that each is logged once."""
        self._old_clock_reasons = False
        """The driver lacks `nvmlDeviceGetCurrentClocksEventReasons`: use the deprecated name."""
        self._mig: dict[int, Mig | None] = {}
        """Per device index, its MIG mode and devices at the last discovery (None: no MIG on this GPU)."""
        self._mig_profiles: dict[str, dict[int, MigProfile]] = {}
        """Per GPU UUID, the GPU instance profiles it offers by profile id (they never change for a board)."""

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
        self._nvlinks = {
            index: self._links_to_watch(device, self._active_links(index)) for index, device in devices.items()
        }
        present = {device.uuid for device in devices.values()}
        self._links_seen = {uuid: links for uuid, links in self._links_seen.items() if uuid in present}
        self._mig = {index: self._read_mig(index) for index in devices}
        self._mig_profiles = {uuid: table for uuid, table in self._mig_profiles.items() if uuid in present}
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

    def _links_to_watch(self, device: Device, active: tuple[int, ...]) -> tuple[int, ...]:
        """The links active now and those active at an earlier discovery: a link that went down is a fault."""
        if not device.uuid:
            return active
        seen = self._links_seen.get(device.uuid, frozenset()) | set(active)
        self._links_seen[device.uuid] = seen
        return tuple(sorted(seen))

    def _active_links(self, index: int) -> tuple[int, ...]:
        """The device's active NVLinks, probed once per discovery rather than at every sample.

        Up to `NVLINK_MAX_LINKS` (36) state calls per GPU: worth it once a minute, not every 5 s.
        A PCIe board answers NotSupported at link 0; a link index past the board's links answers
        InvalidArgument or NotSupported; an inactive link (no peer cabled, or down) answers 0.
        A link that goes down keeps being watched (`_links_to_watch`): each sample reads its state.
        """
        handle = self._handles.get(index)
        if handle is None:
            return ()
        links: list[int] = []
        try:
            for link in range(NVLINK_MAX_LINKS):
                state = self._signal(
                    "nvmlDeviceGetNvLinkState",
                    lambda: self._library.nvmlDeviceGetNvLinkState(handle, link),  # noqa: B023 - called at once
                )
                if state is None:
                    if link == 0:
                        return ()  # no NVLink on this board (or not visible): no need to try the others
                    continue
                if state == FEATURE_ENABLED:
                    links.append(link)
        except pynvml.NVMLError:  # lost meanwhile: its reads say so; links are probed again at the next discovery
            return ()
        return tuple(links)

    def mig(self, index: int) -> Mig | None:
        """The device's MIG mode and devices as of the last discovery; None when it has no MIG."""
        return self._mig.get(index)

    def _read_mig(self, index: int) -> Mig | None:
        """MIG mode and devices, once per discovery: a MIG reconfiguration is seen within the interval.

        A board without MIG (before Ampere, or a consumer card) answers NotSupported: None, nothing
        to publish; so does a driver without the call (FunctionNotFound) or a container that may not
        ask (NoPermission). Any other failure (the GPU lost meanwhile, an instance destroyed while it
        was being read) keeps what the previous discovery saw: the next one reads it again.
        """
        handle, device = self._handles.get(index), self._devices.get(index)
        previous = self._mig.get(index)
        if handle is None or device is None or not device.uuid:
            return previous
        try:
            current, pending = self._library.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError as failure:
            if isinstance(failure, _ABSENT):
                return None
            self._unexpected("nvmlDeviceGetMigMode", failure)
            return previous
        enabled = int(current) == MIG_ENABLE
        try:
            instances = self._mig_instances(handle, device.uuid) if enabled else ()
        except pynvml.NVMLError as failure:
            self._unexpected("MIG devices", failure)
            return previous
        return Mig(enabled=enabled, pending_enabled=int(pending) == MIG_ENABLE, instances=instances)

    def _mig_instances(self, handle: Any, uuid: str) -> tuple[MigInstance, ...]:
        """Every MIG device of a MIG-enabled GPU: slots up to the maximum, an empty slot answers NotFound."""
        profiles = self._gpu_instance_profiles(handle, uuid)
        found: list[MigInstance] = []
        for slot in range(int(self._library.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = self._library.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError_NotFound:
                continue
            gpu_instance = int(self._library.nvmlDeviceGetGpuInstanceId(mig))
            info = self._signal(
                "nvmlGpuInstanceGetInfo",
                lambda: self._library.nvmlGpuInstanceGetInfo(
                    self._library.nvmlDeviceGetGpuInstanceById(handle, gpu_instance)  # noqa: B023 - called at once
                ),
            )
            found.append(
                MigInstance(
                    uuid=str(self._library.nvmlDeviceGetUUID(mig)),
                    gpu_instance_id=gpu_instance,
                    compute_instance_id=int(self._library.nvmlDeviceGetComputeInstanceId(mig)),
                    memory_total=int(self._library.nvmlDeviceGetMemoryInfo(mig).total),
                    profile=None if info is None else profiles.get(int(info.profileId)),
                    placement_start=None if info is None else int(info.placement.start),
                    placement_size=None if info is None else int(info.placement.size),
                )
            )
        return tuple(sorted(found, key=lambda i: (i.gpu_instance_id, i.compute_instance_id, i.uuid)))

    def _gpu_instance_profiles(self, handle: Any, uuid: str) -> dict[int, MigProfile]:
        """The board's GPU instance profiles by id, asked once per GPU (up to 18 calls) and kept.

        The profile call takes a profile index (`NVML_GPU_INSTANCE_PROFILE_*`) and answers the
        profile's id, which GPU instances refer to; an index the board lacks answers NotSupported
        (or InvalidArgument). A driver without the `V` call (FunctionNotFound) answers version 1,
        which has no name: it is made up as NVIDIA names them, `<slices>g.<GB>gb`.
        """
        known = self._mig_profiles.get(uuid)
        if known:
            return known
        table: dict[int, MigProfile] = {}
        for index in range(GPU_INSTANCE_PROFILE_COUNT):
            try:
                try:
                    info = self._library.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
                except pynvml.NVMLError_FunctionNotFound:
                    info = self._library.nvmlDeviceGetGpuInstanceProfileInfo(handle, index, 1)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            except pynvml.NVMLError as failure:
                if isinstance(failure, pynvml.NVMLError_GpuIsLost):
                    raise
                self._unexpected("nvmlDeviceGetGpuInstanceProfileInfo", failure)
                continue
            slices, memory = int(info.sliceCount), int(info.memorySizeMB)
            name = getattr(info, "name", "")
            name = name.decode() if isinstance(name, bytes) else str(name)
            table[int(info.id)] = MigProfile(
                id=int(info.id),
                name=name or f"{slices}g.{-(-memory // 1024)}gb",
                slice_count=slices,
                memory_mb=memory,
                multiprocessor_count=int(info.multiprocessorCount),
            )
        if table:
            self._mig_profiles[uuid] = table
        return table

    def read(self, index: int) -> Readings:
        """Sample a device's gauges and health signals. Raises `NVMLError` when the device cannot be read at all."""
        handle = self._handles.get(index)
        if handle is None:
            raise error(ERROR_GPU_IS_LOST)
        memory = self._library.nvmlDeviceGetMemoryInfo(handle)  # the call that fails first on a lost GPU
        rows = self._signal("nvmlDeviceGetRemappedRows", lambda: self._library.nvmlDeviceGetRemappedRows(handle))
        pending_pages = self._signal(
            "nvmlDeviceGetRetiredPagesPendingStatus",
            lambda: self._library.nvmlDeviceGetRetiredPagesPendingStatus(handle),
        )
        errors, down = self._nvlinks_read(index, handle)
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
            remapped_rows=None
            if rows is None
            else RemappedRows(int(rows[0]), int(rows[1]), bool(rows[2]), bool(rows[3])),
            retired_pages_pending=None if pending_pages is None else pending_pages == FEATURE_ENABLED,
            retired_pages_double_bit=self._retired_pages(handle, PAGE_RETIREMENT_DOUBLE_BIT),
            retired_pages_single_bit=self._retired_pages(handle, PAGE_RETIREMENT_SINGLE_BIT),
            clock_reasons=self._clock_reasons(handle),
            nvlink_errors=errors,
            nvlinks_down=down,
            pcie_replays=self._signal(
                "nvmlDeviceGetPcieReplayCounter", lambda: int(self._library.nvmlDeviceGetPcieReplayCounter(handle))
            ),
        )

    def _retired_pages(self, handle: Any, cause: int) -> int | None:
        pages = self._signal(
            "nvmlDeviceGetRetiredPages", lambda: self._library.nvmlDeviceGetRetiredPages(handle, cause)
        )
        return None if pages is None else len(pages)

    def _clock_reasons(self, handle: Any) -> int | None:
        """The clock event reasons, by the call's current name, or its deprecated one on an older driver.

        NVML renamed "throttle reasons" to "clock event reasons" (driver 535) and will drop the old
        name; an older libnvidia-ml lacks the new one (FunctionNotFound), an older pynvml too.
        """
        current = getattr(self._library, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None and not self._old_clock_reasons:
            try:
                return int(current(handle))
            except pynvml.NVMLError_FunctionNotFound:
                self._old_clock_reasons = True  # the driver will not grow the call: ask by the old name from now on
            except pynvml.NVMLError as failure:
                self._absent("nvmlDeviceGetCurrentClocksEventReasons", failure)
                return None
        return self._signal(
            "nvmlDeviceGetCurrentClocksThrottleReasons",
            lambda: int(self._library.nvmlDeviceGetCurrentClocksThrottleReasons(handle)),
        )

    def _nvlinks_read(self, index: int, handle: Any) -> tuple[dict[tuple[int, str], int], tuple[int, ...]]:
        """The error counters of the watched links that are up, and the watched links that are down."""
        counters: dict[tuple[int, str], int] = {}
        down: list[int] = []
        for link in self._nvlinks.get(index, ()):
            state = self._signal(
                "nvmlDeviceGetNvLinkState",
                lambda: self._library.nvmlDeviceGetNvLinkState(handle, link),  # noqa: B023 - called at once
            )
            if state is not None and state != FEATURE_ENABLED:
                down.append(link)
                continue
            for name, counter in NVLINK_COUNTERS.items():
                value = self._signal(
                    "nvmlDeviceGetNvLinkErrorCounter",
                    lambda: int(self._library.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter)),  # noqa: B023
                )
                if value is not None:
                    counters[link, name] = value
        return counters, tuple(down)

    def _signal(self, call: str, read: Callable[[], _T]) -> _T | None:
        """A health signal's reading, or None where the device or driver does not have it.

        Unlike a gauge, a signal the GPU cannot give must never make it unhealthy by itself: the
        feature-missing answers (`_ABSENT`) are None. A lost GPU still raises, like every read of
        it. Any other error (a driver quirk in one optional call) is None too, logged once per
        call and code: the gauges' reads already report a device NVML cannot read.
        """
        try:
            return read()
        except pynvml.NVMLError as failure:
            self._absent(call, failure)
            return None

    def _absent(self, call: str, failure: pynvml.NVMLError) -> None:
        """Take a signal's failed call as the signal absent: unless the GPU is lost (raised again)."""
        if isinstance(failure, pynvml.NVMLError_GpuIsLost):
            raise failure
        if not isinstance(failure, _ABSENT) and (call, failure.value) not in self._reported:
            self._reported.add((call, failure.value))
            logger.warning("NVML %s failed (%s); that health signal is left out", call, failure)

    def _unexpected(self, call: str, failure: pynvml.NVMLError) -> None:
        """Log a failed MIG read once per call and code (a lost GPU says so through its reads)."""
        if isinstance(failure, pynvml.NVMLError_GpuIsLost) or (call, failure.value) in self._reported:
            return
        self._reported.add((call, failure.value))
        logger.warning("NVML %s failed (%s); the GPU's MIG state is kept as last read", call, failure)

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
