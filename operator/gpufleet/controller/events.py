"""Kubernetes Events on Hosts, posted explicitly (Kopf 1.45 no longer turns log lines into Events).

Hosts are cluster-scoped, so their Events go to the `default` namespace, as the kubelet's Node
Events do; `kubectl describe host NAME` and `kubectl get events --field-selector
involvedObject.name=NAME` find them there. Posting is best effort: a failed Event is logged and
never blocks a status write, and a fleet-wide token bucket drops Events beyond a steady rate
(as client-go's event recorder does per object), so that 10,000 hosts coming online together
cost the API server 10,000 status writes, not 30,000 more Event writes.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet.api import formats, host, meta
from gpufleet.controller import status

EVENTS_NAMESPACE = "default"
#: Events posted per second fleet-wide in the long run, and how many may go out at once.
RATE_PER_SECOND = 50.0
BURST = 500
COMPONENT = "gpufleet-operator"

logger = logging.getLogger(__name__)


def manifest(
    *, host_name: str, host_uid: str, event: status.Event, instance: str, now: datetime.datetime
) -> dict[str, object]:
    """A core/v1 Event about a Host."""
    stamp = formats.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{host_name}.", "namespace": EVENTS_NAMESPACE},
        "involvedObject": {"apiVersion": meta.API_VERSION, "kind": host.KIND, "name": host_name, "uid": host_uid},
        "type": event.type,
        "reason": event.reason,
        "message": event.message,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": COMPONENT},
        "reportingComponent": f"{meta.GROUP}/operator",
        "reportingInstance": instance,
    }


class Bucket:
    """A token bucket: `take()` says whether one more Event may go out now."""

    def __init__(self, rate: float = RATE_PER_SECOND, burst: int = BURST, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def post(
    core: client.CoreV1Api,
    *,
    host_name: str,
    host_uid: str,
    event: status.Event,
    instance: str,
    bucket: Bucket | None = None,
) -> bool:
    """Post one Event on a Host unless the bucket is empty; whether it was sent. Failures are logged."""
    if bucket is not None and not bucket.take():
        return False
    body = manifest(
        host_name=host_name,
        host_uid=host_uid,
        event=event,
        instance=instance,
        now=datetime.datetime.now(datetime.UTC),
    )
    try:
        await core.create_namespaced_event(EVENTS_NAMESPACE, body)  # type: ignore[arg-type] # sent as is
    except (exceptions.ApiException, OSError) as error:
        logger.warning("could not post event %s on host %s: %s", event.reason, host_name, error)
        return False
    return True
