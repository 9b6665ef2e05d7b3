"""One bandwidth limit shared by every connection of a transfer (`--limit-rate 50M`)."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Virtual scheduling: each byte has a slot ``1/rate`` seconds after the previous one.

    A short burst (``burst`` seconds' worth) is allowed, so chunked reads do not stutter.
    """

    def __init__(self, rate: float, burst: float = 0.25, clock=time.monotonic, sleep=asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._clock, self._sleep = clock, sleep
        self._next = clock()

    async def take(self, n: int) -> None:
        now = self._clock()
        start = max(self._next, now - self.burst)
        self._next = start + n / self.rate
        delay = self._next - now - self.burst
        if delay > 0:
            await self._sleep(delay)
