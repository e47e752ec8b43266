"""A fake NVML with the real library's call names and error types, for tests and `--simulate`.

It stands in for `pynvml` behind `nvml.Library`: the same functions, the same return shapes
(`.total`/`.used`, `.gpu`, milliwatts) and the same exceptions (`pynvml.NVMLError` subclasses
with the real codes, raised through `nvml.error`), so the agent's NVML handling runs unchanged.

Scenarios are set up by name (`scenario("hot", gpus=8)`) or driven step by step (`lose(0)`,
`inject_xid(1, 79)`, `hang("nvmlDeviceGetMemoryInfo", 1)` then `release()`). Readings move
with the injected clock, not with wall time, so a benchmark can simulate an hour in a second
and a test gets the same numbers on every run.

The health signals DCGM watches have knobs too: `set_row_remap(0, pending=True)`,
`set_retired_pages(0, pending=True)`, `throttle(0, nvml.CLOCKS_HW_THERMAL)`,
`nvlink_errors(0, link=2, crc_flit=500)`, `pcie_replays(0, 20)`. Each GPU is a `Model` (A100 by
default) that answers NotSupported where the real board does: no row remapping before Ampere,
no page retirement from Ampere on, no NVLink on a PCIe card, no MIG before Ampere. `missing_functions` makes calls
answer FunctionNotFound, as an older driver's libnvidia-ml does for calls it lacks.

MIG (Ampere and Hopper boards) as the driver does it: `set_mig_mode(0, True)` sets the pending
mode, which `reset(0)` (a GPU reset or reboot) puts in effect; then `create_mig(0, "1g.10gb")`
and `destroy_mig(0, gpu_instance_id)` make and remove instances (`nvidia-smi mig -cgi ... -C`,
`-dci`/`-dgi`). MIG devices are read through the real calls and shapes (`nvmlDeviceGetMigMode`
answers `[current, pending]`, an empty MIG slot NotFound, profile info a `.name`/`.sliceCount`/
`.memorySizeMB` structure); `mig_monitor = False` makes GPU instance calls answer NoPermission,
as in a container without the MIG monitor capability. A MIG-enabled GPU answers NotSupported
for its utilisation, as the real one does.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import threading
import time
from collections.abc import Callable

import pynvml

from gpufleet_agent import nvml

GIB = 1024**3


class Load(enum.StrEnum):
    """How a fake GPU's readings move over time."""

    IDLE = "idle"
    """Idle and steady: readings wobble well below the write thresholds."""
    BUSY = "busy"
    """A training job: utilisation, memory, power and temperature jump around every sample."""
    WAVE = "wave"
    """A slow daily-like swing between idle and busy, for `--simulate`."""
    STEADY = "steady"
    """A steady fleet: each GPU idle or running a long job at its own constant level, readings
    wobbling with sensor and workload noise (utilisation a few points, power a few watts)."""
    NOISY = "noisy"
    """A busy, noisy fleet: jobs of random size start and stop every few minutes; utilisation
    and power jump every sample, memory jitters with the allocator, and temperature follows the
    job with the card's thermal lag plus sensor noise."""


NOISY_JOB_SECONDS = 300.0
"""How long a job slot of the `noisy` load lasts: each slot a GPU draws a new job size (or idles)."""
THERMAL_LAG_SECONDS = 60.0
"""Time constant of the `noisy` load's temperature following a job change (a card's thermal mass)."""


@dataclasses.dataclass(frozen=True)
class MigProfile:
    """A GPU instance profile of a board, as `nvidia-smi mig -lgip` lists it."""

    index: int
    """The `NVML_GPU_INSTANCE_PROFILE_*` index the profile info call takes."""
    id: int
    """The profile id GPU instances refer to."""
    name: str
    slice_count: int
    memory_mb: int
    multiprocessor_count: int
    instance_count: int
    """How many instances of it fit on the GPU."""
    placement_size: int
    """Memory slices an instance occupies."""
    starts: tuple[int, ...]
    """Where an instance may start."""


def _mig_profiles(
    sms_per_slice: int, full_sms: int, three_slice_sms: int, four_slice_sms: int
) -> tuple[MigProfile, ...]:
    """The MIG profiles of an 80 GB A100 or H100 (they differ in SMs only)."""
    return (
        MigProfile(
            pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 19, "1g.10gb", 1, 9856, sms_per_slice, 7, 1, tuple(range(7))
        ),
        MigProfile(
            pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1,
            20,
            "1g.10gb+me",
            1,
            9856,
            sms_per_slice,
            1,
            1,
            tuple(range(7)),
        ),
        MigProfile(
            pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, 15, "1g.20gb", 1, 19968, sms_per_slice, 4, 2, (0, 2, 4, 6)
        ),
        MigProfile(
            pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE, 14, "2g.20gb", 2, 19968, 2 * sms_per_slice, 3, 2, (0, 2, 4)
        ),
        MigProfile(pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 9, "3g.40gb", 3, 40192, three_slice_sms, 2, 4, (0, 4)),
        MigProfile(pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE, 5, "4g.40gb", 4, 40192, four_slice_sms, 1, 4, (0,)),
        MigProfile(pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE, 0, "7g.80gb", 7, 80896, full_sms, 1, 8, (0,)),
    )


@dataclasses.dataclass(frozen=True)
class Model:
    """What a kind of board has: its name and memory, NVLinks, the calls it answers NotSupported, MIG profiles."""

    name: str
    memory_total: int
    nvlinks: int
    unsupported: frozenset[str]
    mig_profiles: tuple[MigProfile, ...] = ()
    """Empty: no MIG (the MIG calls answer NotSupported)."""


_PAGE_RETIREMENT = frozenset({"nvmlDeviceGetRetiredPages", "nvmlDeviceGetRetiredPagesPendingStatus"})
A100 = Model("NVIDIA A100-SXM4-80GB", 80 * GIB, 12, _PAGE_RETIREMENT, _mig_profiles(14, 98, 42, 56))
"""Ampere: remaps rows, retires no pages (NotSupported), 12 NVLinks, MIG (1g.10gb to 7g.80gb)."""
H100 = Model("NVIDIA H100 80GB HBM3", 80 * GIB, 18, _PAGE_RETIREMENT, _mig_profiles(16, 132, 60, 64))
"""Hopper: like Ampere, with 18 NVLinks."""
V100 = Model("Tesla V100-SXM2-32GB", 32 * GIB, 6, frozenset({"nvmlDeviceGetRemappedRows"}))
"""Volta: retires pages, has no row remapping (NotSupported), 6 NVLinks."""
T4 = Model("Tesla T4", 16 * GIB, 0, frozenset({"nvmlDeviceGetRemappedRows"}))
"""Turing PCIe card: retires pages, no row remapping and no NVLink (NotSupported)."""


@dataclasses.dataclass
class FakeMigInstance:
    """One MIG device: a GPU instance with one compute instance spanning it."""

    uuid: str
    profile: MigProfile
    start: int
    gpu_instance_id: int
    slot: int
    """Its index for `nvmlDeviceGetMigDeviceHandleByIndex`."""
    compute_instance_id: int = 0


@dataclasses.dataclass
class FakeGpu:
    """State of one simulated device."""

    uuid: str
    name: str = A100.name
    memory_total: int = A100.memory_total
    load: Load = Load.IDLE
    phase: float = 0.0
    extra_celsius: float = 0.0
    failing_with: int | None = None
    """NVML error code every call on this device answers, e.g. GPU_IS_LOST."""
    uncorrected_ecc: int = 0
    early_xids: list[int] = dataclasses.field(default_factory=list)
    """XIDs the driver logged before anyone listened; delivered when events are registered."""
    unsupported: frozenset[str] = A100.unsupported
    """pynvml calls this board answers NotSupported."""
    nvlinks_active: list[bool] = dataclasses.field(default_factory=lambda: [True] * A100.nvlinks)
    """One entry per NVLink the board has: whether it is up."""
    nvlink_counters: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)
    """(link, NVML error counter) -> count."""
    remapped_rows: tuple[int, int, bool, bool] = (0, 0, False, False)
    """Corrected rows, uncorrected rows, remap pending, remap failure."""
    retired_pages: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Retirement cause -> page addresses."""
    retired_pages_pending: bool = False
    clock_reasons: int = 0
    """Clock event reasons injected by `throttle`, on top of the idle reason the load gives."""
    pcie_replays: int = 0
    mig_profiles: tuple[MigProfile, ...] = A100.mig_profiles
    """Empty: a board without MIG."""
    mig_enabled: bool = False
    """The MIG mode in effect."""
    mig_pending: bool = False
    """The MIG mode set, in effect after the next reset."""
    mig_instances: list[FakeMigInstance] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Memory:
    total: int
    used: int
    free: int


@dataclasses.dataclass(frozen=True)
class Utilization:
    gpu: int
    memory: int


@dataclasses.dataclass(frozen=True)
class Handle:
    """What `nvmlDeviceGetHandleByIndex` returns: it names a device for later calls."""

    gpu: FakeGpu


@dataclasses.dataclass(frozen=True)
class MigHandle(Handle):
    """A MIG device's handle (`nvmlDeviceGetMigDeviceHandleByIndex`): its parent GPU and the instance."""

    instance: FakeMigInstance


@dataclasses.dataclass(frozen=True)
class GpuInstance:
    """What `nvmlDeviceGetGpuInstanceById` returns (`c_nvmlGpuInstance_t`, opaque)."""

    gpu: FakeGpu
    instance: FakeMigInstance


@dataclasses.dataclass(frozen=True)
class Placement:
    """Shape of `c_nvmlGpuInstancePlacement_t`."""

    start: int
    size: int


@dataclasses.dataclass(frozen=True)
class GpuInstanceInfo:
    """Shape of `c_nvmlGpuInstanceInfo_t`."""

    device: Handle
    id: int
    profileId: int
    placement: Placement


@dataclasses.dataclass(frozen=True)
class GpuInstanceProfileInfo:
    """Shape of `c_nvmlGpuInstanceProfileInfo_t` (version 1: no name)."""

    id: int
    isP2pSupported: int
    sliceCount: int
    instanceCount: int
    multiprocessorCount: int
    copyEngineCount: int
    decoderCount: int
    encoderCount: int
    jpegCount: int
    ofaCount: int
    memorySizeMB: int


@dataclasses.dataclass(frozen=True)
class GpuInstanceProfileInfoV2(GpuInstanceProfileInfo):
    """Shape of `c_nvmlGpuInstanceProfileInfo_v2_t` (pynvml answers its `name` as str)."""

    version: int
    name: str


@dataclasses.dataclass(frozen=True)
class EventData:
    """Shape of `pynvml.c_nvmlEventData_t`."""

    device: Handle
    eventType: int
    eventData: int


class EventSet:
    """Pending events, bounded like the driver's queue so an unattended set cannot grow forever."""

    LIMIT = 256

    def __init__(self) -> None:
        self.pending: list[EventData] = []
        self.masks: dict[int, int] = {}  # id(FakeGpu) -> registered event mask


class FakeNVML:
    """The NVML calls the agent uses, on simulated devices."""

    def __init__(
        self,
        gpus: int = 0,
        *,
        load: Load = Load.IDLE,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        library_missing: bool = False,
        host_tag: str = "0000",
    ) -> None:
        self._clock = clock
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._initialised = 0
        self.library_missing = library_missing
        self.devices = [FakeGpu(uuid=_uuid(host_tag, i), load=load, phase=i * 0.7) for i in range(gpus)]
        self._event_sets: list[EventSet] = []
        self._hangs: dict[str, FakeGpu | None] = {}  # call name -> the device it hangs on (None: any)
        self._released = threading.Event()
        self._released.set()
        self._blocked = 0
        self.missing_functions: set[str] = set()
        """pynvml calls that answer FunctionNotFound, as with an older driver that lacks them."""
        self.mig_monitor = True
        """False: GPU instance calls answer NoPermission (a container without the MIG monitor capability)."""
        self._mig_serial = 0

    # ----- scenario controls (call from tests or a simulation) --------------------------------------------

    def heat(self, index: int, celsius: float) -> None:
        """Add `celsius` to a GPU's temperature (a failing fan, a blocked airflow)."""
        with self._lock:
            self.devices[index].extra_celsius = celsius

    def inject_xid(self, index: int, xid: int) -> None:
        """Raise an XID error on a GPU, as the driver would post it."""
        self._post(self.devices[index], nvml.EVENT_XID_CRITICAL, xid)

    def inject_double_bit_ecc(self, index: int) -> None:
        """An uncorrectable memory error: the volatile counter goes up and an event is posted."""
        with self._lock:
            self.devices[index].uncorrected_ecc += 1
        self._post(self.devices[index], nvml.EVENT_DOUBLE_BIT_ECC, 0)

    def lose(self, index: int) -> None:
        """The GPU falls off the bus: every call on it answers GPU_IS_LOST (XID 79 in the kernel log)."""
        with self._lock:
            self.devices[index].failing_with = nvml.ERROR_GPU_IS_LOST

    def recover(self, index: int) -> None:
        with self._lock:
            self.devices[index].failing_with = None

    def fail(self, index: int, code: int) -> None:
        """Every call on the GPU answers NVML error `code` (a driver or hardware fault), until `recover`."""
        with self._lock:
            self.devices[index].failing_with = code

    def set_model(self, index: int, model: Model) -> None:
        """Make a GPU another kind of board (before the agent discovers it: its name changes too)."""
        with self._lock:
            gpu = self.devices[index]
            gpu.name, gpu.memory_total, gpu.unsupported = model.name, model.memory_total, model.unsupported
            gpu.nvlinks_active = [True] * model.nvlinks
            gpu.mig_profiles, gpu.mig_enabled, gpu.mig_pending = model.mig_profiles, False, False
            gpu.mig_instances = []

    def set_mig_mode(self, index: int, enabled: bool) -> None:
        """Set a GPU's MIG mode (`nvidia-smi -mig 1`, `nvmlDeviceSetMigMode`): pending until `reset`."""
        with self._lock:
            gpu = self.devices[index]
            if not gpu.mig_profiles:
                raise ValueError(f"GPU {index} ({gpu.name}) does not support MIG")
            gpu.mig_pending = enabled

    def reset(self, index: int) -> None:
        """A GPU reset (or reboot): a pending MIG mode takes effect, and a mode change drops every instance."""
        with self._lock:
            gpu = self.devices[index]
            if gpu.mig_enabled != gpu.mig_pending:
                gpu.mig_enabled = gpu.mig_pending
                gpu.mig_instances = []

    def create_mig(self, index: int, profile: str, start: int | None = None) -> FakeMigInstance:
        """Create a GPU instance of `profile` (e.g. `1g.10gb`) with one compute instance: a MIG device.

        At `start` (a memory slice) or the first free placement, with the lowest free GPU instance id.
        """
        with self._lock:
            gpu = self.devices[index]
            if not gpu.mig_enabled:
                raise ValueError(f"GPU {index} ({gpu.name}) is not in MIG mode")
            chosen = next((p for p in gpu.mig_profiles if p.name == profile), None)
            if chosen is None:
                raise ValueError(f"GPU {index} ({gpu.name}) has no MIG profile {profile!r}")
            taken = {s for i in gpu.mig_instances for s in range(i.start, i.start + i.profile.placement_size)}
            starts = [s for s in chosen.starts if start in (None, s)]
            free = [s for s in starts if not taken & set(range(s, s + chosen.placement_size))]
            if not free or sum(i.profile is chosen for i in gpu.mig_instances) >= chosen.instance_count:
                raise ValueError(
                    f"no room for a {profile} instance on GPU {index} at {start if start is not None else 'any start'}"
                )
            used_ids = {i.gpu_instance_id for i in gpu.mig_instances}
            used_slots = {i.slot for i in gpu.mig_instances}
            self._mig_serial += 1
            instance = FakeMigInstance(
                uuid=f"MIG-{gpu.uuid[4:12]}-5a1c-4e0f-8d2b-{self._mig_serial:012x}",
                profile=chosen,
                start=free[0],
                gpu_instance_id=next(i for i in range(1, 64) if i not in used_ids),
                slot=next(i for i in range(64) if i not in used_slots),
            )
            gpu.mig_instances.append(instance)
            return instance

    def destroy_mig(self, index: int, gpu_instance_id: int) -> None:
        """Destroy a GPU instance and its compute instance (`nvidia-smi mig -dci -gi N; -dgi -gi N`)."""
        with self._lock:
            gpu = self.devices[index]
            kept = [i for i in gpu.mig_instances if i.gpu_instance_id != gpu_instance_id]
            if len(kept) == len(gpu.mig_instances):
                raise ValueError(f"GPU {index} has no GPU instance {gpu_instance_id}")
            gpu.mig_instances = kept

    def set_row_remap(
        self,
        index: int,
        *,
        pending: bool | None = None,
        failure: bool | None = None,
        corrected: int | None = None,
        uncorrected: int | None = None,
    ) -> None:
        """Set what `nvmlDeviceGetRemappedRows` answers; what is left out stays as it was.

        A memory row went bad: the driver remaps it and sets `pending` until the GPU is reset
        (`pending=False` is that reset); `failure` when no spare row was left.
        """
        with self._lock:
            gpu = self._supporting(index, "nvmlDeviceGetRemappedRows")
            old = gpu.remapped_rows
            gpu.remapped_rows = (
                old[0] if corrected is None else corrected,
                old[1] if uncorrected is None else uncorrected,
                old[2] if pending is None else pending,
                old[3] if failure is None else failure,
            )

    def set_retired_pages(
        self, index: int, *, pending: bool | None = None, double_bit: int | None = None, single_bit: int | None = None
    ) -> None:
        """Set page retirement (pre-Ampere): `pending` until the next reboot, and how many pages by cause."""
        with self._lock:
            gpu = self._supporting(index, "nvmlDeviceGetRetiredPagesPendingStatus")
            if pending is not None:
                gpu.retired_pages_pending = pending
            for cause, count in (
                (nvml.PAGE_RETIREMENT_DOUBLE_BIT, double_bit),
                (nvml.PAGE_RETIREMENT_SINGLE_BIT, single_bit),
            ):
                if count is not None:
                    gpu.retired_pages[cause] = [0x1000 * (cause + 1) + page for page in range(count)]

    def throttle(self, index: int, reasons: int) -> None:
        """The GPU's clocks are held down for `reasons` (a mask of `nvml.CLOCKS_*`) from now on; 0 lifts it."""
        with self._lock:
            self.devices[index].clock_reasons = reasons

    def nvlink_errors(
        self, index: int, link: int, *, crc_flit: int = 0, crc_data: int = 0, replay: int = 0, recovery: int = 0
    ) -> None:
        """Add errors to an NVLink's counters (they only grow, like the hardware's, until a reset)."""
        with self._lock:
            gpu = self.devices[index]
            if not 0 <= link < len(gpu.nvlinks_active):
                raise ValueError(f"GPU {index} ({gpu.name}) has no NVLink {link}")
            for name, added in (
                ("crc_flit", crc_flit),
                ("crc_data", crc_data),
                ("replay", replay),
                ("recovery", recovery),
            ):
                key = (link, nvml.NVLINK_COUNTERS[name])
                gpu.nvlink_counters[key] = gpu.nvlink_counters.get(key, 0) + added

    def set_nvlink_active(self, index: int, link: int, active: bool) -> None:
        """Bring an NVLink up or down: the agent sees a watched link go down or come back at its next
        sample, a link it never saw up at its next discovery."""
        with self._lock:
            self.devices[index].nvlinks_active[link] = active

    def pcie_replays(self, index: int, count: int) -> None:
        """Add `count` PCIe replays (link-level retransmissions) to the GPU's counter."""
        with self._lock:
            self.devices[index].pcie_replays += count

    def _supporting(self, index: int, call: str) -> FakeGpu:
        """The GPU, which must support `call`: a knob for a signal its board lacks is a mistake in the test."""
        gpu = self.devices[index]
        if call in gpu.unsupported:
            raise ValueError(f"GPU {index} ({gpu.name}) does not support {call}")
        return gpu

    def remove(self, index: int) -> FakeGpu:
        """The device is gone from the bus listing (after a reset or hot-unplug); later indexes shift down."""
        with self._lock:
            return self.devices.pop(index)

    def add(self, gpu: FakeGpu | None = None) -> FakeGpu:
        with self._lock:
            gpu = gpu or FakeGpu(uuid=_uuid("add0", self._random.randrange(1 << 32)))
            self.devices.append(gpu)
            return gpu

    def hang(self, call: str, index: int | None = None) -> None:
        """From now on `call` (a pynvml function name), on GPU `index` or on any, blocks until `release()`.

        What a hung driver does: a GPU falling off the bus mid-call, a driver stuck in the kernel.
        The call does not fail, it never returns; only `release` lets the blocked calls go on.
        """
        if not call.startswith("nvml") or not hasattr(pynvml, call) or not hasattr(self, call):
            raise ValueError(f"{call!r} is not a pynvml call the fake provides")
        with self._lock:
            self._hangs[call] = None if index is None else self.devices[index]
            if self._released.is_set():
                self._released = threading.Event()

    def release(self) -> None:
        """The driver recovers: blocked calls return (with their normal answer) and no call hangs any more."""
        with self._lock:
            self._hangs.clear()
            self._released.set()

    @property
    def blocked_calls(self) -> int:
        """How many calls are blocked in a hang right now."""
        with self._lock:
            return self._blocked

    def _hang_point(self, call: str, gpu: FakeGpu | None = None) -> None:
        with self._lock:
            if call not in self._hangs or self._hangs[call] not in (None, gpu):
                return
            released = self._released
            self._blocked += 1
        released.wait()
        with self._lock:
            self._blocked -= 1

    def _post(self, gpu: FakeGpu, event_type: int, data: int) -> None:
        with self._lock:
            for event_set in self._event_sets:
                if event_set.masks.get(id(gpu), 0) & event_type and len(event_set.pending) < EventSet.LIMIT:
                    event_set.pending.append(EventData(Handle(gpu), event_type, data))

    # ----- the pynvml calls ---------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._hang_point("nvmlInit")
        if self.library_missing:
            raise nvml.error(nvml.ERROR_LIBRARY_NOT_FOUND)
        self._initialised += 1

    def nvmlShutdown(self) -> None:
        self._check_initialised()
        self._hang_point("nvmlShutdown")
        self._initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_initialised()
        self._hang_point("nvmlSystemGetDriverVersion")
        return "550.54.15-fake"

    def nvmlDeviceGetCount(self) -> int:
        self._check_initialised()
        self._hang_point("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._check_initialised()
        with self._lock:
            gpu = self.devices[index] if 0 <= index < len(self.devices) else None
        self._hang_point("nvmlDeviceGetHandleByIndex", gpu)
        with self._lock:
            if not 0 <= index < len(self.devices):
                raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
            return Handle(self.devices[index])

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        gpu = self._device(handle, "nvmlDeviceGetUUID")
        return self._mig_instance(handle).uuid if isinstance(handle, MigHandle) else gpu.uuid

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        return self._device(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> Memory:
        gpu = self._device(handle, "nvmlDeviceGetMemoryInfo")
        if isinstance(handle, MigHandle):
            total = self._mig_instance(handle).profile.memory_mb * 1024**2
            used = min(total, int(total * (0.01 + 0.9 * self._workload(gpu))))
            return Memory(total=total, used=used, free=total - used)
        share = 0.01 + 0.9 * self._workload(gpu) + self._memory_jitter(gpu)
        used = min(gpu.memory_total, max(0, int(gpu.memory_total * share)))
        return Memory(total=gpu.memory_total, used=used, free=gpu.memory_total - used)

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        gpu = self._device(handle, "nvmlDeviceGetTemperature")
        if sensor != nvml.TEMPERATURE_GPU:
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        noise = 1.0 if gpu.load in (Load.NOISY, Load.STEADY) else 0.3  # the sensor's, in °C
        return round(34 + 45 * self._heat(gpu) + gpu.extra_celsius + self._wobble(noise))

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization:
        gpu = self._device(handle, "nvmlDeviceGetUtilizationRates")
        if gpu.mig_enabled:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)  # as the real one: no whole-GPU utilisation in MIG mode
        activity = self._activity(gpu)
        return Utilization(gpu=round(100 * activity), memory=round(60 * activity))

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        gpu = self._device(handle, "nvmlDeviceGetPowerUsage")
        activity = self._activity(gpu)
        wobble = 6.0 if gpu.load is Load.STEADY else 1.5
        return round(1000 * (60 + 330 * activity + self._wobble(wobble)))  # milliwatts

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        gpu = self._device(handle, "nvmlDeviceGetTotalEccErrors")
        if error_type != nvml.MEMORY_ERROR_UNCORRECTED or counter_type != nvml.VOLATILE_ECC:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        return gpu.uncorrected_ecc

    def nvmlDeviceGetRemappedRows(self, device: Handle) -> tuple[int, int, int, int]:
        corrected, uncorrected, pending, failure = self._signal(device, "nvmlDeviceGetRemappedRows").remapped_rows
        return (corrected, uncorrected, int(pending), int(failure))  # c_uint values, as pynvml returns them

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Handle) -> int:
        gpu = self._signal(device, "nvmlDeviceGetRetiredPagesPendingStatus")
        return nvml.FEATURE_ENABLED if gpu.retired_pages_pending else nvml.FEATURE_DISABLED

    def nvmlDeviceGetRetiredPages(self, device: Handle, sourceFilter: int) -> list[int]:
        gpu = self._signal(device, "nvmlDeviceGetRetiredPages")
        if sourceFilter not in (nvml.PAGE_RETIREMENT_DOUBLE_BIT, nvml.PAGE_RETIREMENT_SINGLE_BIT):
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        return list(gpu.retired_pages.get(sourceFilter, []))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        return self._clock_reasons(self._signal(handle, "nvmlDeviceGetCurrentClocksEventReasons"))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        return self._clock_reasons(self._signal(handle, "nvmlDeviceGetCurrentClocksThrottleReasons"))

    def nvmlDeviceGetNvLinkState(self, device: Handle, link: int) -> int:
        gpu = self._signal(device, "nvmlDeviceGetNvLinkState")
        if not gpu.nvlinks_active:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)  # a PCIe board
        if not 0 <= link < len(gpu.nvlinks_active):
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        return nvml.FEATURE_ENABLED if gpu.nvlinks_active[link] else nvml.FEATURE_DISABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, device: Handle, link: int, counter: int) -> int:
        gpu = self._signal(device, "nvmlDeviceGetNvLinkErrorCounter")
        if not gpu.nvlinks_active:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        if not 0 <= link < len(gpu.nvlinks_active) or not 0 <= counter < pynvml.NVML_NVLINK_ERROR_COUNT:
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        return gpu.nvlink_counters.get((link, counter), 0)

    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int:
        return self._signal(handle, "nvmlDeviceGetPcieReplayCounter").pcie_replays

    def nvmlDeviceGetMigMode(self, device: Handle) -> list[int]:
        gpu = self._mig_parent(device, "nvmlDeviceGetMigMode")
        return [int(gpu.mig_enabled), int(gpu.mig_pending)]  # pynvml answers [current, pending]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Handle) -> int:
        gpu = self._mig_parent(device, "nvmlDeviceGetMaxMigDeviceCount")
        return max(p.instance_count for p in gpu.mig_profiles) if gpu.mig_enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Handle, index: int) -> MigHandle:
        gpu = self._mig_parent(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not gpu.mig_enabled:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        if not 0 <= index < max(p.instance_count for p in gpu.mig_profiles):
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        with self._lock:
            instance = next((i for i in gpu.mig_instances if i.slot == index), None)
        if instance is None:
            raise nvml.error(nvml.ERROR_NOT_FOUND)
        return MigHandle(gpu, instance)

    def nvmlDeviceGetGpuInstanceId(self, device: Handle) -> int:
        self._device(device, "nvmlDeviceGetGpuInstanceId")
        return self._mig_instance(device).gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, device: Handle) -> int:
        self._device(device, "nvmlDeviceGetComputeInstanceId")
        return self._mig_instance(device).compute_instance_id

    def nvmlDeviceGetGpuInstanceById(self, device: Handle, gpuInstanceId: int) -> GpuInstance:
        gpu = self._mig_parent(device, "nvmlDeviceGetGpuInstanceById")
        if not gpu.mig_enabled:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        if not self.mig_monitor:
            raise nvml.error(nvml.ERROR_NO_PERMISSION)
        with self._lock:
            instance = next((i for i in gpu.mig_instances if i.gpu_instance_id == gpuInstanceId), None)
        if instance is None:
            raise nvml.error(nvml.ERROR_NOT_FOUND)
        return GpuInstance(gpu, instance)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: GpuInstance) -> GpuInstanceInfo:
        self._check_initialised()
        gpu, instance = self._device(Handle(gpuInstance.gpu), "nvmlGpuInstanceGetInfo"), gpuInstance.instance
        if instance not in gpu.mig_instances:
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)  # destroyed: the handle is stale
        placement = Placement(instance.start, instance.profile.placement_size)
        return GpuInstanceInfo(Handle(gpu), instance.gpu_instance_id, instance.profile.id, placement)

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, device: Handle, profile: int, version: int = 2
    ) -> GpuInstanceProfileInfo:
        call = "nvmlDeviceGetGpuInstanceProfileInfoV" if version == 2 else "nvmlDeviceGetGpuInstanceProfileInfo"
        if version not in (1, 2):
            raise nvml.error(nvml.ERROR_FUNCTION_NOT_FOUND)  # what pynvml raises itself
        gpu = self._mig_parent(device, call)
        if not 0 <= profile < nvml.GPU_INSTANCE_PROFILE_COUNT:
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
        found = next((p for p in gpu.mig_profiles if p.index == profile), None)
        if found is None:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        counts = (found.id, 0, found.slice_count, found.instance_count, found.multiprocessor_count, found.slice_count)
        engines = (found.slice_count // 2, 0, found.slice_count // 2, 1 if found.slice_count == 7 else 0)
        if version == 1:
            return GpuInstanceProfileInfo(*counts, *engines, found.memory_mb)
        return GpuInstanceProfileInfoV2(*counts, *engines, found.memory_mb, version=0x02000098, name=found.name)

    def nvmlEventSetCreate(self) -> EventSet:
        self._check_initialised()
        self._hang_point("nvmlEventSetCreate")
        event_set = EventSet()
        with self._lock:
            self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: EventSet) -> None:
        gpu = self._device(handle, "nvmlDeviceRegisterEvents")
        with self._lock:
            event_set.masks[id(gpu)] = event_set.masks.get(id(gpu), 0) | event_types
            early, gpu.early_xids = gpu.early_xids, []
        for xid in early:
            self._post(gpu, nvml.EVENT_XID_CRITICAL, xid)

    def nvmlEventSetWait(self, event_set: EventSet, timeout_ms: int) -> EventData:
        self._check_initialised()
        self._hang_point("nvmlEventSetWait")
        with self._lock:
            if event_set.pending:
                return event_set.pending.pop(0)
        if timeout_ms > 0:
            time.sleep(timeout_ms / 1000)  # the real call blocks too; the agent only ever passes 0
        raise nvml.error(nvml.ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: EventSet) -> None:
        with self._lock:
            if event_set in self._event_sets:
                self._event_sets.remove(event_set)

    # ----- internals ------------------------------------------------------------------------------------------

    def _check_initialised(self) -> None:
        if self._initialised <= 0:
            raise nvml.error(nvml.ERROR_UNINITIALIZED)

    def _device(self, handle: Handle, call: str) -> FakeGpu:
        self._check_initialised()
        self._hang_point(call, handle.gpu)
        with self._lock:
            if handle.gpu not in self.devices:
                raise nvml.error(nvml.ERROR_GPU_IS_LOST)
            if handle.gpu.failing_with is not None:
                raise nvml.error(handle.gpu.failing_with)
            return handle.gpu

    def _signal(self, handle: Handle, call: str) -> FakeGpu:
        """The device for a health-signal call, failing as the real one would on this board and driver."""
        self._check_initialised()
        if call in self.missing_functions:
            raise nvml.error(nvml.ERROR_FUNCTION_NOT_FOUND)
        gpu = self._device(handle, call)
        if call in gpu.unsupported:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        return gpu

    def _mig_parent(self, handle: Handle, call: str) -> FakeGpu:
        """The GPU for a MIG call on a parent device: NotSupported on a board without MIG, as the real one."""
        self._check_initialised()
        if call in self.missing_functions:
            raise nvml.error(nvml.ERROR_FUNCTION_NOT_FOUND)
        gpu = self._device(handle, call)
        if isinstance(handle, MigHandle):
            raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)  # a MIG device is no parent
        if not gpu.mig_profiles:
            raise nvml.error(nvml.ERROR_NOT_SUPPORTED)
        return gpu

    def _mig_instance(self, handle: Handle) -> FakeMigInstance:
        """The MIG device a handle names; InvalidArgument for a parent's handle or a destroyed instance."""
        with self._lock:
            if not isinstance(handle, MigHandle) or handle.instance not in handle.gpu.mig_instances:
                raise nvml.error(nvml.ERROR_INVALID_ARGUMENT)
            return handle.instance

    def _clock_reasons(self, gpu: FakeGpu) -> int:
        """Injected reasons; else GPU idle while the load has no job (what a real idle board reports)."""
        if gpu.clock_reasons:
            return gpu.clock_reasons
        return nvml.CLOCKS_GPU_IDLE if self._workload(gpu) < 0.05 else 0

    def _workload(self, gpu: FakeGpu) -> float:
        """0..1: the job's size, which moves slowly: memory held and (through thermal mass) temperature."""
        if gpu.load is Load.IDLE:
            return 0.0
        if gpu.load is Load.BUSY:
            return 0.8
        if gpu.load is Load.STEADY:
            return _steady_level(gpu)
        if gpu.load is Load.NOISY:
            return _job_level(gpu, math.floor(self._slot(gpu)))
        return 0.5 + 0.5 * math.sin(self._clock() / 300 + gpu.phase)  # a half-hour swing

    def _activity(self, gpu: FakeGpu) -> float:
        """0..1: how busy the GPU is this instant (utilisation, power), noisier than the workload."""
        if gpu.load is Load.BUSY:
            return min(1.0, max(0.0, 0.6 + self._random.uniform(-0.35, 0.35)))
        if gpu.load is Load.NOISY:
            level = self._workload(gpu)
            noise = self._random.uniform(-0.35, 0.35) if level else self._random.uniform(0.0, 0.03)
            return min(1.0, max(0.0, 0.9 * level + noise))
        if gpu.load is Load.STEADY:
            noise = self._random.uniform(-0.06, 0.06) if _steady_level(gpu) else self._random.uniform(0.0, 0.02)
            return min(1.0, max(0.0, _steady_level(gpu) + noise))
        return min(1.0, max(0.0, self._workload(gpu) + self._random.uniform(-0.02, 0.02)))

    def _heat(self, gpu: FakeGpu) -> float:
        """0..1: what the temperature follows; under the `noisy` load it lags job changes (thermal mass)."""
        if gpu.load is not Load.NOISY:
            return self._workload(gpu)
        slot = self._slot(gpu)
        previous, current = _job_level(gpu, math.floor(slot) - 1), _job_level(gpu, math.floor(slot))
        elapsed = (slot - math.floor(slot)) * NOISY_JOB_SECONDS
        return current + (previous - current) * math.exp(-elapsed / THERMAL_LAG_SECONDS)

    def _memory_jitter(self, gpu: FakeGpu) -> float:
        """Fraction of total memory the allocator adds or frees from one sample to the next."""
        if gpu.load is Load.NOISY and self._workload(gpu):
            return self._random.uniform(-0.03, 0.03)
        return 0.0

    def _slot(self, gpu: FakeGpu) -> float:
        """Job slots of the `noisy` load, offset per GPU so that the node's jobs do not change in step."""
        return self._clock() / NOISY_JOB_SECONDS + gpu.phase

    def _wobble(self, amplitude: float) -> float:
        return self._random.uniform(-amplitude, amplitude)


def _steady_level(gpu: FakeGpu) -> float:
    """The constant job size of a GPU under the `steady` load: a quarter idle, the rest 50-95%."""
    draw = random.Random(f"{gpu.uuid}:steady").random()
    return 0.0 if draw < 0.25 else 0.5 + 0.45 * (draw - 0.25) / 0.75


def _job_level(gpu: FakeGpu, slot: int) -> float:
    """The job size of a GPU in one slot of the `noisy` load: idle one slot in four, else 30-100%.

    Drawn from the slot number (not from the call sequence), so readings depend on the clock only
    and a test or a simulated hour sees the same jobs however often it samples.
    """
    draw = random.Random(f"{gpu.uuid}:{slot}").random()
    return 0.0 if draw < 0.25 else 0.3 + 0.7 * (draw - 0.25) / 0.75


def _uuid(tag: str, index: int) -> str:
    return f"GPU-{tag:0>8.8}-fa4e-4d1a-9c5b-{index:012x}"


def scenario(
    name: str,
    gpus: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    seed: int = 0,
    host_tag: str = "",
) -> FakeNVML:
    """A fake NVML set up for a named scenario.

    `none`, `one`, `eight`, `idle`: that many idle GPUs; `busy`: GPUs under a varying training load;
    `wave`: slowly swinging load (what `--simulate` uses by default); `steady`: long jobs at constant
    levels; `noisy`: jobs starting and stopping, noisy readings (see `Load`); `hot`: GPU 0 runs 50 °C hotter;
    `xid`: GPU 0 reports critical XID 79 (fallen off the bus) and GPU 1 application XID 13;
    `vanish`: GPU 0 has fallen off the bus; `missing`: no NVML library on the machine; `mig`: GPU 0
    in MIG mode with a 3g.40gb and two 1g.10gb instances, the others not.
    """
    defaults = {
        "none": 0,
        "one": 1,
        "eight": 8,
        "idle": 8,
        "busy": 1,
        "wave": 8,
        "steady": 8,
        "noisy": 8,
        "hot": 1,
        "xid": 2,
        "vanish": 1,
        "missing": 0,
        "mig": 2,
    }
    if name not in defaults:
        raise ValueError(f"unknown fake NVML scenario {name!r}; known: {', '.join(defaults)}")
    count = defaults[name] if gpus is None else gpus
    load = {"busy": Load.BUSY, "wave": Load.WAVE, "steady": Load.STEADY, "noisy": Load.NOISY}.get(name, Load.IDLE)
    fake = FakeNVML(
        count, load=load, clock=clock, seed=seed, library_missing=name == "missing", host_tag=host_tag or "0000"
    )
    if name == "hot":
        fake.heat(0, 50)
    elif name == "vanish":
        fake.lose(0)
    elif name == "xid":
        fake.devices[0].early_xids.append(79)
        fake.devices[1].early_xids.append(13)
    elif name == "mig" and fake.devices:
        fake.set_mig_mode(0, True)
        fake.reset(0)
        for profile in ("3g.40gb", "1g.10gb", "1g.10gb"):
            fake.create_mig(0, profile)
    return fake
