"""Running the operator: `gpufleet operator` (`run`), or inside another program's loop (`serve`).

`serve` is the one way the operator starts: it builds the Kopf settings and the fleet view for
this instance (so several instances can share a process, as tests and `gpufleet dev` do), starts
the deadline loop and the metrics endpoint, and runs the root tasks of Kopf's `spawn_tasks`
itself: Kopf's `run_tasks` cancels every task created in the loop after the operator started
(the facade's, a test's), which is wrong when the loop is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Collection

import kopf
import pydantic

from gpufleet import kube, logs
from gpufleet import settings as settings_
from gpufleet.controller import fleet, hostwatch, leadership, liveness
from gpufleet.controller import handlers as _handlers  # noqa: F401 - importing registers them with Kopf

logger = logging.getLogger(__name__)


def kopf_settings() -> kopf.OperatorSettings:
    """Kopf settings: Events are ours (with our reasons), watches renewed every few minutes."""
    kopf_config = kopf.OperatorSettings()
    kopf_config.posting.enabled = False
    kopf_config.watching.server_timeout = 300
    kopf_config.networking.request_timeout = 330
    return kopf_config


async def serve(
    config: settings_.Settings,
    *,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
    identity: str | None = None,
) -> None:
    """Run the operator in the running loop until `stop` is set; `ready` is set once Kopf has started.

    `identity` names this replica in the peering object and in its Events' `reportingInstance`.
    """
    identity = identity or f"{socket.gethostname()}@{os.getpid()}/{secrets.token_hex(4)}"
    # Random priorities make Kopf peering elect exactly one active replica (equal ones pause all).
    priority = 1 + secrets.randbelow(2**31 - 2)
    async with await kube.api_client() as api:
        tracker = liveness.Liveness(config.grace_period_seconds)
        the_fleet = fleet.Fleet(config, api, identity=identity, priority=priority, tracker=tracker)
        metrics_server = the_fleet.metrics.serve(config.metrics_port) if config.metrics_port else None
        kopf_ready, listed = asyncio.Event(), asyncio.Event()
        ours = [
            asyncio.create_task(liveness.run_expiry(tracker, the_fleet.expire), name="liveness deadlines"),
            asyncio.create_task(hostwatch.run(the_fleet, listed=listed), name="host watch"),
        ]
        if config.leader_election:
            ours.append(
                asyncio.create_task(
                    leadership.follow(
                        the_fleet.custom,
                        namespace=config.namespace,
                        name=config.peering_name,
                        identity=identity,
                        priority=priority,
                        on_change=the_fleet.lead,
                    ),
                    name="leadership",
                )
            )
        if ready is not None:
            ours.append(asyncio.create_task(_when_all(ready, kopf_ready, listed), name="readiness"))
        try:
            tasks = await kopf.spawn_tasks(
                registry=kopf.get_default_registry(),
                settings=kopf_settings(),
                memo=kopf.Memo(fleet=the_fleet),
                identity=identity,  # type: ignore[arg-type]
                standalone=not config.leader_election,
                priority=priority,
                peering_name=config.peering_name if config.leader_election else None,
                namespaces=[config.namespace],
                stop_flag=stop,
                ready_flag=kopf_ready,
                liveness_endpoint=liveness_endpoint,
            )
            await _run_until_one_exits([*tasks, *ours])
        finally:
            for task in ours:
                task.cancel()
            await asyncio.gather(*ours, return_exceptions=True)
            await the_fleet.idle()
            if metrics_server is not None:
                metrics_server.shutdown()


async def _when_all(target: asyncio.Event, *events: asyncio.Event) -> None:
    """Set `target` once every one of `events` is set, then wait to be cancelled (a root task never ends)."""
    for event in events:
        await event.wait()
    target.set()
    await asyncio.Event().wait()


async def _run_until_one_exits(tasks: Collection[asyncio.Task[object]]) -> None:
    """Kopf's root tasks exit together (on the stop flag, or when one fails): stop the rest, re-raise."""
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def run(args: argparse.Namespace) -> int:
    """`gpufleet operator`: settings from `GPUFLEET_*`, then run until SIGINT/SIGTERM."""
    del args  # every option comes from the environment, as in the chart
    try:
        config = settings_.Settings()
    except pydantic.ValidationError as error:
        print(f"gpufleet operator: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format.value)
    warning = config.flapping_warning()
    if warning:
        logger.warning(warning)

    # All interfaces: the kubelet probes the pod's IP.
    liveness_endpoint = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop=stop, liveness_endpoint=liveness_endpoint)

    asyncio.run(main())
    return 0
