"""Retry delays grow, stay capped, and are spread out by jitter."""

from __future__ import annotations

import random

from gpufleet_agent import backoff


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    retry = backoff.Backoff(0.5, 8, random.Random(1))
    delays = [retry.next_delay() for _ in range(8)]
    for delay, bound in zip(delays, [0.5, 1, 2, 4, 8, 8, 8, 8], strict=True):
        assert bound / 2 <= delay <= bound


def test_agents_failing_together_retry_at_different_times() -> None:
    delays = {backoff.Backoff(1, 30, random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_a_success_starts_over_from_the_initial_delay() -> None:
    retry = backoff.Backoff(1, 30, random.Random(0))
    for _ in range(6):
        retry.next_delay()
    retry.reset()
    assert retry.next_delay() <= 1
