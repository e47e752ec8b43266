"""The Host watch, run by the operator itself rather than by Kopf: heartbeats are the hot path.

Every heartbeat is a Host status change, about 1,000 per second at 10,000 hosts. Kopf's
per-object machinery (a worker per object, diff bases, consistency waits, a JSON patch per new
finalizer raced by heartbeats) measured about 1 ms of CPU per event, which saturates a core at
that rate. This watch does a list, then a watch from its resourceVersion, parses each line
once and hands it to `Fleet`, whose work per heartbeat is O(1) and writes nothing unless
something changed. It relists after a 410 Gone and reconnects after network errors.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet.api import host, meta
from gpufleet.controller import fleet

logger = logging.getLogger(__name__)

#: How long one watch request lasts before it is renewed (the API server caps it anyway).
WATCH_SECONDS = 300
RETRY_SECONDS = 1.0


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


async def run(the_fleet: fleet.Fleet, *, listed: asyncio.Event | None = None) -> None:
    """Forever: list the Hosts, then follow their changes; `listed` is set after the first list."""
    custom = the_fleet.custom
    version: str | None = None
    while True:
        try:
            if version is None:
                version = await _relist(the_fleet, custom)
                if listed is not None:
                    listed.set()
            version = await _follow(the_fleet, custom, version)
        except Expired:
            logger.info("host watch expired; listing again")
            version = None
        except (aiohttp.ClientError, exceptions.ApiException, TimeoutError, ValueError) as error:
            logger.warning("host watch failed (%s); retrying in %gs", error, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
        except Exception:  # a malformed object must not end liveness detection for the whole fleet
            logger.exception("host watch failed unexpectedly; listing again in %gs", RETRY_SECONDS)
            version = None
            await asyncio.sleep(RETRY_SECONDS)


async def _relist(the_fleet: fleet.Fleet, custom: client.CustomObjectsApi) -> str:
    # Which hosts have tokens, in one list call, so that a restart issues no token requests.
    secrets = await the_fleet.core.list_namespaced_secret(
        the_fleet.config.namespace, label_selector=f"{meta.HOST_LABEL},{meta.MANAGED_BY_LABEL}={meta.MANAGED_BY}"
    )
    for secret in secrets.items:
        the_fleet.token_seen(secret.metadata.labels[meta.HOST_LABEL])
    listing = await custom.list_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL)
    present = set()
    for item in listing.get("items", []):
        present.add(item["metadata"]["name"])
        await the_fleet.host_seen(item)
    for name in set(the_fleet.hosts) - present:  # deleted while we were not watching
        the_fleet.host_deleted(name)
    return str(listing["metadata"]["resourceVersion"])


async def _follow(the_fleet: fleet.Fleet, custom: client.CustomObjectsApi, version: str) -> str:
    """Apply watch events until the server ends the watch; the last resourceVersion seen."""
    response = await custom.list_cluster_custom_object(
        meta.GROUP,
        meta.VERSION,
        host.PLURAL,
        watch=True,
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=WATCH_SECONDS,
        _preload_content=False,
        _request_timeout=WATCH_SECONDS + 30,
    )
    timer = the_fleet.metrics.handler_duration.labels("host_event")
    async with response:
        while line := await response.content.readline():
            if not line.strip():
                continue
            event = json.loads(line)
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Expired
                raise ValueError(f"watch error: {body.get('message', body)}")
            version = str(body["metadata"].get("resourceVersion") or version)
            with timer.time():
                if kind == "DELETED":
                    the_fleet.host_deleted(body["metadata"]["name"])
                elif kind in ("ADDED", "MODIFIED"):
                    await the_fleet.host_seen(body)
    return version
