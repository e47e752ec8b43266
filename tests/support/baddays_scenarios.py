"""The bad days: each scenario drives a :class:`~tests.support.baddays.Rig` and leaves a verdict.

``tests/faults`` asserts that a scenario's report has no problems; ``benchmarks/bad_days.py``
prints the same reports as a table. Every scenario runs 8 hosts (two with GPU objects) heartbeating
every second against an 8 s grace period, and two operator replicas; the first replica starts
alone and leads, the second joins once the fleet is online.

======================  ==================================================================================
``stall``               both replicas' link (one proxy) stalls for 3x grace: half-open, no byte moves
``reset``               both replicas' link resets every connection and refuses new ones for 2x grace
``outage``              the API answers 503 to everyone for 10 s, agents included
``cut-patch``           the offline writes of three dead hosts are cut mid-request (RST after the headers,
                        FIN after the headers, lost answer)
``relist``              while the link is stalled, GPUs and an agent-token Secret are deleted and the API
                        history compacted: the operator must relist (410) and see the deletions
``leader-kill``         the leader is SIGKILLed while two hosts die: the standby takes the Lease over
``partitioned-leader``  only the leader's link stalls (one proxy each) for 20 s: the standby takes over,
                        the old leader must stay silent when its link comes back
======================  ==================================================================================
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable

from kube_emulator.cluster import write_kubeconfig
from kube_emulator.emulator import Emulator
from kube_emulator.faultproxy import match_request
from tests.support.baddays import HOSTS, TOKEN_SECRET_PREFIX, Report, Rig, Timings

HOST_COUNT = 8
GPU_LAYOUT = {0: 3, 1: 2}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Rig], Awaitable[None]]
    replicas: int = 2
    shared_proxy: bool = True


async def _prepare(rig: Rig, gpus: dict[int, int] | None = None) -> list[str]:
    names = await rig.add_hosts(HOST_COUNT, GPU_LAYOUT if gpus is None else gpus)
    await rig.start_replicas()
    return names


async def _blind_link_fault(rig: Rig, fault: Callable[[], None], label: str, seconds: float) -> None:
    """One host dies as the fault starts, one 4 s before it ends, one 1 s after it: all must go
    offline in time once the operators see again, and no live host may."""
    names = await _prepare(rig)
    with rig.blind(label):
        fault()
        rig.kill_hosts(names[7])  # its deadline passes while no replica can see
        await asyncio.sleep(seconds - 4)
        rig.kill_hosts(names[6])  # dies just before the link comes back
        await asyncio.sleep(4)
        rig.proxy.forward()
    await asyncio.sleep(1)
    rig.kill_hosts(names[5])
    await rig.settle()


async def stall(rig: Rig) -> None:
    await _blind_link_fault(rig, rig.proxy.stall, "stall of the operators' link", 3 * rig.timings.grace)


async def reset(rig: Rig) -> None:
    await _blind_link_fault(rig, rig.proxy.reset, "reset-and-refuse of the operators' link", 2 * rig.timings.grace)


async def outage(rig: Rig) -> None:
    """Everyone's requests fail for 10 s; afterwards every host gets a full grace period."""
    names = await _prepare(rig)
    rig.kill_hosts(names[7])
    await asyncio.sleep(3)  # its deadline falls inside the outage
    with rig.blind("API outage (503 to everyone)"), rig.emulator.unavailable("error"):
        await asyncio.sleep(10)
    await asyncio.sleep(1)
    rig.kill_hosts(names[6])
    await rig.settle()


async def cut_patch(rig: Rig) -> None:
    """The offline verdicts of three dead hosts are cut in flight; none may be lost."""
    names = await _prepare(rig)
    dead = names[5:]
    offline = b'"offline"'
    cuts = {
        # the headers reach the server, the body never does: a RST, nothing applied
        dead[0]: rig.proxy.cut_after(match_request(None, f"{HOSTS}/{dead[0]}/status", body=offline, headers_only=True)),
        # the same with a plain close (FIN), which aiohttp reports as a disconnect, not an OSError
        dead[1]: rig.proxy.cut_after(
            match_request(None, f"{HOSTS}/{dead[1]}/status", body=offline, headers_only=True), rst=False
        ),
        # the whole request reaches the server, which applies it; the answer is lost
        dead[2]: rig.proxy.cut_after(
            match_request(None, f"{HOSTS}/{dead[2]}/status", body=offline), before_response=True
        ),
    }
    rig.kill_hosts(*dead)
    await rig.settle()
    for name, cut in cuts.items():
        if not cut.fired:
            rig.problem(f"no offline write of {name} went through the proxy: the cut never fired")
        where = "before the answer" if cut.before_response else "mid-request"
        rig.marks += [(at, f"cut an offline write of {name} ({where})") for at in cut.fired]


async def relist(rig: Rig) -> None:
    """Changes during a watch gap that only a relist (410) can reveal: no ghost GPUs, and a token
    rotated by an admin (its Secret deleted, the digest removed from the Host) is issued anew."""
    names = await _prepare(rig, gpus={0: 4, 1: 2})
    host_a, host_b = names[0], names[1]
    secret = f"/api/v1/namespaces/{rig.namespace}/secrets/{TOKEN_SECRET_PREFIX}{host_a}"

    async def token_uid() -> str | None:
        found = await rig.get(secret)
        return None if found is None else str(found["metadata"]["uid"])

    old_uid = None

    async def issued() -> bool:
        nonlocal old_uid
        old_uid = await token_uid()
        return old_uid is not None

    await rig.until(issued, 15, f"the agent token Secret of {host_a}")
    rig.proxy.stall()
    stalled = rig.mark("operators' link stalled")
    for gpu in sorted(rig.fleet.hosts[host_a].gpus)[:2] + sorted(rig.fleet.hosts[host_b].gpus):
        await rig.fleet.delete_gpu(gpu.rsplit("-gpu", 1)[0], gpu)
    await rig.request("DELETE", secret)
    await rig.request(
        "PATCH",
        f"/apis/gpufleet.io/v1alpha1/hosts/{host_a}",
        {"metadata": {"annotations": {"gpufleet.io/agent-token-sha256": None}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    rig.emulator.compact()
    rig.mark(f"deleted 2 GPUs of {host_a}, both of {host_b}; rotated the token of {host_a}; history compacted")
    await asyncio.sleep(2)
    rig.proxy.forward()
    rig.mark("operators' link back")

    def counted() -> bool:
        return rig.monitor.total(host_a) == 2 and rig.monitor.total(host_b) == 0

    async def reissued() -> bool:
        uid = await token_uid()
        return uid is not None and uid != old_uid

    if not await rig.until(counted, 20, "GPU counts after the relist", fail=False):
        rig.problem(
            f"ghost GPUs after the relist: {host_a} totalGpu {rig.monitor.total(host_a)} (2 exist), "
            f"{host_b} totalGpu {rig.monitor.total(host_b)} (0 exist)"
        )
    if not await rig.until(reissued, 20, "a new agent token", fail=False):
        rig.problem(f"no new agent token for {host_a} after it was rotated during the gap")
    await rig.settle()
    for name, exist in ((host_a, 2), (host_b, 0)):
        written = [total for at, total in rig.monitor.totals.get(name, []) if at >= stalled]
        if any(total != exist for total in written):
            rig.problem(f"after the gap {name} (with {exist} GPUs left) was written totalGpu {written}")


async def leader_kill(rig: Rig) -> None:
    """SIGKILL the leader as two hosts die: the standby takes the Lease and writes only what happened."""
    names = await _prepare(rig)
    leader, how = await rig.leader()
    rig.mark(f"leader: {leader.name} ({how})")
    killed_at = rig.kill_hosts(names[6], names[7])
    rig.lose_leader(leader)
    rig.kill_replica(leader, signal.SIGKILL)
    timings = rig.timings

    def taken_over() -> bool:
        return any(r is not leader and r.alive and r.owns(rig.monitor.holder) for r in rig.replicas)

    await rig.until(taken_over, timings.lease_duration + 2 * timings.retry_period + 5, "take-over", fail=False)
    await rig.settle()  # a grace period + 1 s from here: what the new leader writes shows
    _check_lease_moved(rig, leader.name)
    await _check_kubectl_shows_holder(rig)
    for name in names[:2]:
        expected = len(rig.fleet.hosts[name].gpus)
        written = [total for at, total in rig.monitor.totals.get(name, []) if at >= killed_at]
        if any(total != expected for total in written):
            rig.problem(f"after the take-over {name} (with {expected} GPUs) was written totalGpu {written}")


async def partitioned_leader(rig: Rig) -> None:
    """Only the leader's link stalls: the standby takes over; the old leader stays silent after."""
    names = await _prepare(rig)
    leader, how = await rig.leader()
    rig.mark(f"leader: {leader.name} ({how})")
    rig.lose_leader(leader)
    leader.proxy.stall()
    rig.mark(f"{leader.name}'s link stalled")
    rig.kill_hosts(names[7])  # the standby must call it, within grace + take-over
    await asyncio.sleep(20)
    leader.proxy.forward()
    end = rig.mark(f"{leader.name}'s link back")
    await rig.settle(after=end)
    _check_lease_moved(rig, leader.name)
    late = [at for at, replica, _ in rig.writers.status_writes(since=end) if replica == leader.name]
    if late and not leader.owns(rig.monitor.holder):
        rig.problem(f"the old leader {leader.name} wrote Host status {len(late)}x after its link came back")


def _check_lease_moved(rig: Rig, old: str) -> None:
    if not rig.monitor.lease_seen:
        rig.problem(f"no Lease {rig.namespace}/{rig.lease_name} (coordination.k8s.io/v1) was ever written")
        return
    holder = rig.monitor.holder
    if not any(r.alive and r.owns(holder) and r.name != old for r in rig.replicas):
        rig.problem(f"the Lease holderIdentity is {holder!r}: no surviving replica took it over from {old}")


async def _check_kubectl_shows_holder(rig: Rig) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None or not rig.monitor.lease_seen:
        return
    config = write_kubeconfig(rig.workdir / "direct.kubeconfig", rig.url)
    args = [kubectl, "--kubeconfig", str(config), "get", "lease", rig.lease_name, "-n", rig.namespace]
    shown = await asyncio.to_thread(
        subprocess.run, [*args, "-o", "jsonpath={.spec.holderIdentity}"], capture_output=True, text=True, timeout=30
    )
    holder = rig.monitor.holder
    rig.mark(f"kubectl get lease: {shown.stdout.strip() or shown.stderr.strip()}")
    if shown.returncode != 0 or shown.stdout.strip() != (holder or ""):
        rig.problem(f"kubectl get lease shows {shown.stdout.strip()!r} ({shown.stderr.strip()}), not {holder!r}")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("stall", "link stalled 3x grace", stall),
        Scenario("reset", "link reset+refused 2x grace", reset),
        Scenario("outage", "API outage 10 s (everyone)", outage),
        Scenario("cut-patch", "offline PATCHes cut mid-request", cut_patch),
        Scenario("relist", "410 relist after deletions", relist),
        Scenario("leader-kill", "SIGKILL of the leader", leader_kill),
        Scenario("partitioned-leader", "leader's link alone stalled", partitioned_leader, shared_proxy=False),
    )
}


async def play(
    name: str,
    url: str,
    emulator: Emulator,
    workdir: pathlib.Path,
    *,
    timings: Timings | None = None,
    pythonpath: str | None = None,
    on_rig: Callable[[Rig], None] | None = None,
) -> Report:
    """Run one scenario on a fresh rig against the emulator serving at ``url``; its report."""
    scenario = SCENARIOS[name]
    rig = Rig(
        url,
        emulator,
        workdir,
        scenario=name,
        replicas=scenario.replicas,
        shared_proxy=scenario.shared_proxy,
        timings=timings or Timings(),
        pythonpath=pythonpath,
    )
    if on_rig is not None:
        on_rig(rig)
    async with rig:
        await scenario.run(rig)
        return rig.report()
