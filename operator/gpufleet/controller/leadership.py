"""Whether this replica is the one that acts, by the same rule as Kopf peering.

Kopf pauses its own watches while a peer of higher (or equal) priority is alive in the peering
object, but the Host watch and the deadline loop are the operator's own, not Kopf's: they follow
the same rule by reading the peering object Kopf keeps. Replicas get random priorities (see
`main`): equal ones would pause every replica, as Kopf does.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

logger = logging.getLogger(__name__)

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
PEERING_PLURAL = "kopfpeerings"


def leads(peers: Mapping[str, Any], *, identity: str, priority: int, now: datetime.datetime) -> bool:
    """Whether no other live peer in the peering object's status has a priority at least ours."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        lastseen = datetime.datetime.fromisoformat(str(info.get("lastseen")))
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        alive = lastseen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            return False
    return True


async def is_leader(
    custom: client.CustomObjectsApi, *, namespace: str, name: str, identity: str, priority: int
) -> bool:
    """Read the peering object and apply `leads`; a missing object means no peers (Kopf's view too)."""
    try:
        body = await custom.get_namespaced_custom_object(
            PEERING_GROUP, PEERING_VERSION, namespace, PEERING_PLURAL, name
        )
    except exceptions.ApiException as error:
        if error.status == 404:
            return True
        raise
    peers = body.get("status") or {}
    return leads(peers, identity=identity, priority=priority, now=datetime.datetime.now(datetime.UTC))


async def follow(
    custom: client.CustomObjectsApi,
    *,
    namespace: str,
    name: str,
    identity: str,
    priority: int,
    on_change: Callable[[bool], None],
    interval: float = 1.0,
) -> None:
    """Forever: re-read the peering object every `interval` seconds and report who leads.

    Kopf pauses its own watches on the same rule; this covers the operator's own tasks (the
    Host watch and the deadline loop), which Kopf does not know about. Errors keep the last
    answer: a replica that cannot reach the API cannot write either.
    """
    while True:
        try:
            on_change(await is_leader(custom, namespace=namespace, name=name, identity=identity, priority=priority))
        except (exceptions.ApiException, OSError) as error:
            logger.warning("could not read the peering object %s/%s: %s", namespace, name, error)
        await asyncio.sleep(interval)
