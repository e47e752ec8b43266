"""NodeRestriction for gpufleet: the chart's admission policies pin each agent to its own node.

The agent of node A (the real agent code, or its own API client, with the token its pod would
hold) reports for its node and is refused everywhere else: on node B's Host (heartbeat,
registration), on node B's GPUs (create, update, status, delete), on relabelling its own GPUs,
on the operator's status fields and labels, on Host writes it never makes, and on heartbeat
Leases not held by its node (creating or renewing one with holder B, taking over B's, deleting
any; a Lease the facade renewed for its host it may take over). A token bound to no pod writes
nothing. The operator's and the facade's identities and an administrator are not restricted.

The same tests run on the emulator (its CEL evaluates the policies) and on a real cluster of
Kubernetes 1.30+ (tests/e2e/run.sh runs the suite on kind), where the API server evaluates them
and the token comes from the TokenRequest API bound to a pod on a node. Where RBAC already
refuses a request on a real cluster (the agent may not patch or delete Hosts), only the emulator,
which does not enforce RBAC, shows that the policy refuses it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gpufleet.api import host, hostlease, meta
from gpufleet_agent import agent, binding, fakenvml, heartbeat, kubeapi, machine

from .conftest import LEASES, NAMESPACE, Fleet, Identities, RunAgent, eventually

pytestmark = pytest.mark.usefixtures("policies")

Connect = Callable[[str], kubeapi.KubeApi]
MERGE = "application/merge-patch+json"


async def refused(call: Awaitable[Any], *words: str, by_policy: bool = True) -> kubeapi.ApiError:
    """The call fails with 403; `by_policy`: a policy of the chart said so, with these words."""
    with pytest.raises(kubeapi.ApiError) as caught:
        await call
    error = caught.value
    assert error.status == 403, error
    if by_policy:
        assert "ValidatingAdmissionPolicy 'gpufleet-nr-agent-" in str(error), error
        for word in words:
            assert word in str(error), error
    return error


def beat(**status: Any) -> dict[str, Any]:
    """A heartbeat as the agent sends it, plus whatever `status` adds."""
    body = heartbeat.patch(
        machine.Usage(0.5, 1 << 30), health=host.HealthStatus.HEALTHY, used_gpus=None, now=heartbeat.utc_now()
    )
    body["status"].update(status)
    return body


def gpu_body(host_name: str, index: int, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": "GPU",
        "metadata": {"name": f"{host_name}-gpu{index}", "labels": {meta.HOST_LABEL: host_name, **labels}},
        "spec": {"hostName": host_name, "index": index},
    }


def api_errors(running: agent.Agent) -> float:
    return running.metrics.registry.get_sample_value("gpufleet_agent_api_errors_total") or 0.0


async def _reported(admin: kubeapi.KubeApi, host_name: str, count: int) -> dict[str, Any] | None:
    gpus = await admin.list(kubeapi.GPUS, label_selector=f"{meta.HOST_LABEL}={host_name}")
    if len(gpus) == count and all("lastUpdateTime" in (g.get("status") or {}) for g in gpus):
        return {g["metadata"]["name"]: g for g in gpus}
    return None


async def _heartbeat_of(admin: kubeapi.KubeApi, host_name: str) -> str | None:
    found = await admin.get(f"{kubeapi.HOSTS}/{host_name}")
    stamp: str | None = (found.get("status") or {}).get("lastHeartbeat")
    return stamp


@pytest.fixture
def on_emulator(kube: Any) -> bool:
    return kube.emulator is not None


# ----- node A's agent on its own node ------------------------------------------------------------------------


async def test_the_agent_registers_its_node_and_reports_its_gpus(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str
) -> None:
    fleet.track("host", node_a)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one", 2), token=token, node_name=node_a) as running:
        gpus = await eventually(lambda: _reported(fleet.admin, node_a, 2), within=15.0)
        await eventually(lambda: _heartbeat_of(fleet.admin, node_a), within=15.0)
        assert api_errors(running) == 0
    registered = await fleet.admin.get(f"{kubeapi.HOSTS}/{node_a}")
    assert registered["spec"]["nodeName"] == node_a
    for obj in gpus.values():
        assert obj["metadata"]["labels"][meta.NODE_LABEL] == node_a
        assert obj["status"]["state"] == "free"


async def test_the_agent_reports_for_a_host_that_names_its_node(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str
) -> None:
    host_name = f"host-{node_a[-6:]}x"
    await fleet.host(host_name, node_name=node_a)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one"), token=token, node_name=node_a, register_node=False) as running:
        gpus = await eventually(lambda: _reported(fleet.admin, host_name, 1), within=15.0)
        await eventually(lambda: _heartbeat_of(fleet.admin, host_name), within=15.0)
        assert api_errors(running) == 0
    assert gpus[f"{host_name}-gpu0"]["metadata"]["labels"][meta.NODE_LABEL] == node_a


async def test_a_gpu_from_before_the_node_label_is_adopted_by_its_own_agent(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str, connect: Connect, node_b: str
) -> None:
    await fleet.host(node_a, node_name=node_a)
    await fleet.gpu(node_a, 0, {})  # as an agent before this change created it: no gpufleet.io/node
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one"), token=token, node_name=node_a, register_node=False) as running:
        gpus = await eventually(lambda: _reported(fleet.admin, node_a, 1), within=15.0)
        assert api_errors(running) == 0
    assert gpus[f"{node_a}-gpu0"]["metadata"]["labels"][meta.NODE_LABEL] == node_a
    # an unlabelled GPU of another node's Host is not adopted
    await fleet.host(node_b, node_name=node_b)
    await fleet.gpu(node_b, 0, {})
    api = connect(token)
    patch = {"metadata": {"labels": {meta.NODE_LABEL: node_a}}}
    await refused(api.merge_patch(f"{kubeapi.GPUS}/{node_b}-gpu0", patch), "has no gpufleet.io/node label")


# ----- node A's agent on node B's objects -----------------------------------------------------------------------


async def test_an_agent_with_node_a_token_is_refused_on_node_b(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str, node_b: str
) -> None:
    """The real agent told it runs on node B, holding node A's token: it reads, it writes nothing."""
    await fleet.host(node_b, node_name=node_b)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one", 2), token=token, node_name=node_b, register_node=False) as running:
        await eventually(lambda: api_errors(running) >= 4, within=15.0)
        assert running.host is not None  # bound: reading is allowed
    assert await _heartbeat_of(fleet.admin, node_b) is None
    assert await fleet.admin.list(kubeapi.GPUS, label_selector=f"{meta.HOST_LABEL}={node_b}") == []


async def test_registration_is_of_the_own_node_only(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    fleet.track("host", node_b)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one"), token=token, node_name=node_b) as running:
        await eventually(lambda: api_errors(running) >= 2, within=15.0)
    with pytest.raises(kubeapi.ApiError) as missing:
        await fleet.admin.get(f"{kubeapi.HOSTS}/{node_b}")
    assert missing.value.not_found
    api = connect(token)
    await refused(binding.register(api, node_b, "192.0.2.9"), f"the agent of node {node_a} may register only")
    claiming_b = binding.manifest(node_a, machine.capacity("192.0.2.9"))
    claiming_b["spec"]["nodeName"] = node_b
    fleet.track("host", node_a)
    await refused(api.create(kubeapi.HOSTS, claiming_b), "may register only its own node")


@pytest.mark.parametrize(
    ("name", "node_name", "allowed"),
    [
        ("{a}", None, True),
        ("host-{a}", "{a}", True),
        ("{b}", None, False),
        ("host-{b}", "{b}", False),
        ("{a}", "{b}", False),  # named like node A but bound to node B by spec.nodeName
    ],
    ids=["named-a", "node-name-a", "named-b", "node-name-b", "named-a-node-name-b"],
)
async def test_heartbeats_land_only_on_the_host_bound_to_the_own_node(
    identities: Identities,
    fleet: Fleet,
    node_a: str,
    node_b: str,
    connect: Connect,
    name: str,
    node_name: str | None,
    allowed: bool,
) -> None:
    host_name = name.format(a=node_a, b=node_b)
    await fleet.host(host_name, node_name=node_name.format(a=node_a, b=node_b) if node_name else None)
    api = connect(identities.node_token(node_a))
    if allowed:
        await heartbeat.send(api, host_name, beat())
        assert await _heartbeat_of(fleet.admin, host_name)
    else:
        await refused(heartbeat.send(api, host_name, beat()), f"is bound to node {node_b}")


async def test_another_nodes_gpus_are_out_of_reach(
    identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    await fleet.host(node_b, node_name=node_b)
    await fleet.gpu(node_b, 0, {meta.NODE_LABEL: node_b})
    api = connect(identities.node_token(node_a))
    theirs = f"{kubeapi.GPUS}/{node_b}-gpu0"
    of_b = f"is of node {node_b}"
    await refused(api.merge_patch(f"{theirs}/status", {"status": {"state": "unhealthy"}}), of_b)
    await refused(api.merge_patch(theirs, {"spec": {"modelName": "stolen"}}), of_b)
    await refused(api.merge_patch(theirs, {"metadata": {"labels": {meta.NODE_LABEL: node_a}}}), of_b)
    await refused(api.delete(theirs), of_b)
    must = f"must carry the label gpufleet.io/node={node_a}"
    fleet.track("gpu", f"{node_b}-gpu1")
    await refused(api.create(kubeapi.GPUS, gpu_body(node_b, 1, **{meta.NODE_LABEL: node_b})), must)
    await refused(api.create(kubeapi.GPUS, gpu_body(node_b, 1)), must)
    untouched = await fleet.admin.get(theirs)
    assert untouched["metadata"]["labels"][meta.NODE_LABEL] == node_b
    assert untouched["spec"].get("modelName") != "stolen"
    assert (untouched.get("status") or {}).get("state") != "unhealthy"


async def test_own_gpus_are_written_but_never_relabelled(
    identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    await fleet.host(node_a, node_name=node_a)
    api = connect(identities.node_token(node_a))
    mine = f"{kubeapi.GPUS}/{node_a}-gpu0"
    fleet.track("gpu", f"{node_a}-gpu0")
    await api.create(kubeapi.GPUS, gpu_body(node_a, 0, **{meta.NODE_LABEL: node_a}))
    await api.merge_patch(f"{mine}/status", {"status": {"state": "free"}})
    await api.merge_patch(mine, {"spec": {"modelName": "NVIDIA H100"}})
    must = f"must carry the label gpufleet.io/node={node_a}"
    await refused(api.merge_patch(mine, {"metadata": {"labels": {meta.NODE_LABEL: node_b}}}), must)
    await refused(api.merge_patch(mine, {"metadata": {"labels": {meta.NODE_LABEL: None}}}), must)
    await refused(api.merge_patch(mine, {"metadata": {"labels": {meta.HOST_LABEL: node_b}}}), "another Host")
    await api.delete(mine)


# ----- what no agent writes ---------------------------------------------------------------------------------------


OPERATOR_FIELDS = {
    "state": "offline",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "AgentSaysSo", "lastTransitionTime": "2024-01-01T00:00:00Z"}
    ],
    "totalGpu": 64,
    "usedGpu": 0,
    "gpus": "0/64",
    "observedGeneration": 99,
}
CURRENT = {
    "state": "online",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Quiet",
            "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }
    ],
    "totalGpu": 2,
    "usedGpu": 1,
    "gpus": "1/2",
    "observedGeneration": 1,
}


@pytest.mark.parametrize("field", sorted(OPERATOR_FIELDS))
async def test_the_operators_status_fields_are_refused(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect, field: str
) -> None:
    await fleet.host(node_a, node_name=node_a, status=CURRENT)
    api = connect(identities.node_token(node_a))
    words = "are the operator's"
    await refused(heartbeat.send(api, node_a, beat(**{field: OPERATOR_FIELDS[field]})), words)
    await refused(heartbeat.send(api, node_a, beat(**{field: None})), words)  # nor removed
    await heartbeat.send(api, node_a, beat(**{field: CURRENT[field]}))  # unchanged: fine
    assert (await fleet.admin.get(f"{kubeapi.HOSTS}/{node_a}"))["status"][field] == CURRENT[field]


@pytest.mark.parametrize("label", meta.OPERATOR_LABELS)
async def test_the_operators_labels_are_refused_on_registration(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect, label: str
) -> None:
    manifest = binding.manifest(node_a, machine.capacity("192.0.2.9"))
    manifest["metadata"]["labels"] = {label: "online"}
    fleet.track("host", node_a)
    api = connect(identities.node_token(node_a))
    await refused(api.create(kubeapi.HOSTS, manifest), "are the operator's")


async def test_the_agent_never_writes_a_hosts_spec_or_deletes_it(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect, on_emulator: bool
) -> None:
    """RBAC grants neither on a cluster; the policy refuses both as well (seen where RBAC is not enforced)."""
    await fleet.host(node_a, node_name=node_a)
    api = connect(identities.node_token(node_a))
    path = f"{kubeapi.HOSTS}/{node_a}"
    await refused(api.merge_patch(path, {"spec": {"totalCpu": 128}}), "only the status", by_policy=on_emulator)
    await refused(api.merge_patch(path, {"metadata": {"labels": {meta.STATUS_LABEL: "online"}}}), by_policy=on_emulator)
    await refused(api.delete(path), "never deletes Hosts", by_policy=on_emulator)


async def test_a_token_bound_to_no_pod_writes_nothing(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect
) -> None:
    await fleet.host(node_a, node_name=node_a)
    api = connect(identities.unbound_token())
    assert (await api.get(f"{kubeapi.HOSTS}/{node_a}"))["metadata"]["name"] == node_a  # reading is fine
    names_no_node = "this token names no node"
    await refused(heartbeat.send(api, node_a, beat()), names_no_node)
    fleet.track("gpu", f"{node_a}-gpu0")
    await refused(api.create(kubeapi.GPUS, gpu_body(node_a, 0, **{meta.NODE_LABEL: node_a})), names_no_node)
    fleet.track("host", "unbound-token-host")
    await refused(binding.register(api, "unbound-token-host", "192.0.2.9"), names_no_node)
    bound = await api.get(f"{kubeapi.HOSTS}/{node_a}")
    await refused(_renew(api, bound, node_a), names_no_node)  # the Lease create, after the patch's 404
    await fleet.lease(bound, node_a)
    await refused(_renew(api, bound, node_a), names_no_node)  # the renewal itself


async def test_the_operator_and_administrators_are_not_restricted(
    identities: Identities, fleet: Fleet, node_b: str, connect: Connect
) -> None:
    await fleet.host(node_b, node_name=node_b, status=CURRENT)
    await fleet.gpu(node_b, 0, {meta.NODE_LABEL: node_b})
    operator = connect(identities.operator_token())
    path = f"{kubeapi.HOSTS}/{node_b}"
    await operator.merge_patch(f"{path}/status", {"status": OPERATOR_FIELDS})
    await operator.merge_patch(path, {"metadata": {"labels": {meta.STATUS_LABEL: "offline"}}})
    await operator.delete(f"{kubeapi.GPUS}/{node_b}-gpu0")
    await fleet.gpu(node_b, 1, {meta.NODE_LABEL: node_b})
    await fleet.admin.merge_patch(f"{kubeapi.GPUS}/{node_b}-gpu1", {"metadata": {"labels": {meta.NODE_LABEL: "n"}}})
    await fleet.admin.merge_patch(f"{path}/status", {"status": {"lastHeartbeat": "2024-01-01T00:00:00Z"}})
    await fleet.admin.delete(path)


# ----- heartbeat Leases ---------------------------------------------------------------------------------------


def _renew(api: kubeapi.KubeApi, bound: dict[str, Any], holder: str) -> Awaitable[None]:
    """The agent's own Lease renewal (merge patch; on 404 read the Host and create the Lease)."""
    return heartbeat.renew(api, bound, namespace=LEASES, holder=holder, duration=40)


async def _lease(admin: kubeapi.KubeApi, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await admin.get(hostlease.path(LEASES, name))
    except kubeapi.ApiError as error:
        if error.not_found:
            return None
        raise
    return found


async def test_the_agent_creates_and_renews_its_own_nodes_lease(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str
) -> None:
    """The real agent: its heartbeat creates its Host's Lease, held by its node, and renews it."""
    fleet.track("host", node_a)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one"), token=token, node_name=node_a) as running:
        created = await eventually(lambda: _lease(fleet.admin, node_a), within=15.0)
        first = hostlease.renew_time(created)

        async def renewed() -> str | None:
            now = hostlease.renew_time(await _lease(fleet.admin, node_a) or {})
            return now if now != first else None

        await eventually(renewed, within=15.0)
        assert api_errors(running) == 0
    lease = await _lease(fleet.admin, node_a)
    assert lease is not None and hostlease.holder(lease) == node_a
    owner = (await fleet.admin.get(f"{kubeapi.HOSTS}/{node_a}"))["metadata"]["uid"]
    assert [ref["uid"] for ref in lease["metadata"]["ownerReferences"]] == [owner]


async def test_the_agent_renews_the_lease_of_a_host_bound_to_its_node(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect
) -> None:
    """A Host named otherwise, bound by spec.nodeName: its Lease is created and renewed (patch) by node A."""
    bound = await fleet.host(f"host-{node_a[-6:]}y", node_name=node_a)
    api = connect(identities.node_token(node_a))
    await _renew(api, bound, node_a)  # 404, then create
    await _renew(api, bound, node_a)  # merge patch: an UPDATE of the merged object at admission
    lease = await _lease(fleet.admin, bound["metadata"]["name"])
    assert lease is not None and hostlease.holder(lease) == node_a


async def test_a_lease_held_by_another_node_is_out_of_reach(
    identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    mine = await fleet.host(node_a, node_name=node_a)
    theirs = await fleet.host(node_b, node_name=node_b)
    api = connect(identities.node_token(node_a))
    must = f"spec.holderIdentity must be {node_a}"
    # creating a Lease held by node B: for B's Host, or for its own
    await refused(_renew(api, theirs, node_b), must)
    await refused(_renew(api, mine, node_b), must)
    assert await _lease(fleet.admin, node_a) is None
    assert await _lease(fleet.admin, node_b) is None
    # node B's existing Lease: neither taken over (holder A) nor renewed in B's name
    stored = await fleet.lease(theirs, node_b)
    taken = f"is held by {node_b}: the agent of node {node_a} may not take it over"
    await refused(_renew(api, theirs, node_a), taken)
    await refused(_renew(api, theirs, node_b), must)
    path = hostlease.path(LEASES, node_b)
    await refused(api.merge_patch(path, {"spec": {"holderIdentity": None}}), must)
    untouched = await fleet.admin.get(path)
    assert (hostlease.holder(untouched), hostlease.renew_time(untouched)) == (node_b, hostlease.renew_time(stored))
    # its own Lease: renewed, but not handed to node B
    await _renew(api, mine, node_a)
    await refused(
        api.merge_patch(hostlease.path(LEASES, node_a), hostlease.renewal(holder=node_b, duration_seconds=40)), must
    )
    assert hostlease.holder(await fleet.admin.get(hostlease.path(LEASES, node_a))) == node_a


async def test_the_agent_takes_back_its_nodes_lease_that_another_node_created_first(
    identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    """Node B's agent creates the Lease of node A's new Host before A's first heartbeat (it may:
    it holds it itself); A renews it all the same, and B cannot take it back."""
    mine = await fleet.host(node_a, node_name=node_a)
    fleet.track("lease", node_a)
    squatter = connect(identities.node_token(node_b))
    await _renew(squatter, mine, node_b)  # 404, then create, held by node B
    assert hostlease.holder(await fleet.admin.get(hostlease.path(LEASES, node_a))) == node_b
    await _renew(connect(identities.node_token(node_a)), mine, node_a)
    assert hostlease.holder(await fleet.admin.get(hostlease.path(LEASES, node_a))) == node_a
    await refused(_renew(squatter, mine, node_b), f"is held by {node_a}: the agent of node {node_b} may not take")


async def test_an_agent_kept_out_of_its_hosts_lease_heartbeats_through_the_hosts_status(
    run_agent: RunAgent, identities: Identities, fleet: Fleet, node_a: str, node_b: str, connect: Connect
) -> None:
    """A Host named otherwise, bound to node A, whose Lease node B created first: the policy cannot
    tell that this Lease is A's, so A's agent heartbeats the way it did before Leases, through the
    Host's status, every interval; the host stays alive and the error is counted."""
    host_name = f"host-{node_a[-6:]}z"
    bound = await fleet.host(host_name, node_name=node_a)
    fleet.track("lease", host_name)
    await _renew(connect(identities.node_token(node_b)), bound, node_b)
    token = identities.node_token(node_a)
    async with run_agent(fakenvml.scenario("one"), token=token, node_name=node_a, register_node=False) as running:
        first = await eventually(lambda: _heartbeat_of(fleet.admin, host_name), within=15.0)

        async def advanced() -> str | None:
            stamp = await _heartbeat_of(fleet.admin, host_name)
            return stamp if stamp != first else None

        await eventually(advanced, within=15.0)
        assert api_errors(running) > 0
    assert hostlease.holder(await fleet.admin.get(hostlease.path(LEASES, host_name))) == node_b


async def test_the_agent_takes_over_the_lease_its_host_had_as_a_legacy_host(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect
) -> None:
    """A host moving from a legacy REST agent to the node's agent: the Lease the facade renewed
    becomes the node's; the agent never writes the facade's name itself."""
    legacy = await fleet.host(node_a, node_name=node_a)
    await fleet.lease(legacy, hostlease.FACADE_HOLDER)
    api = connect(identities.node_token(node_a))
    await refused(_renew(api, legacy, hostlease.FACADE_HOLDER), f"spec.holderIdentity must be {node_a}")
    await _renew(api, legacy, node_a)
    assert hostlease.holder(await fleet.admin.get(hostlease.path(LEASES, node_a))) == node_a


async def test_the_agent_never_deletes_a_lease_nor_writes_one_elsewhere(
    identities: Identities, fleet: Fleet, node_a: str, connect: Connect, on_emulator: bool
) -> None:
    """RBAC grants neither on a cluster; the policy refuses both as well (seen where RBAC is not enforced)."""
    mine = await fleet.host(node_a, node_name=node_a)
    api = connect(identities.node_token(node_a))
    await _renew(api, mine, node_a)
    await refused(api.delete(hostlease.path(LEASES, node_a)), "never deletes Leases", by_policy=on_emulator)
    assert await _lease(fleet.admin, node_a) is not None
    elsewhere = hostlease.manifest(
        host_name=node_a, host_uid=mine["metadata"]["uid"], namespace=NAMESPACE, holder=node_a, duration_seconds=40
    )
    await refused(api.create(hostlease.path(NAMESPACE), elsewhere), f"only in {LEASES}", by_policy=on_emulator)


async def test_the_operator_the_facade_and_administrators_write_leases_unrestricted(
    identities: Identities, fleet: Fleet, node_b: str, connect: Connect, on_emulator: bool
) -> None:
    theirs = await fleet.host(node_b, node_name=node_b)
    path = hostlease.path(LEASES, node_b)
    # the facade renews a legacy host's Lease: creates it, then takes it over from the node's agent
    facade = connect(identities.facade_token())
    fleet.track("lease", node_b)
    created = hostlease.manifest(
        host_name=node_b,
        host_uid=theirs["metadata"]["uid"],
        namespace=LEASES,
        holder=hostlease.FACADE_HOLDER,
        duration_seconds=50,
    )
    await facade.create(hostlease.path(LEASES), created)
    await fleet.admin.merge_patch(path, hostlease.renewal(holder=node_b, duration_seconds=40))  # an admin's write
    await facade.merge_patch(path, hostlease.renewal(holder=hostlease.FACADE_HOLDER, duration_seconds=50))
    assert hostlease.holder(await fleet.admin.get(path)) == hostlease.FACADE_HOLDER
    operator = connect(identities.operator_token())
    assert (await operator.get(path))["metadata"]["name"] == node_b  # all its role grants on Leases: reads
    if on_emulator:  # where RBAC is not enforced, a write shows no policy matches the operator either
        await operator.merge_patch(path, {"spec": {"holderIdentity": "someone-else"}})
    await fleet.admin.merge_patch(path, {"spec": {"holderIdentity": None}})
    await fleet.admin.delete(path)
    assert await _lease(fleet.admin, node_b) is None
