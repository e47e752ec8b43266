"""The operator's in-memory view of the fleet, and the one place that decides what to write.

Three jobs, three modules: this view (inputs, liveness, what each host should be), the work
queue that runs one worker per host (`workqueue`), and the writer that says it to the API
behind the leader's fence (`writer`).

Every input (a Host, a Lease or a GPU from its informer, a passed deadline) updates the
view and schedules the host on a work queue (`workqueue`): a host waits there at most once, and
a fixed pool of workers brings it to what it should be, one worker per host at a time, so an
informer never waits for a write and a burst of hosts costs no more tasks than the pool.
Reconciliation compares the Host as last seen with what it should be (`status.plan`) and writes
only the difference; it is level-based, so a lost race is repaired by the next event.

A host's reconciliation is retried until it succeeds, whatever the failure (a reset connection,
a timeout, a 5xx, a 429), with jittered backoff: an offline verdict is the one write no later
event will repair, since a dead host sends none. Every call is bounded by a timeout, so hung
calls cannot hold the write slots. Only the leader writes, and only while its Lease is
renewed (`fence`, checked by `writer` before every call); standbys keep the whole view warm
(liveness, GPU counts, tokens), so a take-over starts from what the fleet did, not from zero.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import informer, tokens
from gpufleet import settings as settings_
from gpufleet.api import gpu, host, hostlease, meta
from gpufleet.controller import events, liveness, metrics, remediation, rollup, status, workqueue, writer

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: Workers writing hosts concurrently, e.g. when a rack's worth of deadlines pass at once.
WRITE_CONCURRENCY = 64
#: Hosts read at once to confirm their silence (see `check`).
CHECK_CONCURRENCY = 16
#: Backoff between attempts to write a host after a failure.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


def host_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a Host: metadata, spec and status (not managedFields)."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    return {"metadata": metadata, "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def lease_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a host Lease: whose it is, who renewed it, and when."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return {
        "metadata": {"name": metadata.get("name"), "resourceVersion": metadata.get("resourceVersion")},
        "spec": {"holderIdentity": spec.get("holderIdentity"), "renewTime": spec.get("renewTime")},
    }


class Fleet:
    """Hosts as last seen, their liveness and GPU counts; decides what should change, and has
    `writer` say it, from the work queue's workers only."""

    def __init__(
        self,
        config: settings_.Settings,
        api: client.ApiClient,
        *,
        identity: str,
        tracker: liveness.Liveness | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)
        self.liveness = tracker if tracker is not None else liveness.Liveness(config.grace_period_seconds)
        self.hosts = informer.Store(transform=host_view, keep_deleting=True)
        """Hosts as the informer last saw them, with our own writes overlaid (see `_overlay_own_writes`)."""
        self.rollup = rollup.Rollup()
        self.leases = informer.Store(transform=lease_view)
        """The hosts' heartbeat Leases, as the informer last saw them."""
        self.leading = not config.leader_election
        self._fence = fence
        self.written: dict[str, dict[str, dict[str, Any]]] = {}
        """Operator-owned status fields and labels written but not yet seen back in a watch event."""
        self.metrics = metrics.Metrics()
        self.writer = writer.HostWriter(
            api, namespace=config.namespace, identity=identity, may_write=self.may_write, counters=self.metrics
        )
        self.metrics.watch_fleet(self._host_states, self.rollup.by_state, self.liveness.oldest_heartbeat_age)
        self._deadlines: dict[str, float] = {}
        self._tainted: dict[str, bool] = {}
        """Nodes as the operator last left them (True: tainted); absent: not known since start."""
        self._taint_bucket = events.Bucket(rate=config.remediation_taints_per_minute / 60, burst=3)
        self._deleted: set[str] = set()
        """Hosts gone from the API whose GPUs and token are still to be released."""
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            "host",
            self._work_on,
            workers=WRITE_CONCURRENCY,
            first_retry=RETRY_FIRST_SECONDS,
            max_retry=RETRY_MAX_SECONDS,
        )
        """Hosts to bring to what they should be; its workers are the only writers (`run`)."""

    # ----- inputs (informer callbacks: synchronous, O(1), never wait for the API) -----------------------

    def host_seen(self, view: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """A Host as the API shows it now (created, changed, heartbeating, or being deleted)."""
        name = str(view["metadata"]["name"])
        self._overlay_own_writes(name, view)
        current = view["status"]
        if self.liveness.observe(
            name,
            heartbeat=current.get("lastHeartbeat"),
            reported_offline=current.get("reportedState") == host.HostState.OFFLINE,
            state=current.get("state"),
        ):
            self.metrics.heartbeats.inc()
        self.schedule(name)

    def host_gone(self, view: Mapping[str, Any]) -> None:
        """The Host is gone; whatever it left (deleted before we added the finalizer) goes too."""
        name = str(view["metadata"]["name"])
        self.written.pop(name, None)
        self.liveness.forget(name)
        self._deleted.add(name)
        self.schedule(name)

    def lease_seen(self, lease: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """A host's Lease was renewed (or first seen): a heartbeat, if its holder may speak for the host.

        Only a host that is not online yet needs work: a renewal of an online host moves its
        deadline and nothing else, which is what keeps 1,000 renewals a second cheap.
        """
        name = str(lease["metadata"]["name"])
        view = self.hosts.get(name)
        if view is None or not hostlease.may_renew(hostlease.holder(lease), view):
            return  # no such Host (yet), or renewed by a node that is not the host's
        if self.liveness.observe_lease(name, hostlease.renew_time(lease)):
            self.metrics.heartbeats.inc()
            if view["status"].get("state") != host.HostState.ONLINE:
                self.schedule(name)

    def is_live_host(self, name: str) -> bool:
        """Whether the Host exists and is not being deleted, as last seen."""
        view = self.hosts.get(name)
        return view is not None and not view["metadata"].get("deletionTimestamp")

    def gpu_changed(self, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None = None) -> None:
        """A GPU appeared, changed or went away (`new` None): recount the hosts it belonged to."""
        for name in rollup.Rollup.hosts_touched(new, old):
            self.schedule(name)

    async def expire(self, gone: list[tuple[str, float]]) -> None:
        """Hosts whose deadlines passed: schedule their offline status (the leader writes it)."""
        for name, deadline in gone:
            self._deadlines[name] = deadline
            self.schedule(name)

    async def check(self, names: list[str]) -> None:
        """Read Hosts whose deadline passed while the watch was quiet: is their silence real?

        A GET is answered from the API's current state, so a Host read after its deadline with
        the heartbeat we last saw has truly been silent; one with a newer heartbeat is observed
        as if the watch had delivered it (the watch was behind). Only the leader needs verdicts.
        """
        if not self.may_write():
            return
        limit = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def read(name: str) -> None:
            async with limit:
                sent_at = self.liveness.clock()
                try:
                    body, lease = await asyncio.gather(
                        self.custom.get_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name),
                        self._read_lease(name),
                    )
                except exceptions.ApiException as error:
                    if error.status != 404:  # a deleted Host's DELETED event is on its way
                        logger.warning("could not read host %s: %s", name, error.reason)
                    return
                except (TimeoutError, OSError, aiohttp.ClientError) as error:
                    logger.warning("could not read host %s: %s", name, _describe(error))
                    return
            old = self.hosts.get(name)
            stored = self.hosts.apply(body)
            if stored is not None:
                self.host_seen(stored, old)
            current = self.hosts.get(name) or {}
            renew_time = None
            if lease is not None:
                self.leases.apply(lease)
                self.lease_seen(lease_view(lease))
                if current and hostlease.may_renew(hostlease.holder(lease), current):
                    renew_time = hostlease.renew_time(lease)
            heartbeat = (current.get("status") or {}).get("lastHeartbeat")
            self.liveness.checked(name, heartbeat=heartbeat, renew_time=renew_time, sent_at=sent_at)

        await asyncio.gather(*(read(name) for name in names))

    async def _read_lease(self, name: str) -> dict[str, Any] | None:
        """The host's Lease as the API holds it now, or None when it has none."""
        try:  # raw: renewTime is compared as the text the watch delivers, not as a parsed datetime
            response: Any = await self.coordination.read_namespaced_lease(
                name, self.config.host_lease_namespace, _preload_content=False
            )
        except exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise
        async with response:
            body: dict[str, Any] = await response.json()
        if response.status == 404:
            return None
        if response.status >= 400:
            raise exceptions.ApiException(status=response.status, reason=str(body.get("message", "")))
        return body

    def lead(self, leading: bool) -> None:
        """Start or stop writing; a new leader reconciles every host from its warm view."""
        if leading == self.leading:
            return
        self.leading = leading
        logger.info("this replica %s", "leads now" if leading else "stands by")
        if leading:
            for name in [*self.hosts.names(), *self._deleted]:
                self.schedule(name)

    def may_write(self) -> bool:
        """Whether this replica may write now: it leads, and its Lease is still renewed."""
        return self.leading and (self._fence is None or self._fence())

    # ----- scheduling -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Work on scheduled hosts until cancelled (the one place writes come from)."""
        await self.queue.run()

    def schedule(self, name: str) -> None:
        """Bring the host to what it should be soon; a host already waiting is not queued twice.

        Only the leader queues work: a new leader queues every host it knows (`lead`).
        """
        if self.leading:
            self.queue.add(name)

    async def idle(self) -> None:
        """Wait until no host is queued or being written (for tests and orderly shutdown)."""
        await self.queue.idle()

    async def _work_on(self, name: str) -> None:
        """Everything a host needs, level-based: status first, then finalizer and token, or clean-up.

        Any failure raises, and the queue tries the host again with backoff: a pending verdict is
        never dropped (a silent host sends no further event to repair it).
        """
        try:
            await self._bring_up_to_date(name)
        except writer.NotLeading:
            return  # lost the Lease meanwhile: a new leader queues every host again

    async def _bring_up_to_date(self, name: str) -> None:
        if not self.may_write():
            return  # a new leader queues every host again
        view = self.hosts.get(name)
        if view is None:
            if name in self._deleted:
                await self.writer.release(name)
                self._deleted.discard(name)
            return
        metadata = view["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if metadata.get("deletionTimestamp"):
            if meta.CLEANUP_FINALIZER in finalizers:
                await self.writer.release(name, finalize=True)
            return
        await self.reconcile(name)
        await self._mask_gpus(view)
        if self.config.node_remediation:
            await self._remediate(view)
        if meta.CLEANUP_FINALIZER not in finalizers:
            await self.writer.add_finalizer(name, finalizers)
        if tokens.needs_token(view):
            await self._issue_token(view)

    async def _mask_gpus(self, view: dict[str, Any]) -> None:
        """GPUs of a host that went offline are `unknown`, not free: nobody knows (as the node
        lifecycle controller marks a NotReady node's pods not ready); online again, they are
        what their agent last reported. A host never seen online has nothing to mask."""
        name = str(view["metadata"]["name"])
        current = view["status"]
        went_offline = current.get("state") == host.HostState.OFFLINE and any(
            c.get("type") == host.READY and c.get("reason") != status.NEVER_HEARTBEATED
            for c in current.get("conditions") or []
        )
        online = current.get("state") == host.HostState.ONLINE
        for member in self.rollup.members(name, hostlease.bound_node(view)):
            gpu_name, state, held = member["metadata"]["name"], member["state"], member["held"]
            if went_offline and state != gpu.GPUState.UNKNOWN:
                await self.writer.mask_gpu(gpu_name, held or state, held=bool(held))
            elif online and held:
                await self.writer.unmask_gpu(gpu_name, held if state == gpu.GPUState.UNKNOWN else None)

    async def _remediate(self, view: dict[str, Any]) -> None:
        """Taint the host's Node while it or a GPU of it is unhealthy (`remediation`), within the
        rate limit and the circuit breaker; untaint it on recovery, always."""
        node = view["spec"].get("nodeName")
        if not node:
            return
        name = str(view["metadata"]["name"])
        verdict = remediation.judge(view, self.rollup.members(name, str(node)))
        wanted = verdict.reason is not None
        if self._tainted.get(node) == wanted and not wanted:
            return
        if wanted and not self._tainted.get(node):
            if self._breaker_open():
                return  # looked at again when the fleet's health changes
            if not self._taint_bucket.take():
                self.queue.add_after(name, 60 / self.config.remediation_taints_per_minute)
                return
        changed = await self.writer.remediate_node(str(node), verdict)
        if changed is None:
            return
        self._tainted[node] = wanted
        if changed:
            what = f"tainted {remediation.TAINT_KEY}: {verdict.message}" if wanted else "untainted: healthy again"
            logger.info("node %s of host %s %s", node, name, what, extra={"host": name, "node": node})
            event = status.Event(
                "Warning" if wanted else "Normal",
                "NodeTainted" if wanted else "NodeUntainted",
                f"node {node} {what}",
            )
            await self.writer.post(name, str(view["metadata"].get("uid", "")), event)

    def _breaker_open(self) -> bool:
        """More than the set share of node-bound hosts unhealthy at once (and more than one):
        add no taint."""
        bound = unhealthy = 0
        for candidate in list(self.hosts.values()):
            node = candidate["spec"].get("nodeName")
            if not node:
                continue
            bound += 1
            members = self.rollup.members(str(candidate["metadata"]["name"]), str(node))
            unhealthy += remediation.judge(candidate, members).reason is not None
        fraction = unhealthy / bound if bound else 0.0
        # One unhealthy host is never a fleet-wide fault, however small the fleet.
        if unhealthy > 1 and fraction > self.config.remediation_max_unhealthy_fraction:
            logger.warning(
                "%d of %d node-bound hosts are unhealthy (over %.0f%%): no new node taints until fewer are",
                unhealthy,
                bound,
                self.config.remediation_max_unhealthy_fraction * 100,
            )
            return True
        return False

    async def _issue_token(self, view: dict[str, Any]) -> None:
        digest = await self.writer.issue_token(str(view["metadata"]["name"]), str(view["metadata"].get("uid", "")))
        if digest is not None:
            # Until the watch shows the annotation, the view must not ask for another token; asking
            # again would be harmless (the Secret answers with the same token) but costs three calls.
            annotations = {**(view["metadata"].get("annotations") or {}), tokens.DIGEST_ANNOTATION: digest}
            view["metadata"] = {**view["metadata"], "annotations": annotations}

    # ----- reconciliation -------------------------------------------------------------------------

    def _overlay_own_writes(self, name: str, view: dict[str, Any]) -> None:
        """Show our own writes in a view that predates them, until the watch catches up.

        Events already in flight when we write still carry the old operator-owned fields; taken
        at face value they would make us write (and post Events) a second time. Only the
        operator writes those fields, so what we wrote is what the API holds.
        """
        written = self.written.get(name)
        if written is None:
            return
        labels = view["metadata"].get("labels") or {}
        caught_up = all(view["status"].get(key) == value for key, value in written["status"].items()) and all(
            labels.get(key) == value for key, value in written["labels"].items()
        )
        if caught_up:
            del self.written[name]
            return
        view["status"] = {**view["status"], **written["status"]}
        view["metadata"] = {**view["metadata"], "labels": {**labels, **written["labels"]}}

    async def reconcile(self, name: str) -> bool:
        """Bring one Host to what it should be; whether its status was written.

        The status goes first and labels and Events after it, so that whoever reads
        `status.state` (and the detection-delay metric) does not wait for the rest.
        """
        view = self.hosts.get(name)
        deadline = self._deadlines.get(name)
        if view is None or view["metadata"].get("deletionTimestamp") or not self.may_write():
            return False
        todo = status.plan(
            view,
            online=self.liveness.is_online(name),
            gpus=self.rollup.counts(name, str(view["spec"].get("nodeName") or name)),
            grace_seconds=self.config.grace_period_seconds,
            now=datetime.datetime.now(datetime.UTC),
        )
        wrote = False
        try:
            if todo.status_patch is not None:
                await self.writer.patch_status(name, todo.status_patch)
                view["status"] = {**view["status"], **todo.status_patch}
                self._remember(name)["status"].update(todo.status_patch)
                wrote = True
                if deadline is not None and todo.new_state == host.HostState.OFFLINE:
                    self.metrics.detection_delay.observe(max(0.0, self.liveness.clock() - deadline))
            self._deadlines.pop(name, None)
            followups = [self._post(view, event) for event in todo.events]
            if todo.labels_patch is not None:
                followups.append(self._label(view, todo.labels_patch))
            await asyncio.gather(*followups)
        except exceptions.ApiException as error:
            if error.status == 404:  # deleted meanwhile: its DELETED event will follow
                return False
            raise
        if todo.new_state is not None and wrote:
            self.metrics.transitions.labels(todo.new_state).inc()
            logger.info("host %s is %s", name, todo.new_state, extra={"host": name, "state": todo.new_state})
        return wrote

    async def _label(self, view: dict[str, Any], labels: dict[str, str]) -> None:
        name = view["metadata"]["name"]
        await self.writer.patch_labels(name, labels)
        view["metadata"] = {**view["metadata"], "labels": {**(view["metadata"].get("labels") or {}), **labels}}
        self._remember(name)["labels"].update(labels)

    def _remember(self, name: str) -> dict[str, dict[str, Any]]:
        return self.written.setdefault(name, {"status": {}, "labels": {}})

    async def _post(self, view: dict[str, Any], event: status.Event) -> None:
        await self.writer.post(view["metadata"]["name"], str(view["metadata"].get("uid", "")), event)

    def _host_states(self) -> Iterator[tuple[str, str]]:
        for view in list(self.hosts.values()):  # a snapshot, though scrapes run on the loop
            current = view["status"]
            yield str(current.get("state") or "unknown"), str(current.get("healthStatus") or "unknown")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
