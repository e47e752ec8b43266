"""MIG (Multi-Instance GPU): what `kubectl get gpu -o yaml` and `/metrics` show of a GPU's MIG mode and instances.

The agent reads MIG at every device discovery through the real pynvml calls (on the fake NVML,
which answers with their shapes and errors); a reconfiguration is a state change for the write
policy, so it is written at the first sample after the discovery that saw it, never rate limited.
The end-to-end tests run the agent against the API; the write-policy ones simulate time.
"""

from __future__ import annotations

import random
from typing import Any

import pynvml
import pytest

from gpufleet_agent import agent, changes, fakenvml, gpustatus, health, nvml, sampling
from gpufleet_agent.settings import AgentSettings

from .conftest import Reader, RunAgent, eventually, metric

MIB = 1024**2


def gpu_metric(node_agent: agent.Agent, fake: fakenvml.FakeNVML, name: str, index: int, **labels: str) -> float:
    gpu = fake.devices[index]
    identity = {"host": node_agent.host_name, "gpu": str(index), "uuid": gpu.uuid, "model": gpu.name}
    return metric(node_agent, name, **identity, **labels)


def has_metric(node_agent: agent.Agent, fake: fakenvml.FakeNVML, name: str, index: int, **labels: str) -> bool:
    gpu = fake.devices[index]
    identity = {"host": node_agent.host_name, "gpu": str(index), "uuid": gpu.uuid, "model": gpu.name}
    return node_agent.metrics.registry.get_sample_value(name, {**identity, **labels}) is not None


async def _status(reader: Reader, host_name: str, index: int) -> dict[str, Any]:
    obj = (await reader.gpus(host_name)).get(f"{host_name}-gpu{index}") or {}
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def _mig_where(reader: Reader, host_name: str, index: int, check: Any) -> dict[str, Any] | None:
    """The GPU's `status.mig` once `check(mig)` holds."""
    mig = (await _status(reader, host_name, index)).get("mig")
    return mig if mig is not None and check(mig) else None


def in_mig_mode(gpus: int = 1) -> fakenvml.FakeNVML:
    fake = fakenvml.FakeNVML(gpus)
    fake.set_mig_mode(0, True)
    fake.reset(0)
    return fake


async def test_a_mig_gpu_publishes_its_instances_with_profile_placement_uuid_and_memory(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = in_mig_mode()
    big = fake.create_mig(0, "3g.40gb")
    small = fake.create_mig(0, "1g.10gb", start=6)
    async with run_agent(fake) as node_agent:
        mig = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: len(m["instances"]) == 2))
        assert metric(node_agent, "gpufleet_agent_samples_total") > 0
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_mode", 0, mode="current") == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_mode", 0, mode="pending") == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_instances", 0, profile="3g.40gb") == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_instances", 0, profile="1g.10gb") == 1
        memory = gpu_metric(
            node_agent,
            fake,
            "gpufleet_gpu_mig_instance_memory_total_bytes",
            0,
            mig_uuid=small.uuid,
            profile="1g.10gb",
            gpu_instance=str(small.gpu_instance_id),
            compute_instance="0",
        )
        assert memory == 9856 * MIB
        # No whole-GPU utilisation in MIG mode (NVML answers NotSupported): no stale series either.
        assert not has_metric(node_agent, fake, "gpufleet_gpu_utilization_ratio", 0)
    assert mig["mode"] == "enabled" and mig["pendingMode"] == "enabled"
    assert mig["instances"] == [
        {
            "uuid": big.uuid,
            "profile": "3g.40gb",
            "profileId": 9,
            "gpuInstanceId": big.gpu_instance_id,
            "computeInstanceId": 0,
            "placement": {"start": 0, "size": 4},
            "sliceCount": 3,
            "memoryTotal": 40192 * MIB,
            "multiprocessorCount": 42,
        },
        {
            "uuid": small.uuid,
            "profile": "1g.10gb",
            "profileId": 19,
            "gpuInstanceId": small.gpu_instance_id,
            "computeInstanceId": 0,
            "placement": {"start": 6, "size": 1},
            "sliceCount": 1,
            "memoryTotal": 9856 * MIB,
            "multiprocessorCount": 14,
        },
    ]
    assert all(instance["uuid"].startswith("MIG-") for instance in mig["instances"])


async def test_a_destroyed_instance_is_gone_from_the_gpu_at_the_next_discovery(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = in_mig_mode()
    kept = fake.create_mig(0, "2g.20gb")
    doomed = fake.create_mig(0, "1g.10gb")
    # Gauge writes are rate limited to nothing here: what gets through is a state change.
    async with run_agent(fake, min_write_interval_seconds=3600, gauge_write_burst=1) as node_agent:
        await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: len(m["instances"]) == 2))
        states = metric(node_agent, "gpufleet_agent_gpu_status_writes_by_reason_total", reason="state")
        fake.destroy_mig(0, doomed.gpu_instance_id)
        mig = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: len(m["instances"]) == 1))
        assert [instance["uuid"] for instance in mig["instances"]] == [kept.uuid]
        assert metric(node_agent, "gpufleet_agent_gpu_status_writes_by_reason_total", reason="state") > states
        assert not has_metric(node_agent, fake, "gpufleet_gpu_mig_instances", 0, profile="1g.10gb")
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_instances", 0, profile="2g.20gb") == 1


async def test_switching_mig_on_shows_pending_until_the_gpu_is_reset(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.FakeNVML(1)
    async with run_agent(fake) as node_agent:
        off = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: True))
        assert off == {"mode": "disabled", "pendingMode": "disabled", "instances": []}

        fake.set_mig_mode(0, True)
        pending = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: m["pendingMode"] == "enabled"))
        assert pending["mode"] == "disabled" and pending["instances"] == []
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_mode", 0, mode="pending") == 1
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_mode", 0, mode="current") == 0

        fake.reset(0)
        await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: m["mode"] == "enabled"))
        created = fake.create_mig(0, "7g.80gb")
        full = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: len(m["instances"]) == 1))
        assert full["instances"][0]["uuid"] == created.uuid and full["instances"][0]["profile"] == "7g.80gb"
        assert gpu_metric(node_agent, fake, "gpufleet_gpu_mig_mode", 0, mode="current") == 1

        fake.set_mig_mode(0, False)
        fake.reset(0)
        back = await eventually(lambda: _mig_where(reader, node_name, 0, lambda m: m["mode"] == "disabled"))
        assert back == {"mode": "disabled", "pendingMode": "disabled", "instances": []}


async def test_a_board_without_mig_publishes_no_mig(run_agent: RunAgent, reader: Reader, node_name: str) -> None:
    fake = fakenvml.FakeNVML(2)
    fake.set_model(0, fakenvml.V100)
    fake.set_model(1, fakenvml.T4)
    async with run_agent(fake) as node_agent:
        for index in (0, 1):
            status = await eventually(lambda: _status(reader, node_name, index))  # noqa: B023 - awaited at once
            assert status.get("state") == "free"
            assert "mig" not in status
            assert not has_metric(node_agent, fake, "gpufleet_gpu_mig_mode", index, mode="current")


# ----- the fake answers as pynvml does ------------------------------------------------------------------


def started(fake: fakenvml.FakeNVML) -> nvml.Nvml:
    library = nvml.Nvml(fake)
    library.start()
    return library


def test_the_fake_answers_mig_calls_with_pynvmls_shapes_and_errors() -> None:
    fake = in_mig_mode(2)
    fake.set_model(1, fakenvml.V100)
    instance = fake.create_mig(0, "1g.10gb", start=3)
    fake.nvmlInit()
    parent, old = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    assert fake.nvmlDeviceGetMigMode(parent) == [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    assert fake.nvmlDeviceGetMaxMigDeviceCount(parent) == 7
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, instance.slot)
    assert fake.nvmlDeviceGetUUID(mig) == instance.uuid
    assert fake.nvmlDeviceGetMemoryInfo(mig).total == 9856 * MIB
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, instance.slot + 1)  # an empty slot
    info = fake.nvmlGpuInstanceGetInfo(fake.nvmlDeviceGetGpuInstanceById(parent, instance.gpu_instance_id))
    assert (info.profileId, info.placement.start, info.placement.size) == (19, 3, 1)
    profile = fake.nvmlDeviceGetGpuInstanceProfileInfo(parent, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    assert (profile.id, profile.name, profile.sliceCount, profile.memorySizeMB) == (19, "1g.10gb", 1, 9856)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetGpuInstanceProfileInfo(parent, pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetUtilizationRates(parent)  # no whole-GPU utilisation in MIG mode
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetMigMode(old)  # Volta has no MIG
    fake.destroy_mig(0, instance.gpu_instance_id)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetUUID(mig)  # a destroyed instance's handle is stale


def test_without_the_mig_monitor_capability_instances_are_listed_without_profile() -> None:
    fake = in_mig_mode()
    made = fake.create_mig(0, "2g.20gb")
    fake.mig_monitor = False
    library = started(fake)
    library.discover()
    mig = library.mig(0)
    assert mig is not None
    assert [(i.uuid, i.memory_total, i.profile, i.placement_start) for i in mig.instances] == [
        (made.uuid, 19968 * MIB, None, None)
    ]


def test_an_old_driver_without_the_v_profile_call_still_names_the_profiles() -> None:
    fake = in_mig_mode()
    fake.create_mig(0, "3g.40gb")
    fake.missing_functions.add("nvmlDeviceGetGpuInstanceProfileInfoV")
    library = started(fake)
    library.discover()
    mig = library.mig(0)
    assert mig is not None and mig.instances[0].profile is not None
    assert mig.instances[0].profile.name == "3g.40gb"


def test_a_driver_without_mig_calls_publishes_no_mig() -> None:
    fake = in_mig_mode()
    fake.missing_functions.add("nvmlDeviceGetMigMode")
    library = started(fake)
    library.discover()
    assert library.mig(0) is None


# ----- the write policy, in simulated time ------------------------------------------------------------------

SAMPLE = 5.0
DISCOVERY = 60.0


class Halfway(random.Random):
    """The gate's randomness pinned: the first resync half-way through its interval (300 s), well after this."""

    def random(self) -> float:
        return 0.5


def test_a_reconfiguration_is_written_at_the_first_sample_after_the_discovery_that_saw_it() -> None:
    """Not before the discovery (MIG is read there), at once after it, and whatever the rate limit says."""
    settings = AgentSettings(node_name="n1", min_write_interval_seconds=3600, gauge_write_burst=1)
    fake = in_mig_mode()
    fake.create_mig(0, "1g.10gb")
    doomed = fake.create_mig(0, "1g.10gb")
    library = started(fake)
    sampler = sampling.Sampler(library, health.Tracker.of(settings))
    reasons: list[changes.Why] = []
    gate = changes.Gate(changes.Thresholds.of(settings), rng=Halfway(), on_write=reasons.append)

    def publish(now: float) -> changes.Observed | None:
        sample = sampler.sample(now)[0]
        observed = gpustatus.observe(sample, None)
        if not gate.due("gpu0", observed, now):
            return None
        gate.record("gpu0", observed, now)
        return observed

    sampler.discover()
    first = publish(0.0)
    assert first is not None and first.mig is not None and len(first.mig.instances) == 2
    fake.destroy_mig(0, doomed.gpu_instance_id)
    now = 0.0
    while now < DISCOVERY - SAMPLE:  # samples between discoveries do not read MIG
        now += SAMPLE
        assert publish(now) is None
    now = DISCOVERY
    sampler.discover()
    written = publish(now)
    assert written is not None and written.mig is not None and len(written.mig.instances) == 1
    assert reasons == [changes.Why.FIRST, changes.Why.STATE]
    assert publish(now + SAMPLE) is None  # and once written, it is quiet again


def test_the_status_carries_what_discovery_read_and_a_hung_round_leaves_it_alone() -> None:
    fake = in_mig_mode()
    fake.set_mig_mode(0, False)  # pending: off at the next reset
    library = started(fake)
    sampler = sampling.Sampler(library, health.Tracker.of(AgentSettings(node_name="n1")))
    sampler.discover()
    status = gpustatus.mig_status(sampler.sample(0.0)[0].mig)
    assert status is not None
    assert status.to_k8s() == {
        "mode": "enabled",
        "pendingMode": "disabled",
        "instances": [],
    }
    hung = sampler.unknown(health.unknown(5.0))[0]
    assert hung.mig is None and gpustatus.mig_status(hung.mig) is None  # merge patch: `mig` left as written
