"""A living fleet for `gpufleet dev --nodes N --gpus M`: simulated node agents in this process.

Each node is the real agent (`gpufleet_agent.agent.Agent`) on a fake NVML, registering its own
Host and publishing its GPUs through the same API and code paths as on a cluster; only the
driver is simulated. Loads vary from node to node (idle, steady, a slow wave, busy, noisy), and
now and then a fault visits one: a GPU runs hot for a while, or reports a critical XID, so that
`kubectl get hosts,gpus -w` and the REST API show a fleet that moves. The agents serve no
metrics port: any number of them share this machine without colliding on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import AsyncIterator

from gpufleet_agent import agent, fakenvml
from gpufleet_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

#: Loads given to nodes in turn, so a small fleet already shows each kind.
LOADS = ("wave", "steady", "busy", "noisy", "idle")
#: Seconds between two faults somewhere in the fleet, on average.
FAULT_EVERY_SECONDS = 45.0
#: How long a fault lasts before the GPU recovers.
FAULT_SECONDS = 30.0
#: A critical XID (fallen off the bus) and a temperature rise, the faults dealt out.
CRITICAL_XID = 79
#: Simulated nodes take addresses from 198.18.0.0/15, the range reserved for benchmarking
#: (RFC 2544): distinct per node, as on a real fleet, and never a real machine's.
SIMULATED_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")


@contextlib.asynccontextmanager
async def running(nodes: int, gpus: int, *, kubeconfig: str, seed: int | None = None) -> AsyncIterator[list[str]]:
    """Start `nodes` simulated node agents with `gpus` GPUs each; their node names while they run."""
    rng = random.Random(seed)
    stop = asyncio.Event()
    fakes: list[fakenvml.FakeNVML] = []
    tasks: list[asyncio.Task[None]] = []
    names = [f"sim-node-{index + 1:03d}" for index in range(nodes)]
    for index, name in enumerate(names):
        load = LOADS[index % len(LOADS)]
        fake = fakenvml.scenario(load, gpus, seed=index, host_tag=f"{index:04x}")
        settings = AgentSettings(
            node_name=name,
            host_ip=SIMULATED_NETWORK[index + 1],
            register_node=True,
            simulate=gpus,
            simulate_load=load,
            metrics_port=0,
        )
        node_agent = agent.Agent(settings, fake, kubeconfig=kubeconfig)
        fakes.append(fake)
        tasks.append(asyncio.create_task(node_agent.run(stop), name=f"agent {name}"))
    if fakes and gpus:
        tasks.append(asyncio.create_task(_deal_faults(fakes, gpus, rng), name="simulated faults"))
    logger.info("%d simulated nodes with %d GPUs each: %s", nodes, gpus, ", ".join(names[:5]) + ("..." * (nodes > 5)))
    try:
        yield names
    finally:
        stop.set()
        for task in tasks:
            if task.get_name() == "simulated faults":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _deal_faults(fakes: list[fakenvml.FakeNVML], gpus: int, rng: random.Random) -> None:
    """Forever: after a random pause, give one GPU somewhere a fault, and take it back later."""
    while True:
        await asyncio.sleep(rng.expovariate(1 / FAULT_EVERY_SECONDS))
        fake, index = rng.choice(fakes), rng.randrange(gpus)
        if rng.random() < 0.5:
            fake.heat(index, 45)
            asyncio.get_running_loop().call_later(FAULT_SECONDS, fake.heat, index, 0)
        else:
            fake.inject_xid(index, CRITICAL_XID)
