"""The operator's in-memory view of the fleet, and the one place that turns it into API writes.

Every input (a Host from the watch, a GPU event, a passed deadline, a token Secret event)
updates the view and schedules the host; a scheduled host is reconciled in its own task, one
at a time per host, so the watch never waits for a write. Reconciliation compares the Host as
last seen with what it should be (`status.plan`) and writes only the difference; it is
level-based, so a lost race is repaired by the next event. Only the leading replica writes;
the others keep their liveness view warm so that a take-over starts from it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import settings as settings_
from gpufleet import tokens
from gpufleet.api import host, meta
from gpufleet.controller import agent_tokens, cleanup, events, liveness, metrics, rollup, status

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: Hosts written concurrently, e.g. when a rack's worth of deadlines pass at once.
WRITE_CONCURRENCY = 64
#: Backoff between attempts to write a host after an API error.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
#: Event reason when a host gets a new agent token (at creation or after its Secret was deleted).
TOKEN_ISSUED = "TokenIssued"  # noqa: S105 - an Event reason


class Fleet:
    """Hosts as last seen, their liveness and GPU counts; writes what should change."""

    def __init__(
        self,
        config: settings_.Settings,
        api: client.ApiClient,
        *,
        identity: str,
        priority: int,
        tracker: liveness.Liveness | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.priority = priority
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.liveness = tracker if tracker is not None else liveness.Liveness(config.grace_period_seconds)
        self.rollup = rollup.Rollup()
        self.leading = not config.leader_election
        self.hosts: dict[str, dict[str, Any]] = {}
        self.written: dict[str, dict[str, dict[str, Any]]] = {}
        """Operator-owned status fields and labels written but not yet seen back in a watch event."""
        self.tokens_known: set[str] = set()
        """Hosts whose agent-token Secret exists, from the Secret watch and our own creations."""
        self.event_bucket = events.Bucket()
        self.metrics = metrics.Metrics()
        self.metrics.watch_fleet(self._host_states, self.rollup.by_state, self.liveness.oldest_heartbeat_age)
        self._dirty: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._deadlines: dict[str, float] = {}
        self._chores: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._writes = asyncio.Semaphore(WRITE_CONCURRENCY)

    # ----- inputs ---------------------------------------------------------------------------------

    async def host_seen(self, body: Mapping[str, Any]) -> None:
        """A Host as the API shows it now (created, changed, heartbeating, or being deleted)."""
        name = str(body["metadata"]["name"])
        view = {key: dict(body.get(key) or {}) for key in ("metadata", "spec", "status")}
        self._overlay_own_writes(name, view)
        self.hosts[name] = view
        current = view["status"]
        if self.liveness.observe(
            name,
            heartbeat=current.get("lastHeartbeat"),
            reported_offline=current.get("reportedState") == host.HostState.OFFLINE,
            state=current.get("state"),
        ):
            self.metrics.heartbeats.inc()
        if self.leading:
            self._lifecycle(name, view)
            self.schedule(name)

    def host_deleted(self, name: str) -> None:
        """The Host is gone; whatever it left (deleted before we added the finalizer) goes too."""
        self.hosts.pop(name, None)
        self.written.pop(name, None)
        self.liveness.forget(name)
        if self.leading:
            self._chore("release", name, self._release(name))

    def is_live_host(self, name: str) -> bool:
        """Whether the Host exists and is not being deleted, as last seen."""
        view = self.hosts.get(name)
        return view is not None and not view["metadata"].get("deletionTimestamp")

    def gpu_seen(self, body: Mapping[str, Any]) -> None:
        for name in self.rollup.observe(body):
            self.schedule(name)

    def gpu_gone(self, name: str) -> None:
        for host_name in self.rollup.forget(name):
            self.schedule(host_name)

    def token_seen(self, host_name: str) -> None:
        self.tokens_known.add(host_name)

    def token_gone(self, host_name: str) -> None:
        """Deleting a host's token Secret rotates the token: issue a new one while the host exists."""
        self.tokens_known.discard(host_name)
        view = self.hosts.get(host_name)
        if self.leading and view is not None and self.is_live_host(host_name):
            self._chore("token", host_name, self._issue_token(host_name, str(view["metadata"].get("uid", ""))))

    async def expire(self, gone: list[tuple[str, float]]) -> None:
        """Hosts whose deadlines passed: schedule their offline status (the leader writes it)."""
        for name, deadline in gone:
            self._deadlines[name] = deadline
            self.schedule(name)

    def lead(self, leading: bool) -> None:
        """Start or stop writing; a new leader reconciles every host from its warm view."""
        if leading == self.leading:
            return
        self.leading = leading
        logger.info("this replica %s", "leads now" if leading else "stands by")
        if leading:
            for name, view in list(self.hosts.items()):
                self._lifecycle(name, view)
                self.schedule(name)

    # ----- scheduling -----------------------------------------------------------------------------

    def schedule(self, name: str) -> None:
        """Reconcile the host soon, in its own task; at most one runs per host, re-run if asked again."""
        if name in self._running:
            self._dirty.add(name)
        elif self.leading and name in self.hosts:
            self._running[name] = asyncio.create_task(self._reconcile_until_clean(name))

    async def _reconcile_until_clean(self, name: str) -> None:
        """Reconcile until no new input arrived meanwhile; failed writes are retried with backoff.

        A retry matters most for an expiry: a silent host sends no further event to repair it.
        """
        backoff = RETRY_FIRST_SECONDS
        try:
            while True:
                self._dirty.discard(name)
                try:
                    async with self._writes:
                        await self.reconcile(name)
                    backoff = RETRY_FIRST_SECONDS
                except (exceptions.ApiException, OSError) as error:
                    logger.warning(
                        "could not update host %s (retrying in %gs): %s", name, backoff, error, extra={"host": name}
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_SECONDS)
                    self._dirty.add(name)
                if name not in self._dirty or name not in self.hosts:
                    return
        finally:
            del self._running[name]

    def _chore(self, what: str, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run a one-off task for a host unless the same one is already running."""
        key = (what, name)
        if key in self._chores:
            work.close()
            return
        task = asyncio.create_task(work)
        self._chores[key] = task
        task.add_done_callback(lambda _: self._chores.pop(key, None))

    async def idle(self) -> None:
        """Wait until no write is in flight (for tests and orderly shutdown)."""
        while self._running or self._chores:
            await asyncio.gather(*self._running.values(), *self._chores.values(), return_exceptions=True)

    # ----- lifecycle --------------------------------------------------------------------------------

    def _lifecycle(self, name: str, view: dict[str, Any]) -> None:
        metadata = view["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if metadata.get("deletionTimestamp"):
            if meta.CLEANUP_FINALIZER in finalizers:
                self._chore("release", name, self._release(name, finalize=True))
            return
        if meta.CLEANUP_FINALIZER not in finalizers:
            self._chore("finalizer", name, self._add_finalizer(name, finalizers))
        if name not in self.tokens_known:
            self._chore("token", name, self._issue_token(name, str(metadata.get("uid", ""))))

    async def _json_patch_host(self, name: str, patch: list[dict[str, Any]]) -> None:
        await self.custom.patch_cluster_custom_object(
            meta.GROUP,
            meta.VERSION,
            host.PLURAL,
            name,
            patch,
            _content_type=JSON_PATCH,  # type: ignore[call-arg] # accepted by every API method
        )

    async def _add_finalizer(self, name: str, finalizers: list[str]) -> None:
        patch = (
            [{"op": "add", "path": "/metadata/finalizers/-", "value": meta.CLEANUP_FINALIZER}]
            if finalizers
            else [{"op": "add", "path": "/metadata/finalizers", "value": [meta.CLEANUP_FINALIZER]}]
        )
        try:
            await self._json_patch_host(name, patch)
        except exceptions.ApiException as error:
            if error.status not in (404, 409, 422):  # gone, or raced: the next event retries
                logger.warning("could not add the finalizer to host %s: %s", name, error)

    async def _release(self, name: str, *, finalize: bool = False) -> None:
        """Delete the host's GPUs and token, then (for a Host being deleted) let it go."""
        try:
            gpus = await cleanup.release(self.custom, self.core, host_name=name, namespace=self.config.namespace)
            if finalize:
                await self._remove_finalizer(name)
        except (exceptions.ApiException, OSError) as error:
            logger.warning("could not clean up after host %s: %s", name, error, extra={"host": name})
            return
        self.tokens_known.discard(name)
        logger.info("host %s deleted with its %d GPUs and agent token", name, gpus, extra={"host": name})

    async def _remove_finalizer(self, name: str) -> None:
        for _ in range(5):  # the test fails when the list changed meanwhile: read it again
            try:
                body = await self.custom.get_cluster_custom_object(meta.GROUP, meta.VERSION, host.PLURAL, name)
            except exceptions.ApiException as error:
                if error.status == 404:
                    return
                raise
            current = list(body["metadata"].get("finalizers") or [])
            if meta.CLEANUP_FINALIZER not in current:
                return
            patch = [
                {"op": "test", "path": "/metadata/finalizers", "value": current},
                {
                    "op": "replace",
                    "path": "/metadata/finalizers",
                    "value": [f for f in current if f != meta.CLEANUP_FINALIZER],
                },
            ]
            try:
                await self._json_patch_host(name, patch)
                return
            except exceptions.ApiException as error:
                if error.status == 404:
                    return
                if error.status not in (409, 422):
                    raise

    async def _issue_token(self, host_name: str, host_uid: str) -> None:
        try:
            issued = await agent_tokens.ensure(
                self.core, host_name=host_name, host_uid=host_uid, namespace=self.config.namespace
            )
        except (exceptions.ApiException, OSError) as error:
            logger.warning("could not issue an agent token for host %s: %s", host_name, error)
            return
        self.tokens_known.add(host_name)
        if issued:
            secret = f"{self.config.namespace}/{tokens.secret_name(host_name)}"
            logger.info("issued an agent token for host %s in Secret %s", host_name, secret, extra={"host": host_name})
            event = status.Event("Normal", TOKEN_ISSUED, f"a new agent token was issued in Secret {secret}")
            await self._send(host_name, host_uid, event)

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
        deadline = self._deadlines.pop(name, None)
        if view is None or view["metadata"].get("deletionTimestamp") or not self.leading:
            return False
        todo = status.plan(
            view,
            online=self.liveness.is_online(name),
            gpus=self.rollup.counts(name),
            grace_seconds=self.config.grace_period_seconds,
            now=datetime.datetime.now(datetime.UTC),
        )
        wrote = False
        try:
            if todo.status_patch is not None:
                await self.custom.patch_cluster_custom_object_status(
                    meta.GROUP,
                    meta.VERSION,
                    host.PLURAL,
                    name,
                    {"status": todo.status_patch},
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
                )
                view["status"] = {**view["status"], **todo.status_patch}
                self._remember(name)["status"].update(todo.status_patch)
                wrote = True
                if deadline is not None and todo.new_state == host.HostState.OFFLINE:
                    self.metrics.detection_delay.observe(max(0.0, self.liveness.clock() - deadline))
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
        await self.custom.patch_cluster_custom_object(
            meta.GROUP,
            meta.VERSION,
            host.PLURAL,
            name,
            {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
        )
        view["metadata"] = {**view["metadata"], "labels": {**(view["metadata"].get("labels") or {}), **labels}}
        self._remember(name)["labels"].update(labels)

    def _remember(self, name: str) -> dict[str, dict[str, Any]]:
        return self.written.setdefault(name, {"status": {}, "labels": {}})

    async def _post(self, view: dict[str, Any], event: status.Event) -> None:
        await self._send(view["metadata"]["name"], str(view["metadata"].get("uid", "")), event)

    async def _send(self, host_name: str, host_uid: str, event: status.Event) -> None:
        sent = await events.post(
            self.core,
            host_name=host_name,
            host_uid=host_uid,
            event=event,
            instance=self.identity,
            bucket=self.event_bucket,
        )
        if not sent:
            self.metrics.events_dropped.inc()

    def _host_states(self) -> Iterator[tuple[str, str]]:
        for view in list(self.hosts.values()):  # a snapshot: scrapes run in the metrics thread
            current = view["status"]
            yield str(current.get("state") or "unknown"), str(current.get("healthStatus") or "unknown")
