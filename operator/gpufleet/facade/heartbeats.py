"""REST heartbeats as Lease renewals: one small write per heartbeat, the Host's status only when it changes.

A legacy agent heartbeats every 10 s. Writing the Host's whole status each time made every Host
watcher (the operator, each facade replica, every `kubectl get hosts -w`) receive the whole Host
every 10 s per host. So a heartbeat renews the host's Lease (`gpufleet.api.hostlease`: one per
Host, in `GPUFLEET_HOST_LEASE_NAMESPACE`, owned by the Host, holder `gpufleet-facade`), which
the operator counts as a sign of life, and the Host's status is written only when it would say
something new (`status_reason`):

- the Host has no status yet, or no `lastHeartbeat`;
- `reportedState`, `healthStatus` or `reportedUsedGpu` differ from the heartbeat's;
- `usedCpu` or `usedMemory` moved by more than `USAGE_SHARE` (10%) of the host's total
  (`spec.totalCpu`, `spec.totalMemory`; any change when the total is unknown or 0): the REST
  list shows usage as a gauge, and a gauge within a tenth of the host's size is still right,
  whereas writing every wobble would write every heartbeat;
- the cached `lastHeartbeat` is `GPUFLEET_STATUS_RESYNC_SECONDS` (300) old or older, so usage
  drifting by small steps, and `lastHeartbeat` for operators that only read the Host, are never
  more than that far behind (as a Node's status is written every 5 minutes).

The decision is made on this replica's cache of the Host, to which every status write it makes
is applied at once; another replica's writes arrive by its watch, so at worst two replicas both
write one change. Lease renewals are merge patches without a precondition: replicas never
conflict, the last renewal wins.

When the Lease cannot be written at all for a reason that retrying will not cure (403: the
facade's RBAC has no rights on Leases yet; 404 on create: the namespace does not exist), the
heartbeat writes the Host's status with `lastHeartbeat` as releases before Leases did, so the
host stays online during a rollout in the wrong order, and a warning says what is missing (at
most once a minute).
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Any

from gpufleet import informer
from gpufleet.api import formats, hostlease
from gpufleet.facade import kubeapi, schemas

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

#: Usage (CPU, memory) is written again once it moved by more than this share of the host's total.
USAGE_SHARE = 0.10
#: The Lease failures that retrying does not cure: the heartbeat falls back to a status write.
UNWRITABLE = (403, 404)
WARN_EVERY_SECONDS = 60.0


def compact_lease(lease: Obj) -> Obj:
    """What the facade keeps of a host Lease: its name (and namespace, the store's key), resourceVersion
    and renewTime. The holder, duration and managedFields are not read, and 10,000 whole Leases
    would be several MiB of dicts for nothing."""
    metadata = lease["metadata"]
    kept: Obj = {"name": metadata["name"], "resourceVersion": metadata.get("resourceVersion")}
    namespace = metadata.get("namespace")
    if namespace:
        kept["namespace"] = sys.intern(namespace)  # one string for all of them
    compact: Obj = {"metadata": kept}
    renewed = hostlease.renew_time(lease)
    if renewed is not None:
        compact["spec"] = {"renewTime": renewed}
    return compact


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _moved(stored: Any, reported: float, total: Any) -> bool:
    """Whether usage moved by more than USAGE_SHARE of the total (any change when the total is unknown)."""
    before = _number(stored)
    if before is None:
        return True
    size = _number(total) or 0.0
    if size <= 0:
        return before != reported
    return abs(before - reported) > USAGE_SHARE * size


def status_reason(
    host_object: Obj, body: schemas.Heartbeat, now: datetime.datetime, resync_seconds: float
) -> str | None:
    """Why this heartbeat must write the Host's status (a word for logs and tests), or None when the
    status already says what it reports."""
    status = host_object.get("status")
    if not status:
        return "first"
    last = formats.parse_time(status.get("lastHeartbeat"))
    if last is None:
        return "first"
    if status.get("reportedState") != body.status.value:
        return "state"
    if status.get("healthStatus") != body.health_status.value:
        return "health"
    if status.get("reportedUsedGpu") != body.used_gpu:
        return "gpu"
    spec = host_object.get("spec") or {}
    if _moved(status.get("usedCpu"), body.used_cpu, spec.get("totalCpu")):
        return "cpu"
    if _moved(status.get("usedMemory"), body.used_memory, spec.get("totalMemory")):
        return "memory"
    if (now - last).total_seconds() >= resync_seconds:
        return "resync"
    return None


class Leases:
    """Renews hosts' Leases for the facade, and keeps the Leases it wrote in the informer's store."""

    def __init__(self, kube: kubeapi.Kubernetes, store: informer.Store, *, duration_seconds: int) -> None:
        self._kube = kube
        self._store = store
        self._duration = duration_seconds
        self._key_prefix = f"{kube.lease_namespace}/"
        self._warned: float | None = None

    def renew_time(self, host_name: str) -> str | None:
        """When the host's Lease was last renewed (by anyone), as the cache has it."""
        lease = self._store.get(self._key_prefix + host_name)
        return hostlease.renew_time(lease) if lease is not None else None

    async def renew(self, host_object: Obj) -> bool:
        """Renew the host's Lease, creating it if it does not exist; False when it cannot be written
        (see UNWRITABLE), and the heartbeat must keep the host alive through its status instead.

        Kubernetes failures (unreachable, 5xx, 429, timeouts) raise FacadeError 503 from kubeapi.
        """
        name = host_object["metadata"]["name"]
        try:
            try:
                lease = await self._kube.patch_lease(name, self._renewal())
            except kubeapi.ApiException as error:
                if error.status != 404:
                    raise
                lease = await self._create(host_object)
        except kubeapi.ApiException as error:
            if error.status not in UNWRITABLE:
                raise
            self._warn(error)
            return False
        self._store.apply(lease)
        return True

    def _renewal(self) -> Obj:
        return hostlease.renewal(holder=hostlease.FACADE_HOLDER, duration_seconds=self._duration)

    async def _create(self, host_object: Obj) -> Obj:
        """The host's first heartbeat since the Lease era began (or since its Lease was deleted)."""
        name = host_object["metadata"]["name"]
        uid = host_object["metadata"].get("uid")
        if not uid:  # every Host the API returns has one; a cache entry without it is read again
            uid = (await self._kube.read_host(name))["metadata"]["uid"]
        manifest = hostlease.manifest(
            host_name=name,
            host_uid=str(uid),
            namespace=self._kube.lease_namespace,
            holder=hostlease.FACADE_HOLDER,
            duration_seconds=self._duration,
        )
        try:
            return await self._kube.create_lease(manifest)
        except kubeapi.ApiException as error:
            if error.status != 409:
                raise
        # Created a moment ago by another replica (or the node's agent): renew that one.
        return await self._kube.patch_lease(name, self._renewal())

    def _warn(self, error: kubeapi.ApiException) -> None:
        now = time.monotonic()
        if self._warned is not None and now - self._warned < WARN_EVERY_SECONDS:
            return
        self._warned = now
        logger.warning(
            "host Leases cannot be written in namespace %r (%s: %s); heartbeats write the Hosts' status "
            "every time instead: create the namespace, and give the facade create and patch on leases there",
            self._kube.lease_namespace,
            error.status,
            kubeapi.api_message(error),
        )
