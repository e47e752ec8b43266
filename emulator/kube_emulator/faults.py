"""Fault injection: make chosen requests fail, or the whole API unavailable.

Clients must survive API server errors and outages (Kopf retries, the REST facade
answers 503); these hooks let tests provoke them deterministically. They are changed
from the test thread and read on the server's loop, so state is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping

from .errors import ApiError


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a fault predicate sees of a request."""

    method: str
    path: str
    query: Mapping[str, str]


FaultPredicate = Callable[[RequestInfo], bool]


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """What a request observer (``Emulator.observe``) is told of each request once it is answered."""

    method: str
    path: str
    query: Mapping[str, str]
    user: str | None
    """The username of its bearer token (``Emulator.add_user``), None for an unknown token or none."""
    status: int
    """The HTTP status answered; 499 when the client went away first (a write then was not applied)."""
    at: float
    """``time.monotonic()`` when it was answered (a watch: when its stream ended)."""


RequestObserver = Callable[[RequestRecord], None]


@dataclasses.dataclass
class _Rule:
    predicate: FaultPredicate | None
    status: int
    remaining: int | None  # None: until removed


def _error(status: int) -> ApiError:
    reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
    return ApiError(status, reasons.get(status, "InternalError"), f"injected fault: HTTP {status}")


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.outage: str | None = None  # None, "error" or "hang"
        self.on_outage: Callable[[], None] = lambda: None

    def fail_next(self, n: int = 1, status: int = 503, predicate: FaultPredicate | None = None) -> None:
        """The next ``n`` requests (matching ``predicate`` if given) answer ``status``."""
        with self._lock:
            self._rules.append(_Rule(predicate, status, n))

    def fail_when(self, predicate: FaultPredicate, status: int = 503) -> Callable[[], None]:
        """Every matching request answers ``status`` until the returned function is called."""
        rule = _Rule(predicate, status, None)
        with self._lock:
            self._rules.append(rule)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._rules.remove(rule)

        return remove

    @contextlib.contextmanager
    def unavailable(self, mode: str = "error") -> Iterator[None]:
        """Inside: every request answers 503 (``error``) or hangs (``hang``); watches are dropped."""
        if mode not in ("error", "hang"):
            raise ValueError(f"unknown outage mode: {mode!r}")
        self.outage = mode
        self.on_outage()
        try:
            yield
        finally:
            self.outage = None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
        self.outage = None

    def check(self, info: RequestInfo) -> ApiError | None:
        """The injected error for this request, if any (consumes one use of a counted rule)."""
        if self.outage == "error":
            return _error(503)
        with self._lock:
            for rule in self._rules:
                if rule.predicate is None or rule.predicate(info):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return _error(rule.status)
        return None
