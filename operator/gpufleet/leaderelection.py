"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules and timings.

One Lease names the replica that may write (`holderIdentity`); `kubectl get lease` shows it.
The holder renews it every retry period. A standby takes the Lease over only when it has seen no
renewal for a whole lease duration, measured by its *own* clock from the moment it observed the
last change (clocks of different machines are never compared). Writes to the Lease carry its
resourceVersion, so of two replicas racing for it one gets 409 Conflict: never two holders.

The fence: a leader that could not renew within the renew deadline (shorter than the lease
duration) stops acting at once. `is_leader()` counts from when the last successful renewal was
*sent*, so a partitioned leader is silent before any standby can possibly take over; a write it
started just before that must be bounded by a timeout of at most lease duration - renew deadline.
On an orderly shutdown the leader gives the Lease up, so a standby takes over within a retry
period instead of a lease duration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import exceptions

from gpufleet import backoff
from gpufleet.api import formats

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    """Which Lease, who we are, and client-go's three durations (kube-controller-manager's defaults)."""

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")


class LeaderElector:
    """Acquires, renews and releases one Lease; calls `on_started` / `on_stopped` on transitions."""

    def __init__(
        self,
        api: client.ApiClient,
        config: LeaseConfig,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        # Any: dict bodies and raw responses are used as is, which the generated signatures do not describe.
        self._leases: Any = client.CoordinationV1Api(api)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self.leading = False
        self._renewed_at = float("-inf")
        """Our clock when the last successful acquire or renewal was sent."""
        self._observed: tuple[Any, ...] | None = None
        """The other holder's record as last seen, and (below) our clock when it last changed."""
        self._observed_at = float("-inf")
        self._taken = False
        """Set when another replica holds the Lease we thought ours: stop at once."""

    def is_leader(self) -> bool:
        """Whether this replica may write now: it leads and renewed within the renew deadline."""
        return self.leading and self._clock() - self._renewed_at < self.config.renew_deadline

    async def run(self) -> None:
        """Forever: stand by until the Lease is ours, lead while it stays ours, stand by again."""
        try:
            while True:
                await self._acquire()
                self._start()
                await self._renew_until_lost()
                self._stop()
        finally:
            self._stop()

    async def release(self) -> None:
        """Give the Lease up (an orderly shutdown), so that a standby takes over at its next try."""
        if self._renewed_at == float("-inf"):
            return  # never held it
        self._stop()
        try:
            async with asyncio.timeout(self.config.retry_period):
                lease = await self._get()
                if lease is None or lease["spec"].get("holderIdentity") != self.config.identity:
                    return
                spec = {
                    **lease["spec"],
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "renewTime": formats.micro_time(),
                }
                await self._leases.replace_namespaced_lease(
                    self.config.name, self.config.namespace, {**lease, "spec": spec}
                )
            logger.info("released the leader Lease %s/%s", self.config.namespace, self.config.name)
        except (exceptions.ApiException, TimeoutError, OSError) as error:
            logger.warning("could not release the leader Lease (a standby takes over when it expires): %s", error)

    # ----- the two phases ---------------------------------------------------------------------------

    async def _acquire(self) -> None:
        retry = backoff.Backoff(first=self.config.retry_period, cap=self.config.retry_period * 1.2, factor=1.0)
        while True:
            if await self._try(deadline=self.config.retry_period):
                return
            await asyncio.sleep(retry.next())

    async def _renew_until_lost(self) -> None:
        """Renew every retry period; within the renew deadline a failed renewal is tried again."""
        while True:
            await asyncio.sleep(self.config.retry_period)
            while not await self._try(deadline=min(self._left(), self.config.retry_period)):
                if self._taken or self._left() <= 0:
                    logger.warning(
                        "lost the leader Lease (%s): standing by",
                        "taken over" if self._taken else f"not renewed within {self.config.renew_deadline:g}s",
                    )
                    return
                await asyncio.sleep(min(self.config.retry_period / 2, self._left()))

    def _left(self) -> float:
        """Seconds until the renew deadline passes (0 or less: it has)."""
        return self.config.renew_deadline - (self._clock() - self._renewed_at)

    def _start(self) -> None:
        self._taken = False
        if not self.leading:
            self.leading = True
            logger.info("acquired the leader Lease %s/%s: leading", self.config.namespace, self.config.name)
            self._on_started()

    def _stop(self) -> None:
        if self.leading:
            self.leading = False
            self._on_stopped()

    # ----- one attempt --------------------------------------------------------------------------------

    async def _try(self, *, deadline: float) -> bool:
        """Acquire or renew once, within `deadline` seconds; whether we hold the Lease now."""
        if deadline <= 0:
            return False
        sent = self._clock()
        try:
            async with asyncio.timeout(deadline):
                won = await self._acquire_or_renew()
        except exceptions.ApiException as error:
            if error.status != 409:  # a lost race is the normal way to lose; anything else is worth a line
                logger.warning("leader Lease: %s %s", error.status, error.reason)
            return False
        except Exception as error:
            if not backoff.is_transient(error):
                logger.exception("leader Lease: unexpected failure")
            else:
                logger.warning("leader Lease: %s", type(error).__name__)
            return False
        if won:
            self._renewed_at = sent
        return won

    async def _get(self) -> dict[str, Any] | None:
        try:
            response = await self._leases.read_namespaced_lease(
                self.config.name, self.config.namespace, _preload_content=False
            )
        except exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise
        async with response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise exceptions.ApiException(status=response.status, reason=response.reason)
            lease: dict[str, Any] = await response.json()
            return lease

    async def _acquire_or_renew(self) -> bool:
        config = self.config
        lease = await self._get()
        now = formats.micro_time()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.name, "namespace": config.namespace},
                "spec": self._spec(acquire_time=now, renew_time=now, transitions=0),
            }
            await self._leases.create_namespaced_lease(config.namespace, body)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder != config.identity and self.leading:
            self._taken = bool(holder)
            if self._taken:
                return False
        if holder != config.identity:
            record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
            if record != self._observed:
                self._observed, self._observed_at = record, self._clock()
            duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
            if holder and self._clock() < self._observed_at + duration:
                return False  # held, and renewed recently enough by our clock
            transitions = int(spec.get("leaseTransitions") or 0) + 1
            new_spec = self._spec(acquire_time=now, renew_time=now, transitions=transitions)
        else:
            new_spec = {**spec, **self._spec(acquire_time=spec.get("acquireTime") or now, renew_time=now)}
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        await self._leases.replace_namespaced_lease(config.name, config.namespace, {**lease, "spec": new_spec})
        return True

    def _spec(self, *, acquire_time: str, renew_time: str, transitions: int | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.config.identity,
            # Whole seconds in the API: round up, so a standby never waits less than the leader's fence.
            "leaseDurationSeconds": math.ceil(self.config.lease_duration),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
        }
        if transitions is not None:
            spec["leaseTransitions"] = transitions
        return spec
