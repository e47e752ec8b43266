"""The one retry policy: what is worth retrying, and how long to wait."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio.client import exceptions

from gpufleet import backoff


def _api_error(status: int, headers: dict[str, str] | None = None) -> exceptions.ApiException:
    error = exceptions.ApiException(status=status, reason="x")
    error.headers = headers
    return error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientConnectionResetError(), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (_api_error(429), True),
        (_api_error(503), True),
        (_api_error(500), True),
        (_api_error(404), False),
        (_api_error(409), False),
        (_api_error(422), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_transport_failures_and_overload_are_transient_answers_are_not(error: BaseException, transient: bool) -> None:
    assert backoff.is_transient(error) is transient


def test_delays_grow_with_jitter_up_to_the_cap_and_start_over_after_a_success() -> None:
    policy = backoff.Backoff(first=0.2, cap=5.0)
    delays = [policy.next() for _ in range(10)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, [0.2 * 2**n for n in range(5)], strict=False))
    assert all(2.5 <= delay <= 5.0 for delay in delays[5:])
    policy.reset()
    assert policy.next() <= 0.2


def test_jitter_spreads_replicas_that_failed_together() -> None:
    delays = {backoff.Backoff(first=1.0, cap=10.0).next() for _ in range(50)}
    assert len(delays) > 40


def test_the_api_servers_retry_after_is_obeyed_within_the_cap() -> None:
    assert backoff.Backoff(first=0.2, cap=10.0).next(_api_error(429, {"Retry-After": "3"})) == 3.0
    assert backoff.Backoff(first=0.2, cap=10.0).next(_api_error(429, {"Retry-After": "3600"})) == 10.0
    assert backoff.Backoff(first=0.2, cap=10.0).next(_api_error(503, {"Retry-After": "soon"})) <= 0.2
