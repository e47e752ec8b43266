"""A Host applied with kubectl: initial status, going online and offline, conditions, events, labels."""

from __future__ import annotations

import asyncio
import datetime

from controller_support import GRACE, Fleet, eventually, seconds_until

from gpufleet.api import meta


async def test_new_host_is_initialised_offline_with_reasons(fleet: Fleet) -> None:
    name = await fleet.apply_host(os_type="windows")

    async def initialised() -> bool:
        return (await fleet.status(name)).get("state") == "offline"

    await eventually(initialised)
    ready = await fleet.condition(name, "Ready")
    healthy = await fleet.condition(name, "Healthy")
    assert (ready["status"], ready["reason"]) == ("False", "NoHeartbeatObserved")
    assert (healthy["status"], healthy["reason"]) == ("Unknown", "HealthNotReported")
    assert ready["lastTransitionTime"] and ready["message"]
    body = await fleet.get(name)
    assert body["metadata"]["labels"][meta.STATUS_LABEL] == "offline"
    assert body["metadata"]["labels"][meta.OS_TYPE_LABEL] == "windows"
    assert meta.CLEANUP_FINALIZER in body["metadata"]["finalizers"]
    status = await fleet.status(name)
    assert (status["totalGpu"], status["usedGpu"], status["gpus"]) == (0, 0, "0/0")


async def test_heartbeat_brings_host_online_and_silence_takes_it_offline(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await eventually(lambda: _state_is(fleet, name, "offline"))

    await fleet.heartbeat(name, healthStatus="healthy")
    await eventually(lambda: _state_is(fleet, name, "online"), within=GRACE)
    ready = await fleet.condition(name, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "HeartbeatObserved")
    assert (await fleet.condition(name, "Healthy"))["status"] == "True"
    assert name in await fleet.labelled(f"{meta.STATUS_LABEL}=online")

    await eventually(lambda: _state_is(fleet, name, "offline"), within=GRACE + 1.0)
    ready = await fleet.condition(name, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "HeartbeatExpired")
    assert name in await fleet.labelled(f"{meta.STATUS_LABEL}=offline")
    await eventually(lambda: _reasons_are(fleet, name, ["HostOnline", "HostHealthy", "HostOffline"]))


async def _state_is(fleet: Fleet, name: str, state: str) -> bool:
    return (await fleet.status(name)).get("state") == state


async def _reasons_are(fleet: Fleet, name: str, reasons: list[str]) -> bool:
    """Events of one moment are posted concurrently, so only which ones (and how often) is compared."""
    return sorted(r for r in await fleet.event_reasons(name) if r != "TokenIssued") == sorted(reasons)


async def test_heartbeats_keep_host_online_past_the_grace_period(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.heartbeat(name)
    await eventually(lambda: _state_is(fleet, name, "online"))
    for _ in range(6):  # 1.5 grace periods of heartbeats every quarter grace
        await asyncio.sleep(GRACE / 4)
        await fleet.heartbeat(name)
        assert await _state_is(fleet, name, "online")
    assert (await fleet.event_reasons(name)).count("HostOnline") == 1


async def test_host_behind_by_five_minutes_still_goes_and_stays_online(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    behind = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    await fleet.heartbeat(name, at=behind)
    await eventually(lambda: _state_is(fleet, name, "online"), within=GRACE)
    for beat in range(1, 6):
        await asyncio.sleep(GRACE / 4)
        await fleet.heartbeat(name, at=behind + datetime.timedelta(seconds=beat * GRACE / 4))
        assert await _state_is(fleet, name, "online")


async def test_reported_offline_takes_host_offline_at_once(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.heartbeat(name)
    await eventually(lambda: _state_is(fleet, name, "online"))
    await fleet.heartbeat(name, reportedState="offline")
    took = await seconds_until(lambda: _state_is(fleet, name, "offline"))
    assert took < GRACE / 2
    assert (await fleet.condition(name, "Ready"))["reason"] == "ReportedOffline"


async def test_unhealthy_report_sets_healthy_false_and_posts_an_event(fleet: Fleet) -> None:
    name = await fleet.apply_host()
    await fleet.heartbeat(name, healthStatus="healthy")
    await eventually(lambda: _condition_is(fleet, name, "Healthy", "True"))
    healthy_since = (await fleet.condition(name, "Healthy"))["lastTransitionTime"]
    ready_since = (await fleet.condition(name, "Ready"))["lastTransitionTime"]

    for _ in range(5):  # over a second, so that a moved lastTransitionTime would show
        await asyncio.sleep(GRACE / 4)
        await fleet.heartbeat(name, healthStatus="healthy")
    assert (await fleet.condition(name, "Healthy"))["lastTransitionTime"] == healthy_since

    await fleet.heartbeat(name, healthStatus="unhealthy")
    await eventually(lambda: _condition_is(fleet, name, "Healthy", "False"))
    healthy = await fleet.condition(name, "Healthy")
    assert healthy["reason"] == "AgentReportedUnhealthy"
    assert healthy["lastTransitionTime"] != healthy_since
    assert (await fleet.condition(name, "Ready"))["lastTransitionTime"] == ready_since
    await eventually(lambda: _has_reason(fleet, name, "HostUnhealthy"))


async def _state_is(fleet: Fleet, name: str, state: str) -> bool:
    return (await fleet.status(name)).get("state") == state


async def _condition_is(fleet: Fleet, name: str, type_: str, status: str) -> bool:
    conditions = (await fleet.status(name)).get("conditions", [])
    return any(c["type"] == type_ and c["status"] == status for c in conditions)


async def _has_reason(fleet: Fleet, name: str, reason: str) -> bool:
    return reason in await fleet.event_reasons(name)


async def test_lease_renewals_alone_keep_a_host_online_and_their_silence_takes_it_offline(fleet: Fleet) -> None:
    """Heartbeats on Leases (KEP-589): the Host's status is not written with every heartbeat."""
    name = await fleet.apply_host()
    await eventually(lambda: _state_is(fleet, name, "offline"))
    await fleet.renew(name)  # the first renewal creates the Lease
    for _ in range(6):  # 1.5 grace periods of renewals every quarter grace
        await asyncio.sleep(GRACE / 4)
        await fleet.renew(name)
        await eventually(lambda: _state_is(fleet, name, "online"), within=GRACE / 4)
    await eventually(lambda: _state_is(fleet, name, "offline"), within=GRACE + 1.0)
    assert "lastHeartbeat" not in await fleet.status(name)


async def test_a_lease_renewed_by_another_node_keeps_no_host_online(fleet: Fleet) -> None:
    """What the node-restriction policy lets an agent write, its own node's name as holder,
    does not speak for a host bound to another node."""
    name = await fleet.apply_host(node_name="gpu-node-1")
    await eventually(lambda: _state_is(fleet, name, "offline"))
    for _ in range(4):
        await fleet.renew(name, holder="gpu-node-2")
        await asyncio.sleep(GRACE / 4)
    assert await _state_is(fleet, name, "offline")
    await fleet.renew(name, holder="gpu-node-1")
    await fleet.renew(name, holder="gpu-node-1")
    await eventually(lambda: _state_is(fleet, name, "online"), within=GRACE)
