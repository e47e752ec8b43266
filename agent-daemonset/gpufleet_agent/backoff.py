"""Retry delays after API errors: exponential, capped, with jitter.

The jitter ("equal jitter": half the exponential bound plus a uniform draw up to the other half)
spreads a fleet of agents that lost the API server at the same moment, so they do not come back
in lockstep and knock it over again, while never retrying in a tight loop.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._random = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """Delay before the next try, counting one more failure."""
        bound = min(self._maximum, self._initial * float(2 ** min(self.failures, 62)))
        self.failures += 1
        return bound / 2 + self._random.uniform(0, bound / 2)

    def reset(self) -> None:
        self.failures = 0
