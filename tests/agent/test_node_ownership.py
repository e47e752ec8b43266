"""The agent says on every GPU which node it belongs to, and keeps off what belongs to another node.

The chart's admission policies (tests/admission) let an agent write only GPUs labelled
`gpufleet.io/node=<its node>` and only the Host bound to its node; the agent acts accordingly, so
that it neither fights a refusal forever nor takes over what another node's agent keeps.
"""

from __future__ import annotations

from typing import Any

from gpufleet.api import meta
from gpufleet_agent import binding, fakenvml, kubeapi

from .conftest import Reader, RunAgent, eventually


async def test_gpus_carry_the_node_label_and_another_nodes_gpu_is_left_alone(
    run_agent: RunAgent, reader: Reader, node_name: str
) -> None:
    await reader.create_host(node_name, node_name)
    foreign = {
        "apiVersion": meta.API_VERSION,
        "kind": "GPU",
        "metadata": {
            "name": f"{node_name}-gpu1",
            "labels": {meta.HOST_LABEL: node_name, meta.NODE_LABEL: "another-node"},
        },
        "spec": {"hostName": node_name, "index": 1},
    }
    await reader.api.create_cluster_custom_object(meta.GROUP, meta.VERSION, "gpus", foreign)
    async with run_agent(fakenvml.scenario("one"), register_node=False):
        await eventually(lambda: _status_of(reader, node_name, f"{node_name}-gpu0"))
    gpus = await reader.gpus(node_name)
    assert gpus[f"{node_name}-gpu0"]["metadata"]["labels"][meta.NODE_LABEL] == node_name
    kept = gpus[f"{node_name}-gpu1"]  # no device 1 here, but not this agent's to delete
    assert kept["metadata"]["labels"][meta.NODE_LABEL] == "another-node"
    assert not (kept.get("status") or {}).get("lastUpdateTime")


async def _status_of(reader: Reader, host_name: str, name: str) -> Any:
    return ((await reader.gpus(host_name)).get(name, {}).get("status") or {}).get("lastUpdateTime")


async def test_a_host_named_like_the_node_but_bound_to_another_is_not_bound(
    kube: Any, reader: Reader, node_name: str
) -> None:
    await reader.create_host(node_name, "another-node")
    api = kubeapi.connect(str(kube.kubeconfig))
    try:
        assert await binding.find_by_name(api, node_name) is None
        assert binding.bound_node(await api.get(f"{kubeapi.HOSTS}/{node_name}")) == "another-node"
    finally:
        await api.close()
        await reader.delete_host(node_name)
