"""The object store: objects per resource, the global resourceVersion and the event log.

Each resource has a dict keyed by (namespace, name), so a GET is a dict lookup and a write
costs the same after a million requests as after ten. Stored objects are never mutated
in place (every write stores a new dict), so events and responses can share them.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable, Iterator
from typing import Any

from .resources import ResourceDef

JsonObj = dict[str, Any]
ObjectKey = tuple[str, str]  # (namespace or "", name)
Predicate = Callable[[JsonObj], bool]


class Event:
    """One watch event; its JSON line is rendered once however many watchers get it.

    ``old`` is the previous state of a modified object: a filtered watch sees an object
    that enters its selection as ADDED and one that leaves it as DELETED.
    """

    __slots__ = ("_line", "obj", "old", "rv", "type")

    def __init__(self, rv: int, type_: str, obj: JsonObj, old: JsonObj | None = None) -> None:
        self.rv = rv
        self.type = type_
        self.obj = obj
        self.old = old
        self._line: bytes | None = None

    @property
    def line(self) -> bytes:
        if self._line is None:
            self._line = json.dumps({"type": self.type, "object": self.obj}).encode() + b"\n"
        return self._line


class Watcher:
    """A live watch stream's subscription: a queue and a filter. ``None`` ends the stream."""

    def __init__(self, namespace: str | None, predicate: Predicate | None) -> None:
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def accepts(self, obj: JsonObj) -> bool:
        if self.namespace is not None and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def view(self, event: Event) -> Event | None:
        """The event as this watch sees it, or None if it concerns nothing it watches."""
        now = self.accepts(event.obj)
        if event.type != "MODIFIED" or event.old is None or self.predicate is None:
            return event if now else None
        before = self.accepts(event.old)
        if now and before:
            return event
        if now:
            return Event(event.rv, "ADDED", event.obj)
        return Event(event.rv, "DELETED", event.obj) if before else None


class Collection:
    """All objects of one resource (all its versions), its event log and its watchers."""

    def __init__(self, resource: ResourceDef, history: int) -> None:
        self.resource = resource
        self.objects: dict[ObjectKey, JsonObj] = {}
        self.log: collections.deque[Event] = collections.deque(maxlen=history)
        self.compacted = 0  # events with rv <= compacted are no longer in the log
        self.watchers: set[Watcher] = set()

    def emit(self, event: Event) -> None:
        if self.log.maxlen is not None and len(self.log) == self.log.maxlen:
            self.compacted = self.log[0].rv
        self.log.append(event)
        for watcher in self.watchers:
            seen = watcher.view(event)
            if seen is not None:
                watcher.queue.put_nowait(seen)

    def events_since(self, rv: int) -> Iterator[Event]:
        for event in self.log:
            if event.rv > rv:
                yield event

    def close_watchers(self) -> None:
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)
        self.watchers.clear()


class Store:
    """Every collection, the resourceVersion counter and the indexes used by GC."""

    def __init__(self, history: int = 10_000) -> None:
        self.history = history
        self.rv = 0
        self.collections: dict[tuple[str, str], Collection] = {}
        self.uids: dict[str, tuple[tuple[str, str], ObjectKey]] = {}
        self.dependents: dict[str, set[tuple[tuple[str, str], ObjectKey]]] = collections.defaultdict(set)

    def collection(self, resource: ResourceDef) -> Collection:
        found = self.collections.get(resource.storage_key)
        if found is None:
            found = self.collections[resource.storage_key] = Collection(resource, self.history)
        return found

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, coll: Collection, key: ObjectKey, obj: JsonObj, old: JsonObj | None) -> None:
        """Store a new state (its resourceVersion already set) and keep the indexes right."""
        coll.objects[key] = obj
        uid = obj["metadata"]["uid"]
        self.uids[uid] = (coll.resource.storage_key, key)
        old_owners = _owner_uids(old) if old is not None else set()
        for owner in _owner_uids(obj) - old_owners:
            self.dependents[owner].add((coll.resource.storage_key, key))

    def remove(self, coll: Collection, key: ObjectKey) -> JsonObj | None:
        obj = coll.objects.pop(key, None)
        if obj is not None:
            self.uids.pop(obj["metadata"]["uid"], None)
        return obj

    def orphans_of(self, owner_uid: str) -> list[tuple[Collection, ObjectKey]]:
        """Dependents of a removed owner whose owners are now all gone."""
        found: list[tuple[Collection, ObjectKey]] = []
        for storage_key, key in self.dependents.pop(owner_uid, set()):
            coll = self.collections.get(storage_key)
            obj = coll.objects.get(key) if coll is not None else None
            if coll is None or obj is None:
                continue
            owners = _owner_uids(obj)
            if owner_uid in owners and not any(uid in self.uids for uid in owners):
                found.append((coll, key))
        return found

    def compact(self) -> None:
        """Forget all history, as an etcd compaction does: old resourceVersions get 410."""
        for coll in self.collections.values():
            coll.log.clear()
            coll.compacted = self.rv

    def drop_watches(self) -> None:
        for coll in self.collections.values():
            coll.close_watchers()


def _owner_uids(obj: JsonObj) -> set[str]:
    return {ref["uid"] for ref in obj.get("metadata", {}).get("ownerReferences") or [] if "uid" in ref}
