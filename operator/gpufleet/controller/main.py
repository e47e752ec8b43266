"""Running the operator: `gpufleet operator` (`run`), or inside another program's loop (`serve`).

`serve` is the one way the operator starts: it builds the fleet view for this instance (so
several instances can share a process, as tests and `gpufleet dev` do), its three informers
(Hosts, GPUs, agent-token Secrets), the deadline loop, the leader elector, the metrics and
readiness endpoint, and runs Kopf's root tasks itself: Kopf's `run_tasks` cancels every task
created in the loop after the operator started (the facade's, a test's), which is wrong when
the loop is shared.

What Kopf does here, and why only that: it logs in (credentials from the service account or the
kubeconfig, refreshed when they expire) and answers the liveness probe while its tasks are alive.
Watches are the informers' (`gpufleet.informer`): Kopf's per-object machinery cost ~1 ms of CPU
per Host event at 10,000 hosts, its `on.event` synthesises no deletions after a relist, and it
has no notion of a stale watch. Leader election is a Lease (`gpufleet.leaderelection`) instead
of Kopf peering, whose state is internal to Kopf and whose take-over is not fenced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import kopf
import pydantic

from gpufleet import informer, kube, leaderelection, logs
from gpufleet import settings as settings_
from gpufleet.api import gpu, host, meta
from gpufleet.controller import fleet, liveness
from gpufleet.controller import handlers as _handlers  # noqa: F401 - importing registers them with Kopf

logger = logging.getLogger(__name__)


def kopf_settings() -> kopf.OperatorSettings:
    """Kopf settings: Events are ours (with our reasons)."""
    kopf_config = kopf.OperatorSettings()
    kopf_config.posting.enabled = False
    return kopf_config


def informers(the_fleet: fleet.Fleet, api: Any, config: settings_.Settings) -> list[informer.Informer]:
    """The operator's informers, each feeding the fleet view; the Host and Lease informers, the two
    heartbeat channels, also gate liveness (no verdict while either is blind)."""
    custom, coordination = api["custom"], api["coordination"]
    tracker = the_fleet.liveness

    def lister(call: Callable[..., Awaitable[Any]], *args: Any, **fixed: Any) -> informer.Lister:
        return lambda **kwargs: call(*args, **fixed, **kwargs)

    timeout = config.api_timeout_seconds
    return [
        informer.Informer(
            "hosts",
            lister(custom.list_cluster_custom_object, meta.GROUP, meta.VERSION, host.PLURAL),
            store=the_fleet.hosts,
            on_upsert=the_fleet.host_seen,
            on_delete=the_fleet.host_gone,
            on_fresh=tracker.resume,
            on_stale=tracker.suspend,
            on_contact=tracker.confirm,
            timeout=timeout,
        ),
        informer.Informer(
            "leases",
            lister(coordination.list_namespaced_lease, config.host_lease_namespace),
            store=the_fleet.leases,
            on_upsert=the_fleet.lease_seen,
            on_fresh=lambda: tracker.resume(liveness.LEASE),
            on_stale=lambda: tracker.suspend(liveness.LEASE),
            on_contact=lambda at: tracker.confirm(at, liveness.LEASE),
            timeout=timeout,
        ),
        informer.Informer(
            "gpus",
            lister(custom.list_cluster_custom_object, meta.GROUP, meta.VERSION, gpu.PLURAL),
            store=the_fleet.rollup.store,
            on_upsert=the_fleet.gpu_changed,
            on_delete=lambda old: the_fleet.gpu_changed(None, old),
            timeout=timeout,
        ),
    ]


def readiness(views: Collection[informer.Informer]) -> Callable[[], str | None]:
    """Ready once every informer has listed, and while each follows the API."""

    def ready() -> str | None:
        stale = [view.resource for view in views if not view.fresh]
        return f"stale or not yet synced: {', '.join(stale)}" if stale else None

    return ready


async def serve(
    config: settings_.Settings,
    *,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
    identity: str | None = None,
    kubeconfig: str | None = None,
) -> None:
    """Run the operator in the running loop until `stop` is set; `ready` is set once its views are synced.

    `identity` names this replica in the leader Lease and in its Events' `reportingInstance`.
    """
    identity = identity or f"{socket.gethostname()}@{os.getpid()}/{secrets.token_hex(4)}"
    tracker = liveness.Liveness(config.grace_period_seconds, channels=(liveness.STATUS, liveness.LEASE))
    elector: leaderelection.LeaderElector | None = None
    fence: Callable[[], bool] | None = None
    async with await kube.api_client(kubeconfig, request_timeout=config.write_timeout_seconds()) as api:
        if config.leader_election:
            lease = leaderelection.LeaseConfig(
                namespace=config.namespace,
                name=config.leader_lease_name,
                identity=identity,
                lease_duration=config.lease_duration_seconds,
                renew_deadline=config.renew_deadline_seconds,
                retry_period=config.retry_period_seconds,
            )
            elector = leaderelection.LeaderElector(
                api, lease, on_started=lambda: the_fleet.lead(True), on_stopped=lambda: the_fleet.lead(False)
            )
            fence = elector.is_leader
        the_fleet = fleet.Fleet(config, api, identity=identity, tracker=tracker, fence=fence)
        views = informers(the_fleet, {"custom": the_fleet.custom, "coordination": the_fleet.coordination}, config)
        _export(the_fleet, views)
        ours = [
            asyncio.create_task(
                liveness.run_expiry(tracker, the_fleet.expire, the_fleet.check), name="liveness deadlines"
            ),
            *(asyncio.create_task(view.run(), name=f"{view.resource} informer") for view in views),
            asyncio.create_task(the_fleet.run(), name="host writers"),
        ]
        if elector is not None:
            ours.append(asyncio.create_task(_after_sync(views, elector.run()), name="leader election"))
        kopf_ready = asyncio.Event()
        if ready is not None:
            synced = [view.synced for view in views]
            ours.append(asyncio.create_task(_when_all(ready, kopf_ready, *synced), name="readiness"))
        async with contextlib.AsyncExitStack() as stack:
            if config.metrics_port:
                await stack.enter_async_context(the_fleet.metrics.serve(config.metrics_port, readiness(views)))
            try:
                tasks = await kopf.spawn_tasks(
                    registry=kopf.get_default_registry(),
                    settings=kopf_settings(),
                    memo=kopf.Memo(fleet=the_fleet),
                    identity=identity,  # type: ignore[arg-type]
                    standalone=True,
                    namespaces=[config.namespace],
                    stop_flag=stop,
                    ready_flag=kopf_ready,
                    liveness_endpoint=liveness_endpoint,
                )
                await _run_until_one_exits([*tasks, *ours])
            finally:
                if elector is not None:
                    await elector.release()
                for task in ours:
                    task.cancel()
                await asyncio.gather(*ours, return_exceptions=True)


def _freshness(view: informer.Informer) -> Callable[[], float]:
    return lambda: float(view.fresh)


async def _after_sync(views: Collection[informer.Informer], then: Awaitable[None]) -> None:
    """Stand for leadership only with a complete view: a leader with a cold view would undo the fleet."""
    for view in views:
        await view.synced.wait()
    await then


def _export(the_fleet: fleet.Fleet, views: Collection[informer.Informer]) -> None:
    """Staleness and leadership as metrics, read at scrape time."""
    for view in views:
        the_fleet.metrics.watch_staleness.labels(view.resource).set_function(view.staleness)
        the_fleet.metrics.watch_fresh.labels(view.resource).set_function(_freshness(view))
    the_fleet.metrics.leader.set_function(lambda: float(the_fleet.may_write()))


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
