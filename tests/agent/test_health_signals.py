"""The health signals DCGM watches: row remapping, retired pages, clock slowdowns, NVLink and PCIe errors.

Each test drives the fake NVML with the real call names and answers, samples it through the
agent's own `Nvml` and `Sampler` on a simulated clock (every 5 s, as the agent does by default),
and looks at what a user sees: the verdict's reason (the GPU's `Healthy` condition) and the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pynvml
import pytest

from gpufleet_agent import fakenvml, health, metrics, nvml, sampling
from gpufleet_agent.settings import AgentSettings

INTERVAL = 5.0


class Node:
    """A fake NVML with a sampler on it, sampled on a simulated clock."""

    def __init__(self, fake: fakenvml.FakeNVML, rules: health.Rules | None = None) -> None:
        self.fake = fake
        self.nvml = nvml.Nvml(fake)
        self.nvml.start()
        self.sampler = sampling.Sampler(self.nvml, health.Tracker(hold_seconds=60, rules=rules))
        self.sampler.discover()
        self.now = 0.0
        self.latest = self.sampler.sample(self.now)

    def sample(self, seconds: float = INTERVAL) -> list[sampling.Sample]:
        """Sample every `INTERVAL` for `seconds` (at least once); the last sample."""
        end = self.now + seconds
        while True:
            self.now += INTERVAL
            self.latest = self.sampler.sample(self.now)
            if self.now >= end:
                return self.latest

    def reason(self, index: int = 0) -> str:
        return self.latest[index].verdict.reason

    def readings(self, index: int = 0) -> nvml.Readings:
        readings = self.latest[index].readings
        assert readings is not None
        return readings


def node(gpus: int = 1, model: fakenvml.Model = fakenvml.A100, rules: health.Rules | None = None) -> Node:
    fake = fakenvml.FakeNVML(gpus)
    for index in range(gpus):
        fake.set_model(index, model)
    return Node(fake, rules)


def scrape(samples: list[sampling.Sample]) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every series the agent's `/metrics` would show for these samples."""
    registry = metrics.Metrics()
    registry.observe("node-1", samples)
    for family in registry.registry.collect():
        for series in family.samples:
            yield series.name, series.labels, series.value


def value(samples: list[sampling.Sample], name: str, **labels: str) -> float | None:
    found = [v for n, series_labels, v in scrape(samples) if n == name and labels.items() <= series_labels.items()]
    assert len(found) <= 1, found
    return found[0] if found else None


# ----- row remapping ------------------------------------------------------------------------------------------


def test_a_pending_row_remap_makes_the_gpu_unhealthy_until_the_gpu_is_reset() -> None:
    gpus = node(2)
    gpus.fake.set_row_remap(0, pending=True, uncorrected=1)
    gpus.sample()
    assert (gpus.reason(0), gpus.reason(1)) == (health.ROW_REMAP_PENDING_REASON, health.HEALTHY_REASON)
    assert "reset" in gpus.latest[0].verdict.message
    gpus.sample(600)  # a state, not an event: no hold time runs out while the driver still says so
    assert gpus.reason(0) == health.ROW_REMAP_PENDING_REASON
    gpus.fake.set_row_remap(0, pending=False)  # the GPU was reset: the spare row is in use
    gpus.sample()
    assert gpus.latest[0].verdict == health.HEALTHY


def test_a_failed_row_remap_calls_for_replacing_the_gpu_and_outranks_a_pending_one() -> None:
    gpus = node()
    gpus.fake.set_row_remap(0, pending=True, failure=True, uncorrected=512)
    verdict = gpus.sample()[0].verdict
    assert (verdict.healthy, verdict.reason) == (False, health.ROW_REMAP_FAILURE_REASON)
    assert "RMA" in verdict.message and health.ROW_REMAP_PENDING_REASON in verdict.message


def test_row_remapping_shows_in_the_metrics() -> None:
    gpus = node()
    gpus.fake.set_row_remap(0, pending=True, corrected=3, uncorrected=1)
    samples = gpus.sample()
    assert value(samples, "gpufleet_gpu_row_remap_pending", gpu="0") == 1
    assert value(samples, "gpufleet_gpu_row_remap_failure", gpu="0") == 0
    assert value(samples, "gpufleet_gpu_remapped_rows", gpu="0", cause="correctable") == 3
    assert value(samples, "gpufleet_gpu_remapped_rows", gpu="0", cause="uncorrectable") == 1


def test_a_gpu_without_row_remapping_stays_healthy_and_has_no_remap_series() -> None:
    gpus = node(model=fakenvml.V100)  # Volta retires pages instead: NotSupported
    samples = gpus.sample()
    assert gpus.readings().remapped_rows is None
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_row_remap_pending") is None
    with pytest.raises(ValueError, match="does not support"):
        gpus.fake.set_row_remap(0, pending=True)


# ----- retired pages ------------------------------------------------------------------------------------------


def test_pages_pending_retirement_make_the_gpu_unhealthy_until_the_reboot() -> None:
    gpus = node(model=fakenvml.V100)
    gpus.fake.set_retired_pages(0, pending=True, double_bit=2)
    gpus.sample()
    assert gpus.reason() == health.RETIRED_PAGES_PENDING_REASON
    assert "reboot" in gpus.latest[0].verdict.message
    gpus.fake.set_retired_pages(0, pending=False)  # rebooted: the pages are retired for good
    assert gpus.sample()[0].verdict == health.HEALTHY


def test_retired_pages_are_counted_by_cause_in_the_metrics() -> None:
    gpus = node(model=fakenvml.V100)
    gpus.fake.set_retired_pages(0, double_bit=2, single_bit=5)
    samples = gpus.sample()
    assert samples[0].verdict.healthy  # retired pages are the cure, not the illness
    assert value(samples, "gpufleet_gpu_retired_pages", cause="double_bit_ecc") == 2
    assert value(samples, "gpufleet_gpu_retired_pages", cause="multiple_single_bit_ecc") == 5
    assert value(samples, "gpufleet_gpu_retired_pages_pending") == 0


def test_an_ampere_gpu_has_no_page_retirement_and_stays_healthy() -> None:
    gpus = node(model=fakenvml.A100)
    readings = gpus.readings()
    assert (readings.retired_pages_pending, readings.retired_pages_double_bit) == (None, None)
    assert gpus.latest[0].verdict == health.HEALTHY
    assert value(gpus.latest, "gpufleet_gpu_retired_pages_pending") is None


# ----- clock slowdowns ----------------------------------------------------------------------------------------


def test_a_single_sample_of_thermal_slowdown_leaves_the_gpu_healthy() -> None:
    gpus = node()
    gpus.fake.throttle(0, nvml.CLOCKS_HW_THERMAL)
    gpus.sample()
    gpus.fake.throttle(0, 0)
    gpus.sample()
    assert gpus.latest[0].verdict == health.HEALTHY


def test_a_sustained_thermal_slowdown_makes_the_gpu_unhealthy_and_it_recovers_after_the_hold() -> None:
    gpus = node()
    gpus.fake.throttle(0, nvml.CLOCKS_HW_THERMAL | nvml.CLOCKS_HW_SLOWDOWN)
    gpus.sample()  # the first sample that shows it, 5 s after the last clear one
    gpus.sample(50)
    assert gpus.reason() == health.HEALTHY_REASON  # 11 samples, 55 s: not yet a minute
    gpus.sample(5)  # 12 samples: the whole last minute
    verdict = gpus.latest[0].verdict
    assert (verdict.healthy, verdict.reason) == (False, health.THERMAL_REASON)  # thermal names it, not HW
    assert "hw_thermal_slowdown" in verdict.message
    gpus.fake.throttle(0, 0)  # cooled down
    gpus.sample(295)
    assert gpus.reason() == health.THERMAL_REASON  # held 300 s after the last slowdown
    gpus.sample(5)
    assert gpus.latest[0].verdict == health.HEALTHY


def test_a_slowdown_that_comes_and_goes_counts_once_it_held_half_the_samples() -> None:
    """Thermal slowdown on every other sample: the jobs run slow all the same."""
    gpus = node()
    for _ in range(6):  # a minute: on, off, on, off...
        gpus.fake.throttle(0, nvml.CLOCKS_SW_THERMAL)
        gpus.sample()
        gpus.fake.throttle(0, 0)
        gpus.sample()
    gpus.fake.throttle(0, nvml.CLOCKS_SW_THERMAL)
    gpus.sample()
    verdict = gpus.latest[0].verdict
    assert (verdict.healthy, verdict.reason) == (False, health.THERMAL_REASON)
    assert "on 6 of 12 samples in 60s" in verdict.message


def test_a_slowdown_on_fewer_than_half_the_samples_leaves_the_gpu_healthy() -> None:
    """A power spike every 20 s (one sample in four) for ten minutes: normal operation."""
    gpus = node()
    for _ in range(30):
        gpus.fake.throttle(0, nvml.CLOCKS_HW_SLOWDOWN)
        gpus.sample()
        gpus.fake.throttle(0, 0)
        gpus.sample(15)
    assert gpus.latest[0].verdict == health.HEALTHY


@pytest.mark.parametrize("reason", [nvml.CLOCKS_HW_SLOWDOWN, nvml.CLOCKS_HW_POWER_BRAKE])
def test_a_sustained_hardware_slowdown_makes_the_gpu_unhealthy(reason: int) -> None:
    gpus = node()
    gpus.fake.throttle(0, reason)
    gpus.sample(65)
    assert gpus.reason() == health.SLOWDOWN_REASON


def test_running_at_the_power_cap_is_normal_operation_shown_only_in_the_metrics() -> None:
    gpus = node()
    gpus.fake.throttle(0, nvml.CLOCKS_SW_POWER_CAP)
    samples = gpus.sample(3600)
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_throttle_reasons", reason="sw_power_cap") == 1
    assert value(samples, "gpufleet_gpu_throttle_reasons", reason="hw_thermal_slowdown") == 0


def test_an_older_driver_is_asked_for_throttle_reasons_by_the_old_name() -> None:
    gpus = node()
    gpus.fake.missing_functions.add("nvmlDeviceGetCurrentClocksEventReasons")
    gpus.fake.throttle(0, nvml.CLOCKS_HW_SLOWDOWN)
    assert gpus.sample(65)[0].verdict.reason == health.SLOWDOWN_REASON
    gpus.fake.missing_functions.add("nvmlDeviceGetCurrentClocksThrottleReasons")
    gpus.sample(INTERVAL)
    assert gpus.readings().clock_reasons is None  # neither call: the signal is absent


def test_slowdown_thresholds_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_AGENT_SLOWDOWN_SUSTAINED_SECONDS", "0")
    monkeypatch.setenv("GPUFLEET_AGENT_SLOWDOWN_HOLD_SECONDS", "10")
    rules = health.Rules.of(AgentSettings(node_name="node-1"))
    gpus = node(rules=rules)
    gpus.fake.throttle(0, nvml.CLOCKS_HW_THERMAL)
    assert gpus.sample()[0].verdict.reason == health.THERMAL_REASON  # at the first sample
    gpus.fake.throttle(0, 0)
    assert gpus.sample(10)[0].verdict.healthy


# ----- NVLink -------------------------------------------------------------------------------------------------


def test_a_burst_of_nvlink_crc_errors_makes_the_gpu_unhealthy_naming_the_link() -> None:
    gpus = node(2)
    gpus.fake.nvlink_errors(1, 7, crc_flit=7_000)  # over 100 a second for a minute
    gpus.sample()
    assert (gpus.reason(0), gpus.reason(1)) == (health.HEALTHY_REASON, health.NVLINK_REASON)
    assert "NVLink 7" in gpus.latest[1].verdict.message and "crc_flit" in gpus.latest[1].verdict.message


def test_nvlink_crc_errors_below_the_rate_limit_leave_the_gpu_healthy() -> None:
    gpus = node()
    for _ in range(60):  # 5 minutes of 400 errors per 5 s sample: 80 a second
        gpus.fake.nvlink_errors(0, 0, crc_data=200, replay=200)
        gpus.sample()
        assert gpus.reason() == health.HEALTHY_REASON


def test_any_nvlink_recovery_error_makes_the_gpu_unhealthy_until_errors_stop_for_the_hold() -> None:
    gpus = node()
    gpus.fake.nvlink_errors(0, 3, recovery=1)
    gpus.sample()
    assert gpus.reason() == health.NVLINK_REASON
    # The error stays in the last minute's count for 60 s (until the sample before it leaves the
    # window), then the hold (300 s) runs: 355 s after the sample that showed it.
    gpus.sample(350)
    assert gpus.reason() == health.NVLINK_REASON
    gpus.sample(5)
    assert gpus.latest[0].verdict == health.HEALTHY


def test_nvlink_counters_are_metrics_per_active_link_and_inactive_links_are_not_read() -> None:
    fake = fakenvml.FakeNVML(1)
    fake.set_nvlink_active(0, 5, False)
    gpus = Node(fake)
    fake.nvlink_errors(0, 2, crc_flit=4, replay=4)
    fake.nvlink_errors(0, 5, recovery=9)  # a link that is down: its counters are not looked at
    samples = gpus.sample()
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_nvlink_errors_total", link="2", counter="crc_flit") == 4
    assert value(samples, "gpufleet_gpu_nvlink_errors_total", link="2", counter="replay") == 4
    assert value(samples, "gpufleet_gpu_nvlink_errors_total", link="5", counter="recovery") is None
    links = {link for link, _ in gpus.readings().nvlink_errors}
    assert links == set(range(12)) - {5}


def test_a_pcie_card_has_no_nvlink_and_stays_healthy() -> None:
    gpus = node(model=fakenvml.T4)
    samples = gpus.sample()
    assert gpus.readings().nvlink_errors == {}
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_nvlink_errors_total") is None
    assert value(samples, "gpufleet_gpu_nvlinks_down") is None


def test_an_nvlink_that_goes_down_makes_the_gpu_unhealthy_until_it_is_back() -> None:
    gpus = node(2)
    assert value(gpus.sample(), "gpufleet_gpu_nvlinks_down", gpu="1") == 0
    gpus.fake.set_nvlink_active(1, 4, False)
    samples = gpus.sample()  # at the next sample, not the next discovery
    assert (gpus.reason(0), gpus.reason(1)) == (health.HEALTHY_REASON, health.NVLINK_DOWN_REASON)
    assert "NVLink 4 down" in gpus.latest[1].verdict.message
    assert value(samples, "gpufleet_gpu_nvlinks_down", gpu="1") == 1
    gpus.sampler.discover()  # rediscovery finds link 4 inactive: it stays watched all the same
    gpus.sample(120)
    assert gpus.reason(1) == health.NVLINK_DOWN_REASON
    gpus.fake.set_nvlink_active(1, 4, True)  # reset, fabric fixed
    samples = gpus.sample()
    assert gpus.latest[1].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_nvlinks_down", gpu="1") == 0


def test_a_link_never_seen_up_is_no_fault() -> None:
    """Not cabled (or down since before the agent started: the agent cannot tell the two apart)."""
    fake = fakenvml.FakeNVML(1)
    fake.set_nvlink_active(0, 11, False)
    gpus = Node(fake)
    samples = gpus.sample(60)
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_nvlinks_down") == 0


# ----- PCIe ---------------------------------------------------------------------------------------------------


def test_more_than_8_pcie_replays_a_minute_make_the_gpu_unhealthy_until_they_stop_for_the_hold() -> None:
    gpus = node()
    gpus.fake.pcie_replays(0, 9)
    gpus.sample()
    verdict = gpus.latest[0].verdict
    assert (verdict.reason, "9 PCIe replays" in verdict.message) == (health.PCIE_REASON, True)
    gpus.sample(350)
    assert gpus.reason() == health.PCIE_REASON
    gpus.sample(5)
    assert gpus.latest[0].verdict == health.HEALTHY


def test_a_trickle_of_pcie_replays_under_the_limit_is_harmless_and_counted() -> None:
    gpus = node()
    for _ in range(60):  # 1 replay every 10 s: 6 a minute, for 5 minutes
        gpus.fake.pcie_replays(0, 1)
        gpus.sample(10)
        assert gpus.reason() == health.HEALTHY_REASON
    assert value(gpus.latest, "gpufleet_gpu_pcie_replays_total") == 60


def test_counters_that_go_back_after_a_reset_are_not_errors() -> None:
    gpus = node()
    gpus.fake.pcie_replays(0, 5)
    gpus.fake.nvlink_errors(0, 0, recovery=0, crc_flit=100)
    gpus.sample(120)
    gpus.fake.devices[0].pcie_replays = 0  # the GPU was reset: its counters start from zero
    gpus.fake.devices[0].nvlink_counters.clear()
    gpus.sample()
    gpus.fake.pcie_replays(0, 3)
    assert gpus.sample()[0].verdict == health.HEALTHY


def test_link_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_AGENT_PCIE_REPLAYS_PER_MINUTE", "100")
    monkeypatch.setenv("GPUFLEET_AGENT_NVLINK_RECOVERY_ERRORS_PER_MINUTE", "2")
    gpus = node(rules=health.Rules.of(AgentSettings(node_name="node-1")))
    gpus.fake.pcie_replays(0, 50)
    gpus.fake.nvlink_errors(0, 1, recovery=2)
    assert gpus.sample()[0].verdict == health.HEALTHY
    gpus.fake.nvlink_errors(0, 1, recovery=1)
    assert gpus.sample()[0].verdict.reason == health.NVLINK_REASON


# ----- all together -------------------------------------------------------------------------------------------


def test_the_reason_names_the_most_urgent_fault_and_the_message_the_others() -> None:
    gpus = node()
    gpus.fake.inject_xid(0, 79)
    gpus.fake.pcie_replays(0, 50)
    gpus.sample()
    assert gpus.reason() == health.XID_REASON
    gpus.fake.set_row_remap(0, pending=True)
    verdict = gpus.sample()[0].verdict
    assert verdict.reason == health.ROW_REMAP_PENDING_REASON  # the action to take: reset the GPU
    assert health.XID_REASON in verdict.message and health.PCIE_REASON in verdict.message


def test_a_lost_gpu_is_still_reported_lost_not_as_a_missing_signal() -> None:
    gpus = node()
    gpus.fake.lose(0)
    assert gpus.sample()[0].verdict.reason == health.LOST_REASON
    assert value(gpus.latest, "gpufleet_gpu_pcie_replays_total") is None  # no stale series


class _Quirky:
    """A library whose PCIe replay call fails with an unexpected error (a driver quirk)."""

    def __init__(self, fake: fakenvml.FakeNVML) -> None:
        self._fake = fake

    def __getattr__(self, name: str) -> object:
        return getattr(self._fake, name)

    def nvmlDeviceGetPcieReplayCounter(self, handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)


def test_an_unexpected_error_in_one_signal_leaves_that_signal_out_not_the_gpu() -> None:
    fake = fakenvml.FakeNVML(1)
    library = nvml.Nvml(_Quirky(fake))  # type: ignore[arg-type]  # duck-typed stand-in
    library.start()
    library.discover()
    readings = library.read(0)
    assert readings.pcie_replays is None
    assert readings.memory_used is not None and readings.clock_reasons is not None


def test_every_signal_is_read_through_a_call_the_real_pynvml_has() -> None:
    for call in (
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetRetiredPages",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkErrorCounter",
        "nvmlDeviceGetPcieReplayCounter",
    ):
        assert callable(getattr(pynvml, call)), call
        assert callable(getattr(fakenvml.FakeNVML, call)), call


def test_signals_scrape_in_the_prometheus_text_format() -> None:
    gpus = node()
    gpus.fake.pcie_replays(0, 2)
    registry = metrics.Metrics()
    registry.observe("node-1", gpus.sample())
    text = prometheus_client.generate_latest(registry.registry).decode()
    assert "# TYPE gpufleet_gpu_pcie_replays_total counter" in text
    assert "# TYPE gpufleet_gpu_nvlink_errors_total counter" in text
    assert 'gpufleet_gpu_throttle_reasons{gpu="0",host="node-1"' in text


def test_a_board_without_clock_reasons_stays_healthy_without_the_signal() -> None:
    gpus = node()
    gpus.fake.devices[0].unsupported |= {"nvmlDeviceGetCurrentClocksEventReasons"}
    samples = gpus.sample()
    assert gpus.readings().clock_reasons is None
    assert samples[0].verdict == health.HEALTHY
    assert value(samples, "gpufleet_gpu_throttle_reasons", reason="gpu_idle") is None
