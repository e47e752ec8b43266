"""The agent against the Kubernetes API (emulated, or real with --kubeconfig), on a fake NVML.

What a user of the fleet would see: GPU resources that match the devices, status that follows
what the GPUs do, few writes, a Host that keeps heartbeating, and an agent that rides out faults.
"""

from __future__ import annotations

import datetime
from typing import Any

from gpufleet_agent import fakenvml, podresources

from .conftest import Reader, RunAgent, eventually, metric, parse
from .kubelet import Kubelet, holding


def healthy_condition(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next(c for c in conditions if c["type"] == "Healthy")


async def test_every_gpu_appears_with_its_identity_owned_by_the_registered_host(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("eight")
    async with run_agent(fake):
        gpus = await eventually(lambda: _all_with_status(reader, node_name, 8))
        registered = await reader.host(node_name)
    assert registered is not None
    assert registered["spec"]["deploymentMode"] == "kubernetes"
    assert registered["spec"]["nodeName"] == node_name
    assert registered["spec"]["totalCpu"] >= 1 and registered["spec"]["totalMemory"] > 0
    assert sorted(gpus) == [f"{node_name}-gpu{i}" for i in range(8)]
    for index in range(8):
        obj = gpus[f"{node_name}-gpu{index}"]
        assert obj["metadata"]["labels"]["gpufleet.io/host"] == node_name
        assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [registered["metadata"]["uid"]]
        assert obj["spec"] == {
            "hostName": node_name,
            "index": index,
            "uuid": fake.devices[index].uuid,
            "modelName": "NVIDIA A100-SXM4-80GB",
            "memoryTotal": 80 * 1024**3,
        }
        assert obj["status"]["state"] == "free"
        assert healthy_condition(obj)["status"] == "True"
        assert obj["status"]["temperatureCelsius"] > 0
        assert obj["status"]["memoryUsed"] > 0


async def test_a_registered_host_has_the_node_address_it_was_given(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("one"), host_ip="192.0.2.44"):
        registered = await eventually(lambda: reader.host(node_name))
    assert registered["spec"]["ipAddress"] == "192.0.2.44"


async def _all_with_status(reader: Reader, host_name: str, count: int) -> dict[str, Any] | None:
    gpus = await reader.gpus(host_name)
    if len(gpus) == count and all("lastUpdateTime" in (g.get("status") or {}) for g in gpus.values()):
        return gpus
    return None


async def test_the_agent_binds_to_a_host_that_names_its_node(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    host_name = f"host-{node_name[-8:]}"
    await reader.create_host(host_name, node_name)
    async with run_agent(fakenvml.scenario("one"), register_node=False):
        gpus = await eventually(lambda: _all_with_status(reader, host_name, 1))
        assert list(gpus) == [f"{host_name}-gpu0"]
        await eventually(lambda: _heartbeat_of(reader, host_name))
    assert await reader.host(node_name) is None


async def test_without_register_the_agent_waits_for_its_host(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("one"), register_node=False) as node_agent:
        await eventually(lambda: metric(node_agent, "gpufleet_agent_samples_total") >= 10)
        assert await reader.host(node_name) is None
        assert await reader.gpus(node_name) == {}
        await reader.create_host(node_name, node_name)
        await eventually(lambda: _all_with_status(reader, node_name, 1))


async def _heartbeat_of(reader: Reader, host_name: str) -> str | None:
    found = await reader.host(host_name)
    heartbeat: str | None = ((found or {}).get("status") or {}).get("lastHeartbeat")
    return heartbeat


async def test_heartbeats_keep_coming_with_what_the_agent_reports(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("one"), heartbeat_interval_seconds=0.5):
        first = await eventually(lambda: reader.renewed(node_name))
        later = await eventually(lambda: _renewed_after(reader, node_name, first))
        lease = await reader.lease(node_name) or {}
        status = (await reader.host(node_name) or {})["status"]
    stamp = parse(later)
    assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 10
    assert lease["spec"]["holderIdentity"] == node_name
    owner = lease["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Host", node_name)
    # The status says what the agent reports, written once: not with every renewal.
    assert status["lastHeartbeat"].endswith("Z")
    assert status["reportedState"] == "online"
    assert status["healthStatus"] == "healthy"
    assert status["usedMemory"] > 0 and status["usedCpu"] >= 0


async def _renewed_after(reader: Reader, host_name: str, than: str) -> str | None:
    current = await reader.renewed(host_name)
    return current if current and parse(current) > parse(than) else None


async def test_a_hot_gpu_reports_its_temperature(run_agent: RunAgent, reader: Reader, node_name: str) -> None:
    async with run_agent(fakenvml.scenario("hot", gpus=2)):
        gpus = await eventually(lambda: _all_with_status(reader, node_name, 2))
    assert gpus[f"{node_name}-gpu0"]["status"]["temperatureCelsius"] >= 80
    assert gpus[f"{node_name}-gpu1"]["status"]["temperatureCelsius"] < 40


async def test_a_critical_xid_makes_a_gpu_unhealthy_until_it_clears(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("xid"), unhealthy_hold_seconds=1.0) as node_agent:
        gpus = await eventually(lambda: _all_with_status(reader, node_name, 2))
        sick, fine = gpus[f"{node_name}-gpu0"], gpus[f"{node_name}-gpu1"]
        # every XID is counted for the alerts, the application's too; only the critical one is a fault
        xids = {
            xid: metric(node_agent, "gpufleet_gpu_xid_errors_total", host=node_name, uuid=gpu["spec"]["uuid"], xid=xid)
            for xid, gpu in (("79", sick), ("13", fine))
        }
        assert xids == {"79": 1.0, "13": 1.0}
        assert sick["status"]["state"] == "unhealthy"
        assert healthy_condition(sick)["status"] == "False"
        assert healthy_condition(sick)["reason"] == "XidCritical"
        assert "79" in healthy_condition(sick)["message"]
        assert fine["status"]["state"] == "free"  # XID 13 is the application's fault
        assert await eventually(lambda: _host_health(reader, node_name, "unhealthy"))

        recovered = await eventually(lambda: _gpu_in_state(reader, node_name, 0, "free"))
        assert healthy_condition(recovered)["status"] == "True"
        assert await eventually(lambda: _host_health(reader, node_name, "healthy"))


async def _host_health(reader: Reader, host_name: str, expected: str) -> bool:
    found = await reader.host(host_name)
    return ((found or {}).get("status") or {}).get("healthStatus") == expected


async def _gpu_in_state(reader: Reader, host_name: str, index: int, state: str) -> dict[str, Any] | None:
    obj = (await reader.gpus(host_name)).get(f"{host_name}-gpu{index}")
    return obj if obj and (obj.get("status") or {}).get("state") == state else None


async def test_status_writes_are_suppressed_below_thresholds(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("one")
    async with run_agent(fake) as node_agent:
        written = (await eventually(lambda: _all_with_status(reader, node_name, 1)))[f"{node_name}-gpu0"]
        samples = metric(node_agent, "gpufleet_agent_samples_total")
        await eventually(lambda: metric(node_agent, "gpufleet_agent_samples_total") >= samples + 20)
        unchanged = (await reader.gpus(node_name))[f"{node_name}-gpu0"]
        assert unchanged["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
        assert metric(node_agent, "gpufleet_agent_api_writes_total", kind="gpu_status") == 1
        assert metric(node_agent, "gpufleet_agent_status_writes_suppressed_total") >= 19

        fake.heat(0, 5)
        warmer = await eventually(lambda: _warmer(reader, node_name, written["status"]["temperatureCelsius"] + 4))
        assert warmer["metadata"]["resourceVersion"] != written["metadata"]["resourceVersion"]
        assert metric(node_agent, "gpufleet_agent_api_writes_total", kind="gpu_status") == 2


async def _warmer(reader: Reader, host_name: str, celsius: float) -> dict[str, Any] | None:
    obj = (await reader.gpus(host_name)).get(f"{host_name}-gpu0")
    return obj if obj and obj["status"].get("temperatureCelsius", 0) >= celsius else None


async def test_a_gpu_that_falls_off_the_bus_is_reported_unhealthy_not_dropped(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    async with run_agent(fake):
        await eventually(lambda: _all_with_status(reader, node_name, 2))
        fake.lose(1)
        lost = await eventually(lambda: _gpu_in_state(reader, node_name, 1, "unhealthy"))
        assert healthy_condition(lost)["reason"] == "GpuLost"
        assert lost["spec"]["uuid"] == fake.devices[1].uuid  # the identity it had is kept
        assert len(await reader.gpus(node_name)) == 2

        fake.recover(1)
        await eventually(lambda: _gpu_in_state(reader, node_name, 1, "free"))


async def test_a_gpu_lost_before_the_agent_started_still_shows_up_unhealthy(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("vanish")):
        lost = await eventually(lambda: _gpu_in_state(reader, node_name, 0, "unhealthy"))
    assert healthy_condition(lost)["reason"] == "GpuLost"


async def test_gpus_that_appear_and_disappear_gain_and_lose_their_resources(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    async with run_agent(fake):
        await eventually(lambda: _all_with_status(reader, node_name, 2))
        added = fake.add()
        gpus = await eventually(lambda: _all_with_status(reader, node_name, 3))
        assert gpus[f"{node_name}-gpu2"]["spec"]["uuid"] == added.uuid
        fake.remove(2)
        await eventually(lambda: _count_is(reader, node_name, 2))


async def _count_is(reader: Reader, host_name: str, count: int) -> bool:
    return len(await reader.gpus(host_name)) == count


async def test_without_nvml_the_host_heartbeats_with_zero_gpus(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    async with run_agent(fakenvml.scenario("missing")) as node_agent:
        await eventually(lambda: _host_health(reader, node_name, "unknown"))
        first = await _heartbeat_of(reader, node_name)
        assert first is not None
        assert not node_agent.nvml_available
        assert await reader.gpus(node_name) == {}


async def test_allocation_comes_from_kubelet_podresources(
    run_agent: RunAgent, reader: Reader, node_name: str, kubelet: Kubelet
) -> None:
    fake = fakenvml.scenario("eight", gpus=2)
    kubelet.response = holding("team-a", "train-0", fake.devices[1].uuid)
    source = podresources.PodResources(kubelet.socket, ["nvidia.com/gpu"])
    async with run_agent(fake, allocation=source):
        held = await eventually(lambda: _gpu_in_state(reader, node_name, 1, "allocated"))
        assert held["status"]["allocatedTo"] == "team-a/train-0"
        assert (await reader.gpus(node_name))[f"{node_name}-gpu0"]["status"]["state"] == "free"

        kubelet.response = b""  # the pod finished
        released = await eventually(lambda: _gpu_in_state(reader, node_name, 1, "free"))
        assert "allocatedTo" not in released["status"]


async def test_external_allocation_is_left_alone_and_restored_after_a_fault(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    fake = fakenvml.scenario("one")
    async with run_agent(fake, unhealthy_hold_seconds=0.5):
        await eventually(lambda: _all_with_status(reader, node_name, 1))
        name = f"{node_name}-gpu0"
        await reader.api.patch_cluster_custom_object_status(
            "gpufleet.io",
            "v1alpha1",
            "gpus",
            name,
            {"status": {"state": "allocated", "allocatedTo": "job-42"}},
            _content_type="application/merge-patch+json",
        )
        fake.heat(0, 10)
        warmer = await eventually(lambda: _warmer(reader, node_name, 40))
        assert (warmer["status"]["state"], warmer["status"]["allocatedTo"]) == ("allocated", "job-42")

        fake.inject_xid(0, 79)
        await eventually(lambda: _gpu_in_state(reader, node_name, 0, "unhealthy"))
        restored = await eventually(lambda: _gpu_in_state(reader, node_name, 0, "allocated"))
        assert restored["status"]["allocatedTo"] == "job-42"


async def test_renewals_heartbeat_and_the_host_status_is_written_only_with_news(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    """As kubelet since KEP-589: the Lease every interval, the Host's status on change."""
    async with run_agent(fakenvml.scenario("one"), heartbeat_interval_seconds=0.1) as node_agent:
        await eventually(lambda: metric(node_agent, "gpufleet_agent_api_writes_total", kind="lease") >= 12)
        status_writes = metric(node_agent, "gpufleet_agent_api_writes_total", kind="host_status")
    assert 1 <= status_writes <= 2  # the first report; one more only if the load average moved a tenth


async def test_without_a_lease_namespace_the_host_status_carries_every_heartbeat(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    """A chart older than the agent (no Lease namespace yet): the host stays alive the old way."""
    async with run_agent(
        fakenvml.scenario("one"), heartbeat_interval_seconds=0.1, host_lease_namespace="no-such-namespace"
    ) as node_agent:
        await eventually(lambda: metric(node_agent, "gpufleet_agent_api_writes_total", kind="host_status") >= 10)
        assert metric(node_agent, "gpufleet_agent_api_writes_total", kind="lease") == 0
        assert metric(node_agent, "gpufleet_agent_api_errors_total") >= 10
