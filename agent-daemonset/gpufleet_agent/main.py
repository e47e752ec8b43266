"""`gpufleet agent`: settings from the environment and the command line, then the agent until SIGTERM.

Kubernetes stops a pod with SIGTERM and kills it after the grace period; the agent turns
SIGTERM (and Ctrl-C) into a clean stop of its tasks, so a rolling update of the DaemonSet
takes about a second per node and leaves no half-written state.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
import time

import pydantic

from gpufleet import logs
from gpufleet_agent import agent, fakenvml, kubeapi, metrics, nvml, podresources
from gpufleet_agent.settings import AgentSettings

logger = logging.getLogger("gpufleet_agent")


def load_settings(args: argparse.Namespace) -> AgentSettings:
    """Settings from `GPUFLEET_AGENT_*` and `NODE_NAME`, overridden by options given on the command line.

    The command line has one option per field, stored under the field's name (`gpufleet.cli`
    generates them from this model), so every option given is an override; None means not given.
    """
    overrides = {
        field: value for field in AgentSettings.model_fields if (value := getattr(args, field, None)) is not None
    }
    return AgentSettings(**overrides)


def library_for(settings: AgentSettings) -> nvml.Library:
    """The real NVML, or moving simulated GPUs (`--simulate N`) with UUIDs unique to the node."""
    if settings.simulate is None:
        return nvml.real_library()
    tag = hashlib.sha256(settings.node_name.encode()).hexdigest()[:8]
    return fakenvml.scenario(settings.simulate_load, settings.simulate, host_tag=tag)


def allocation_for(settings: AgentSettings) -> podresources.PodResources | None:
    source = podresources.PodResources(settings.podresources_socket, settings.gpu_resource_names)
    reason = source.unavailable_reason()
    if reason is not None:
        logger.info("GPU allocation is not tracked (%s): allocatedTo is left to whoever sets it", reason)
        return None
    logger.info("GPU allocation is read from kubelet PodResources at %s", settings.podresources_socket)
    return source


async def _serve(settings: AgentSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled_at: list[float] = []

    def on_signal() -> None:
        signalled_at.append(time.monotonic())
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    node_agent = agent.Agent(settings, library_for(settings), allocation=allocation_for(settings))
    try:
        await node_agent.run(stop)
        if signalled_at:  # how long a stop takes, from the agent's side (a rollout waits for it)
            logger.info("stopped %.3fs after the signal", time.monotonic() - signalled_at[0])
    except kubeapi.ConfigError as error:
        logger.error("cannot reach the Kubernetes API: %s", error)
        return 1
    except metrics.ServeError as error:
        logger.error("%s", error)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `gpufleet agent`; returns the process exit status."""
    try:
        settings = load_settings(args)
    except pydantic.ValidationError as error:
        print(f"gpufleet agent: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    logger.info(
        "agent starting on node %s (%s)",
        settings.node_name,
        f"{settings.simulate} simulated GPUs" if settings.simulate is not None else "NVML",
    )
    return asyncio.run(_serve(settings))
