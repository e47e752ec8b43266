"""Every write the operator makes to a Host and what belongs to it, each behind the leader's fence.

The view (`fleet`) decides what a host should be; this module only says it to the API, one call
per job: the status, the operator's labels, the cleanup finalizer, the agent token, Events, and
the release of a deleted host's GPUs and Secret. Each write first asks the fence (`may_write`:
this replica leads and its Lease is still renewed) and raises `NotLeading` when it must not
write, so a replica that lost the Lease stops between two calls, never after a late one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import tokens
from gpufleet.api import gpu, host, meta
from gpufleet.controller import agent_tokens, cleanup, events, metrics, remediation, status

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: Event reason when a host gets a new agent token (see `agent_tokens`).
TOKEN_ISSUED = "TokenIssued"  # noqa: S105 - an Event reason


class NotLeading(Exception):
    """A write was about to happen on a replica that no longer holds the Lease."""


class HostWriter:
    """The operator's writes, fenced; returns nothing it read, so the view stays the view's."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        identity: str,
        may_write: Callable[[], bool],
        counters: metrics.Metrics,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.identity = identity
        self._may_write = may_write
        self._metrics = counters
        self.event_bucket = events.Bucket()

    def check_fence(self) -> None:
        if not self._may_write():
            raise NotLeading

    async def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the operator's fields of the Host's status."""
        self.check_fence()
        await self.custom.patch_cluster_custom_object_status(
            meta.GROUP,
            meta.VERSION,
            host.PLURAL,
            name,
            {"status": patch},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
        )

    async def patch_labels(self, name: str, labels: dict[str, str]) -> None:
        """Merge-patch the operator's labels of the Host."""
        self.check_fence()
        await self.custom.patch_cluster_custom_object(
            meta.GROUP,
            meta.VERSION,
            host.PLURAL,
            name,
            {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
        )

    async def add_finalizer(self, name: str, finalizers: list[str]) -> None:
        patch = (
            [{"op": "add", "path": "/metadata/finalizers/-", "value": meta.CLEANUP_FINALIZER}]
            if finalizers
            else [{"op": "add", "path": "/metadata/finalizers", "value": [meta.CLEANUP_FINALIZER]}]
        )
        try:
            await self._json_patch(name, patch)
        except exceptions.ApiException as error:
            if error.status not in (404, 409, 422):  # gone, or raced: the next event retries
                raise

    async def release(self, name: str, *, finalize: bool = False) -> None:
        """Delete the host's GPUs and token, then (for a Host being deleted) let it go."""
        self.check_fence()
        gpus = await cleanup.release(self.custom, self.core, host_name=name, namespace=self.namespace)
        if finalize:
            await self._remove_finalizer(name)
        logger.info("host %s deleted with its %d GPUs and agent token", name, gpus, extra={"host": name})

    async def issue_token(self, host_name: str, host_uid: str) -> str | None:
        """Give the host an agent token (`agent_tokens`); the digest published, None if the Host went."""
        self.check_fence()
        try:
            issued, digest = await agent_tokens.ensure(
                self.core, self.custom, host_name=host_name, host_uid=host_uid, namespace=self.namespace
            )
        except exceptions.ApiException as error:
            if error.status == 404:  # the Host went meanwhile: its DELETED event will follow
                return None
            raise
        if issued:
            secret = f"{self.namespace}/{tokens.secret_name(host_name)}"
            logger.info("issued an agent token for host %s in Secret %s", host_name, secret, extra={"host": host_name})
            event = status.Event("Normal", TOKEN_ISSUED, f"a new agent token was issued in Secret {secret}")
            await self.post(host_name, host_uid, event)
        return digest

    async def mask_gpu(self, name: str, reported: str, *, held: bool) -> None:
        """Set a GPU of an offline host `unknown`, keeping what its agent reported to put back.

        The annotation goes first: should the second write fail, the next pass finds the
        annotation and a state not yet `unknown`, and masks it then.
        """
        if not held:
            await self._merge_gpu(name, {"metadata": {"annotations": {meta.REPORTED_STATE_ANNOTATION: reported}}})
        await self._merge_gpu(name, {"status": {"state": gpu.GPUState.UNKNOWN.value}}, subresource=True)

    async def unmask_gpu(self, name: str, restore: str | None) -> None:
        """The host is online again: put back the reported state (unless the agent wrote one
        meanwhile: `restore` None), then drop the annotation."""
        if restore is not None:
            await self._merge_gpu(name, {"status": {"state": restore}}, subresource=True)
        await self._merge_gpu(name, {"metadata": {"annotations": {meta.REPORTED_STATE_ANNOTATION: None}}})

    async def _merge_gpu(self, name: str, patch: dict[str, Any], *, subresource: bool = False) -> None:
        self.check_fence()
        call = (
            self.custom.patch_cluster_custom_object_status if subresource else self.custom.patch_cluster_custom_object
        )
        try:
            await call(
                meta.GROUP,
                meta.VERSION,
                gpu.PLURAL,
                name,
                patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg] # accepted by every API method
            )
        except exceptions.ApiException as error:
            if error.status != 404:  # a GPU deleted meanwhile needs nothing
                raise

    async def remediate_node(self, node_name: str, verdict: remediation.Verdict) -> bool | None:
        """Bring the Node's taint and condition to the verdict: whether anything changed, None
        when the Node does not exist (a Host may name a node that is gone, or never joined)."""
        self.check_fence()
        try:
            response: Any = await self.core.read_node(node_name, _preload_content=False)
        except exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise
        async with response:
            node: dict[str, Any] = await response.json()
        if response.status == 404:
            return None
        if response.status >= 400:
            raise exceptions.ApiException(status=response.status, reason=str(node.get("message", "")))
        spec, node_status = remediation.node_patches(node, verdict)
        if spec:
            self.check_fence()
            await self.core.patch_node(node_name, spec, _content_type=JSON_PATCH)  # type: ignore[call-arg]
        if node_status:
            self.check_fence()
            if spec:  # the spec write moved the version the status patch tests
                node_status = remediation.node_patches(await self._read_node(node_name), verdict)[1]
            if node_status:
                await self.core.patch_node_status(node_name, node_status, _content_type=JSON_PATCH)  # type: ignore[call-arg]
        return bool(spec or node_status)

    async def _read_node(self, node_name: str) -> dict[str, Any]:
        response: Any = await self.core.read_node(node_name, _preload_content=False)
        async with response:
            node: dict[str, Any] = await response.json()
        return node

    async def post(self, host_name: str, host_uid: str, event: status.Event) -> None:
        """Post an Event about the Host (rate-limited: one dropped is counted, not retried)."""
        self.check_fence()
        sent = await events.post(
            self.core,
            host_name=host_name,
            host_uid=host_uid,
            event=event,
            instance=self.identity,
            bucket=self.event_bucket,
        )
        if not sent:
            self._metrics.events_dropped.inc()

    async def _json_patch(self, name: str, patch: list[dict[str, Any]]) -> None:
        self.check_fence()
        await self.custom.patch_cluster_custom_object(
            meta.GROUP,
            meta.VERSION,
            host.PLURAL,
            name,
            patch,
            _content_type=JSON_PATCH,  # type: ignore[call-arg] # accepted by every API method
        )

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
                await self._json_patch(name, patch)
                return
            except exceptions.ApiException as error:
                if error.status == 404:
                    return
                if error.status not in (409, 422):
                    raise
