"""The fake NVML behaves like pynvml (calls, shapes, error types), and `nvml.Nvml` handles both alike."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from gpufleet_agent import fakenvml, health, nvml, sampling


def started(fake: fakenvml.FakeNVML) -> nvml.Nvml:
    library = nvml.Nvml(fake)
    library.start()
    return library


@pytest.mark.parametrize(("name", "count"), [("none", 0), ("one", 1), ("eight", 8)])
def test_scenarios_list_their_gpus_with_unique_identities(name: str, count: int) -> None:
    devices = started(fakenvml.scenario(name)).discover()
    assert [d.index for d in devices] == list(range(count))
    assert len({d.uuid for d in devices}) == count
    assert all(d.model_name and d.memory_total > 0 for d in devices)


def test_missing_library_raises_pynvmls_own_error_with_the_real_code() -> None:
    with pytest.raises(pynvml.NVMLError_LibraryNotFound) as caught:
        nvml.Nvml(fakenvml.scenario("missing")).start()
    assert caught.value.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND


def test_calls_before_init_raise_uninitialized() -> None:
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fakenvml.FakeNVML(1).nvmlDeviceGetCount()


def test_a_bad_index_raises_invalid_argument() -> None:
    fake = fakenvml.FakeNVML(1)
    fake.nvmlInit()
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(1)


def test_readings_have_pynvml_shapes_and_units() -> None:
    fake = fakenvml.FakeNVML(1, load=fakenvml.Load.BUSY)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    memory = fake.nvmlDeviceGetMemoryInfo(handle)
    assert 0 < memory.used <= memory.total
    assert 0 <= fake.nvmlDeviceGetUtilizationRates(handle).gpu <= 100
    assert 60_000 <= fake.nvmlDeviceGetPowerUsage(handle) <= 400_000  # milliwatts
    assert 20 <= fake.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU) <= 90


def test_the_hot_scenario_runs_one_gpu_far_hotter() -> None:
    library = started(fakenvml.scenario("hot", gpus=2))
    library.discover()
    hot, cool = library.read(0), library.read(1)
    assert hot.temperature_celsius is not None and cool.temperature_celsius is not None
    assert hot.temperature_celsius - cool.temperature_celsius >= 45


def test_simulated_readings_move_with_the_clock() -> None:
    now = [0.0]
    library = started(fakenvml.scenario("wave", gpus=1, clock=lambda: now[0]))
    library.discover()
    seen = set()
    for minute in range(0, 60, 5):
        now[0] = minute * 60.0
        readings = library.read(0)
        assert readings.utilization_percent is not None
        seen.add(round(readings.utilization_percent, -1))
    assert len(seen) >= 4


def test_a_lost_gpu_keeps_its_slot_and_identity_but_cannot_be_read() -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    library = started(fake)
    before = library.discover()
    fake.lose(1)
    assert library.discover() == before
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        library.read(1)
    fake.recover(1)
    assert library.read(1).memory_total == before[1].memory_total


def test_a_gpu_lost_before_discovery_is_still_listed() -> None:
    devices = started(fakenvml.scenario("vanish")).discover()
    assert [(d.index, d.uuid) for d in devices] == [(0, "")]


def test_a_removed_gpu_disappears_from_discovery() -> None:
    fake = fakenvml.scenario("eight", gpus=3)
    library = started(fake)
    library.discover()
    gone = fake.remove(2)
    assert gone.uuid not in {d.uuid for d in library.discover()}


def test_xid_events_are_delivered_once_with_the_device_uuid() -> None:
    fake = fakenvml.scenario("xid")
    library = started(fake)
    devices = library.discover()
    events = library.drain_events()
    assert {(e.uuid, e.xid) for e in events} == {(devices[0].uuid, 79), (devices[1].uuid, 13)}
    assert library.drain_events() == []
    fake.inject_xid(1, 48)
    assert [(e.uuid, e.xid) for e in library.drain_events()] == [(devices[1].uuid, 48)]


def test_sampling_reports_each_scenario_as_a_user_would_see_it() -> None:
    fake = fakenvml.scenario("xid", gpus=3)
    sampler = sampling.Sampler(started(fake), health.Tracker(hold_seconds=10))
    sampler.discover()
    fake.lose(2)
    first = sampler.sample(now=0)
    assert [(s.verdict.healthy, s.verdict.reason) for s in first] == [
        (False, health.XID_REASON),
        (True, health.HEALTHY_REASON),  # XID 13 is the application's fault
        (False, health.LOST_REASON),
    ]
    assert first[2].readings is None
    fake.recover(2)
    assert all(s.verdict.healthy for s in sampler.sample(now=11))


def test_double_bit_ecc_shows_up_through_the_counter() -> None:
    fake = fakenvml.scenario("one")
    sampler = sampling.Sampler(started(fake), health.Tracker(hold_seconds=10))
    sampler.discover()
    sampler.sample(now=0)
    fake.inject_double_bit_ecc(0)
    assert sampler.sample(now=1)[0].verdict.reason == health.ECC_REASON


def test_unknown_scenarios_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="eight"):
        fakenvml.scenario("nine")


def test_a_gpu_failing_with_another_nvml_error_is_kept_and_reported_with_the_code() -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    sampler = sampling.Sampler(started(fake), health.Tracker(hold_seconds=10))
    sampler.discover()
    fake.fail(0, pynvml.NVML_ERROR_UNKNOWN)
    assert [d.index for d in sampler.discover()] == [0, 1]
    samples = sampler.sample(now=0)
    assert (samples[0].verdict.reason, samples[1].verdict.healthy) == (health.NVML_ERROR_REASON, True)
    assert str(pynvml.NVML_ERROR_UNKNOWN) in samples[0].verdict.message


def test_health_signal_calls_answer_in_pynvmls_shapes() -> None:
    fake = fakenvml.FakeNVML(1)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.set_row_remap(0, pending=True, corrected=2)
    assert fake.nvmlDeviceGetRemappedRows(handle) == (2, 0, 1, 0)  # c_uint values: (corr, unc, pending, failure)
    assert fake.nvmlDeviceGetNvLinkState(handle, 0) == pynvml.NVML_FEATURE_ENABLED
    fake.nvlink_errors(0, 0, crc_flit=3)
    assert fake.nvmlDeviceGetNvLinkErrorCounter(handle, 0, pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT) == 3
    assert fake.nvmlDeviceGetPcieReplayCounter(handle) == 0
    fake.throttle(0, pynvml.nvmlClocksThrottleReasonHwSlowdown)
    assert fake.nvmlDeviceGetCurrentClocksEventReasons(handle) == pynvml.nvmlClocksThrottleReasonHwSlowdown
    assert fake.nvmlDeviceGetCurrentClocksThrottleReasons(handle) == pynvml.nvmlClocksThrottleReasonHwSlowdown
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # past the A100's 12 links
        fake.nvmlDeviceGetNvLinkState(handle, 12)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # Ampere remaps rows instead of retiring pages
        fake.nvmlDeviceGetRetiredPagesPendingStatus(handle)


def test_boards_without_a_feature_answer_not_supported_like_the_real_ones() -> None:
    fake = fakenvml.FakeNVML(2)
    fake.set_model(0, fakenvml.V100)
    fake.set_model(1, fakenvml.T4)
    fake.nvmlInit()
    volta, turing = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetRemappedRows(volta)
    fake.set_retired_pages(0, pending=True, double_bit=2)
    assert fake.nvmlDeviceGetRetiredPagesPendingStatus(volta) == pynvml.NVML_FEATURE_ENABLED
    pages = fake.nvmlDeviceGetRetiredPages(volta, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    assert len(pages) == 2 and all(isinstance(page, int) for page in pages)  # addresses, as pynvml lists them
    with pytest.raises(pynvml.NVMLError_NotSupported):  # a PCIe card: no NVLink at all
        fake.nvmlDeviceGetNvLinkState(turing, 0)
    fake.missing_functions.add("nvmlDeviceGetCurrentClocksEventReasons")
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):  # an older driver's libnvidia-ml
        fake.nvmlDeviceGetCurrentClocksEventReasons(volta)


def test_a_lost_gpu_answers_gpu_is_lost_to_signal_calls_too() -> None:
    fake = fakenvml.FakeNVML(1)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.lose(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetRemappedRows(handle)


def test_a_signal_call_that_hangs_holds_the_sampling_pass_until_released() -> None:
    fake = fakenvml.scenario("one")
    sampler = sampling.Sampler(started(fake), health.Tracker(hold_seconds=10))
    sampler.discover()
    fake.hang("nvmlDeviceGetNvLinkErrorCounter", 0)
    result: list[list[sampling.Sample]] = []
    thread = threading.Thread(target=lambda: result.append(sampler.sample(now=0)))
    thread.start()
    deadline = time.monotonic() + 5
    while fake.blocked_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.blocked_calls == 1 and not result  # the watchdog's deadline is what reports it
    fake.release()
    thread.join(timeout=5)
    assert result and result[0][0].verdict.healthy
