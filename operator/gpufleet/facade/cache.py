"""Informer caches: the facade's in-memory view of Hosts, GPUs and agent-token Secrets.

Reads are served from here, not from the API server, so a page of hosts costs microseconds and
not a list of the whole fleet. Each `Informer` lists once, then watches from the list's
resourceVersion, resumes after a dropped stream, and lists again when the API answers 410 Gone
(its history no longer reaches that far). A `Store` never goes backwards: an event or a write
result older than what it holds is ignored, which is what lets the facade apply the objects its
own writes return at once (read-your-writes) while the watch catches up. Objects being deleted
(with a `deletionTimestamp`) are dropped at once: for callers they are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Indexer = Callable[[Obj], Iterable[str]]
#: Calls the list endpoint of a resource with `_preload_content=False`: the raw aiohttp response.
Lister = Callable[..., Awaitable[aiohttp.ClientResponse]]

WATCH_TIMEOUT_SECONDS = 300
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def resource_version(obj: Obj) -> int | None:
    """The object's resourceVersion as a number (etcd revisions are), or None when it has none."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _name(obj: Obj) -> str:
    name: str = obj["metadata"]["name"]
    return name


class Store:
    """Objects of one resource by name, with secondary indexes; changed only through `apply`/`remove`."""

    def __init__(self, *, indexers: Mapping[str, Indexer] | None = None, transform: Callable[[Obj], Obj] | None = None):
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

    def get(self, name: str) -> Obj | None:
        return self._objects.get(name)

    def values(self) -> Iterable[Obj]:
        return self._objects.values()

    def by(self, index: str, value: str) -> list[Obj]:
        """Objects whose indexer yields `value` under `index`."""
        return [self._objects[name] for name in self._indexes[index].get(value, ())]

    def apply(self, obj: Obj) -> None:
        """Take in a newer version of an object (from a watch, a list, or the facade's own write)."""
        name = _name(obj)
        version = resource_version(obj)
        current = self._objects.get(name)
        known = resource_version(current) if current is not None else self._tombstones.get(name)
        if version is not None and known is not None and version <= known:
            return
        if obj["metadata"].get("deletionTimestamp"):
            self._drop(name, version)
            return
        self._tombstones.pop(name, None)
        stored = self._transform(obj) if self._transform else obj
        self._unindex(name)
        self._objects[name] = stored
        self._index(name, stored)
        self.generation += 1
        if current is None:
            self.membership += 1

    def remove(self, obj: Obj) -> None:
        """Forget a deleted object; news about it up to its version is ignored from now on."""
        name = _name(obj)
        current = self._objects.get(name)
        candidates = [resource_version(obj), resource_version(current) if current is not None else None]
        versions = [version for version in candidates if version is not None]
        self._drop(name, max(versions, default=None))

    def replace(self, objects: Iterable[Obj]) -> None:
        """Become exactly `objects` (after a list): what is not among them was deleted meanwhile."""
        fresh = {_name(obj): obj for obj in objects if not obj["metadata"].get("deletionTimestamp")}
        for name in list(self._objects):
            if name not in fresh:
                self._drop(name, None)
        self._tombstones.clear()
        for obj in fresh.values():
            self.apply(obj)

    def forget_tombstones_before(self, version: int) -> None:
        """A watch that has reached `version` can no longer deliver news older than it."""
        if self._tombstones:
            self._tombstones = {name: rv for name, rv in self._tombstones.items() if rv >= version}

    def _drop(self, name: str, version: int | None) -> None:
        if version is not None:
            self._tombstones[name] = max(version, self._tombstones.get(name, version))
        if name in self._objects:
            self._unindex(name)
            del self._objects[name]
            self.generation += 1
            self.membership += 1

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


class Informer:
    """Keeps a `Store` current with list + watch of one resource until cancelled."""

    def __init__(self, resource: str, store: Store, lister: Lister, *, timeout: float) -> None:
        self.resource = resource
        self.store = store
        self._lister = lister
        self._timeout = timeout
        self._version: str | None = None
        self.synced = asyncio.Event()
        #: Monotonic time the API was last heard from about this resource (list, event or bookmark).
        self.last_contact = time.monotonic()

    def staleness(self) -> float:
        """Seconds since the API last confirmed this cache; a quiet but healthy watch is confirmed
        by its bookmarks and reconnections, so this grows without bound only when the API is lost."""
        return time.monotonic() - self.last_contact

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self._version is None:
                    await self._relist()
                await self._watch()
                failures = 0
            except Expired:
                logger.info("%s watch expired; listing again", self.resource)
                self._version = None
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure of the API: retry with backoff
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                logger.warning("%s informer: %s; retrying in %gs", self.resource, _describe(error), delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        async with asyncio.timeout(self._timeout * 4):
            while True:
                kwargs: dict[str, Any] = {"limit": 500}
                if token:
                    kwargs["_continue"] = token
                response = await self._lister(**kwargs, _preload_content=False, _request_timeout=self._timeout)
                async with response:
                    if response.status == 410:
                        token = None
                        items.clear()
                        continue
                    if response.status != 200:
                        raise RuntimeError(f"list answered HTTP {response.status}")
                    page = json.loads(await response.read())
                items.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    break
        self.store.replace(items)
        self._version = str((page.get("metadata") or {}).get("resourceVersion") or "") or None
        self.last_contact = time.monotonic()
        self.synced.set()

    async def _watch(self) -> None:
        timeout = aiohttp.ClientTimeout(
            connect=self._timeout, sock_connect=self._timeout, sock_read=WATCH_TIMEOUT_SECONDS + 30
        )
        response = await self._lister(
            # Spelled as the API documents it: the client would send `True`, which strict servers reject.
            watch="true",
            resource_version=self._version,
            allow_watch_bookmarks="true",
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            _request_timeout=timeout,
        )
        async with response:
            if response.status == 410:
                raise Expired
            if response.status != 200:
                raise RuntimeError(f"watch answered HTTP {response.status}")
            self.last_contact = time.monotonic()
            async for line in response.content:
                if line.strip():
                    self._handle(json.loads(line))

    def _handle(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired
            raise RuntimeError(f"watch error: {obj.get('message')}")
        self.last_contact = time.monotonic()
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self.store.apply(obj)
        elif kind == "DELETED":
            self.store.remove(obj)
        if version:
            self._version = version
            with contextlib.suppress(ValueError):
                self.store.forget_tombstones_before(int(version))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
