"""Informers: one resource's objects kept in memory by list + watch, for every consumer in gpufleet.

The operator (Hosts, GPUs, agent-token Secrets) and the facade (the caches it serves reads from)
follow the API the same way, the way client-go's reflector does:

- a paginated **list**, then a **watch** from the list's resourceVersion, with bookmarks;
- **410 Gone** (the API's history no longer reaches our version) → list again, and the list
  *replaces* the store: objects deleted during the gap are reported as deletions, which a plain
  event stream after a relist never does;
- **reconnect** with jittered, capped backoff after any failure, and every request bounded by a
  timeout;
- **stall detection**: a half-open connection (a dead load balancer, a vanished node) shows as
  nothing at all, no error and no close. Read inactivity is measured against what this watch
  normally delivers (an average of the gaps between its events and bookmarks, so a fleet that
  heartbeats every 10 s makes a silent minute suspicious) and capped by how often the API server
  sends bookmarks to an idle watch. A watch silent for longer is abandoned and re-established
  from its resourceVersion: if the new watch is answered, it replays whatever the dead one lost
  (and the silence counts as one long gap, so a resource that really is quiet raises its own
  limit); if it is not answered in time, the view is stale.

An informer is **fresh** while it follows the API; it turns stale when a list or watch fails
(an error, a timeout, a watch re-established after a silence that is not answered) and fresh
again once a list or a new watch is answered. Consumers that must not act on a stale view
(the operator's liveness verdicts) are told through `on_stale` / `on_fresh`; `last_contact` says
when the API last confirmed the view (an event, a bookmark, a list or a new watch), so a
verdict can wait until the view is known to reach past its deadline.

A `Store` never goes backwards: an event older than what it holds is ignored, which lets a
consumer apply the objects its own writes return at once (read-your-writes) while the watch
catches up. Objects being deleted (with a `deletionTimestamp`) are dropped at once, unless the
consumer finalizes them (`keep_deleting`). Consumers are called with (new, old) on a change and
with the last stored form on a deletion, as client-go's event handlers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import orjson

from gpufleet import backoff

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Indexer = Callable[[Obj], Iterable[str]]
#: Calls the list endpoint of a resource with `_preload_content=False`: the raw aiohttp response.
Lister = Callable[..., Awaitable[aiohttp.ClientResponse]]
Clock = Callable[[], float]

#: A watch request lasts a random 5-10 minutes, as client-go's reflector asks, so that a fleet of
#: replicas does not reconnect in step.
WATCH_SECONDS = (300, 600)
PAGE_SIZE = 500
#: kube-apiserver sends an idle watch a bookmark about once a minute: silence well beyond that is
#: a stall whatever the event rate.
STALL_CAP_SECONDS = 90.0
#: Never call a watch stalled sooner than this, however busy it usually is.
STALL_FLOOR_SECONDS = 3.0
#: A watch is stalled after this many of its usual gaps without a byte.
STALL_FACTOR = 20.0


def parse_json(raw: bytes | str) -> Any:
    """A JSON document from the API server: a list page, a watch event, an answer.

    orjson reads a Kubernetes object in about 40% of the standard library's time, and informers
    read every event of every watched object. It refuses one thing JSON allows: an escaped
    unpaired surrogate (`"\\ud800"`, which RFC 8259 leaves to the reader). kube-apiserver replaces
    those, but a server written in Python (the emulated API) sends them back as it stored them,
    and one such object must not make an informer fail on every list: the standard library's
    parser reads it.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def resource_version(obj: Obj) -> int | None:
    """The object's resourceVersion as a number (etcd revisions are), or None when it has none."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def drop_managed_fields(obj: Obj) -> Obj:
    """The object without `metadata.managedFields`: server-side apply's bookkeeping, which no
    reader here needs and which can double an object's size in memory (client-go's informers
    are commonly given the same transform)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {key: value for key, value in metadata.items() if key != "managedFields"}}


def _name(obj: Obj) -> str:
    metadata = obj["metadata"]
    name: str = metadata["name"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


class Store:
    """Objects of one resource by name (`namespace/name` when namespaced), with secondary indexes.

    Changed only through `apply`, `remove` and `replace`, each of which says what changed, so an
    informer can tell its consumers. `transform` keeps only what consumers need of each object
    (memory: 80,000 GPU objects are about 400 MiB parsed whole).
    """

    def __init__(
        self,
        *,
        indexers: Mapping[str, Indexer] | None = None,
        transform: Callable[[Obj], Obj] | None = None,
        keep_deleting: bool = False,
    ) -> None:
        self._keep_deleting = keep_deleting
        self._objects: dict[str, Obj] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {index: {} for index in self._indexers}
        self._transform = transform
        #: Names deleted (or being deleted) at a version: older news about them is stale.
        self._tombstones: dict[str, int] = {}
        #: Bumped on every change: views derived from the store are cached against it.
        self.generation = 0
        #: Bumped when a name comes or goes (not on updates): orderings are cached against it.
        self.membership = 0

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def get(self, name: str) -> Obj | None:
        return self._objects.get(name)

    def names(self) -> Iterable[str]:
        return self._objects.keys()

    def values(self) -> Iterable[Obj]:
        return self._objects.values()

    def by(self, index: str, value: str) -> list[Obj]:
        """Objects whose indexer yields `value` under `index`."""
        return [self._objects[name] for name in self._indexes[index].get(value, ())]

    def prepare(self, obj: Obj) -> Obj | None:
        """The stored form of a listed object, or None for one being deleted that is not kept.

        A relist prepares page by page, so its peak memory is one page of whole objects, not the
        whole resource (80,000 GPUs parsed whole are several hundred MiB of high-water mark).
        """
        if obj["metadata"].get("deletionTimestamp") and not self._keep_deleting:
            return None
        return self._transform(obj) if self._transform else obj

    def apply(self, obj: Obj, *, prepared: bool = False) -> Obj | None:
        """Take in a newer version of an object; the stored form if it changed the store, else None.

        An object being deleted is removed instead (and None returned): for most consumers it is
        gone. A consumer that finalizes objects keeps them (`keep_deleting`) until they are deleted.
        """
        name = _name(obj)
        version = resource_version(obj)
        current = self._objects.get(name)
        known = resource_version(current) if current is not None else self._tombstones.get(name)
        if version is not None and known is not None and version <= known:
            return None
        if not prepared and obj["metadata"].get("deletionTimestamp") and not self._keep_deleting:
            self._drop(name, version)
            return None
        self._tombstones.pop(name, None)
        stored = obj if prepared or self._transform is None else self._transform(obj)
        self._unindex(name)
        self._objects[name] = stored
        self._index(name, stored)
        self.generation += 1
        if current is None:
            self.membership += 1
        return stored

    def remove(self, obj: Obj) -> Obj | None:
        """Forget a deleted object (news about it up to its version is ignored); what was stored."""
        name = _name(obj)
        current = self._objects.get(name)
        candidates = [resource_version(obj), resource_version(current) if current is not None else None]
        versions = [version for version in candidates if version is not None]
        return self._drop(name, max(versions, default=None))

    def replace(
        self, objects: Iterable[Obj], *, prepared: bool = False
    ) -> tuple[list[tuple[Obj, Obj | None]], list[Obj]]:
        """Become exactly `objects` (after a list); ((new, old) of what changed, objects removed).

        What is not among `objects` was deleted while nobody watched: it is reported as removed.
        `prepared`: the objects went through `prepare` already (being deleted ones left out).
        """
        fresh = {_name(obj): obj for obj in objects}
        removed = [gone for name in list(self._objects) if name not in fresh and (gone := self._drop(name, None))]
        self._tombstones.clear()
        changed: list[tuple[Obj, Obj | None]] = []
        for name, obj in fresh.items():
            had = self._objects.get(name)
            stored = self.apply(obj, prepared=prepared)
            if stored is not None:
                changed.append((stored, had))
            elif had is not None and name not in self._objects:  # listed while being deleted
                removed.append(had)
        return changed, removed

    def forget_tombstones_before(self, version: int) -> None:
        """A watch that has reached `version` can no longer deliver news older than it."""
        if self._tombstones:
            self._tombstones = {name: rv for name, rv in self._tombstones.items() if rv >= version}

    def _drop(self, name: str, version: int | None) -> Obj | None:
        if version is not None:
            self._tombstones[name] = max(version, self._tombstones.get(name, version))
        gone = self._objects.get(name)
        if gone is not None:
            self._unindex(name)
            del self._objects[name]
            self.generation += 1
            self.membership += 1
        return gone

    def _index(self, name: str, obj: Obj) -> None:
        for index, indexer in self._indexers.items():
            for value in indexer(obj):
                self._indexes[index].setdefault(value, set()).add(name)

    def _unindex(self, name: str) -> None:
        old = self._objects.get(name)
        if old is None:
            return
        for index, indexer in self._indexers.items():
            for value in indexer(old):
                names = self._indexes[index].get(value)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._indexes[index][value]


class Expired(Exception):
    """The API's watch history no longer reaches our resourceVersion: list again."""


class Stalled(Exception):
    """The watch delivered nothing for longer than it ever should: the connection is presumed dead."""


class Inactivity:
    """How long a watch may stay silent: `STALL_FACTOR` of its usual gap, within floor and cap.

    The usual gap is an exponentially weighted mean of the time between consecutive contacts
    (events and bookmarks alike), so a fleet's own heartbeat rate sets how quickly its silence
    is suspicious, and a quiet resource leans on the API server's bookmarks.
    """

    def __init__(self, *, floor: float = STALL_FLOOR_SECONDS, cap: float = STALL_CAP_SECONDS) -> None:
        self.floor = floor
        self.cap = cap
        self.mean_gap = cap / STALL_FACTOR
        self._last: float | None = None

    def contact(self, now: float) -> None:
        if self._last is not None:
            self.mean_gap += 0.2 * ((now - self._last) - self.mean_gap)
        self._last = now

    def restart(self) -> None:
        """A new connection: the gap before its first byte is not a gap of the stream."""
        self._last = None

    def limit(self) -> float:
        return min(self.cap, max(self.floor, STALL_FACTOR * self.mean_gap))


class Informer:
    """Keeps a `Store` current with list + watch of one resource, and tells consumers what changed."""

    def __init__(
        self,
        resource: str,
        lister: Lister,
        *,
        store: Store | None = None,
        on_upsert: Callable[[Obj, Obj | None], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
        on_fresh: Callable[[], None] | None = None,
        on_stale: Callable[[], None] | None = None,
        on_contact: Callable[[float], None] | None = None,
        timeout: float = 10.0,
        inactivity: Inactivity | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.resource = resource
        self.store = store if store is not None else Store()
        self._lister = lister
        self._on_upsert = on_upsert
        self._on_delete = on_delete
        self._on_fresh = on_fresh
        self._on_stale = on_stale
        self._on_contact = on_contact
        self._timeout = timeout
        self.inactivity = inactivity if inactivity is not None else Inactivity()
        self._clock = clock
        self._version: str | None = None
        self._after_silence = False
        self.synced = asyncio.Event()
        """Set once the first list is in the store."""
        self.fresh = False
        """Whether the store follows the API now (see the module's docstring)."""
        self.last_contact = clock()
        """Our monotonic time when the API last confirmed the store (list, event, bookmark, new watch)."""
        self.stale_since: float | None = clock()
        """When the store stopped following the API (None while fresh); the start counts as stale."""

    def staleness(self) -> float:
        """Seconds since the API last confirmed this store (0 while a busy watch is healthy)."""
        return self._clock() - self.last_contact

    async def run(self) -> None:
        """Forever: list, watch, and recover from whatever the API or the network does."""
        retry = backoff.Backoff(first=0.1, cap=5.0)
        while True:
            try:
                if self._version is None:
                    await self._relist()
                await self._watch()
                retry.reset()
            except Expired:
                logger.info("%s watch expired; listing again", self.resource)
                self._version = None
            except Stalled as silence:
                # Not stale yet: a quiet resource is silent too. The new watch tells which: it is
                # answered (and replays whatever the old connection lost), or it fails, and then the
                # view has been stale since the last contact.
                logger.info("%s watch silent for %s: reconnecting", self.resource, silence)
                self._after_silence = True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._went_stale()
                delay = retry.next(error)
                logger.warning("%s informer: %s; retrying in %.2gs", self.resource, _describe(error), delay)
                await asyncio.sleep(delay)

    # ----- freshness --------------------------------------------------------------------------------

    def _contact(self) -> None:
        now = self._clock()
        self.last_contact = now
        self.inactivity.contact(now)
        if self._on_contact is not None:
            self._on_contact(now)

    def _went_fresh(self) -> None:
        self._contact()
        if not self.fresh:
            self.fresh = True
            self.stale_since = None
            if self._on_fresh is not None:
                self._on_fresh()

    def _went_stale(self) -> None:
        if self.fresh:
            self.fresh = False
            # The view was last known good at the last contact, not when we noticed.
            self.stale_since = self.last_contact
            if self._on_stale is not None:
                self._on_stale()

    # ----- list and watch ---------------------------------------------------------------------------

    async def _relist(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        page: Obj = {}
        # Each page is bounded by the request timeout, the list as a whole is not: 80,000 GPUs are
        # 160 pages, and a list that must finish in a fixed time would never finish on a busy day.
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            response = await self._lister(**kwargs, _preload_content=False, _request_timeout=self._timeout)
            async with response:
                if response.status == 410:  # the continue token expired: start over
                    token = None
                    items.clear()
                    continue
                if response.status != 200:
                    raise RuntimeError(f"list answered HTTP {response.status}")
                page = parse_json(await response.read())
            items.extend(kept for obj in page.get("items") or [] if (kept := self.store.prepare(obj)) is not None)
            page["items"] = None  # let the page's whole objects go now
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                break
        changed, removed = self.store.replace(items, prepared=True)
        self._version = str((page.get("metadata") or {}).get("resourceVersion") or "") or None
        for obj in removed:
            self._deleted(obj)
        for new, old in changed:
            self._upserted(new, old)
        self.synced.set()
        self._went_fresh()

    async def _watch(self) -> None:
        timeout = aiohttp.ClientTimeout(
            connect=self._timeout, sock_connect=self._timeout, sock_read=self.inactivity.cap + self._timeout
        )
        async with asyncio.timeout(self._timeout):  # the headers, at least, come at once
            response = await self._lister(
                # Spelled as the API documents it: the client would send `True`, which strict servers reject.
                watch="true",
                resource_version=self._version,
                allow_watch_bookmarks="true",
                timeout_seconds=random.randint(*WATCH_SECONDS),
                _preload_content=False,
                _request_timeout=timeout,
            )
        async with response:
            if response.status == 410:
                raise Expired
            if response.status != 200:
                raise RuntimeError(f"watch answered HTTP {response.status}")
            if not self._after_silence:
                self.inactivity.restart()
            # After a silence, the new watch's answer ends one long gap: a quiet resource thus
            # teaches the limit its own rhythm (up to the bookmarks' cadence) instead of being
            # reconnected every few seconds.
            self._after_silence = False
            self._went_fresh()
            watchdog = asyncio.create_task(self._watchdog(response), name=f"{self.resource} watchdog")
            try:
                async for line in response.content:
                    if line.strip():
                        self._handle(parse_json(line))
            except aiohttp.ClientError:
                if watchdog.done():
                    raise Stalled(f"no data for {self.inactivity.limit():.3g}s") from None
                raise
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            if watchdog.done() and not watchdog.cancelled():
                raise Stalled(f"no data for {self.inactivity.limit():.3g}s")

    async def _watchdog(self, response: aiohttp.ClientResponse) -> None:
        """Close the watch when it has been silent for longer than it should ever be."""
        while True:
            silence = self._clock() - self.last_contact
            limit = self.inactivity.limit()
            if silence >= limit:
                response.close()
                return
            await asyncio.sleep(min(limit - silence, 1.0) + 0.01)

    def _handle(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired
            raise RuntimeError(f"watch error: {obj.get('message')}")
        self._contact()
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            before = self.store.get(_name(obj))
            stored = self.store.apply(obj)
            if stored is not None:
                self._upserted(stored, before)
            elif before is not None and self.store.get(_name(obj)) is None:  # dropped as being deleted
                self._deleted(before)
        elif kind == "DELETED":
            gone = self.store.remove(obj)
            if gone is not None:
                self._deleted(gone)
        if version:
            self._version = version
            with contextlib.suppress(ValueError):
                self.store.forget_tombstones_before(int(version))

    def _upserted(self, new: Obj, old: Obj | None) -> None:
        if self._on_upsert is not None:
            self._on_upsert(new, old)

    def _deleted(self, obj: Obj) -> None:
        if self._on_delete is not None:
            self._on_delete(obj)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
