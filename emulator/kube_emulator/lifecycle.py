"""What exists: committing new states, deletion with finalizers, garbage collection.

Every change to the set of objects goes through here so that resourceVersions, watch
events and the GC indexes stay consistent: finalizers hold a deleted object with a
deletionTimestamp, removing an owner collects dependents whose owners are all gone
(background propagation, soon after the response, like the real garbage collector),
and a deleted namespace empties itself before it disappears.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from . import objects
from .errors import ApiError, not_found
from .resources import CRDS, NAMESPACES
from .store import Collection, Event, ObjectKey, Store

JsonObj = dict[str, Any]


class Lifecycle:
    def __init__(
        self, store: Store, on_crd_written: Callable[[JsonObj], None], on_crd_removed: Callable[[JsonObj], None]
    ) -> None:
        self.store = store
        self._on_crd_written = on_crd_written
        self._on_crd_removed = on_crd_removed
        self._gc_queue: list[str] = []

    def get(self, coll: Collection, key: ObjectKey) -> JsonObj:
        obj = coll.objects.get(key)
        if obj is None:
            raise not_found(coll.resource.qualified, key[1])
        return obj

    def commit(self, coll: Collection, key: ObjectKey, obj: JsonObj, old: JsonObj | None, event_type: str) -> JsonObj:
        """Store a new state under the next resourceVersion and tell the watchers."""
        rv = self.store.next_rv()
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        self.store.put(coll, key, obj, old)
        coll.emit(Event(rv, event_type, obj, old))
        if coll.resource == CRDS:
            self._on_crd_written(obj)
        owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []]
        if old is None and owners and not any(uid in self.store.uids for uid in owners):
            self._gc_queue.extend(uid for uid in owners if uid)  # created with its owners already gone
            self._schedule_gc()
        return obj

    def delete(self, coll: Collection, key: ObjectKey, options: JsonObj) -> JsonObj:
        """DELETE: mark (finalizers, non-empty namespace) or remove; checks preconditions."""
        old = self.get(coll, key)
        meta = old["metadata"]
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) and preconditions[field] != meta.get(field):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: "
                    f"{preconditions[field]}, {field} in object meta: {meta.get(field)}",
                )
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan_dependents(meta["uid"])
        if coll.resource == NAMESPACES:
            self._empty_namespace(key[1])
            if not self._namespace_empty(key[1]):
                if meta.get("deletionTimestamp"):
                    return old
                marked = {
                    **old,
                    "metadata": {**meta, "deletionTimestamp": objects.now()},
                    "status": {"phase": "Terminating"},
                }
                return self.commit(coll, key, marked, old, "MODIFIED")
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            marked = {**old, "metadata": {**meta, "deletionTimestamp": objects.now(), "deletionGracePeriodSeconds": 0}}
            return self.commit(coll, key, marked, old, "MODIFIED")
        return self.remove(coll, key, old)

    def remove(self, coll: Collection, key: ObjectKey, final: JsonObj | None = None) -> JsonObj:
        """Remove now, emit DELETED, and start collecting what depended on it."""
        obj = final if final is not None else coll.objects[key]
        self.store.remove(coll, key)
        rv = self.store.next_rv()
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        coll.emit(Event(rv, "DELETED", obj))
        if coll.resource == CRDS:
            self._on_crd_removed(obj)
        self._gc_queue.append(obj["metadata"]["uid"])
        if key[0]:
            self._gc_queue.append(f"namespace:{key[0]}")
        self._schedule_gc()
        return obj

    def _schedule_gc(self) -> None:
        """Collect right after the current request, as the background collector would."""
        try:
            asyncio.get_running_loop().call_soon(self._collect)
        except RuntimeError:
            self._collect()

    def _orphan_dependents(self, owner_uid: str) -> None:
        """propagationPolicy=Orphan: dependents lose the reference instead of being collected."""
        for storage_key, key in self.store.dependents.pop(owner_uid, set()):
            coll = self.store.collections.get(storage_key)
            obj = coll.objects.get(key) if coll is not None else None
            if coll is None or obj is None:
                continue
            refs = [ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("uid") != owner_uid]
            meta = {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
            self.commit(
                coll, key, {**obj, "metadata": {**meta, **({"ownerReferences": refs} if refs else {})}}, obj, "MODIFIED"
            )

    def _collect(self) -> None:
        """Background GC: delete orphaned dependents and finish terminating namespaces."""
        while self._gc_queue:
            item = self._gc_queue.pop(0)
            if item.startswith("namespace:"):
                self._finish_namespace(item.partition(":")[2])
                continue
            for coll, key in self.store.orphans_of(item):
                if key in coll.objects:
                    self.delete(coll, key, {})

    def _namespaced_collections(self) -> list[Collection]:
        return [coll for coll in self.store.collections.values() if coll.resource.namespaced]

    def _namespace_empty(self, namespace: str) -> bool:
        return not any(key[0] == namespace for coll in self._namespaced_collections() for key in coll.objects)

    def _empty_namespace(self, namespace: str) -> None:
        for coll in self._namespaced_collections():
            for key in [key for key in coll.objects if key[0] == namespace]:
                self.delete(coll, key, {})

    def _finish_namespace(self, namespace: str) -> None:
        namespaces = self.store.collection(NAMESPACES)
        ns = namespaces.objects.get(("", namespace))
        if ns is not None and ns["metadata"].get("deletionTimestamp") and self._namespace_empty(namespace):
            self.remove(namespaces, ("", namespace))
