"""Failed authentications per client: a token bucket per IP address, answered 429 when empty.

A client starts with `burst` attempts. Every authentication the facade cannot settle from what it
already knows (a token not in the review cache, a static token, an unknown `gfa_` token) takes
one attempt before it is checked, and a success gives it back: so only failures use the bucket
up, and a client cannot have more than `burst` checks (TokenReviews) in flight at once. The
bucket refills at `rate` attempts per second. An empty bucket is a 429 with `Retry-After`,
whatever the token, until it refills: a guess that happens to be right would otherwise tell
itself apart from a wrong one. Hosts' own agent tokens, known by their digest, never need the
bucket, so a client that shares an address with an attacker (NAT) keeps heartbeating.

Clients are told apart by their IP address as the facade sees it (IPv6: by /64, which one
machine usually holds whole). Behind a proxy or a load balancer that does not keep the client's
address, every caller shares the proxy's bucket; `X-Forwarded-For` is not trusted, since any
client may write it. At most `MAX_CLIENTS` buckets are kept (those not full), the least
recently used dropped first.
"""

from __future__ import annotations

import collections
import ipaddress
import math
import time
from collections.abc import Callable

MAX_CLIENTS = 10_000


def client_key(remote: str | None) -> str:
    """The bucket a peer address falls in: the IPv4 address, or the IPv6 /64."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def retry_after(wait: float) -> int:
    """`Retry-After` in whole seconds (at least 1) for a wait of `wait` seconds."""
    return max(1, math.ceil(wait))


class FailureLimiter:
    """Token buckets of authentication attempts, by client."""

    def __init__(
        self,
        burst: int,
        rate: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self._max_clients = max_clients
        self._clock = clock
        #: client -> (attempts left, when that was computed); full buckets are not kept.
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def _level(self, client: str, now: float) -> float:
        left, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) * self.rate)

    def take(self, client: str) -> float | None:
        """Take one attempt: None when taken, else the seconds until one is available."""
        now = self._clock()
        level = self._level(client, now)
        if level < 1:
            self._buckets[client] = (level, now)
            self._buckets.move_to_end(client)
            return (1 - level) / self.rate
        self._buckets[client] = (level - 1, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return None

    def give_back(self, client: str) -> None:
        """Return the attempt a successful authentication took."""
        now = self._clock()
        level = min(float(self.burst), self._level(client, now) + 1)
        if level >= self.burst:
            self._buckets.pop(client, None)
        else:
            self._buckets[client] = (level, now)

    def __len__(self) -> int:
        return len(self._buckets)
