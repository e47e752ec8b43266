"""REST heartbeats renew the host's Lease; the Host's status is written only when it says something new.

What a legacy agent and an operator notice: every heartbeat renews the Lease the facade holds for
the host (created on the first one, owned by the Host), the Host's status is written on the
first heartbeat, on a change of state, health, GPUs or usage beyond a tenth of the host, and
once its `lastHeartbeat` is `status_resync_seconds` old, and the REST `last_heartbeat` is the
later of the Lease's renewal and the status. Writes are counted with the emulator's request
observer, so those tests need the emulator.
"""

from __future__ import annotations

import datetime
import pathlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import yarl

from gpufleet.api import formats, hostlease, meta
from gpufleet.facade import app as facade_app
from gpufleet.facade import routes
from gpufleet.settings import Settings
from kube_emulator import Emulator
from kube_emulator.cluster import write_kubeconfig
from kube_emulator.faultproxy import FaultProxy, match_request
from kube_emulator.faults import RequestInfo, RequestRecord

from .conftest import FacadeTestServer, StartFacade
from .helpers import HOSTS_PATH, MERGE, Facade, K8s, eventually

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
RECEIVED = {"code": 0, "message": "心跳上报成功"}


class Writes:
    """The successful writes the API answered while a test ran."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def __call__(self, record: RequestRecord) -> None:
        if record.method in WRITES and record.status < 400:
            self.records.append(record)

    def status_of(self, host_id: str) -> int:
        """Writes of the Host's status."""
        path = f"{HOSTS_PATH}/{host_id}/status"
        return sum(1 for r in list(self.records) if r.method == "PATCH" and r.path == path)

    def lease_of(self, host_id: str, namespace: str = hostlease.NAMESPACE) -> int:
        """Creates and renewals of the host's Lease."""
        leases = hostlease.path(namespace)
        return sum(
            1
            for r in list(self.records)
            if (r.method == "PATCH" and r.path == f"{leases}/{host_id}") or (r.method == "POST" and r.path == leases)
        )


@pytest.fixture
def writes(emulator: Emulator) -> Iterator[Writes]:
    seen = Writes()
    stop = emulator.observe(seen)
    yield seen
    stop()


def lease_of(k8s: K8s, host_id: str) -> tuple[int, Any]:
    return k8s("GET", hostlease.path(hostlease.NAMESPACE, host_id))


def set_lease_renewal(k8s: K8s, host_id: str, moment: datetime.datetime) -> None:
    """Renew the host's Lease behind the facade's back (as the node's agent would), at `moment`."""
    patch = {"spec": {"renewTime": formats.micro_time(moment)}}
    k8s.ok("PATCH", hostlease.path(hostlease.NAMESPACE, host_id), patch, MERGE)


def cached_status(facade: Facade, host_id: str) -> dict[str, Any]:
    host = facade.app[routes.SERVICES].hosts.get(host_id)
    return dict((host or {}).get("status") or {})


class TestLease:
    async def test_the_first_heartbeat_creates_the_lease_owned_by_the_host(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        assert lease_of(k8s, host_id)[0] == 404
        before = formats.now()
        async with facade.http.post(
            f"{facade.url}/api/v1/hosts/{host_id}/heartbeat",
            json={"status": "online", "health_status": "healthy", "used_cpu": 8, "used_memory": 1, "used_gpu": 0},
            headers={"Authorization": f"Bearer {host['agent_token']}"},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            assert await response.read() == '{"code":0,"message":"心跳上报成功"}'.encode()

        status, lease = lease_of(k8s, host_id)
        assert status == 200, lease
        uid = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["metadata"]["uid"]
        assert lease["metadata"]["ownerReferences"] == [
            {"apiVersion": meta.API_VERSION, "kind": "Host", "name": host_id, "uid": uid}
        ]
        assert lease["metadata"]["labels"] == {meta.HOST_LABEL: host_id}
        assert lease["spec"]["holderIdentity"] == hostlease.FACADE_HOLDER
        assert lease["spec"]["leaseDurationSeconds"] == 50  # the grace period
        renewed = formats.parse_time(lease["spec"]["renewTime"])
        assert renewed is not None and before <= renewed <= formats.now()

    async def test_every_heartbeat_renews_the_lease(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        renewals: list[datetime.datetime] = []
        for _ in range(3):
            assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
            lease = lease_of(k8s, host_id)[1]
            assert lease["spec"]["holderIdentity"] == hostlease.FACADE_HOLDER
            renewed = formats.parse_time(lease["spec"]["renewTime"])
            assert renewed is not None
            renewals.append(renewed)
        assert renewals == sorted(renewals) and len(set(renewals)) == 3

    async def test_a_lease_another_holder_renewed_is_taken_over(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        k8s.ok("PATCH", hostlease.path(hostlease.NAMESPACE, host_id), {"spec": {"holderIdentity": "node-x"}}, MERGE)
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert lease_of(k8s, host_id)[1]["spec"]["holderIdentity"] == hostlease.FACADE_HOLDER

    async def test_a_deleted_lease_is_created_again(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        k8s.ok("DELETE", hostlease.path(hostlease.NAMESPACE, host_id))
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert lease_of(k8s, host_id)[0] == 200


@pytest.mark.emulator
class TestStatusWrites:
    async def test_ten_identical_heartbeats_write_the_status_once(
        self, facade: Facade, k8s: K8s, writes: Writes
    ) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        for _ in range(10):
            assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert writes.status_of(host_id) == 1
        assert writes.lease_of(host_id) == 10
        status = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["status"]
        assert (status["reportedState"], status["healthStatus"], status["usedCpu"]) == ("online", "healthy", 8)

    @pytest.mark.parametrize(
        "change",
        [
            {"health_status": "unhealthy"},
            {"status": "offline"},
            {"used_gpu": 3},
            {"used_cpu": 11.5},  # 3.5 CPUs more on a 32-CPU host: over a tenth of it
            {"used_memory": 34359738368 + 16 * 2**30},  # 16 GiB more of 128 GiB
        ],
        ids=["health", "state", "gpus", "cpu", "memory"],
    )
    async def test_a_change_is_written_at_once(
        self, facade: Facade, k8s: K8s, writes: Writes, change: dict[str, Any]
    ) -> None:
        host = await facade.register()  # 32 CPUs, 128 GiB
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        await facade.heartbeat(host_id, host["agent_token"])
        assert writes.status_of(host_id) == 1
        assert await facade.heartbeat(host_id, host["agent_token"], **change) == (200, RECEIVED)
        assert writes.status_of(host_id) == 2
        status = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["status"]
        reported = {
            "status": status["reportedState"],
            "health_status": status["healthStatus"],
            "used_gpu": status["reportedUsedGpu"],
            "used_cpu": status["usedCpu"],
            "used_memory": status["usedMemory"],
        }
        assert {key: reported[key] for key in change} == change
        detail = await facade.detail(host_id)  # the caller reads its own write (state and GPUs: the operator's)
        shown = {key: value for key, value in change.items() if key in ("health_status", "used_cpu", "used_memory")}
        assert {key: detail[key] for key in shown} == shown

    async def test_usage_within_a_tenth_of_the_host_waits_for_the_resync(self, facade: Facade, writes: Writes) -> None:
        host = await facade.register()  # 32 CPUs, 128 GiB
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"], used_cpu=8, used_memory=2**30)
        await facade.heartbeat(host_id, host["agent_token"], used_cpu=11.2, used_memory=2**30 + 12 * 2**30)
        assert writes.status_of(host_id) == 1
        detail = await facade.detail(host_id)
        assert (detail["used_cpu"], detail["used_memory"]) == (8, 2**30)

    async def test_an_old_status_is_written_again_after_the_resync_interval(
        self, start_facade: StartFacade, settings: Settings, k8s: K8s, writes: Writes
    ) -> None:
        facade = await start_facade(settings.model_copy(update={"status_resync_seconds": 60.0}))
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        assert writes.status_of(host_id) == 1

        async def status_written_at(moment: datetime.datetime) -> None:
            """Age the status behind the facade's back, and wait until its cache has seen it."""
            stamp = formats.rfc3339(moment)
            k8s.patch_status(host_id, {"lastHeartbeat": stamp})
            assert await eventually(lambda: cached_status(facade, host_id).get("lastHeartbeat") == stamp)

        await status_written_at(formats.now() - datetime.timedelta(seconds=50))
        await facade.heartbeat(host_id, host["agent_token"])
        assert writes.status_of(host_id) == 2  # the facade's first, and the test's own patch

        await status_written_at(formats.now() - datetime.timedelta(seconds=61))
        before = formats.now().replace(microsecond=0)
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert writes.status_of(host_id) == 4  # and the test's second, and the facade's resync
        written = formats.parse_time(k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["status"]["lastHeartbeat"])
        assert written is not None and written >= before


class TestLastHeartbeat:
    async def test_it_follows_the_lease_renewals(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        written = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["status"]["lastHeartbeat"]
        assert (await facade.detail(host_id))["last_heartbeat"] == written

        later = formats.now() + datetime.timedelta(minutes=5, microseconds=654321)
        set_lease_renewal(k8s, host_id, later)
        expected = formats.rfc3339(later)

        async def both_read_the_renewal() -> bool:
            listed = [item for item in await facade.all_hosts() if item["host_id"] == host_id]
            detail = await facade.detail(host_id)
            return detail["last_heartbeat"] == expected and [item["last_heartbeat"] for item in listed] == [expected]

        assert await eventually(both_read_the_renewal)

    async def test_a_status_written_after_the_last_renewal_wins(self, facade: Facade, k8s: K8s) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])
        set_lease_renewal(k8s, host_id, datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        written = k8s.ok("GET", f"{HOSTS_PATH}/{host_id}")["status"]["lastHeartbeat"]

        async def renewal_seen() -> bool:
            return (facade.app[routes.SERVICES].leases.renew_time(host_id) or "").startswith("2020-01-01")

        assert await eventually(renewal_seen)
        assert (await facade.detail(host_id))["last_heartbeat"] == written

    async def test_a_host_without_heartbeats_reads_null(self, facade: Facade) -> None:
        host = await facade.register()
        assert (await facade.detail(host["host_id"]))["last_heartbeat"] is None


@pytest.mark.emulator
class TestFailures:
    async def test_heartbeats_while_lease_renewals_fail_are_503(
        self, facade: Facade, emulator: Emulator, k8s: K8s, writes: Writes
    ) -> None:
        host = await facade.register()
        host_id = host["host_id"]
        await facade.heartbeat(host_id, host["agent_token"])

        def renewal(request: RequestInfo) -> bool:
            return request.method == "PATCH" and request.path == hostlease.path(hostlease.NAMESPACE, host_id)

        stop = emulator.faults.fail_when(renewal, 503)
        try:
            token = host["agent_token"]
            answers = [await facade.heartbeat(host_id, token, health_status="unhealthy") for _ in range(3)]
        finally:
            stop()
        unavailable = {"code": 50301, "message": "Kubernetes API unavailable: injected fault: HTTP 503"}
        assert answers == [(503, unavailable)] * 3
        assert writes.status_of(host_id) == 1  # nothing is written when the Lease was not
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)

    async def test_without_the_lease_namespace_every_heartbeat_writes_the_status(
        self, start_facade: StartFacade, settings: Settings, k8s: K8s, writes: Writes
    ) -> None:
        """A facade upgraded before its Lease namespace exists keeps its hosts alive the old way."""
        facade = await start_facade(settings.model_copy(update={"host_lease_namespace": "gpufleet-no-such-namespace"}))
        host = await facade.register()
        host_id = host["host_id"]
        for _ in range(3):
            assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert writes.status_of(host_id) == 3
        assert writes.lease_of(host_id, "gpufleet-no-such-namespace") == 0
        assert (await facade.detail(host_id))["last_heartbeat"] is not None

    async def test_the_facade_is_not_ready_until_the_leases_are_listed(
        self, settings: Settings, kube: Any, emulator: Emulator
    ) -> None:
        def lease_list(request: RequestInfo) -> bool:
            return request.method == "GET" and request.path == hostlease.path(hostlease.NAMESPACE)

        stop = emulator.faults.fail_when(lease_list, 503)
        server = FacadeTestServer(facade_app.create_app(settings, kubeconfig=str(kube.kubeconfig)))
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http:
                url = str(server.make_url("/readyz"))
                services = server.app[routes.SERVICES]
                assert await eventually(lambda: services.informers[0].synced.is_set())  # the Hosts are listed
                async with http.get(url) as response:
                    assert (response.status, await response.text()) == (503, "caches are syncing")
                stop()

                async def ready() -> bool:
                    async with http.get(url) as response:
                        return response.status == 200

                assert await eventually(ready, within=10.0)
        finally:
            stop()
            await server.close()


@pytest.fixture
async def proxied(kube: Any, emulator: Emulator, tmp_path: pathlib.Path) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A fault proxy between a facade and the emulated API, and a kubeconfig through it."""
    port = yarl.URL(kube.url).port
    assert port is not None
    async with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy, str(write_kubeconfig(tmp_path / "kubeconfig", proxy.url))


@pytest.mark.emulator
class TestBrokenLink:
    """Heartbeats when the connection that carries the Lease renewals breaks."""

    async def test_a_renewal_connection_dropped_as_the_request_arrives_costs_no_heartbeat(
        self, proxied: tuple[FaultProxy, str], start_facade: StartFacade, settings: Settings, k8s: K8s
    ) -> None:
        proxy, kubeconfig = proxied
        facade = await start_facade(settings, kubeconfig=kubeconfig)
        host = await facade.register()
        host_id = host["host_id"]
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)  # its connection is kept
        renewed = lease_of(k8s, host_id)[1]["spec"]["renewTime"]
        # What a server restarting, or closing an idle connection, does to a request it did not read.
        cut = proxy.cut_after(match_request("PATCH", f"/leases/{host_id}", headers_only=True), rst=False)
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert len(cut.fired) == 1
        assert lease_of(k8s, host_id)[1]["spec"]["renewTime"] > renewed

    async def test_a_renewal_that_hangs_is_503_in_time_and_the_next_heartbeat_renews(
        self, proxied: tuple[FaultProxy, str], start_facade: StartFacade, settings: Settings, k8s: K8s
    ) -> None:
        proxy, kubeconfig = proxied
        facade = await start_facade(settings.model_copy(update={"api_timeout_seconds": 1.0}), kubeconfig=kubeconfig)
        host = await facade.register()
        host_id = host["host_id"]
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        proxy.stall()
        try:
            started = time.monotonic()
            status, answer = await facade.heartbeat(host_id, host["agent_token"])
            took = time.monotonic() - started
        finally:
            proxy.forward()
        assert (status, answer["code"]) == (503, 50301) and took < 2.5
        renewed = lease_of(k8s, host_id)[1]["spec"]["renewTime"]
        assert await facade.heartbeat(host_id, host["agent_token"]) == (200, RECEIVED)
        assert lease_of(k8s, host_id)[1]["spec"]["renewTime"] > renewed
