"""Every Kopf decorator of the operator, and nothing else: each handler calls into `Fleet`.

Handlers are `async` although they do not await: Kopf runs plain functions in a thread pool,
and `Fleet` schedules its writes as tasks on the loop.

Kopf logs in (`login`), watches the GPUs (for the roll-up) and the agent-token Secrets (for rotation), keeps the
peering object for leader election, and answers the liveness probe. Hosts are watched by
`hostwatch` instead: their heartbeats are too many for Kopf's per-object machinery (see there).
"""

from __future__ import annotations

from typing import Any

import kopf

from gpufleet.api import gpu, meta
from gpufleet.controller import fleet


def _fleet(memo: Any) -> fleet.Fleet:
    the_fleet: fleet.Fleet = memo.fleet
    return the_fleet


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else `$KUBECONFIG` as it is now.

    Kopf's default (through the `kubernetes` library) uses the kubeconfig path that library saw
    when it was first imported, which misses a `KUBECONFIG` set later by `gpufleet dev` or tests.
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.event(meta.GROUP, meta.VERSION, gpu.PLURAL)
async def gpu_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    the_fleet = _fleet(memo)
    with the_fleet.metrics.handler_duration.labels("gpu_event").time():
        if type == "DELETED":
            the_fleet.gpu_gone(body["metadata"]["name"])
        else:
            the_fleet.gpu_seen(body)


@kopf.on.event("v1", "secrets", labels={meta.MANAGED_BY_LABEL: meta.MANAGED_BY, meta.HOST_LABEL: kopf.PRESENT})
async def token_secret_event(type: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    the_fleet = _fleet(memo)
    with the_fleet.metrics.handler_duration.labels("token_secret_event").time():
        if type == "DELETED":
            the_fleet.token_gone(labels[meta.HOST_LABEL])
        else:
            the_fleet.token_seen(labels[meta.HOST_LABEL])
