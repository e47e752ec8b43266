"""One retry policy for every call to the Kubernetes API: which failures are worth retrying, and when.

A fleet of replicas that retries in lock-step after an API server restart is a thundering herd,
so delays are exponential, capped and jittered ("full jitter" between half the step and the
step). A 429 or 503 that says how long to wait (`Retry-After`) is obeyed, within the cap.
Whether a failure is transient is decided here once: connection resets, timeouts, 429 and 5xx
are; a 4xx is an answer, and retrying it changes nothing.
"""

from __future__ import annotations

import dataclasses
import random

import aiohttp
from kubernetes_asyncio.client import exceptions

#: Statuses that mean "the API server could not answer now", not "your request is wrong".
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(error: BaseException) -> bool:
    """Whether trying the same call again later can succeed."""
    if isinstance(error, exceptions.ApiException):
        return error.status in TRANSIENT_STATUSES or error.status == 0
    return isinstance(error, aiohttp.ClientError | TimeoutError | OSError)


def retry_after(error: BaseException) -> float | None:
    """Seconds the API server asked us to wait (`Retry-After` on a 429 or 503), if it did."""
    if not isinstance(error, exceptions.ApiException) or not error.headers:
        return None
    value = error.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare from kube-apiserver, and the backoff is a fine answer
        return None
    return seconds if seconds is not None and seconds >= 0 else None


@dataclasses.dataclass
class Backoff:
    """Exponential backoff with jitter; `next()` the delay before the next attempt, `reset()` on success."""

    first: float = 0.2
    cap: float = 10.0
    factor: float = 2.0
    attempts: int = 0

    def next(self, error: BaseException | None = None) -> float:
        """The delay before the next attempt; honours the server's `Retry-After` up to the cap."""
        step = min(self.cap, self.first * self.factor**self.attempts)
        self.attempts += 1
        asked = retry_after(error) if error is not None else None
        if asked is not None:
            return min(self.cap, max(asked, step / 2))
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        self.attempts = 0
