"""The one way each component writes and reads addresses and timestamps.

IP addresses are compared in their canonical text (`::0:1` and `::1` are one host), so every
place that stores, indexes or claims an address must normalise it the same way. Timestamps go
to the API in the two forms Kubernetes uses: `Time` (RFC 3339, UTC, whole seconds, `Z`: what
`kubectl` prints and the legacy API documents) and `MicroTime` (the same with microseconds:
Leases, and heartbeats, which must differ even when less than a second apart).
"""

from __future__ import annotations

import datetime
import ipaddress


def normalised_ip(value: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; ValueError when it is neither."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IPv4 or IPv6 address") from None


def same_ip_key(value: str) -> str:
    """The key an address is indexed under: its canonical text, or the value itself when it is
    not an address (stored objects were validated, but an index must never fail)."""
    try:
        return normalised_ip(value)
    except ValueError:
        return value


def now() -> datetime.datetime:
    """The current moment, in UTC."""
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    """A Kubernetes `Time`: UTC, whole seconds, `Z`."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes `MicroTime`: UTC with microseconds, `Z` (now, unless a moment is given)."""
    return (moment or now()).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> datetime.datetime | None:
    """A timestamp as the API server returns it (`Z` or an offset; naive means UTC), or None
    when it is absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)
